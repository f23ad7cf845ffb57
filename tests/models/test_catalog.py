"""``ofasearch models``: filtered, progressive, cached listing of usable timm models."""

import pytest

from ofasearch.cli import main
from ofasearch.models import catalog


def lines(capsys) -> tuple[list[str], str]:
    captured = capsys.readouterr()
    return captured.out.splitlines(), captured.err


def test_resnets_with_their_four_stage_shapes(capsys):
    assert main(["models", "resnet1*", "--family", "cnn"]) == 0
    out, _ = lines(capsys)
    row = next(line for line in out if line.split()[0] == "resnet18")
    assert row.split()[1] == "cnn"
    assert row.endswith("stages 1:64x8x8 2:128x4x4 3:256x2x2 4:512x1x1")
    assert all(line.split()[0].startswith("resnet1") for line in out[:-1])
    assert out[-1].startswith(f"{len(out) - 1} shown of {len(out) - 1} checked")


def test_second_listing_answers_from_the_store(capsys, monkeypatch):
    assert main(["models", "resnet1*", "--family", "cnn"]) == 0
    first, _ = lines(capsys)

    def no_build(*_a, **_k):
        raise AssertionError("built a model the store already knows")

    monkeypatch.setattr(catalog, "probe", no_build)
    assert main(["models", "resnet1*", "--family", "cnn"]) == 0
    assert lines(capsys)[0] == first


def test_vit_family(capsys):
    assert main(["models", "--family", "vit", "vit_tiny*"]) == 0
    out, _ = lines(capsys)
    assert any(line.split()[0] == "vit_tiny_patch16_224" for line in out)
    assert all(line.split()[1] == "vit" and line.count("x") >= 8 for line in out[:-1])


def test_limit_stops_early_and_says_what_is_left(capsys):
    assert main(["models", "resnet1*", "--limit", "2"]) == 0
    out, _ = lines(capsys)
    total = len(catalog.matching_names("resnet1*"))
    assert len(out) == 4
    assert out[2].startswith("2 shown of 2 checked")
    assert out[3].startswith(f"{total - 2} more matching names not checked")
    assert "--limit 0" in out[3]


def test_no_match_exits_2_with_one_line_of_close_names(capsys):
    assert main(["models", "resnt18*"]) == 2
    out, err = lines(capsys)
    assert out == []
    assert len(err.splitlines()) == 1
    assert "'resnt18*'" in err
    assert "resnet18" in err


def test_unusable_models_are_counted_not_raised(capsys):
    assert main(["models", "inception_v3"]) == 0  # no wildcard: substring match; too small for 32 px
    out, err = lines(capsys)
    assert out == ["0 shown of 1 checked (1 not usable at 32px)"]
    assert err == ""
    assert main(["models", "inception_v3", "--verbose"]) == 0
    assert "not usable at 32px: RuntimeError" in lines(capsys)[0][0]


def test_substring_filter_and_bad_arguments(capsys):
    names = catalog.matching_names("resnet18")
    assert {"resnet18", "resnet18d", "skresnet18"} <= set(names)
    assert main(["models", "resnet18", "--image-size", "4", "--limit", "-1"]) == 2
    assert len(lines(capsys)[1].splitlines()) == 2


def test_cpu_fallback_when_meta_lacks_an_operation(monkeypatch):
    real = catalog._probe_on

    def meta_fails(name: str, size: int, device: str) -> catalog.Probe:
        if device == "meta":
            raise NotImplementedError("Could not run 'aten::foo' with arguments from the 'Meta' backend")
        return real(name, size, device)

    monkeypatch.setattr(catalog, "_probe_on", meta_fails)
    result = catalog.probe("resnet10t", 32)
    assert result.usable
    assert result.stages[-1] == (4, 512, 1, 1)


@pytest.mark.parametrize("size", [16, 32])
def test_probe_follows_the_image_size(size):
    result = catalog.probe("resnet10t", size)
    assert result.family == "cnn"
    assert result.stages[0] == (1, 64, size // 4, size // 4)

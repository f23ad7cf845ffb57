"""Model kwargs never make timm load a file: weights come only through what a spec's checks see
(``pretrained:``, ``checkpoint:``)."""

from __future__ import annotations

import pytest
import yaml

from ofasearch.cli import main
from ofasearch.errors import SpecError
from ofasearch.models.factory import FILE_KWARGS, build_model
from tests.helpers.specs import MIXER, SPEC, TEACHER


@pytest.mark.parametrize("key", FILE_KWARGS)
def test_kwargs_that_load_files_are_refused_by_name(tmp_path, key):
    planted = tmp_path / "weights.pth"
    planted.write_bytes(b"not a checkpoint")
    value = (
        {"file": str(planted)} if key.startswith("pretrained_cfg") else True if key == "pretrained" else str(planted)
    )
    with pytest.raises(SpecError) as exc:
        build_model("resnet10t", {key: value}, num_classes=10, in_chans=1, image_size=16)
    (line,) = exc.value.problems
    assert line.startswith(f"model 'resnet10t': kwargs.{key}: not allowed"), line


def test_validate_refuses_a_checkpoint_path_in_kwargs_in_one_line(tmp_path, capsys):
    planted = tmp_path / "evil.pth"
    planted.write_bytes(b"a pickle timm would torch.load")
    student = {**MIXER, "kwargs": {**MIXER["kwargs"], "checkpoint_path": str(planted)}}
    spec = {**SPEC, "pairs": [{"teacher": TEACHER, "student": student}], "storage": str(tmp_path / "results")}
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert main(["validate", str(path)]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: pairs[0].student: model 'MlpMixer': kwargs.checkpoint_path: not allowed"), line
    assert "use the model's pretrained: or checkpoint: instead" in line

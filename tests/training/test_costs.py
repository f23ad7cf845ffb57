"""Student cost measurement on real timm models, and its way into reports, metrics.json and trials.parquet."""

import json

import pyarrow.parquet as pq
import pytest
import timm
import torch
import yaml

from ofasearch.cli import main
from ofasearch.config import parse_config, parse_spec
from ofasearch.data import load_splits
from ofasearch.training.costs import COST_COLUMNS, ModelCost, measure_cost
from tests.helpers.specs import SPEC

CPU = torch.device("cpu")


def tiny_vit(depth: int) -> torch.nn.Module:
    return timm.create_model(
        "vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=4, embed_dim=48, depth=depth, num_heads=2
    )


@pytest.fixture(autouse=True)
def one_thread():
    """Two cores shared with other jobs: one thread keeps timings sane and the tests quick."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_resnet_cost_and_train_mode_restored():
    model = timm.create_model("resnet10t", num_classes=10).train()
    rng = torch.get_rng_state()
    cost = measure_cost(model, (3, 32, 32), CPU, repeats=3)
    assert model.training
    assert all(m.training for m in model.modules())
    assert torch.equal(torch.get_rng_state(), rng), "measuring must not move the global RNG (training seeds)"
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert cost.flops > 0
    assert cost.device == "cpu"
    assert cost.latency_ms_b64 > cost.latency_ms_b1 > 0
    assert set(cost.as_metrics()) == set(COST_COLUMNS)
    deeper = measure_cost(timm.create_model("resnet18", num_classes=10), (3, 32, 32), CPU, repeats=1)
    assert deeper.flops > cost.flops


def test_eval_model_and_frozen_parts_keep_their_mode():
    model = tiny_vit(2).eval()
    measure_cost(model, (3, 32, 32), CPU, batch_sizes=(1,), repeats=1)
    assert not any(m.training for m in model.modules())
    model.train()
    model.patch_embed.eval()  # e.g. a frozen stem
    measure_cost(model, (3, 32, 32), CPU, batch_sizes=(1,), repeats=1)
    assert model.training
    assert model.blocks[0].training
    assert not model.patch_embed.proj.training


def test_vit_flops_scale_with_depth_and_count_attention():
    two = measure_cost(tiny_vit(2), (3, 32, 32), CPU, batch_sizes=(1,), repeats=1)
    four_model = tiny_vit(4)
    four = measure_cost(four_model, (3, 32, 32), CPU, batch_sizes=(1,), repeats=1)
    assert 1.6 < four.flops / two.flops < 2.2
    for block in four_model.blocks:  # the unfused path: explicit matmuls, counted by torch itself
        block.attn.fused_attn = False
    unfused = measure_cost(four_model, (3, 32, 32), CPU, batch_sizes=(1,), repeats=1)
    assert four.flops == unfused.flops, "the fused CPU attention kernel must count like the matmuls"


def test_custom_batch_sizes_and_latency_lookup():
    cost = measure_cost(tiny_vit(2), (3, 32, 32), CPU, batch_sizes=(2, 8, 2), repeats=2)
    assert [b for b, _ in cost.latency_ms] == [2, 8]
    assert cost.latency(8) > 0
    assert cost.latency_ms_b1 is None
    assert set(cost.as_metrics()) == {"params", "flops", "latency_ms_b2", "latency_ms_b8", "device"}
    with pytest.raises(KeyError, match="batch 64 was not measured"):
        cost.latency(64)
    assert isinstance(cost, ModelCost)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_sizes": (1, 0)}, "batch_sizes"),
        ({"batch_sizes": ()}, "batch_sizes"),
        ({"repeats": 0}, "repeats"),
        ({"max_seconds": -1.0}, "max_seconds"),
        ({"input_size": (32, 32)}, "input_size"),
    ],
)
def test_bad_arguments_fail_early(kwargs, message):
    args = {"input_size": (3, 32, 32), **kwargs}
    with pytest.raises(ValueError, match=message):
        measure_cost(tiny_vit(2), device=CPU, **args)


def test_model_on_another_device_is_refused():
    with torch.device("meta"):
        model = tiny_vit(2)
    with pytest.raises(ValueError, match="not .*on cpu"):
        measure_cost(model, (3, 32, 32), CPU)


STUDENT = {"model": "vit_tiny_patch16_224", "kwargs": {"patch_size": 4, "embed_dim": 48, "depth": 2, "num_heads": 2}}
CONFIG = {
    "name": "digits-cost",
    "data": {"dataset": "digits", "image_size": 16},
    "pairs": [{"teacher": {"model": "resnet10t"}, "student": STUDENT}],
    "distill": {"method": "none"},  # the student alone: no teacher to train
    "optim": {"name": "adamw", "lr": 2e-3, "epochs": 2, "batch_size": 64, "warmup_epochs": 0},
}


def test_train_writes_the_student_cost_into_metrics(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    assert main(["train", str(path), "--output", str(tmp_path / "out"), "--no-progress"]) == 0
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert set(COST_COLUMNS) <= set(metrics)
    assert metrics["params"] == metrics["student_params"] > 0
    assert metrics["flops"] > 0
    assert metrics["latency_ms_b64"] > 0
    assert metrics["device"] == "cpu"


def test_every_search_report_and_trials_parquet_carry_the_cost(tmp_path):
    from ofasearch.search.plan import plan
    from ofasearch.search.recorder import ResultTables
    from ofasearch.training.job import fit_for_search

    config = parse_config(CONFIG)
    reports: list[dict] = []
    fit_for_search(config, load_splits(config.data), None, reports.append)
    assert len(reports) == 2
    assert all(set(COST_COLUMNS) <= set(r) for r in reports)
    assert reports[0]["params"] == sum(p.numel() for p in timm.create_model(**_student_args()).parameters())

    space = plan(parse_spec(SPEC))
    tables = ResultTables(tmp_path, space)
    tables.on_result("t1", space.defaults(0), {**reports[0], "epoch": 1})
    row = pq.read_table(tmp_path / "trials.parquet").to_pylist()[0]
    assert {k: row[k] for k in COST_COLUMNS} == {k: reports[0][k] for k in COST_COLUMNS}


def _student_args() -> dict:
    return {"model_name": STUDENT["model"], "num_classes": 10, "in_chans": 1, "img_size": 16, **STUDENT["kwargs"]}

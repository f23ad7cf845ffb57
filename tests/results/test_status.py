"""``ofasearch status DIR``: the phase and the trials table, read from the folder alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import yaml

from ofasearch.cli import main
from ofasearch.results.status import status_lines
from ofasearch.results.summary import summary_lines

HEAVY = ("torch", "timm", "ray", "ray.tune")


def test_status_prints_the_phase_then_the_trials_table(digits_search, capsys):
    assert main(["status", str(digits_search)]) == 0
    printed = capsys.readouterr().out.splitlines()
    lines, rows = status_lines(digits_search)
    assert printed == lines
    state = json.loads((digits_search / "state.json").read_text())
    phase = state["phase"]
    assert lines[0] == f"{digits_search.resolve()}: phase {phase}"
    trials = pq.read_table(digits_search / "trials.parquet").to_pylist()
    assert sorted(r["trial_id"] for r in rows) == sorted(r["trial_id"] for r in trials)
    spec = yaml.safe_load((digits_search / "spec.yaml").read_text())
    searched = ["distill.stages", "distill.temperature", "distill.eps", "optim.lr"]
    assert lines[1:] == summary_lines(trials, spec["optim"]["epochs"], searched, state["val_images"])
    assert any(line.startswith("best: ") for line in printed)


def test_status_loads_neither_torch_nor_timm_nor_ray_and_starts_no_thread(digits_search):
    """No native thread either: Arrow's thread pools, alive at exit, once aborted a finished
    ``status`` with exit -6 in CI ("terminate called without an active exception")."""
    code = (
        "import os, sys\n"
        "import numpy, scipy.stats, pyarrow.parquet\n"  # their own threads: OpenBLAS, jemalloc
        "from ofasearch.cli import main\n"
        "before = len(os.listdir('/proc/self/task'))\n"
        f"rc = main(['status', {str(digits_search)!r}])\n"
        f"print('rc', rc, 'loaded', [m for m in {HEAVY!r} if m in sys.modules],"
        " 'new threads', len(os.listdir('/proc/self/task')) - before)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best: " in done.stdout
    assert done.stdout.splitlines()[-1] == "rc 0 loaded [] new threads 0"


def test_status_of_a_folder_without_a_spec_exits_2(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path}: not an ofasearch results folder (no spec.yaml)"


def _folder(root, name, rows):
    from ofasearch.config import parse_spec
    from ofasearch.results.tables import TRIAL_COLUMNS, TRIALS_FILE, write_table
    from tests.helpers.specs import SPEC

    folder = root / name
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(parse_spec({**SPEC, "name": name}, check_models=False).to_yaml())
    (folder / "state.json").write_text(json.dumps({"phase": "done", "val_images": 300}))
    write_table(rows, TRIAL_COLUMNS, folder / TRIALS_FILE)
    return folder


def test_status_as_json_and_csv_gives_one_record_per_trial(tmp_path, trial_rows, capsys):
    import csv
    import io

    folder = _folder(tmp_path, "one", trial_rows)
    assert main(["status", str(folder), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [r["trial_id"] for r in records] == [r["trial_id"] for r in trial_rows]
    stop = next(r for r in records if r["trial_id"] == "vit_stop")
    assert (stop["status"], stop["epochs"], stop["val_acc"]) == ("stopped", 1, 0.70)
    assert main(["status", str(folder), "--format", "csv"]) == 0
    table = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert [r["trial_id"] for r in table] == [r["trial_id"] for r in trial_rows]
    assert {"trial_id", "role", "status", "val_acc", "epochs", "distill.eps"} <= set(table[0])


def test_status_of_a_storage_root_lists_its_searches(tmp_path, trial_rows, capsys):
    _folder(tmp_path, "first", trial_rows)
    _folder(tmp_path, "second", [r for r in trial_rows if r["role"] == "baseline"])
    (tmp_path / "not-a-search").mkdir()
    assert main(["status", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{tmp_path.resolve()}: 2 search(es)"
    first = next(line for line in lines if line.startswith("first "))
    assert first.split()[1:7] == ["done", "6", "of", "6", "mix_tie", "0.6300"]
    second = next(line for line in lines if line.startswith("second "))
    assert second.split()[1:7] == ["done", "0", "of", "6", "base_3", "0.5300"], "no search trial: the best baseline"
    assert main(["status", str(tmp_path), "--format", "json"]) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["best_trial"], r["best_val_acc"]) for r in records] == [
        ("first", "mix_tie", 0.63),
        ("second", "base_3", 0.53),
    ]

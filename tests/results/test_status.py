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
    assert any(line.startswith("best full-budget search trial: ") for line in printed)


def test_status_loads_neither_torch_nor_timm_nor_ray(digits_search):
    code = (
        "import sys\n"
        "from ofasearch.cli import main\n"
        f"rc = main(['status', {str(digits_search)!r}])\n"
        f"print('rc', rc, 'loaded', [m for m in {HEAVY!r} if m in sys.modules])\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "best full-budget search trial" in done.stdout
    assert done.stdout.splitlines()[-1] == "rc 0 loaded []"


def test_status_of_a_folder_without_a_spec_exits_2(tmp_path, capsys):
    assert main(["status", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path}: not an ofasearch results folder (no spec.yaml)"

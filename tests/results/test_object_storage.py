"""``status``, ``export`` and ``report`` of a results folder on an object store (a real S3 API:
moto's server on loopback) give what they give for the same folder on disk."""

from __future__ import annotations

import json
import uuid

import yaml

from ofasearch.cli import main
from ofasearch.results.status import status_lines
from ofasearch.results.tables import EPOCH_COLUMNS, TRIAL_COLUMNS, write_table
from ofasearch.utils.storage import as_location
from tests.helpers.specs import SPEC


def _fill(folder, trial_rows) -> None:
    """A finished search's files, as the search writes them (through the same functions)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump({**SPEC, "name": "digits-search"}))
    (folder / "state.json").write_text(json.dumps({"phase": "done", "val_images": 360}))
    write_table(trial_rows, TRIAL_COLUMNS, folder / "trials.parquet")
    epochs = [
        {"trial_id": r["trial_id"], "role": r["role"], "epoch": e, "val_acc": r["val_acc"] * e / r["epochs"]}
        for r in trial_rows
        for e in range(1, r["epochs"] + 1)
    ]
    write_table(epochs, EPOCH_COLUMNS, folder / "epochs.parquet")


def test_status_export_and_report_read_an_s3_folder(trial_rows, s3_bucket, tmp_path, capsys):
    local = tmp_path / "digits-search"
    remote = as_location(f"{s3_bucket}/{uuid.uuid4().hex[:8]}/digits-search")
    _fill(local, trial_rows)
    _fill(remote, trial_rows)

    lines, rows = status_lines(str(remote))
    local_lines, local_rows = status_lines(local)
    assert lines[0] == f"{remote}: phase done"
    assert lines[1:] == local_lines[1:]
    assert rows == local_rows
    assert any(line.startswith("best: ") for line in lines), lines
    assert main(["status", str(remote)]) == 0
    assert capsys.readouterr().out.splitlines() == lines

    assert main(["export", str(remote), "--rank", "1"]) == 0
    assert f"-> {remote}/rank1.yaml" in capsys.readouterr().out
    assert main(["export", str(local), "--rank", "1"]) == 0
    body = [line for line in (remote / "rank1.yaml").read_text().splitlines() if not line.startswith("#")]
    assert body == [line for line in (local / "rank1.yaml").read_text().splitlines() if not line.startswith("#")]

    assert main(["report", str(remote)]) == 0
    page = (remote / "report.html").read_text()
    assert "<html" in page
    assert "data:image/png;base64," in page
    assert (remote / "report" / "learning_curves.png").read_bytes().startswith(b"\x89PNG")


def test_a_missing_s3_folder_is_one_error_line(s3_bucket, capsys):
    where = f"{s3_bucket}/nothing-here"
    assert main(["status", where]) == 2
    assert capsys.readouterr().err.strip() == f"error: {where}: not an ofasearch results folder (no spec.yaml)"

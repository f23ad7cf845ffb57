"""``report.html`` from a real finished digits search: self-contained, numbers that match the tables,
and every embedded plot decoding in a real browser (headless Chromium)."""

from __future__ import annotations

import base64
import html
import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from ofasearch.config import parse_spec
from ofasearch.errors import SpecError
from ofasearch.results.report import write_report
from tests.logcapture import log_lines
from tests.specs import SPEC

FOLDER_FILES = ("spec.yaml", "state.json", "trials.parquet", "epochs.parquet", "best.yaml")
IMG = re.compile(r'<img src="([^"]*)" alt="[^"]*" data-plot="([a-z_]+)">')


@pytest.fixture(scope="module")
def report(digits_search: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The report of a copy of the shared search folder (the fixture's folder stays untouched)."""
    folder = tmp_path_factory.mktemp("report") / digits_search.name
    folder.mkdir()
    for name in FOLDER_FILES:
        shutil.copy2(digits_search / name, folder / name)
    start = time.perf_counter()
    with log_lines() as logged:
        path = write_report(folder, top_k=10)
    seconds = time.perf_counter() - start
    trials = pq.read_table(folder / "trials.parquet").to_pylist()
    return {
        "folder": folder,
        "path": path,
        "html": path.read_text(),
        "seconds": seconds,
        "log": logged,
        "trials": trials,
    }


def _rows(page: str) -> list[tuple[str, str]]:
    """(trial id, row html) of the top-k table, in order."""
    return re.findall(r'<tr(?: class="partial")? data-trial="([^"]+)">(.*?)</tr>', page)


def _search(trials: list[dict]) -> list[dict]:
    return [t for t in trials if t["role"] == "search"]


def _max_epochs(folder: Path) -> int:
    return int(yaml.safe_load((folder / "spec.yaml").read_text())["optim"]["epochs"])


def test_report_is_self_contained_with_one_png_per_plot(report):
    page, folder = report["html"], report["folder"]
    assert report["path"] == folder / "report.html" and report["path"].is_file()
    assert report["seconds"] < 10, f"report took {report['seconds']:.1f} s"
    assert any("report.html" in line for line in report["log"])
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.IGNORECASE)
    assert "http://" not in page and "https://" not in page
    assert "<link" not in page and "<style>" in page
    images = IMG.findall(page)
    assert len(images) == page.count("<img"), "every image is a data-plot PNG"
    trials = report["trials"]
    expected = {"learning_curves", "searched_values"}  # digits searches 4 values; trials finished
    if "Not enough to estimate importances" not in page:
        expected.add("importance")
    if any(t.get("latency_ms_b1") is not None for t in trials):
        expected.add("pareto")
    else:
        assert "no cost columns" in page
    assert sorted(name for _, name in images) == sorted(expected)
    assert sorted(p.stem for p in (folder / "report").glob("*.png")) == sorted(expected)
    for src, name in images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png.startswith(b"\x89PNG\r\n\x1a\n")
        assert png == (folder / "report" / f"{name}.png").read_bytes()


def test_header_names_the_search_and_counts_trials(report):
    page, trials = report["html"], report["trials"]
    assert "ofasearch report: digits-search" in page
    search = _search(trials)
    counts: dict[str, int] = {}
    for t in search:
        counts[t["status"]] = counts.get(t["status"], 0) + 1
    line = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    assert f"{len(search)} of {SPEC['search']['num_samples']}: {line}" in page
    assert "8: 8 completed" in page  # the baselines: student alone, KD, DKD, DIST for each of the two pairs
    assert "of trial training in total" in page
    for pair in SPEC["pairs"]:
        assert html.escape(pair["student"]["model"]) in page


def test_top_k_lists_best_first_with_gains_recomputed_from_the_table(report):
    page, trials, folder = report["html"], report["trials"], report["folder"]
    rows = _rows(page)
    best_line = (folder / "best.yaml").read_text().splitlines()[0]
    assert rows and rows[0][0] in best_line
    max_epochs = _max_epochs(folder)
    search = _search(trials)

    def full(t):
        return t["status"] == "completed" and t["epochs"] >= max_epochs

    expected = sorted(search, key=lambda t: (not full(t), -t["val_acc"], t["seconds"]))
    assert [r[0] for r in rows] == [t["trial_id"] for t in expected][:10]
    by_id = {t["trial_id"]: t for t in trials}
    for trial_id, row in rows:
        t = by_id[trial_id]
        assert f"{t['val_acc']:.4f}" in row
        if not full(t):  # an early-stopped score is never compared with a full-budget baseline
            assert "data-vs-" not in row and " pts vs " not in row
            if t["status"] == "stopped":
                assert f"stopped after {t['epochs']} of {max_epochs} epochs: not compared" in row
            continue
        for method, name in (("none", "alone"), ("kd", "KD"), ("dkd", "DKD"), ("dist", "DIST")):
            pair = (t["teacher"], t["student"])
            base = [
                b
                for b in trials
                if (b["role"], b["method"], b["status"]) == ("baseline", method, "completed")
                and (b["teacher"], b["student"]) == pair
            ]
            assert base, f"the digits search has a {method} baseline for every pair"
            gain = t["val_acc"] - base[0]["val_acc"]
            shown = float(re.search(rf'data-vs-{method}="([-0-9.]+)"', row).group(1))
            assert shown == pytest.approx(gain, abs=1e-6)
            assert f"{gain * 100:+.1f} {'pts ' if method == 'none' else ''}vs {name}" in row
        pair_baselines = [
            b
            for b in trials
            if (b["role"], b["status"]) == ("baseline", "completed") and (b["teacher"], b["student"]) == pair
        ]
        strongest = max(pair_baselines, key=lambda b: b["val_acc"])["method"]  # one seed: no confirmation here
        assert f'data-strongest="{strongest}"' in row
        for path in ("distill.eps", "distill.temperature", "optim.lr"):
            assert f"{t[path]:.4g}" in row
        assert html.escape(str(t["distill.stages"])) in row


def test_teacher_accuracies_per_pair(report):
    page, folder = report["html"], report["folder"]
    teachers = json.loads((folder / "state.json").read_text())["teachers"]
    assert len(teachers) == len(SPEC["pairs"])
    pair_rows = re.findall(r'<tr data-pair="(\d+)">(.*?)</tr>', page)
    assert [int(i) for i, _ in pair_rows] == [1, 2]
    for (_, row), teacher in zip(pair_rows, teachers, strict=True):
        info = teacher["info"]
        assert f'teacher-val">{info["val_acc"]:.4f}<' in row
        assert f'teacher-test">{info["test_acc"]:.4f}<' in row


def test_importance_is_plotted_when_the_trials_allow_it(report):
    page, trials = report["html"], report["trials"]
    finished = [t for t in _search(trials) if t["status"] in ("completed", "stopped")]
    varies = any(len({repr(t[p]) for t in finished}) > 1 for p in ("distill.eps", "optim.lr"))
    if len(finished) >= 2 and varies:
        assert 'data-plot="importance"' in page
        assert f"fANOVA over {len(finished)} finished search trials" in page
    else:
        assert "Not enough to estimate importances" in page and 'data-plot="importance"' not in page


def _dump_dom(path: Path, profile: Path) -> str:
    cmd = [
        shutil.which("chromium") or "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={profile}",
        "--dump-dom",
        "--virtual-time-budget=10000",
        path.resolve().as_uri(),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def _body_counts(dom: str) -> tuple[int, int]:
    body = re.search(r"<body([^>]*)>", dom)
    assert body, dom[:500]
    plots = re.search(r'data-plots="(\d+)"', body.group(1))
    expected = re.search(r'data-plots-expected="(\d+)"', body.group(1))
    assert plots and expected, f"the load script did not run: {body.group(0)}"
    return int(plots.group(1)), int(expected.group(1))


@pytest.mark.skipif(shutil.which("chromium") is None, reason="chromium not installed (make browser)")
def test_every_plot_decodes_in_chromium(report, tmp_path):
    plots, expected = _body_counts(_dump_dom(report["path"], tmp_path / "profile"))
    assert expected == report["html"].count("<img") > 0
    assert plots == expected
    # control: the same page with one PNG corrupted must count one plot less
    broken = tmp_path / "broken.html"
    src = IMG.search(report["html"]).group(1)
    broken.write_text(report["html"].replace(src, "data:image/png;base64,iVBORw0KGgoAAAAN", 1))
    plots, expected = _body_counts(_dump_dom(broken, tmp_path / "profile"))
    assert plots == expected - 1


def test_bad_folders_give_one_clear_line(tmp_path):
    with pytest.raises(SpecError) as exc:
        write_report(tmp_path)
    assert exc.value.problems == [f"{tmp_path}: not an ofasearch results folder (no spec.yaml)"]
    (tmp_path / "spec.yaml").write_text(parse_spec(SPEC).to_yaml())
    with pytest.raises(SpecError) as exc:
        write_report(tmp_path)
    assert len(exc.value.problems) == 1 and "no trials yet" in exc.value.problems[0]
    assert not (tmp_path / "report.html").exists()

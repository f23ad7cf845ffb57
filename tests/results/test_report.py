"""``report.html`` from a real finished digits search: self-contained, numbers that match the tables,
and every embedded plot decoding in a real browser (headless Chromium). The decision among
confirmed candidates is checked on a hand-made folder where a baseline beats every searched config
over three seeds (the shared digits search trains each candidate on one seed only)."""

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
from scipy.stats import t as student_t

from ofasearch.config import parse_spec
from ofasearch.errors import SpecError
from ofasearch.results.ranking import best_trial, ranked_trials
from ofasearch.results.report import plots, write_report
from ofasearch.results.report.data import decision_candidates, load
from ofasearch.results.seeds import mean_interval
from ofasearch.results.tables import EPOCH_COLUMNS, EPOCHS_FILE, TRIAL_COLUMNS, TRIALS_FILE, write_table
from ofasearch.utils.storage import as_location
from tests.helpers.logcapture import log_lines
from tests.helpers.specs import SPEC

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


def _figure_lines(fig, gid: str) -> list:
    return [line for ax in fig.axes for line in ax.get_lines() if line.get_gid() == gid]


def _rows(page: str) -> list[tuple[str, str]]:
    """(trial id, row html) of the top-k table, in order."""
    return re.findall(r'<tr(?: class="partial")? data-trial="([^"]+)">(.*?)</tr>', page)


def _search(trials: list[dict]) -> list[dict]:
    return [t for t in trials if t["role"] == "search"]


def _max_epochs(folder: Path) -> int:
    return int(yaml.safe_load((folder / "spec.yaml").read_text())["optim"]["epochs"])


def test_report_is_self_contained_with_one_png_per_plot(report):
    page, folder = report["html"], report["folder"]
    assert report["path"] == folder / "report.html"
    assert report["path"].is_file()
    assert report["seconds"] < 10, f"report took {report['seconds']:.1f} s"
    assert any("report.html" in line for line in report["log"])
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.IGNORECASE)
    assert "http://" not in page
    assert "https://" not in page
    assert "<link" not in page
    assert "<style>" in page
    images = IMG.findall(page)
    assert len(images) == page.count("<img"), "every image is a data-plot PNG"
    trials = report["trials"]
    expected = {"decision", "learning_curves", "searched_values"}  # digits searches 4 values; trials finished
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
    max_epochs = _max_epochs(folder)
    winner = best_trial(trials, max_epochs)  # searched config or baseline
    best_line = (folder / "best.yaml").read_text().splitlines()[0]
    assert re.search(rf"\b{re.escape(winner['trial_id'])}\b", best_line), best_line
    marked = [trial_id for trial_id, row in rows if "\u2605 best.yaml" in row]
    assert marked == ([winner["trial_id"]] if winner["role"] == "search" else [])  # the table lists searches only
    if winner["role"] == "search":
        assert rows[0][0] == winner["trial_id"]
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
            assert "data-vs-" not in row
            assert " pts vs " not in row
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
        assert "Not enough to estimate importances" in page
        assert 'data-plot="importance"' not in page


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
    assert plots, f"the load script did not run: {body.group(0)}"
    assert expected, f"the load script did not run: {body.group(0)}"
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
    assert len(exc.value.problems) == 1
    assert "no trials yet" in exc.value.problems[0]
    assert not (tmp_path / "report.html").exists()


def test_decision_without_confirmation_shows_each_full_budget_candidate_once(report):
    """The digits search confirms nothing: its decision figure is every full-budget candidate's
    single run, baselines included, and says that there is no interval over seeds."""
    page, trials, folder = report["html"], report["trials"], report["folder"]
    candidates = ranked_trials(trials, _max_epochs(folder))
    assert {c["role"] for c in candidates} == {"search", "baseline"}
    assert f'data-candidates="{min(len(candidates), 20)}"' in page
    assert "No candidate was trained on several seeds, so there is no interval over seeds" in page
    winner = best_trial(trials, _max_epochs(folder))
    assert f'<tr data-winner="{winner["trial_id"]}">' in page
    assert ("a baseline won" in page) == (winner["role"] == "baseline")
    assert "OFA trial" not in page
    assert "best OFA" not in page


def test_learning_curves_colour_each_method_and_composition_apart(report):
    data = load(report["folder"])
    fig = plots.learning_curves_figure(data)
    assert [ax.get_title() for ax in fig.axes] == data.tags  # one panel per pair
    colours: dict[tuple[str, str], set[str]] = {}
    for row in data.trials:
        if row["role"] == "confirm":
            continue
        (line,) = _figure_lines(fig, row["trial_id"])
        assert line.axes is fig.axes[data.pair_index(row)]
        kind = ("baseline", row["method"]) if row["role"] == "baseline" else ("search", "")
        colours.setdefault(kind, set()).add(line.get_color())
    base = [colours[("baseline", m)] for m in ("none", "kd", "dkd", "dist")]
    assert all(len(c) == 1 for c in base)
    assert len(set.union(*base)) == 4  # one colour per method
    assert not colours[("search", "")] & set.union(*base)  # a searched config never looks like a baseline
    legend = {text.get_text() for text in fig.legends[0].get_texts()}
    assert {"baseline: DIST", "baseline: student alone"} <= legend
    assert any(label.startswith("searched: ") for label in legend)


VIT_LABEL = "vit_tiny_patch16_224(depth=4,embed_dim=48,num_heads=2,patch_size=4)"
MIXER_LABEL = "MlpMixer(embed_dim=48,num_blocks=2,patch_size=4)"
VAL_IMAGES = 360
# trial id -> (student, role, method, composition, accuracy per seed); one seed: not confirmed
CONFIRMED = {
    "b_none": (VIT_LABEL, "baseline", "none", "none", [0.50, 0.52, 0.51]),
    "b_kd": (VIT_LABEL, "baseline", "kd", "kd", [0.60, 0.62, 0.61]),
    "b_dkd": (VIT_LABEL, "baseline", "dkd", "dkd", [0.63, 0.60, 0.62]),
    "b_dist": (VIT_LABEL, "baseline", "dist", "dist", [0.74, 0.76, 0.75]),
    "s_ofa": (VIT_LABEL, "search", "ofa", "ofa + ofa@3,4", [0.70, 0.73, 0.72]),
    "s_kd": (VIT_LABEL, "search", "ofa", "kd + ofa@4", [0.66, 0.69]),
    "s_lucky": (VIT_LABEL, "search", "ofa", "ofa + ofa@1,2,3,4", [0.90]),
    "m_none": (MIXER_LABEL, "baseline", "none", "none", [0.55, 0.56, 0.54]),
    "m_ofa": (MIXER_LABEL, "search", "ofa", "ofa + ofa@4", [0.58]),
}


def _trial(trial_id: str, seed: int, acc: float, *, epochs: int = 3, status: str = "completed", **extra) -> dict:
    student, role, method, composition, _ = CONFIRMED.get(trial_id) or (VIT_LABEL, "search", "ofa", "ofa + ofa@4", [])
    return {
        "trial_id": trial_id,
        "role": role,
        "status": status,
        "teacher": "resnet10t",
        "student": student,
        "method": method,
        "composition": composition,
        "val_acc": acc,
        "val_acc_last": acc,
        "epochs": epochs,
        "seconds": 10.0,
        "seed": seed,
        "config": f"name: {trial_id}\n",
        **extra,
    }


def _hand_rows(confirm: bool = True) -> list[dict]:
    rows = [_trial(tid, 0, accs[0]) for tid, (*_, accs) in CONFIRMED.items()]
    rows.append(_trial("s_stop", 0, 0.40, epochs=1, status="stopped"))
    for tid, (*_, accs) in CONFIRMED.items():
        rows += [
            {**_trial(tid, seed, acc), "trial_id": f"{tid}_s{seed}", "role": "confirm", "confirms": tid}
            for seed, acc in enumerate(accs[1:] if confirm else [], 1)
        ]
    return rows


def _write_folder(folder: Path, rows: list[dict]) -> Path:
    folder.mkdir()
    (folder / "spec.yaml").write_text(parse_spec(SPEC).to_yaml())
    (folder / "state.json").write_text(json.dumps({"phase": "done", "val_images": VAL_IMAGES, "teachers": []}))
    epochs = [
        {"trial_id": r["trial_id"], "role": r["role"], "epoch": e, "val_acc": r["val_acc"] * e / r["epochs"]}
        for r in rows
        for e in range(1, r["epochs"] + 1)
    ]
    write_table(rows, TRIAL_COLUMNS, as_location(folder / TRIALS_FILE))
    write_table(epochs, EPOCH_COLUMNS, as_location(folder / EPOCHS_FILE))
    return folder


@pytest.fixture
def baseline_wins(tmp_path: Path) -> Path:
    """A folder whose DIST baseline beats every searched config over three seeds, and whose
    unconfirmed searched config had one lucky run above them all."""
    return _write_folder(tmp_path / "baseline-wins", _hand_rows())


def _half_width(accs: list[float]) -> float | None:
    n = len(accs)
    if n < 2:
        return None
    mean = sum(accs) / n
    std = (sum((a - mean) ** 2 for a in accs) / (n - 1)) ** 0.5
    return float(student_t.ppf(0.975, n - 1)) * std / n**0.5


def test_mean_interval_is_the_t_interval_over_seeds():
    assert mean_interval([0.7]) is None
    assert mean_interval([0.74, 0.76, 0.75]) == pytest.approx(_half_width([0.74, 0.76, 0.75]))
    assert mean_interval([0.74, 0.76, 0.75]) == pytest.approx(4.302653 * 0.01 / 3**0.5, rel=1e-6)


def test_decision_figure_shows_every_confirmed_candidate_and_a_baseline_winner(baseline_wins):
    data = load(baseline_wins)
    candidates, total = decision_candidates(data)
    confirmed = {tid: v for tid, v in CONFIRMED.items() if len(v[-1]) >= 2}
    by_mean = sorted(confirmed, key=lambda tid: -sum(confirmed[tid][-1]) / len(confirmed[tid][-1]))
    assert [c.row["trial_id"] for c in candidates] == by_mean
    assert total == len(confirmed)
    assert [c.winner for c in candidates] == [True] + [False] * (len(by_mean) - 1)
    assert candidates[0].row["role"] == "baseline"
    assert candidates[0].label == "P1 \u00b7 dist (baseline)"

    fig = plots.decision_figure(data, candidates)
    (ax,) = fig.axes
    ticks = [t.get_text() for t in ax.get_yticklabels()]
    assert ticks[0] == "1. \u2605 winner: P1 \u00b7 dist (baseline)  (n=3)"
    assert ticks[1] == "2. P1 \u00b7 ofa + ofa@3,4  (n=3)"
    assert "kd + ofa@4  (n=2)" in ticks[2]
    assert not any("1,2,3,4" in t for t in ticks)  # one lucky run is not a confirmed candidate
    dots = _figure_lines(fig, "seed")
    assert [list(d.get_xdata()) for d in dots] == [confirmed[tid][-1] for tid in by_mean]
    assert sum(len(d.get_xdata()) for d in dots) == 20
    means = _figure_lines(fig, "mean")
    assert [m.get_xdata()[0] for m in means] == pytest.approx([c.mean for c in candidates])
    assert [m.get_marker() for m in means] == ["*"] + ["D"] * (len(means) - 1)
    assert len(ax.containers) == len(candidates)  # one interval each
    for bar, tid in zip(ax.containers, by_mean, strict=True):
        (low, _), (high, _) = bar.lines[2][0].get_segments()[0]
        assert (high - low) / 2 == pytest.approx(_half_width(confirmed[tid][-1]))
    legend = [text.get_text() for text in fig.legends[0].get_texts()]
    assert "winner: handed over as best.yaml" in legend


def test_report_names_a_baseline_winner_and_states_the_noise(baseline_wins):
    page = write_report(baseline_wins).read_text()
    assert 'data-plot="decision"' in page
    assert (baseline_wins / "report" / "decision.png").is_file()
    half = _half_width(CONFIRMED["b_dist"][-1])
    caption = re.search(r'<p class="caption" data-candidates="7">(.*?)</p>', page).group(1)
    assert "7 candidates confirmed on 2 to 3 seeds each" in caption
    assert f"on {VAL_IMAGES} validation images" in caption
    assert "95% t-interval of the mean over those seeds" in caption
    assert f"Winner, handed over as best.yaml: P1 \u00b7 dist (baseline), mean 0.7500 \u00b1 {half:.4f}" in caption
    assert "over 3 seeds. A baseline won: no searched config beat it." in caption
    winner = re.search(r'<tr data-winner="b_dist"><th>winner \(best.yaml\)</th><td>(.*?)</td></tr>', page).group(1)
    assert winner.startswith("a baseline won")
    assert "DIST baseline" in winner
    assert "vs alone" in winner
    assert "vs DIST" not in winner  # never compared with itself
    assert "<th>best searched config</th><td>searched config <code>ofa + ofa@3,4</code>" in page
    # the top table lists searched configs only: confirmed first, by mean; none carries the winner's star
    rows = _rows(page)
    assert [tid for tid, _ in rows] == ["s_ofa", "s_kd", "s_lucky", "m_ofa", "s_stop"]
    assert not any("\u2605" in row for _, row in rows)
    assert "<td>ofa + ofa@3,4</td>" in rows[0][1]
    assert "0.7167 ± 0.0153 (3 seeds)" in rows[0][1]
    best_search = re.findall(r'<td class="num best-search">([^<]*)</td>', page)
    assert best_search == ["0.7167", "0.5800"]
    assert "OFA trial" not in page
    assert "best OFA" not in page


def test_unconfirmed_candidates_each_show_their_single_run(tmp_path):
    data = load(_write_folder(tmp_path / "one-seed", _hand_rows(confirm=False)))
    candidates, total = decision_candidates(data)
    assert total == len(CONFIRMED) == len(candidates)  # every full-budget candidate, the stopped one left out
    assert candidates[0].row["trial_id"] == "s_lucky"
    assert candidates[0].winner
    assert all(c.seeds == 1 and c.half_width is None for c in candidates)
    fig = plots.decision_figure(data, candidates)
    assert not fig.axes[0].containers  # no interval over seeds
    assert "95% t-interval of the mean" not in {text.get_text() for text in fig.legends[0].get_texts()}
    shown, total = decision_candidates(data, limit=3)
    assert [c.row["trial_id"] for c in shown] == ["s_lucky", "b_dist", "s_ofa"]
    assert total == len(CONFIRMED)
    page = write_report(data.folder).read_text()
    floor = 1.959964 * (0.9 * 0.1 / VAL_IMAGES) ** 0.5  # the lucky run's binomial 95 % half-width
    assert "No candidate was trained on several seeds" in page
    assert f"on these images alone is uncertain by about \u00b1{floor:.4f} (binomial 95%)" in page
    assert "Winner, handed over as best.yaml: P1 \u00b7 ofa + ofa@1,2,3,4, 0.9000 on its one run." in page
    assert [tid for tid, row in _rows(page) if "\u2605 best.yaml" in row] == ["s_lucky"]


def test_learning_curves_colour_baselines_and_compositions_apart(baseline_wins):
    data = load(baseline_wins)
    fig = plots.learning_curves_figure(data)
    colour = {line.get_gid(): line.get_color() for ax in fig.axes for line in ax.get_lines() if line.get_gid()}
    assert not any(gid.endswith(("_s1", "_s2")) for gid in colour)  # confirmation reruns are not drawn
    baselines = [colour[t] for t in ("b_none", "b_kd", "b_dkd", "b_dist")]
    assert len(set(baselines)) == 4
    assert colour["b_dist"] != colour["s_ofa"] != colour["s_kd"]
    assert colour["b_none"] == colour["m_none"]  # a method keeps its colour across pairs
    legend = {text.get_text() for text in fig.legends[0].get_texts()}
    assert {"baseline: DIST", "searched: ofa + ofa@3,4", "searched: kd + ofa@4"} <= legend

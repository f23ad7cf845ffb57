"""The plain-text trials table of ``ofasearch run``'s end and ``status``."""

from ofasearch.results.summary import gain_lines, summary_lines

SEARCHED = ["distill.stages", "distill.eps", "optim.lr"]


def test_baselines_first_then_best_first_with_the_gains_of_the_best(trial_rows):
    lines = summary_lines(trial_rows, 3, SEARCHED)
    assert lines[0].split() == [
        "trial",
        "role",
        "by",
        "status",
        "composition",
        "val_acc",
        "ep",
        "sec",
        "cache",
        "pair",
        "/",
        "values",
    ]
    assert set(lines[1]) == {"-"}
    assert len(lines[1]) == len(lines[0])
    ids = [line.split()[0] for line in lines[2:12]]
    assert ids[:4] == ["base_3", "base_2", "base_1", "base_0"]
    # full-budget trials first, best first; the stopped trial's higher score never ranks above them
    assert set(ids[4:6]) == {"mix_best", "mix_tie"}
    assert ids[6:10] == ["vit_done", "vit_nan", "vit_stop", "mix_err"]
    row = next(line for line in lines if line.split()[0] == "vit_stop")
    assert row.split()[1:7] == ["search", "-", "stopped", "ofa", "0.7000", "1"]
    assert row.endswith("stages=3,4 eps=1.2 lr=0.002")
    base = next(line for line in lines if line.split()[0] == "base_0")
    assert "eps=" not in base
    assert " no " in base
    assert lines[-6:] == [
        "(1 trial(s) stopped early by ASHA: their val_acc is after 'ep' of 3 epochs, listed after the full-budget "
        "ones and never compared with a baseline)",
        "",
        "best: ofa (search trial mix_tie) val_acc 0.6300 (1 seed): best.yaml",
        "  vs student alone: 0.5200 -> gain +0.1100 (1 seed, no interval: validation size unknown): noise not measured",
        "  vs vanilla KD (strongest baseline): 0.5300 -> gain +0.1000 (1 seed, no interval: validation size unknown): "
        "noise not measured",
        "trials: 7 completed, 1 diverged, 1 error, 1 stopped",
    ]


def test_no_best_line_without_a_full_budget_trial(trial_rows):
    lines = summary_lines(trial_rows, 4, SEARCHED)
    assert not any(line.startswith("best") for line in lines)
    assert lines[-1].startswith("trials: ")
    assert summary_lines([], 3, SEARCHED) == ["no trials yet"]


def test_one_seed_gain_has_the_val_set_interval(trial_rows):
    """p = 0.63 vs q = 0.52 on 500 images: half-width 1.96 * sqrt((p(1-p) + q(1-q)) / 500) = 0.0609."""
    lines = gain_lines(trial_rows, 3, val_images=500)
    assert lines[1] == "best: ofa (search trial mix_tie) val_acc 0.6300 (1 seed, 500 val images): best.yaml"
    assert lines[2] == (
        "  vs student alone: 0.5200 -> gain +0.1100 [95% CI +0.0491, +0.1709; 1 seed, val-set noise only]: "
        "better than student alone"
    )


def _confirm(trial_id, confirms, seed, val_acc, method="ofa"):
    return {**_base_row(trial_id, method), "role": "confirm", "confirms": confirms, "seed": seed, "val_acc": val_acc}


def _base_row(trial_id, method):
    return {
        "trial_id": trial_id,
        "status": "completed",
        "teacher": "resnet10t",
        "student": "s",
        "method": method,
        "epochs": 3,
        "seconds": 1.0,
        "proposed_by": None,
    }


def test_confirmed_gains_are_paired_t_intervals_over_seeds():
    """Hand-computed: differences (0.10, 0.07, 0.13) over 3 seeds: mean 0.10, sd 0.03, t(0.975, 2) = 4.3027,
    half-width 4.3027 * 0.03 / sqrt(3) = 0.0745; vs KD (-0.01, 0.02, -0.02): mean -0.0033, half-width 0.0517."""
    rows = [
        {**_base_row("best", "ofa"), "role": "search", "seed": 0, "val_acc": 0.60},
        {**_base_row("lucky", "ofa"), "role": "search", "seed": 0, "val_acc": 0.70},
        {**_base_row("alone", "none"), "role": "baseline", "seed": 0, "val_acc": 0.50},
        {**_base_row("kd", "kd"), "role": "baseline", "seed": 0, "val_acc": 0.61},
        _confirm("c1", "best", 1, 0.62),
        _confirm("c2", "best", 2, 0.64),
        _confirm("c3", "lucky", 1, 0.50),
        _confirm("c4", "lucky", 2, 0.52),
        _confirm("c5", "alone", 1, 0.55, "none"),
        _confirm("c6", "alone", 2, 0.51, "none"),
        _confirm("c7", "kd", 1, 0.60, "kd"),
        _confirm("c8", "kd", 2, 0.66, "kd"),
    ]
    lines = gain_lines(rows, 3, val_images=500)
    # KD's mean over its seeds (0.6233) is above the best searched config's (0.6200): KD is handed over
    assert lines[1] == (
        "best: kd (baseline kd) val_acc 0.6233 ± 0.0321 (mean ± std of 3 seeds, 500 val images): best.yaml"
    )
    assert lines[2] == (
        "best searched composition: ofa (search trial best) val_acc 0.6200 ± 0.0200 (mean ± std of 3 seeds, "
        "500 val images)"
    )
    assert lines[3] == (
        "  vs student alone: 0.5200 -> gain +0.1000 [95% CI +0.0255, +0.1745; 3 paired seeds]: "
        "better than student alone"
    )
    assert lines[4] == (
        "  vs vanilla KD (strongest baseline): 0.6233 -> gain -0.0033 [95% CI -0.0550, +0.0484; 3 paired seeds]: "
        "within noise"
    )


def test_every_baseline_is_compared_and_the_strongest_is_the_best_mean_over_seeds():
    """DIST wins on the search seed (0.66) but its mean over 3 seeds is 0.60; DKD's is 0.63, so DKD
    is the strongest baseline. Hand-computed gains: vs DKD (0.66-0.62, 0.70-0.64, 0.68-0.63) mean
    +0.05, sd 0.01, half-width 4.3027 * 0.01 / sqrt(3) = 0.0248."""
    rows = [
        {**_base_row("best", "ofa"), "role": "search", "seed": 0, "val_acc": 0.66},
        {**_base_row("alone", "none"), "role": "baseline", "seed": 0, "val_acc": 0.50},
        {**_base_row("kd", "kd"), "role": "baseline", "seed": 0, "val_acc": 0.55},
        {**_base_row("dkd", "dkd"), "role": "baseline", "seed": 0, "val_acc": 0.62},
        {**_base_row("dist", "dist"), "role": "baseline", "seed": 0, "val_acc": 0.66},
        _confirm("b1", "best", 1, 0.70),
        _confirm("b2", "best", 2, 0.68),
        *[
            _confirm(f"{m}{k}", m, k, acc, m)
            for m, accs in (("alone", (0.5, 0.5)), ("kd", (0.55, 0.55)))
            for k, acc in zip((1, 2), accs, strict=True)
        ],
        _confirm("dkd1", "dkd", 1, 0.64, "dkd"),
        _confirm("dkd2", "dkd", 2, 0.63, "dkd"),
        _confirm("dist1", "dist", 1, 0.57, "dist"),
        _confirm("dist2", "dist", 2, 0.57, "dist"),
    ]
    lines = gain_lines(rows, 3, val_images=500)
    names = [line.split(":")[0].strip() for line in lines[2:]]
    assert names == ["vs student alone", "vs vanilla KD", "vs DKD (strongest baseline)", "vs DIST"]
    assert lines[4] == (
        "  vs DKD (strongest baseline): 0.6300 -> gain +0.0500 [95% CI +0.0252, +0.0748; 3 paired seeds]: "
        "better than DKD"
    )

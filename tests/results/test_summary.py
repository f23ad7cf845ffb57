"""The plain-text trials table of ``ofasearch run``'s end and ``status``."""

from ofasearch.results.summary import summary_lines

SEARCHED = ["distill.stages", "distill.eps", "optim.lr"]


def test_baselines_first_then_best_first_with_the_gains_of_the_best(trial_rows):
    lines = summary_lines(trial_rows, 3, SEARCHED)
    assert lines[0].split() == [
        "trial",
        "role",
        "status",
        "method",
        "val_acc",
        "ep",
        "sec",
        "cache",
        "pair",
        "/",
        "values",
    ]
    assert set(lines[1]) == {"-"} and len(lines[1]) == len(lines[0])
    ids = [line.split()[0] for line in lines[2:12]]
    assert ids[:4] == ["base_3", "base_2", "base_1", "base_0"]
    assert ids[4:6] == ["vit_nan", "vit_stop"] and set(ids[6:8]) == {"mix_best", "mix_tie"}
    row = next(line for line in lines if line.split()[0] == "vit_stop")
    assert row.split()[1:6] == ["search", "stopped", "ofa", "0.7000", "1"]
    assert row.endswith("stages=3,4 eps=1.2 lr=0.002")
    base = next(line for line in lines if line.split()[0] == "base_0")
    assert "eps=" not in base and " no " in base
    assert lines[-5:] == [
        "",
        "best full-budget search trial: mix_tie val_acc 0.6300",
        "  vs student alone: 0.5200 -> gain +0.1100",
        "  vs vanilla KD: 0.5300 -> gain +0.1000",
        "trials: 7 completed, 1 diverged, 1 error, 1 stopped",
    ]


def test_no_best_line_without_a_full_budget_trial(trial_rows):
    lines = summary_lines(trial_rows, 4, SEARCHED)
    assert not any(line.startswith("best") for line in lines)
    assert lines[-1].startswith("trials: ")
    assert summary_lines([], 3, SEARCHED) == ["no trials yet"]

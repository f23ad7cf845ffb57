"""``resources.gpus_per_worker: auto``: how many trials share a GPU, from a measurement.

No GPU reaches these tests: the rules are checked on given figures, and the measurement itself
(probe trials started together on Ray, their summed img/s) runs on CPUs, where two one-thread
trials on two cores must train faster together than one alone."""

import pytest

from ofasearch.config import parse_spec
from ofasearch.search.packing import (
    MEMORY_SHARE,
    PACKING_LEVELS,
    Packing,
    ProbeRun,
    choose_trials_per_gpu,
    measure_level,
    packing_cap,
    unmeasured_packing,
    with_gpus,
)
from ofasearch.search.space import SearchSpace
from tests.helpers.specs import SPEC

GIB = 2**30


def test_the_cap_is_the_tighter_of_memory_and_cpus_per_gpu():
    one_trial = ProbeRun(1000.0, footprint_bytes=3 * GIB, device_bytes=80 * GIB)
    assert packing_cap(one_trial, cpus_per_gpu=16, cpus_per_worker=1) == (8, "CPUs per GPU")  # never past 8
    assert packing_cap(one_trial, cpus_per_gpu=6, cpus_per_worker=2) == (3, "CPUs per GPU")
    big = ProbeRun(1000.0, footprint_bytes=30 * GIB, device_bytes=80 * GIB)
    assert packing_cap(big, cpus_per_gpu=16, cpus_per_worker=1) == (int(MEMORY_SHARE * 80 / 30), "memory")
    huge = ProbeRun(1000.0, footprint_bytes=70 * GIB, device_bytes=80 * GIB)
    assert packing_cap(huge, cpus_per_gpu=16, cpus_per_worker=1) == (1, "memory")  # one trial always runs
    on_cpu = ProbeRun(1000.0)  # no device memory measured
    assert packing_cap(on_cpu, cpus_per_gpu=4, cpus_per_worker=1) == (4, "CPUs per GPU")


def test_the_walk_keeps_the_most_trials_that_still_raised_the_summed_rate():
    measured: list[int] = []

    def rates(table: dict[int, float]):
        measured.clear()

        def measure(level: int) -> float:
            measured.append(level)
            return table[level]

        return measure

    # a GPU with idle time: 2 and 4 trials raise the sum, 8 add under 10 %
    walk = choose_trials_per_gpu(rates({2: 1900, 4: 3500, 8: 3700}), cap=8, alone=1000)
    assert walk == (4, {1: 1000, 2: 1900, 4: 3500, 8: 3700})
    # no gain at 2 (the step already fills the GPU): one trial per GPU, 4 is never tried
    assert choose_trials_per_gpu(rates({2: 1050, 4: 4000}), cap=8, alone=1000)[0] == 1 and measured == [2]
    # a failed level (0: e.g. out of memory) ends the walk at the level before
    assert choose_trials_per_gpu(rates({2: 1900, 4: 0.0}), cap=8, alone=1000)[0] == 2
    # the cap is never exceeded, even when more would help
    walk = choose_trials_per_gpu(rates({2: 1900, 4: 3500, 8: 7000}), cap=5, alone=1000)
    assert walk[0] == 4 and measured == [2, 4]
    assert choose_trials_per_gpu(rates({}), cap=1, alone=1000) == (1, {1: 1000})
    assert PACKING_LEVELS == (1, 2, 4, 8)


def test_auto_without_a_gpu_is_the_cpu_and_ddp_trials_get_a_whole_gpu():
    spec = parse_spec({**SPEC, "resources": {"gpus_per_worker": "auto"}})
    packing = unmeasured_packing(spec, cluster_gpus=0)
    assert packing.gpus_per_worker == 0
    assert packing.line == "resources.gpus_per_worker: auto -> 0 (the Ray cluster has no GPU: trials train on CPUs)"
    ddp = parse_spec({**SPEC, "resources": {"gpus_per_worker": "auto", "workers_per_trial": 2}})
    assert unmeasured_packing(ddp, cluster_gpus=4).gpus_per_worker == 1
    assert unmeasured_packing(spec, cluster_gpus=4) is None  # one-worker trials: measured
    space = with_gpus(SearchSpace(spec, [[1, 2, 3, 4]] * len(spec.pairs)), 0.25)
    assert space.spec.resources.gpus() == 0.25
    assert space.config_for(space.defaults(0)).resources.gpus() == 0.25, "every trial's config carries it"


def test_a_resumed_search_packs_as_recorded_without_measuring_again(tmp_path):
    from ofasearch.search.packing import pack_trials
    from ofasearch.search.state import read_state, update_state

    spec = parse_spec({**SPEC, "resources": {"gpus_per_worker": "auto"}})
    space = SearchSpace(spec, [[1, 2, 3, 4]] * len(spec.pairs))
    line = "resources.gpus_per_worker: auto -> 0.25 (4 trial(s) per GPU; measured when the search started)"
    update_state(tmp_path, packing={"gpus_per_worker": 0.25, "line": line})
    # the recorded choice comes back as it is: no probe trial (and no Ray) runs
    assert pack_trials(spec, space, [], {}, tmp_path) == Packing(0.25, line)
    assert read_state(tmp_path)["packing"] == {"gpus_per_worker": 0.25, "line": line}


@pytest.mark.slow
def test_probe_trials_started_together_sum_their_rates(tmp_path, ray_local):
    """Two one-thread probe trials on two cores (Ray tasks, a CPU each) train the search's real
    trial together: their summed img/s must beat one alone by the walk's margin, as idle GPU
    time does for packed GPU trials."""
    from ofasearch.search.packing import MIN_GAIN, _heaviest_trial
    from ofasearch.search.teacher_prep import prepare_teachers

    spec = parse_spec({**SPEC, "storage": str(tmp_path / "results")})
    space = SearchSpace(spec, [[1, 2, 3, 4]] * len(spec.pairs))
    folder = tmp_path / "search"
    folder.mkdir()
    teachers = prepare_teachers(spec, space, folder)
    params, label = _heaviest_trial(space)
    assert label == f"measured on {space.pairs[0].label}"  # the ViT pair has more parameters than the mixer's
    runs = {
        level: measure_level(spec, space, params, teachers, {}, level, cpus=1, gpus=0, batches=20) for level in (1, 2)
    }
    assert [len(r) for r in runs.values()] == [1, 2]
    assert all(run.images_per_second > 0 and run.footprint_bytes == 0 for r in runs.values() for run in r)
    alone, together = runs[1][0].images_per_second, sum(run.images_per_second for run in runs[2])
    assert together > MIN_GAIN * alone, (alone, together)
    # a level whose copies fail raises at once, and nothing waits for them at the barrier
    broken = {**params, space.param_name("optim.lr", 0): -1.0}
    with pytest.raises(ray_local.exceptions.RayTaskError, match="optim.lr"):
        measure_level(spec, space, broken, teachers, {}, 2, cpus=1, gpus=0, batches=20)

"""Shared fixtures: a private teacher store per test session, one Ray instance shut down after use."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests that start Ray or train for more than a few seconds: `pytest -m "not slow"` is the fast tier.
SLOW_FIXTURES = {"digits_search", "ray_local", "second_run"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test using a Ray or finished-search fixture is ``slow``, besides the ones marked by hand."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session", autouse=True)
def teacher_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Auto-trained teachers go to a fresh store, so tests never reuse a developer's cache."""
    path = tmp_path_factory.mktemp("ofacache")
    old = os.environ.get("OFASEARCH_CACHE")
    os.environ["OFASEARCH_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("OFASEARCH_CACHE", None)
    else:
        os.environ["OFASEARCH_CACHE"] = old


@pytest.fixture
def ray_local():
    """A local Ray for one test, always shut down (two instances on one host break Ray Train)."""
    import ray

    from ofasearch.cluster.ray_session import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def digits_search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished digits search (6 trials, ASHA stops, 4 baselines) shared by the tests that read
    results; Ray is shut down before the tests use it."""
    import ray
    import yaml

    from ofasearch.config import load_spec
    from ofasearch.search.run import run_search
    from tests.specs import SPEC

    tmp = tmp_path_factory.mktemp("search")
    path = tmp / "spec.yaml"
    path.write_text(yaml.safe_dump({**SPEC, "storage": str(tmp / "results")}))
    folder = run_search(load_spec(path), num_cpus=2)
    ray.shutdown()
    return folder

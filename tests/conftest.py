"""Shared fixtures: a private teacher store per test session, one Ray instance shut down after use."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Tests that start Ray or train for more than a few seconds: `pytest -m "not slow"` is the fast tier.
EXIT_STATUS = pytest.StashKey[int]()
SLOW_FIXTURES = {"digits_search", "ray_local", "second_run", "undisturbed"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test using a Ray or finished-search fixture is ``slow``, besides the ones marked by hand."""
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End the test process with pytest's exit status once everything is reported, skipping the
    interpreter's teardown: the suite loads the native libraries of Ray, torch and onnxruntime,
    whose destructors at interpreter exit have crashed the process (SIGSEGV) after every test
    had passed, which would fail a green run. Ray instances are stopped by the fixtures that
    started them, not at exit. ``OFASEARCH_TEST_TEARDOWN=1`` keeps the normal exit."""
    status = config.stash.get(EXIT_STATUS, None)
    if status is None or os.environ.get("OFASEARCH_TEST_TEARDOWN") == "1":
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


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
    """A local Ray for one test, always left (and stopped when this test started it: two
    instances on one host break Ray Train)."""
    import ray

    from ofasearch.cluster.ray_session import ray_session

    with ray_session(num_cpus=2):
        yield ray


@pytest.fixture(scope="session")
def digits_search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished digits search (6 trials, ASHA stops, 8 baselines: student alone, KD, DKD and
    DIST per pair) shared by the tests that read results; Ray is shut down before the tests use it."""
    import ray
    import yaml

    from ofasearch.config import load_spec
    from ofasearch.search.run import run_search
    from tests.helpers.specs import ALL_BASELINES, SPEC

    tmp = tmp_path_factory.mktemp("search")
    path = tmp / "spec.yaml"
    spec = {**SPEC, "search": {**SPEC["search"], "baselines": ALL_BASELINES}, "storage": str(tmp / "results")}
    path.write_text(yaml.safe_dump(spec))
    folder = run_search(load_spec(path), num_cpus=2)
    ray.shutdown()
    return folder


S3_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@pytest.fixture(scope="session")
def s3_bucket() -> str:
    """A real S3 API (moto's server) on loopback with an empty bucket; the usual AWS variables
    (credentials, ``AWS_ENDPOINT_URL``) point at it for this session, and processes started
    from it (Ray workers, the CLI in a subprocess) inherit them. Yields ``s3://<bucket>``."""
    import logging

    import pyarrow.fs
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # not a line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {**S3_ENV, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    fs = pyarrow.fs.S3FileSystem(endpoint_override=f"{host}:{port}", scheme="http", allow_bucket_creation=True)
    fs.create_dir("ofasearch-test")
    yield "s3://ofasearch-test"
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    server.stop()

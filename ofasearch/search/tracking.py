"""Logging every trial to MLflow through Ray Tune's own ``MLflowLoggerCallback``.

People who run searches read them in MLflow: ``--mlflow URI`` adds Ray's callback to every
phase's Tuner (search, baselines, confirmation), one MLflow run per trial with its config as
params and each epoch's report as metrics (step = the epoch). MLflow is an optional extra, so it
is imported only here and only when asked for.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ray import tune

from ofasearch.errors import SpecError

__all__ = ["check_mlflow", "mlflow_callback", "mlflow_environment", "tracking_uri"]

# MLflow >= 3.7 refuses its file store unless this is set; a user who names a file store asked for one
_FILE_STORE_FLAG = "MLFLOW_ALLOW_FILE_STORE"


def tracking_uri(uri: str) -> str:
    """``uri`` as MLflow gets it: a plain path becomes an absolute ``file://`` URI (a resume from
    another working directory logs to the same store)."""
    return uri if "://" in uri or uri.startswith("databricks") else Path(uri).expanduser().resolve().as_uri()


def check_mlflow(uri: str | None) -> None:
    """A SpecError naming the extra when ``--mlflow`` is given but MLflow is not installed."""
    if uri is not None and importlib.util.find_spec("mlflow") is None:
        raise SpecError([f"--mlflow {uri}: MLflow is not installed; pip install 'ofasearch[mlflow]'"])


def mlflow_callback(uri: str, experiment: str, role: str) -> tune.Callback:
    """Ray's MLflow logger for one phase: experiment = the search's folder name, each run tagged
    with the trial's role (search, baseline, confirm)."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment, tags={"ofasearch.role": role})


@contextmanager
def mlflow_environment(uri: str | None) -> Iterator[None]:
    """Around the Tuner calls only: allow MLflow's file store when ``uri`` names one; restored after."""
    if uri is None or not uri.startswith("file:"):
        yield
        return
    old = os.environ.get(_FILE_STORE_FLAG)
    os.environ[_FILE_STORE_FLAG] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(_FILE_STORE_FLAG, None)
        else:
            os.environ[_FILE_STORE_FLAG] = old

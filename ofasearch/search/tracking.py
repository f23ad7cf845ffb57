"""Logging every trial to MLflow through Ray Tune's own ``MLflowLoggerCallback``.

People who run searches read them in MLflow: ``--mlflow URI`` adds Ray's callback to every
phase's Tuner (search, baselines, confirmation), one MLflow run per trial with its config as
params and each epoch's report as metrics (step = the epoch). MLflow is an optional extra, so it
is imported only here and only when asked for.

A URI with credentials (``https://user:pass@host``) is used as given but recorded in
``state.json`` without them (``https://***@host``): the run that was given it keeps the real one
in memory; a later resume logs with ``MLFLOW_TRACKING_USERNAME``/``MLFLOW_TRACKING_PASSWORD``
(or ``MLFLOW_TRACKING_TOKEN``), which MLflow reads, or with ``--mlflow URI`` given again.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ray import tune

from ofasearch.errors import SpecError
from ofasearch.utils.storage import redact_uri, without_redacted_credentials

__all__ = ["check_mlflow", "mlflow_callback", "mlflow_environment", "recorded_tracking_uri", "tracking_uri"]

logger = logging.getLogger(__name__)

# MLflow >= 3.7 refuses its file store unless this is set; a user who names a file store asked for one
_FILE_STORE_FLAG = "MLFLOW_ALLOW_FILE_STORE"
# the environment variables MLflow takes credentials from
_CREDENTIAL_VARS = ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN")
# redacted URI -> the real one, for URIs given to this process (never written anywhere)
_real_uris: dict[str, str] = {}


def tracking_uri(uri: str) -> str:
    """``uri`` as MLflow gets it: a plain path becomes an absolute ``file://`` URI (a resume from
    another working directory logs to the same store)."""
    return uri if "://" in uri or uri.startswith("databricks") else Path(uri).expanduser().resolve().as_uri()


def recorded_tracking_uri(uri: str) -> str:
    """:func:`tracking_uri` as ``state.json`` and log lines may hold it: its credentials redacted
    (the real URI is remembered for this process: :func:`mlflow_callback` uses it)."""
    real = tracking_uri(uri)
    shown = redact_uri(real)
    if shown != real:
        _real_uris[shown] = real
    return shown


def _usable(uri: str) -> str:
    """The URI to log to: the real one this process was given, else a recorded (redacted) one
    without its ``***``, MLflow then taking the credentials from its environment variables."""
    if uri in _real_uris:
        return _real_uris[uri]
    usable = without_redacted_credentials(uri)
    if usable != uri and not any(os.environ.get(var) for var in _CREDENTIAL_VARS):
        logger.warning(
            f"MLflow {uri}: its credentials were not recorded; set MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD (or MLFLOW_TRACKING_TOKEN), or resume with --mlflow URI"
        )
    return usable


def check_mlflow(uri: str | None) -> None:
    """A SpecError naming the extra when ``--mlflow`` is given but MLflow is not installed."""
    if uri is not None and importlib.util.find_spec("mlflow") is None:
        raise SpecError([f"--mlflow {redact_uri(uri)}: MLflow is not installed; pip install 'ofasearch[mlflow]'"])


def mlflow_callback(uri: str, experiment: str, role: str) -> tune.Callback:
    """Ray's MLflow logger for one phase: experiment = the search's folder name, each run tagged
    with the trial's role (search, baseline, confirm)."""
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    return MLflowLoggerCallback(tracking_uri=_usable(uri), experiment_name=experiment, tags={"ofasearch.role": role})


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

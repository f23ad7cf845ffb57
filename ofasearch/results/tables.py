"""The two Parquet tables of a results folder: their columns, and writing and reading them.

``trials.parquet`` has one row per trial (search and baseline), ``epochs.parquet`` one per
trial-epoch. The search rewrites them whole on every change, through a temporary file and a
rename, so a reader (``ofasearch status``, ``report``) or a crash never sees a half-written file.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ofasearch.errors import FileFault
from ofasearch.utils.files import atomic_write
from ofasearch.utils.storage import Location

__all__ = [
    "COST_COLUMNS",
    "EPOCH_COLUMNS",
    "EPOCHS_FILE",
    "TRIAL_COLUMNS",
    "TRIALS_FILE",
    "read_rows",
    "rebuild_hint",
    "write_table",
]

TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
COST_COLUMNS = ("params", "flops", "latency_ms_b1", "latency_ms_b64", "device")  # ModelCost.as_metrics()
TRIAL_COLUMNS = [
    "trial_id",
    "role",
    "proposed_by",  # search trials: default (paper defaults), startup, tpe or random
    "confirms",  # confirmation runs: the trial whose config they repeat on another seed
    "status",
    "teacher",
    "student",
    "method",
    "composition",  # what trained the student: "dist", "ofa + ofa@1,2,3,4" (DistillSpec.composition)
    "val_acc",
    "val_acc_last",
    "epochs",
    "seconds",
    "error",
    "seed",
    "backend",
    "teacher_cache",
    *COST_COLUMNS,
    "node",  # the Ray node the trial trained on (host name and IP; rank 0's for a Ray Train run)
    "config",
]
EPOCH_COLUMNS = ["trial_id", "role", "epoch", "train_loss", "val_acc", "lr", "seconds"]


def write_table(rows: list[dict[str, Any]], columns: list[str], path: Location) -> None:
    """Write ``rows`` atomically: ``columns`` first, then any other key (searched values) sorted."""
    names = list(columns) + sorted({k for r in rows for k in r} - set(columns))
    table = (
        pa.Table.from_pylist([{k: r.get(k) for k in names} for r in rows])
        if rows
        else pa.table({k: pa.array([], pa.string()) for k in names})
    )
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink)
    atomic_write(path, sink.getvalue().to_pybytes())


def read_rows(path: Location) -> list[dict[str, Any]]:
    """A table's rows ([] when it does not exist yet); a damaged file is a one-line FileFault
    that says how to rebuild it from Ray Tune's folders.

    The file is read whole through one open, then parsed: reading by path lets pyarrow open it
    again for the footer and the pages, and a search replacing it in between (it rewrites the
    table atomically after every result) would mix two versions.

    It is parsed on the calling thread: ``pq.read_table`` starts Arrow's CPU and IO thread pools,
    and a process that exits while those threads are alive can abort in their C++ destructors
    ("terminate called without an active exception", exit -6; seen once in CI after
    ``ofasearch status`` had printed everything). A table of a few thousand rows gains nothing
    from them."""
    try:
        if not path.is_file():
            return []
        parquet = pq.ParquetFile(pa.BufferReader(path.read_bytes()), pre_buffer=False)
        return parquet.read(use_threads=False).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FileFault([f"{path}: unreadable Parquet table ({reason}); {rebuild_hint(path.parent)}"]) from None


def rebuild_hint(folder: Location) -> str:
    """The remedy for a missing or damaged table of a results folder."""
    return f"rebuild it from Ray Tune's own folders with: ofasearch rebuild {folder}"

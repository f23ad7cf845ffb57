"""A Ray cluster of two worker nodes on one machine (``ray.cluster_utils.Cluster``), each with its
own cache folder, results in a bucket (moto's S3 server): nothing a trial or a Ray Train worker
needs is read from the driver's disk: ``train --workers 2`` runs DDP across both nodes, each
node fetching the teacher and its logit cache into its own cache folder, the run in the bucket."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from ofasearch.cluster.shipping import RECEIVED_DIR, RECEIVED_LOG
from tests.specs import CONFIG

pytestmark = pytest.mark.slow  # starts a Ray cluster and trains

ENDED = ("completed", "stopped", "diverged", "error")
SAME = ("trial_id", "status", "epochs", "val_acc", "config", "node")


@pytest.fixture
def cluster(tmp_path, s3_bucket):
    """A head without CPUs (the driver joins it) and nodes ``a`` and ``b`` of one CPU each, whose
    workers see different ``$OFASEARCH_CACHE`` folders (neither is the driver's). Started after
    the S3 server, so the nodes inherit its ``AWS_*`` variables, as ``ray start`` would."""
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
    nodes = {}
    for name in ("a", "b"):
        cache = tmp_path / f"cache-{name}"
        node = cluster.add_node(num_cpus=1, env_vars={"OFASEARCH_CACHE": str(cache)})
        nodes[name] = (node, cache)
    cluster.wait_for_nodes()
    try:
        yield cluster, nodes
    finally:
        cluster.shutdown()


def _received(cache: Path) -> list[str]:
    """The files a node fetched from the driver (one line each: sha256, seconds, bytes, path)."""
    log = cache / RECEIVED_DIR / RECEIVED_LOG
    return log.read_text().splitlines() if log.is_file() else []


def _cli(args: list[str], cwd: Path, address: str, **popen: object) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": address}
    return subprocess.Popen([sys.executable, "-m", "ofasearch.cli", *args], cwd=cwd, env=env, **popen)


def test_ddp_across_two_nodes_without_a_shared_disk(cluster, tmp_path, s3_bucket):
    cluster, nodes = cluster
    address = cluster.address

    # ofasearch train --workers 2: one DDP worker per node (one CPU each), the run in the bucket
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "optim": {**CONFIG["optim"], "epochs": 2}}))
    run_storage = f"{s3_bucket}/{uuid.uuid4().hex[:8]}"
    train = _cli(
        ["train", "config.yaml", "--workers", "2", "--output", "out", "--storage", run_storage, "--no-progress"],
        tmp_path,
        address,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    out, _ = train.communicate(timeout=900)
    assert train.returncode == 0, out[-3000:]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and (tmp_path / "out" / "student.safetensors").is_file()
    for name, (_node, cache) in nodes.items():  # each node's worker fetched the teacher and its cache
        fetched = [line.split()[3] for line in _received(cache)]
        assert sorted(f.split("/")[0] for f in fetched) == ["logits", "teachers"], (name, fetched)

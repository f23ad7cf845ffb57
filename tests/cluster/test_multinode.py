"""A Ray cluster of two worker nodes on one machine (``ray.cluster_utils.Cluster``), each with its
own cache folder, results in a bucket (moto's S3 server): nothing a trial or a Ray Train worker
needs is read from the driver's disk: ``train --workers 2`` runs DDP across both nodes, each
node fetching the teacher and its logit cache into its own cache folder, the run in the bucket.
Then a search whose trials run on both nodes loses node ``b`` mid-trial: the trial it ran is
marked ``error``, the search completes on node ``a``, and no row that had ended changes.

One cluster serves both tests (in this order: the second removes a node)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from ofasearch.cluster.shipping import RECEIVED_DIR, RECEIVED_LOG
from ofasearch.results.tables import read_rows
from ofasearch.results.tune_folders import LOST_WORKER
from ofasearch.utils.storage import as_location
from tests.helpers.specs import CONFIG, SPEC, TEACHER, VIT

pytestmark = pytest.mark.slow  # starts a Ray cluster and trains

ENDED = ("completed", "stopped", "diverged", "error")
SAME = ("trial_id", "status", "epochs", "val_acc", "config", "node")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_bucket):
    """A head without CPUs (the driver joins it) and nodes ``a`` and ``b`` of one CPU each, whose
    workers see different ``$OFASEARCH_CACHE`` folders (neither is the driver's). Started after
    the S3 server, so the nodes inherit its ``AWS_*`` variables, as ``ray start`` would."""
    from ray.cluster_utils import Cluster

    tmp_path = tmp_path_factory.mktemp("nodes")
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
    assert metrics["epochs"] == 2
    assert (tmp_path / "out" / "student.safetensors").is_file()
    for name, (_node, cache) in nodes.items():  # each node's worker fetched the teacher and its cache
        fetched = [line.split()[3] for line in _received(cache)]
        assert sorted(f.split("/")[0] for f in fetched) == ["logits", "teachers"], (name, fetched)


def _rows(folder: str) -> list[dict]:
    return read_rows(as_location(folder) / "trials.parquet")


def test_a_node_lost_mid_trial_marks_that_trial_and_the_search_completes(cluster, tmp_path, s3_bucket):
    cluster, nodes = cluster
    node_b, _ = nodes["b"]
    b_id = node_b.node_id[:12]
    spec = {
        **SPEC,
        "name": "nodekill",
        "data": {"dataset": "digits", "image_size": 32},  # epochs of a few seconds: time to see one run
        "pairs": [{"teacher": TEACHER, "student": VIT}],
        "optim": {**SPEC["optim"], "epochs": 4},
        # two trials at a time: one per node; no ASHA stop before the kill can land
        "search": {**SPEC["search"], "num_samples": 4, "max_concurrent": 2, "grace_epochs": 4, "baselines": False},
        "storage": f"{s3_bucket}/{uuid.uuid4().hex[:8]}",
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    folder = f"{spec['storage']}/nodekill"
    search = _cli(
        ["run", "spec.yaml"],
        tmp_path,
        cluster.address,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 600
        while True:  # a search trial on node b between its first and last epoch, after one has ended
            if search.poll() is not None or time.monotonic() > deadline:
                search.kill()
                pytest.fail(f"no trial ran on node b: {search.communicate()[0].decode()[-3000:]}")
            try:
                rows = _rows(folder)
            except Exception:  # the table is not in the bucket yet
                rows = []
            victim = next(
                (r for r in rows if r["status"] == "running" and b_id in (r["node"] or "") and 1 <= r["epochs"] < 4),
                None,
            )
            if victim and any(r["status"] in ENDED for r in rows):  # something finished that must survive
                break
            time.sleep(0.2)
        ended = {r["trial_id"]: r for r in rows if r["status"] in ENDED}
        cluster.remove_node(node_b, allow_graceful=False)
        out, _ = search.communicate(timeout=600)
    finally:
        if search.poll() is None:
            search.kill()
    out = out.decode()
    assert search.returncode == 0, out[-3000:]
    after = {r["trial_id"]: r for r in _rows(folder)}
    print(
        f"\nnode b removed during trial {victim['trial_id']} (epoch {victim['epochs']} of 4), {len(ended)} trial(s) "
        f"ended before; after: {sorted((r['trial_id'], r['status'], r['node'][-13:-1]) for r in after.values())}"
    )
    print("\n".join(line for line in out.splitlines() if victim["trial_id"] in line or "error" in line.lower()))
    lost = after[victim["trial_id"]]
    assert lost["status"] == "error", (
        lost["error"],
        out[-3000:],
    )
    assert lost["error"].startswith(f"{LOST_WORKER}: The actor"), (
        lost["error"],
        out[-3000:],
    )
    assert len(after) == 4
    assert all(r["status"] in ENDED for r in after.values())
    for trial_id, row in ended.items():  # nothing that had ended is lost or changed
        assert {k: after[trial_id][k] for k in SAME} == {k: row[k] for k in SAME}
    on = {
        name: [r for r in after.values() if r["status"] == "completed" and node.node_id[:12] in r["node"]]
        for name, (node, _) in nodes.items()
    }
    assert on["a"], "no trial completed on node a"
    later = [r for r in after.values() if r["trial_id"] not in ended and r["trial_id"] != victim["trial_id"]]
    assert later
    assert all(b_id not in (r["node"] or "") for r in later if r["status"] == "completed" and r["epochs"])
    assert (as_location(folder) / "best.yaml").is_file()

"""The node a trial or Ray Train worker runs on: its name in errors and records, and its data.

On a cluster without a shared file system, each node loads the dataset from ``data.root`` on its
own disk; a node that lacks it fails its trial with an error that names the node, so the user
knows where to install it."""

from __future__ import annotations

import socket

import ray

from ofasearch.config import DataSpec
from ofasearch.data import Splits, load_splits
from ofasearch.errors import SpecError

__all__ = ["NODE_KEY", "NodeDataError", "load_node_splits", "node_name"]

NODE_KEY = "node"  # the metric (and trials.parquet column) that names the node a trial trained on


class NodeDataError(RuntimeError):
    """The data a run needs is missing on the node it runs on."""


def node_name() -> str:
    """This node as errors and ``trials.parquet`` name it: host name, Ray's node IP and the
    start of its node id (several nodes may share a host, as in ``ray.cluster_utils.Cluster``)."""
    if not ray.is_initialized():  # not in a Ray worker: the host name is what there is
        return socket.gethostname()
    ip = ray.util.get_node_ip_address()
    return f"{socket.gethostname()} ({ip}, node {ray.get_runtime_context().get_node_id()[:12]})"


def load_node_splits(data: DataSpec) -> Splits:
    """``load_splits`` on this node; missing data is an error naming the node and the remedy."""
    try:
        return load_splits(data)
    except SpecError as exc:
        raise NodeDataError(f"on node {node_name()}: {'; '.join(exc.problems)}") from None

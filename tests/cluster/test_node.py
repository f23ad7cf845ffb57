"""The node a run is on: missing data there is an error naming the node."""

from __future__ import annotations

import socket

import pytest

from ofasearch.cluster.node import NodeDataError, load_node_splits, node_name
from ofasearch.config import DataSpec
from ofasearch.data import load_splits
from ofasearch.errors import SpecError


def test_missing_data_on_a_node_names_the_node(tmp_path):
    data = DataSpec(dataset="imagefolder", root=str(tmp_path / "not-here"))
    with pytest.raises(SpecError) as plain:  # what the data layer says, on any machine
        load_splits(data)
    assert plain.value.problems[0].startswith("data.root: imagefolder needs a folder")
    with pytest.raises(NodeDataError) as err:
        load_node_splits(data)
    assert node_name() == socket.gethostname()  # outside Ray: the host name alone
    assert str(err.value) == f"on node {socket.gethostname()}: {'; '.join(plain.value.problems)}"
    assert str(tmp_path / "not-here") in str(err.value)

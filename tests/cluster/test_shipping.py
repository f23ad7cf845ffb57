"""Files shipped through Ray's object store: copied into a node's own cache once, verified, and
fetched again when the copy was damaged; a node sharing the driver's cache reads the original."""

from __future__ import annotations

import os

import pytest

from ofasearch.cluster.shipping import RECEIVED_DIR, RECEIVED_LOG, receive, ship
from ofasearch.utils.files import cache_root

pytestmark = pytest.mark.slow  # starts Ray


def _receive_elsewhere(ray, shipped, cache):
    """``receive`` in a Ray task whose node cache is ``cache`` (another node's, as far as it knows)."""

    @ray.remote(runtime_env={"env_vars": {"OFASEARCH_CACHE": str(cache)}})
    def task(shipped):
        return str(receive(shipped))

    return ray.get(task.remote(shipped))


def test_a_file_reaches_another_cache_once_and_verified(ray_local, tmp_path):
    ray = ray_local
    weights = cache_root() / "teachers" / "abc" / "teacher.safetensors"
    weights.parent.mkdir(parents=True, exist_ok=True)
    weights.write_bytes(os.urandom(4096))
    external = tmp_path / "mine.pth"
    external.write_bytes(b"user checkpoint")
    shipped, user = ship(weights), ship(external)
    assert shipped.relative == "teachers/abc/teacher.safetensors"
    assert user.relative == f"external/{user.sha256[:16]}/mine.pth"
    assert receive(shipped) == weights  # this process shares the driver's cache: the original

    other = tmp_path / "node-cache"
    copy = other / RECEIVED_DIR / "teachers" / "abc" / "teacher.safetensors"
    assert _receive_elsewhere(ray, shipped, other) == str(copy)
    assert _receive_elsewhere(ray, shipped, other) == str(copy)  # the second trial on the node
    assert copy.read_bytes() == weights.read_bytes()
    log = (other / RECEIVED_DIR / RECEIVED_LOG).read_text().splitlines()
    assert [line.split()[0] for line in log] == [shipped.sha256]  # fetched once

    copy.write_bytes(b"\0" * 4096)  # damaged on the node: same size, other bytes
    assert _receive_elsewhere(ray, shipped, other) == str(copy)
    assert copy.read_bytes() == weights.read_bytes()
    assert len((other / RECEIVED_DIR / RECEIVED_LOG).read_text().splitlines()) == 2

    external.unlink()  # a user's file the node cannot see: copied under external/
    assert _receive_elsewhere(ray, user, other) == str(other / RECEIVED_DIR / user.relative)

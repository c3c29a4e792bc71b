"""Pytest fixtures: a real Redis Cluster of three masters on loopback (``tiers/remote_local.py``).

Import the fixtures into a test module (``from tests.redis_cluster import redis_cluster``):

* ``redis_cluster`` — one cluster per test module, for tests that do not break it (each test
  uses its own key prefix, see :func:`unique_prefix`);
* ``fresh_cluster`` — a cluster of its own, for a test that kills or freezes nodes;
* ``idle_cluster`` — ports chosen, nothing started: the test starts it when it wants.

Every cluster lives in the test's tmp dir and is killed at the end. Tests are skipped with a clear
reason when ``redis-server`` is not installed (``.ci/setup --test`` installs it).
"""

from __future__ import annotations

import itertools
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tiers.remote_local import LocalRedisCluster

_PREFIXES = itertools.count()


def _require_server() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed (.ci/setup --test installs it)")


def unique_prefix() -> str:
    """A key prefix no other test of this process uses."""
    return f"t{next(_PREFIXES)}:"


def wait_until(predicate: Callable[[], bool], timeout: float = 15.0,
               interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True


def _cluster(root: Path, start: bool, **options: object) -> Iterator[LocalRedisCluster]:
    _require_server()
    cluster = LocalRedisCluster(root, **options)
    try:
        if start:
            cluster.start()
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRedisCluster]:
    yield from _cluster(tmp_path_factory.mktemp("redis"), start=True)


@pytest.fixture
def fresh_cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    yield from _cluster(tmp_path / "redis", start=True)


@pytest.fixture
def idle_cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    yield from _cluster(tmp_path / "redis", start=False)

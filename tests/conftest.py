"""Test-wide set-up.

Triton reads ``TRITON_INTERPRET`` when a kernel module is imported, so the interpreter is chosen
here, before any test module imports ``kernels``: on this CPU machine every Triton kernel runs in
interpreter mode. Set ``ASYMCACHE_TEST_CUDA=1`` on a GPU machine to run them compiled.
"""

from __future__ import annotations

import os

if os.environ.get("ASYMCACHE_TEST_CUDA") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemons import ENGINE, SMALL, DaemonFactory

# The Redis Cluster fixtures, registered here for every test (pytest finds fixtures by name).
from tests.redis_cluster import fresh_cluster, idle_cluster, redis_cluster  # noqa: F401


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--full", action="store_true", help="run the full parameter grids")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--full"):
        return
    # The full grids are deselected (not skipped): a default run reports them as deselected.
    keep = [item for item in items if "full" not in item.keywords]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if "full" in i.keywords])
        items[:] = keep


@pytest.fixture
def start_daemon(tmp_path: Path) -> Iterator[DaemonFactory]:
    """``start_daemon(**flags)``: a real daemon with the daemon tests' small tiers."""
    with DaemonFactory(tmp_path, SMALL) as factory:
        yield factory


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[DaemonFactory]:
    """``daemons.start(**flags)``: a real daemon sized for the built-in model, on one endpoint."""
    with DaemonFactory(tmp_path, ENGINE) as factory:
        yield factory

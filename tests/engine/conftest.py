"""Fixtures of the engine tests (helpers live in ``engine_fixtures.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.engine.engine_fixtures import Daemons


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Daemons]:
    """Real daemon processes on a temporary ipc path; every one is stopped after the test."""
    d = Daemons(tmp_path)
    try:
        yield d
    finally:
        d.close()

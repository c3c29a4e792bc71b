"""Faults injected into a real in-process daemon (``inprocess.py``): a failing housekeeping
step, a request whose handling fails outside its handler, a slow index rebuild."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from tests.cacheserver.inprocess import serving, until


def test_a_failing_housekeeping_step_is_logged_counted_and_the_loop_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    async def scenario() -> tuple[float | None, int]:
        async with serving(tmp_path, lease_timeout_s=0.2) as server:  # a round every 50 ms
            disk = server.ctx.residency.disk

            def take_failed() -> list[bytes]:
                calls.append(1)
                if len(calls) == 1:
                    raise RuntimeError("injected housekeeping fault")
                return []

            disk.take_failed = take_failed  # the disk step of the next round fails once
            await until(lambda: len(calls) >= 4, 10.0)  # later rounds still run
            return (server.registry.get_sample_value(
                "asymcache_server_housekeeping_errors_total"), len(calls))

    with caplog.at_level(logging.ERROR, logger="asymcache.server"):
        errors, n = asyncio.run(scenario())
    assert errors == 1.0 and n >= 4
    failed = [r for r in caplog.records if "housekeeping" in r.getMessage()]
    assert len(failed) == 1 and failed[0].exc_info is not None
    assert "injected housekeeping fault" in str(failed[0].exc_info[1])

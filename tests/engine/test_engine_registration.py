"""An engine registers with its daemon when it starts, not on its first request, and an idle
engine registers again after the daemon restarts (real daemon processes, STATS on the wire)."""

from __future__ import annotations

import time

from asymcache.engine.client import CacheClient
from tests.engine.engine_fixtures import make_llm

LIMIT_S = 20.0  # liveness bound of the re-registration loop, not a speed measurement


def _stats(endpoint: str) -> dict:
    with CacheClient(endpoint, heartbeat=False) as c:
        return c.stats()


def test_a_fresh_engine_shows_up_connected_in_the_daemons_stats_before_any_request(
        daemons) -> None:
    daemons.start()
    assert _stats(daemons.endpoint)["engines"] == 0
    with make_llm(cache_endpoint=daemons.endpoint, num_gpu_blocks=48) as llm:
        stats = _stats(daemons.endpoint)
        assert stats["engines"] == 1
        assert stats["tiers"]["gpu"]["capacity_blocks"] == 48
        assert llm.engine.state().daemon_connected is True
        assert llm.engine.kv.link.reconnects == 0


def test_an_idle_engine_registers_again_after_the_daemon_restarts(daemons) -> None:
    daemons.start()
    with make_llm(cache_endpoint=daemons.endpoint) as llm:
        link = llm.engine.kv.link
        daemons.procs[-1].stop()
        daemons.start()
        assert _stats(daemons.endpoint)["engines"] == 0  # a new daemon knows nobody
        deadline = time.monotonic() + LIMIT_S
        while _stats(daemons.endpoint)["engines"] == 0:
            assert time.monotonic() < deadline, "the idle engine did not register again"
            llm.engine.tick_daemon()
            time.sleep(0.05)
        assert link.connected and link.reconnects == 1

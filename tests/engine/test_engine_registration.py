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


class _OldDaemon:
    """A daemon client whose daemon predates cost profiles, then answers (no I/O)."""

    def __init__(self) -> None:
        self.answering, self.needs_hello = True, False
        self.last_pong = self.registration = None
        self.hellos: list[dict | None] = []

    def hello(self, fingerprint, layout, gpu_slots, held, cost_profile=None):
        from asymcache.engine.client import DaemonError

        self.hellos.append(cost_profile)
        if cost_profile is not None:
            raise DaemonError("hello", "bad_field", "field 'cost_profile' is not a field of HELLO")
        if len(self.hellos) == 2:
            raise DaemonError("hello", "bad_layout", "a block of this layout does not fit")


def test_an_engine_registers_without_its_cost_profile_with_an_older_daemon_and_asks_again(
        monkeypatch) -> None:
    from asymcache.cacheserver.blocks import KVLayout
    from asymcache.engine import cache_link
    from asymcache.engine.cache_link import CacheLink

    layout = KVLayout(num_layers=1, num_kv_heads=1, head_dim=8, block_size=16, dtype="float32")
    link = CacheLink("ipc:///tmp/asymcache-none.ipc", "e1", "fp", layout, 4, 1.0)
    link.client.close()
    link.client = old = _OldDaemon()  # type: ignore[assignment]
    profile = {"schema": "asymcache-cost-profile/1"}
    link.cost_profile = profile
    link.tick(list)
    assert old.hellos == [profile]
    assert link.cost_profile is None and link.refused is None  # not refused: sent again
    link.tick(list)  # refused for another reason: served without the daemon, for a while
    assert link.refused is not None and not link.connected
    link.tick(list)
    assert len(old.hellos) == 2  # not asked again at once
    monkeypatch.setattr(cache_link, "REFUSED_RETRY_S", 0.0)
    link.tick(list)
    assert len(old.hellos) == 3 and link.connected

"""Client signals (SIGNAL) in a real daemon: they reach the engine's GPU ranking, retention
and pins are capped per tenant, and bad signals get error replies while the daemon serves on."""

from __future__ import annotations

import pytest

from asymcache.cacheserver.blocks import session_digest
from asymcache.cacheserver.protocol import Signal, Where
from asymcache.engine.client import CacheClient
from tests.cacheserver.daemon_fixtures import make_refs, registered_client

SESSION = session_digest("", "conversation-1")
OTHER = session_digest("", "conversation-2")


def _fill(client: CacheClient) -> tuple[list[bytes], list[bytes]]:
    """Two unleased sequences of two blocks in a 4-slot GPU pool: ``old`` committed first
    (least recently used), then ``new``."""
    old, new = make_refs(2, start=0), make_refs(2, start=1000)
    assert client.commit(old, [0, 1]) == [True, True]
    assert client.commit(new, [2, 3]) == [True, True]
    return [r.key for r in old], [r.key for r in new]


def _victims(client: CacheClient, n: int) -> set[bytes]:
    return {v.key for v in client.allocate(n)}


@pytest.mark.parametrize("policy", ["asym", "lru_signals"])
def test_an_ended_session_goes_first_and_retention_last_in_the_gpu_ranking(
        start_daemon, policy: str) -> None:
    d = start_daemon(policy=policy)
    with registered_client(d.endpoint) as c:
        old, new = _fill(c)
        assert _victims(c, 2) == set(old)  # recency alone: the older sequence goes
        c.cancel(old)  # the victims named ahead are given back unused
    with registered_client(d.endpoint, engine_id="eng2") as c:
        old, new = _fill(c)
        reply = c.signal(new, session=SESSION)
        assert (reply.count, reply.retention_s) == (2, 0.0)
        assert _victims(c, 2) == set(old)  # a live session changes nothing
        c.cancel(old)
    with registered_client(d.endpoint, engine_id="eng3") as c:
        old, new = _fill(c)
        c.signal(new, session=SESSION)
        c.signal(session=SESSION, end=True)
        assert _victims(c, 2) == set(new)  # the ended session's blocks go first
        c.cancel(new)
    with registered_client(d.endpoint, engine_id="eng4") as c:
        old, new = _fill(c)
        c.signal(old, retention_s=600.0)
        assert _victims(c, 2) == set(new)  # the retained older blocks go last
        c.cancel(new)


def test_a_block_two_sessions_used_is_not_dropped_first_when_one_of_them_ends(
        start_daemon) -> None:
    d = start_daemon(policy="lru_signals")
    with registered_client(d.endpoint) as c:
        old, new = _fill(c)
        c.signal(new, session=SESSION)
        c.signal(new[:1], session=OTHER)  # the first block is shared by two sessions
        c.signal(session=SESSION, end=True)
        assert _victims(c, 1) == {new[1]}  # the ended session's own block
        assert _victims(c, 2) == set(old)  # then recency: the shared block is newest


def test_retention_and_pins_are_capped_per_tenant(start_daemon) -> None:
    d = start_daemon(quotas_max_retention_s=30, quotas_max_pin_ttl_s=5)
    with registered_client(d.endpoint) as c:
        refs = make_refs(2)
        keys = [r.key for r in refs]
        c.commit(refs, [0, 1])
        assert c.signal(keys, session=SESSION, retention_s=86400.0).retention_s == 30.0
        assert c.signal(keys, retention_s=10.0).retention_s == 10.0
        assert c.signal([make_refs(1, start=77)[0].key], retention_s=10.0).count == 0
        assert c.pin(keys, ttl_s=3600.0) == 2  # capped to 5 s: lapses by itself
        assert c.lookup(keys, lease=False).where == [Where.GPU, Where.GPU]


def test_bad_signals_get_error_replies_and_the_daemon_keeps_serving(start_daemon) -> None:
    d = start_daemon()
    with registered_client(d.endpoint) as c:
        with pytest.raises(Exception, match="retention_s must be >= 0"):
            c.signal(retention_s=-1.0)
        with pytest.raises(Exception, match="end needs the session"):
            c.signal(end=True)
        with pytest.raises(Exception, match="session"):
            c._call(Signal(session=b"short"), lambda r: r)  # a key of 5 bytes
        c.signal(session=SESSION, end=True, notify=True)  # one-way: acknowledged
        assert c.ping().registered
        refs = make_refs(1)
        assert c.commit(refs, [0]) == [True]

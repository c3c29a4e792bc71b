"""The client library against a real daemon: reconnects, re-HELLO, fast failure, async, beats."""

from __future__ import annotations

import asyncio
import time

import pytest

from asymcache.cacheserver.protocol import Where
from asymcache.engine import client_ops
from asymcache.engine.client import (
    AsyncCacheClient,
    CacheClient,
    DaemonUnavailable,
    NotRegisteredError,
    StaleSlotError,
)
from tests.cacheserver.daemon_fixtures import (
    BLOCK_BYTES,
    LAYOUT,
    make_refs,
    payload,
    start_daemon,  # noqa: F401 - fixture
)


def test_restarted_daemon_gets_the_engines_keys_back_from_its_new_hello(
    start_daemon, tmp_path  # noqa: F811
) -> None:
    d = start_daemon(disk_bytes=0)
    refs = make_refs(3)
    held = {0: refs[0], 1: refs[1], 3: refs[2]}  # the engine's own GPU pool bookkeeping
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=5, heartbeat=False) as c:
        reg = c.hello("test-model", LAYOUT, gpu_slots=4,
                      held=lambda: (list(held.values()), list(held)))
        assert reg.restored == 3
        d.stop()
        d2 = start_daemon(endpoint=d.endpoint, disk_bytes=0)
        found = c.lookup([r.key for r in refs])  # NOT_REGISTERED -> re-HELLO -> retried
        assert (found.where, found.slots) == ([Where.GPU] * 3, [0, 1, 3])
        assert c.registration is not None and c.registration.epoch == d2.start_epoch


def test_unreachable_daemon_fails_fast_during_backoff_then_reconnects(
    start_daemon, monkeypatch  # noqa: F811
) -> None:
    d = start_daemon(disk_bytes=0)
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=0.5, heartbeat=False) as c:
        c.hello("test-model", LAYOUT, gpu_slots=2)
        d.stop()
        with pytest.raises(DaemonUnavailable, match="no reply"):
            c.ping()
        sent: list[object] = []
        real_send = c._sock.send
        monkeypatch.setattr(c._sock, "send", lambda f: (sent.append(f), real_send(f))[1])
        frozen = time.monotonic()
        with monkeypatch.context() as m:  # the backoff clock stands still: still backing off
            m.setattr(client_ops, "monotonic", lambda: frozen)
            for _ in range(3):
                with pytest.raises(DaemonUnavailable, match="retrying in"):
                    c.ping()  # refused at once
        assert sent == []  # no request reached the socket (nor the daemon) during the backoff
        start_daemon(endpoint=d.endpoint, disk_bytes=0)
        deadline = time.monotonic() + 15
        while True:
            try:
                assert c.ping().registered  # reconnected, epoch changed, HELLO re-sent
                break
            except DaemonUnavailable:
                assert time.monotonic() < deadline
                time.sleep(0.1)


def test_heartbeat_thread_keeps_leases_past_the_lease_timeout(start_daemon) -> None:  # noqa: F811
    d = start_daemon(lease_timeout_s=0.6, disk_bytes=0)
    refs = make_refs(2)
    with CacheClient(d.endpoint, engine_id="beating", timeout_s=5) as c, \
            CacheClient(d.endpoint, engine_id="watcher", timeout_s=5, heartbeat=False) as w:
        c.hello("test-model", LAYOUT, gpu_slots=2)
        c.put(refs, [payload(r) for r in refs])
        c.lookup([r.key for r in refs])
        time.sleep(2.0)  # more than 3 lease timeouts, with no request from this thread
        assert w.stats()["leases"] == 2
        assert c.release([r.key for r in refs]) == 2


def test_async_client_runs_every_op_concurrently(start_daemon) -> None:  # noqa: F811
    d = start_daemon()
    refs = make_refs(4)
    keys = [r.key for r in refs]

    async def main() -> None:
        async with AsyncCacheClient(d.endpoint, engine_id="aio", timeout_s=5) as c:
            with pytest.raises(NotRegisteredError):
                await c.lookup(keys)
            await c.hello("test-model", LAYOUT, gpu_slots=4)
            assert await c.commit(refs[:2], [0, 1]) == [True, True]
            put = await c.put(refs[2:], [payload(r) for r in refs[2:]], durable=True)
            assert put.durable
            results = await asyncio.gather(*(c.lookup(keys, lease=False) for _ in range(8)))
            assert all(r.where == [Where.GPU] * 2 + [Where.CPU] * 2 for r in results)
            victims = await c.allocate(1)
            assert len(victims) == 1 and victims[0].demote_to >= 0
            c.cpu_slot(victims[0].demote_to)[:BLOCK_BYTES] = payload(refs[0])
            got = await c.get(keys[2:])
            assert [bytes(g) for g in got] == [payload(r) for r in refs[2:]]
            assert await c.promote(keys[2:]) == (await c.lookup(keys[2:])).slots
            assert await c.release(everything=True) == 4
            assert (await c.pin(keys, ttl_s=5), await c.unpin(keys)) == (4, 4)
            assert await c.flush() == 2
            assert (await c.stats())["engines"] == 1
            assert (await c.ping()).registered

    asyncio.run(main())


def test_a_cpu_slot_from_before_a_re_hello_is_refused_as_stale(start_daemon) -> None:  # noqa: F811
    d = start_daemon(disk_bytes=0)
    refs = make_refs(1)
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=5, heartbeat=False) as c:
        c.hello("test-model", LAYOUT, gpu_slots=2)
        c.put(refs, [payload(refs[0])])
        slot, before = c.lookup([refs[0].key]).slots[0], c.generation
        assert bytes(c.cpu_slot(slot, generation=before)[:BLOCK_BYTES]) == payload(refs[0])
        d.stop()
        start_daemon(endpoint=d.endpoint, disk_bytes=0)
        assert c.lookup([refs[0].key]).where == [Where.MISS]  # re-HELLO to the new daemon
        assert c.generation == before + 1
        with pytest.raises(StaleSlotError, match="registered again"):
            c.cpu_slot(slot, generation=before)

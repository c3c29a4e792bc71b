"""The client library against a real daemon: reconnects, re-HELLO, fast failure, async, beats."""

from __future__ import annotations

import time

import pytest

from asymcache.cacheserver.protocol import Where
from asymcache.engine import client, client_ops
from asymcache.engine.client import (
    CacheClient,
    DaemonUnavailable,
    StaleSlotError,
)
from tests.cacheserver.daemon_fixtures import (
    BLOCK_BYTES,
    LAYOUT,
    make_refs,
    payload,
)


def test_restarted_daemon_gets_the_engines_keys_back_from_its_new_hello(
    start_daemon, tmp_path
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
    start_daemon, monkeypatch
) -> None:
    d = start_daemon(disk_bytes=0)
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=0.5, heartbeat=False) as c:
        c.hello("test-model", LAYOUT, gpu_slots=2)
        d.stop()
        with pytest.raises(DaemonUnavailable, match="no reply"):
            c.ping()
        sent: list[object] = []
        real_send = c._sock.send
        monkeypatch.setattr(c._sock, "send",
                            lambda f, block=True: (sent.append(f), real_send(f, block))[1])
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


def test_heartbeat_thread_keeps_leases_past_the_lease_timeout(start_daemon) -> None:
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


def test_a_cpu_slot_from_before_a_re_hello_is_refused_as_stale(start_daemon) -> None:
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


def test_a_request_the_socket_cannot_queue_fails_at_once_instead_of_blocking(
    start_daemon, monkeypatch
) -> None:
    """A socket with no connection to queue on (after a handshake the daemon refused) would
    block a blocking send for ever; the client sends without blocking and gives up at once."""
    d = start_daemon(disk_bytes=0)
    with CacheClient(d.endpoint, engine_id="eng", timeout_s=5, heartbeat=False) as c:
        assert c.ping().registered is False  # the socket works
        awaited: list[int] = []
        real_await = client._await
        monkeypatch.setattr(client, "_await",
                            lambda *a, **k: (awaited.append(a[1]), real_await(*a, **k))[1])
        monkeypatch.setattr(c._sock, "send", lambda frames, block=True: False)
        with pytest.raises(DaemonUnavailable):
            c.hello("test-model", LAYOUT, gpu_slots=2)
        assert awaited == []  # no wait for a reply that cannot come
        assert c.answering is False

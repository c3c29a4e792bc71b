"""Faults injected into a real in-process daemon (``inprocess.py``): a failing housekeeping
step, a request whose handling fails outside its handler, a slow index rebuild."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from pathlib import Path

import pytest

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.handlers import HANDLERS, HandlerSpec
from tests.cacheserver.daemon_fixtures import free_port
from tests.cacheserver.inprocess import Peer, serving, until


def test_a_failing_housekeeping_step_is_logged_counted_and_the_loop_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[int] = []

    async def scenario() -> tuple[float | None, int]:
        async with serving(tmp_path, lease_timeout_s=0.2) as server:  # a round every 50 ms
            disk = server.ctx.residency.tier("disk")

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


def _unencodable_stats(ctx: object, identity: bytes, session: object, req: p.Stats) -> p.Message:
    return p.StatsReply(epoch=1, engines=0, index_blocks=0, leases=0, tiers={},
                        config={"not msgpack": object()})


@pytest.mark.parametrize("fault", ["no handler", "reply cannot be encoded"])
def test_a_request_failing_outside_its_handler_gets_internal_and_its_batch_is_served(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    if fault == "no handler":
        monkeypatch.delitem(HANDLERS, "stats")  # a KeyError in dispatch, outside any handler
    else:
        monkeypatch.setitem(HANDLERS, "stats", HandlerSpec(_unencodable_stats, False, False))

    async def scenario() -> list[dict[int, p.Reply]]:
        async with serving(tmp_path, max_inflight=4) as server:
            peer = Peer(server)
            try:
                rounds = []
                for r in range(3):  # 12 requests: a leaked in-flight unit would mean BUSY
                    peer.send(p.Stats(), 10 * r)
                    for i in range(1, 4):
                        peer.send(p.Ping(), 10 * r + i)
                    time.sleep(0.3)  # the loop is held: all four arrive as one batch
                    rounds.append(await peer.replies(4))
                return rounds
            finally:
                peer.close()

    for r, replies in enumerate(asyncio.run(scenario())):
        failed = replies[10 * r]
        assert isinstance(failed, p.ErrorReply) and failed.code == p.ErrorCode.INTERNAL
        assert failed.op == "stats"
        assert all(isinstance(replies[10 * r + i], p.PingReply) for i in range(1, 4))


async def _http_get(port: int, path: str) -> tuple[int, bytes]:
    """(status, body) of ``GET path`` on the daemon's HTTP port, without blocking the loop."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    raw = await asyncio.wait_for(reader.read(), 10.0)
    writer.close()
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def test_readyz_is_503_while_the_index_rebuilds_and_healthz_answers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from asymcache.cacheserver import server as server_module

    rebuilt = threading.Event()
    real = server_module.rebuild_index

    def slow_rebuild(ctx: object) -> int:
        rebuilt.wait(5.0)  # the test lets it finish (bounded: a loop blocked here cannot)
        return real(ctx)

    monkeypatch.setattr(server_module, "rebuild_index", slow_rebuild)

    async def scenario() -> tuple[list[tuple[int, bytes]], bool]:
        async with serving(tmp_path, wait_ready=False, metrics_port=free_port()) as server:
            await until(lambda: server.http_port is not None, 10.0)
            seen = [await _http_get(server.http_port, path)
                    for path in ("/healthz", "/readyz", "/metrics")]
            rebuilding = not rebuilt.is_set() and not server.ready  # all three answered in it
            rebuilt.set()
            await until(lambda: server.ready, 10.0)
            seen.append(await _http_get(server.http_port, "/readyz"))
            return seen, rebuilding

    (healthz, readyz, metrics, ready), rebuilding = asyncio.run(scenario())
    assert rebuilding
    assert healthz == (200, b"ok\n") and readyz == (503, b"starting\n")
    assert metrics[0] == 200 and b"\nasymcache_server_ready 0.0\n" in metrics[1]
    assert ready == (200, b"ready\n")

"""The client library any engine links to: every daemon op. No torch.

Typical use from an engine's step loop (sync)::

    client = CacheClient("ipc:///tmp/asymcache.ipc", engine_id="gpu0")
    client.hello(fingerprint, layout, gpu_slots=4096, held=pool.held_blocks)
    found = client.lookup(keys)                   # LookupResult: where/slot per key, leased
    victims = client.allocate(n)                  # [Victim(gpu_slot, key, demote_to)]
    client.cpu_slot(v.demote_to)[:n] = gpu_bytes  # zero-copy into the shared CPU tier ...
    client.commit(refs, cpu_slots, tier="cpu")    # ... then confirm the copy
    client.commit(new_refs, gpu_slots)            # blocks now in the engine's GPU pool
    client.release(keys)

Every op takes ``timeout_s`` from the constructor and raises
:class:`DaemonUnavailable` when the daemon does not answer in time; after that, calls fail fast
(no waiting) until a reconnect backoff (50 ms doubling to 2 s) has passed, so an engine falls back
to local LRU and keeps serving. On reconnect the client PINGs; if the daemon's epoch changed (it
restarted) or it answers NOT_REGISTERED, the client re-sends HELLO with the keys ``held()``
reports, then retries the request once. Every HELLO reply starts a new :attr:`generation`: CPU
slots a reply handed out (LOOKUP, PROMOTE, ALLOCATE) belong to the generation it arrived in and
mean nothing in a later one (a restarted daemon has another slab; a re-HELLO drops leases and
reservations), so ``cpu_slot(slot, generation=g)`` refuses them with :class:`StaleSlotError`.
Refusals raise :class:`DaemonError` (``code``, ``message``; :class:`BusyError` and
:class:`NotRegisteredError` are subclasses).

Heartbeats: a daemon drops the leases of an engine silent for its ``lease_timeout_s``. Any
request counts; the sync client also pings from a background thread (its own socket) every third
of the timeout unless ``heartbeat=False``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.blocks import KVLayout
from asymcache.cacheserver.protocol.sockets import ClientCurve, DealerSocket
from asymcache.engine.client_ops import (
    BusyError,
    CacheClientError,
    ClientBase,
    DaemonError,
    DaemonUnavailable,
    HeldBlocks,
    HelloParams,
    LookupResult,
    NotRegisteredError,
    PutResult,
    Registration,
    StaleSlotError,
    Victim,
    raise_for,
    registration_of,
)

__all__ = [
    "BusyError", "CacheClient", "CacheClientError", "DaemonError",
    "DaemonUnavailable", "HeldBlocks", "LookupResult", "NotRegisteredError", "PutResult",
    "Registration", "StaleSlotError", "Victim",
]


class CacheClient(ClientBase):
    """Synchronous client (one thread at a time). See the module docstring."""

    def __init__(self, endpoint: str, *, engine_id: str | None = None, timeout_s: float = 5.0,
                 curve: ClientCurve | None = None, heartbeat: bool = True,
                 context: zmq.Context | None = None) -> None:
        super().__init__(endpoint, engine_id, timeout_s, curve)
        self._ctx = context or zmq.Context.instance()
        self._sock = DealerSocket(self._ctx, endpoint, self.routing_id, curve)
        self._heartbeat = heartbeat
        self._hb_stop = threading.Event()
        self._hb_thread: threading.Thread | None = None

    def hello(self, model_fingerprint: str, layout: KVLayout, gpu_slots: int,
              held: HeldBlocks | None = None) -> Registration:
        """Register this engine; ``held()`` -> (block refs, GPU slots) it holds now (also used
        to re-register after a daemon restart)."""
        self._hello = HelloParams(model_fingerprint, layout, gpu_slots, held)
        reg = self._call(self._hello.message(self.engine_id), registration_of)
        self._start_heartbeat(reg.lease_timeout_s)
        return reg

    def _call(self, msg: p.Message, post: Callable[[Any], Any]) -> Any:
        if self._stale:
            self._reconnect()
        reply = self._request(msg)
        if (isinstance(reply, p.ErrorReply) and reply.code == p.ErrorCode.NOT_REGISTERED
                and self._hello is not None and msg.OP != "hello"):
            self._rehello()
            reply = self._request(msg)
        return self._reply(reply, post)

    def _request(self, msg: p.Message) -> p.Reply:
        self._check_backoff()
        rid = next(self._rid)
        self._sock.send(msg.to_wire(rid))
        deadline = time.monotonic() + self.timeout_s
        while (left := deadline - time.monotonic()) > 0:
            frames = self._sock.recv(left)
            if frames is None:
                break
            got, reply = p.decode_reply(frames)
            if got == rid:
                if isinstance(reply, p.HelloReply):
                    self._registered(reply)
                self._came_back()
                return reply
        raise self._went_down()

    def _reconnect(self) -> None:
        self._check_backoff()
        self._sock.close()
        self._sock = DealerSocket(self._ctx, self.endpoint, self.routing_id, self.curve)
        self._stale = False
        pong = self._request(p.Ping(engine_id=self._pinged_id()))
        reg = self.registration
        if self._hello is not None and (reg is None or getattr(pong, "epoch", None) != reg.epoch):
            self._rehello()

    def _rehello(self) -> None:
        assert self._hello is not None
        reply = self._request(self._hello.message(self.engine_id))
        if isinstance(reply, p.ErrorReply):
            raise_for(reply)

    def _start_heartbeat(self, lease_timeout_s: float) -> None:
        if not self._heartbeat or self._hb_thread is not None:
            return
        period = max(lease_timeout_s / 3, 0.05)
        self._hb_thread = threading.Thread(target=self._beat, args=(period,), daemon=True,
                                           name=f"asymcache-heartbeat-{self.engine_id}")
        self._hb_thread.start()

    def _beat(self, period: float) -> None:
        # the daemon takes a PING naming this engine as a heartbeat only from the registering
        # socket or from its routing id + "/heartbeat" (cacheserver/handlers_data.py)
        sock = DealerSocket(self._ctx, self.endpoint, self.routing_id + b"/heartbeat", self.curve)
        try:
            while not self._hb_stop.wait(period):
                sock.send(p.Ping(engine_id=self.engine_id).to_wire(0))
                sock.recv(min(period, self.timeout_s))  # the reply only proves liveness
        finally:
            sock.close()

    def close(self) -> None:
        """Stop the heartbeat, unmap the CPU tier and close the socket."""
        self._hb_stop.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=2)
        self._close_slab()
        self._sock.close()

    def __enter__(self) -> CacheClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

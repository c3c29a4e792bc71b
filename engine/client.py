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

Every op takes ``timeout_s`` from the constructor and raises :class:`DaemonUnavailable` when the
daemon does not answer in time; after that, calls fail fast (no waiting) until a reconnect
backoff (50 ms doubling to 2 s) has passed, so an engine falls back to local LRU and keeps
serving. On reconnect the client PINGs; if the daemon's epoch changed (it restarted) or it
answers NOT_REGISTERED, the client re-sends HELLO with the keys ``held()`` reports, then retries
the request once. Every HELLO reply starts a new :attr:`generation`: CPU slots a reply handed
out (LOOKUP, PROMOTE, ALLOCATE) mean nothing in a later one (a restarted daemon has another
slab; a re-HELLO drops leases and reservations), so ``cpu_slot(slot, generation=g)`` refuses
them with :class:`StaleSlotError`. Refusals raise :class:`DaemonError` (``code``, ``message``;
:class:`BusyError` and :class:`NotRegisteredError` are subclasses).

Heartbeats (unless ``heartbeat=False``), from :meth:`hello` on: a thread PINGs from the
client's routing id + ``protocol.HEARTBEAT_SUFFIX`` every third of the daemon's
``lease_timeout_s`` (at most 2 s), so an idle engine keeps its leases, and after a miss on a
fresh socket, 50 ms doubling to 2 s. A reply sets :attr:`answering`, :attr:`info` (tiers,
remote load) and :attr:`last_pong` (does the daemon know this engine); a miss clears
``answering``, as does a request without a reply.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import zmq

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.blocks import KVLayout
from asymcache.cacheserver.protocol.sockets import ClientCurve, DealerSocket
from asymcache.engine.client_ops import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    BusyError,
    CacheClientError,
    ClientBase,
    DaemonError,
    DaemonInfo,
    DaemonUnavailable,
    HeldBlocks,
    HelloParams,
    LookupResult,
    NotRegisteredError,
    PutResult,
    Registration,
    StaleSlotError,
    Victim,
)

log = logging.getLogger(__name__)
MAX_IN_FLIGHT = 64  # submitted requests awaiting result() (bounds the replies kept early)
__all__ = [
    "BusyError", "CacheClient", "CacheClientError", "DaemonError", "DaemonInfo",
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
        self._heartbeat, self._closing = heartbeat, False
        self._hb_wake = threading.Event()
        self._hb_thread: threading.Thread | None = None
        self._pong: tuple[int, p.PingReply | None] = (-1, None)  # (generation, heartbeat reply)
        self._unacked: dict[int, tuple[str, float]] = {}  # one-way request id -> (op, sent at)
        self._inflight: dict[int, p.Message] = {}  # submitted request id -> message (submit())
        self._early: dict[int, p.Reply] = {}  # replies to submitted requests, read early
        self._hello_rid = 0  # request id of the HELLO that began this registration

    def hello(self, model_fingerprint: str, layout: KVLayout, gpu_slots: int,
              held: HeldBlocks | None = None, cost_profile: dict | None = None) -> Registration:
        """Register this engine; ``held()`` -> (block refs, GPU slots) it holds now (also used
        to re-register after a daemon restart); ``cost_profile``: its cost model
        (``CostModel.to_dict()``), which the daemon prices its blocks with."""
        self._hello = HelloParams(model_fingerprint, layout, gpu_slots, held, cost_profile)
        if self._heartbeat and self._hb_thread is None:  # beats also while this HELLO fails
            self._hb_thread = threading.Thread(target=self._beat, daemon=True,
                                               name=f"asymcache-heartbeat-{self.engine_id}")
            self._hb_thread.start()
        return self._call(self._hello.message(self.engine_id), lambda _: self.registration)

    @property
    def last_pong(self) -> p.PingReply | None:
        """The latest heartbeat reply of the current registration (``registered``?), or None."""
        generation, pong = self._pong
        return pong if generation == self.generation else None

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
        # never a blocking send: after a handshake the daemon refused (a client without the
        # CURVE keys of a protected daemon) the socket can be left with no connection to
        # queue on, and a blocking send then waits for ever
        try:
            rid = self._send_now(msg)
        except DaemonUnavailable:
            self._hb_wake.set()  # the heartbeat checks at once, then backs off
            raise
        reply = _await(self._sock, rid, self.timeout_s, self._other)
        if reply is None:
            err = self._went_down()
            self._hb_wake.set()  # the heartbeat checks at once, then backs off
            raise err
        if isinstance(reply, p.HelloReply):
            self._hello_rid = rid  # ACKs of requests sent before it speak of the old session
            self._registered(reply)
            self._hb_wake.set()  # a beat now, then at the new registration's period
        self._came_back()
        return reply

    def _reconnect(self) -> None:
        self._check_backoff()
        self._sock.close()
        self._sock = DealerSocket(self._ctx, self.endpoint, self.routing_id, self.curve)
        self._stale = False
        lost, self._unacked = bool(self._unacked), {}  # unsent ones went with the old socket
        self._inflight, self._early = {}, {}  # submitted ones too: result() says they are lost
        pong = self._request(p.Ping(engine_id=self._pinged_id()))
        reg = self.registration
        if self._hello is not None and (reg is None or getattr(pong, "epoch", None) != reg.epoch
                                        or lost):  # a fresh HELLO makes the index exact again
            self._rehello()

    # ---- pipelined requests -----------------------------------------------------------
    def submit(self, msg: p.Message) -> int:
        """Send request ``msg`` without waiting; :meth:`result` returns its reply later. Up to
        :data:`MAX_IN_FLIGHT` may be in flight, mixed with other requests and notifications:
        the daemon handles and answers them in order, so their latency overlaps the caller's
        work. Every submitted request must be collected with :meth:`result`."""
        if len(self._inflight) >= MAX_IN_FLIGHT:
            raise RuntimeError(f"{MAX_IN_FLIGHT} submitted requests wait for result() already")
        self._sendable()
        rid = self._send_now(msg)
        self._inflight[rid] = msg
        return rid

    def result(self, rid: int, post: Callable[[Any], Any] = lambda r: r) -> Any:
        """``post(reply)`` for submitted request ``rid`` (waits up to ``timeout_s``). Raises as
        the blocking ops do; :class:`DaemonUnavailable` also when the request was lost with its
        socket (a reconnect since). A NOT_REGISTERED reply is retried once after a new HELLO."""
        msg = self._inflight.pop(rid, None)
        if msg is None:
            raise DaemonUnavailable(f"request {rid} was lost with the connection to "
                                    f"{self.endpoint}, or was never submitted")
        reply = self._early.pop(rid, None)
        if reply is None:
            reply = _await(self._sock, rid, self.timeout_s, self._other)
        if reply is None:
            err = self._went_down()
            self._hb_wake.set()
            raise err
        self._came_back()
        if (isinstance(reply, p.ErrorReply) and reply.code == p.ErrorCode.NOT_REGISTERED
                and self._hello is not None):
            self._rehello()
            reply = self._request(msg)
        return self._reply(reply, post)

    # ---- one-way requests ---------------------------------------------------------------
    def notify(self, msg: p.Message) -> int:
        """Send ``msg`` (a COMMIT, RELEASE or CANCEL with ``notify=True``) without waiting: the
        daemon handles it in order with this client's other requests and acknowledges it in a
        later ACK (read by any request's wait, or :meth:`poll_acks`). Raises
        :class:`DaemonUnavailable` when the socket cannot take it or the oldest notification
        has waited ``timeout_s`` for its ACK. Returns its request id (see :meth:`acked`)."""
        self._sendable()
        # ACKs are read by the engine's step (check_acks) and by every wait; here only before
        # concluding that the oldest notification went unanswered
        if self.overdue:
            self.poll_acks()
            if self.overdue:
                raise self._went_down()
        rid = self._send_now(msg)
        self._unacked[rid] = (msg.OP, time.monotonic())
        return rid

    def _sendable(self) -> None:
        """Before a send that does not wait: a fresh socket if the last one went stale, and
        :class:`DaemonUnavailable` while the backoff after a failure lasts."""
        if self._stale:
            self._reconnect()
        self._check_backoff()

    def _send_now(self, msg: p.Message) -> int:
        """Send ``msg`` without blocking under a new request id (returned), or declare the
        daemon down when its socket cannot take it."""
        rid = next(self._rid)
        if not self._sock.send(msg.to_wire(rid), block=False):
            raise self._went_down()
        return rid

    def acked(self, rid: int) -> bool:
        """Whether one-way request ``rid`` is no longer waiting for its ACK (acknowledged, or
        given up with its socket)."""
        return rid not in self._unacked

    @property
    def overdue(self) -> bool:
        """The oldest one-way request has waited ``timeout_s`` for its ACK."""
        oldest = next(iter(self._unacked.values()), None)
        return oldest is not None and time.monotonic() - oldest[1] > self.timeout_s

    def check_acks(self) -> None:
        """Read the ACKs waiting now; :class:`DaemonUnavailable` (and a fresh socket and HELLO
        at the next request) when a one-way request is :attr:`overdue`."""
        self.poll_acks()
        if self.overdue:
            raise self._went_down()

    @property
    def has_unacked(self) -> bool:
        """One-way requests are waiting for their ACK."""
        return bool(self._unacked)

    def poll_acks(self) -> int:
        """Read the ACKs waiting now (never blocks); how many notifications are unacknowledged."""
        while self._read_one(0):
            pass
        return len(self._unacked)

    def settle(self, timeout_s: float) -> int:
        """Read ACKs until every notification is acknowledged or ``timeout_s`` has passed
        (waiting on the socket, not polling); how many are still unacknowledged."""
        deadline = time.monotonic() + timeout_s
        while self._unacked and (left := deadline - time.monotonic()) > 0:
            if not self._read_one(left):
                break
        return len(self._unacked)

    def _read_one(self, timeout_s: float) -> bool:
        """Read one message that answers no waiting request (see :meth:`_other`) within
        ``timeout_s`` (0: only one already there); False if none came. One the protocol
        cannot decode is skipped."""
        if (frames := self._sock.recv(timeout_s)) is None:
            return False
        try:
            rid, reply = p.decode_reply(frames)
        except p.ProtocolError:
            return True
        self._other(rid, reply)
        return True

    def _other(self, rid: int, reply: p.Reply) -> None:
        """A message that answers no waiting request: a submitted request's reply (kept for
        :meth:`result`), an ACK, or the error reply to a notification the daemon could not
        decode."""
        if rid in self._inflight and not isinstance(reply, p.Ack):
            self._early[rid] = reply
        elif isinstance(reply, p.Ack):
            for done in [r for r in self._unacked if r <= reply.upto]:
                del self._unacked[done]
            if reply.upto < self._hello_rid:  # about a session a later HELLO replaced: its
                self.notify_errors += len(reply.error_ids)  # slots and refusals are void
                return
            self.reservations += [(key, slot, self.generation) for key, slot in
                                  zip(reply.reserved_keys, reply.reserved_slots, strict=True)]
            self.stocked += [(slot, key, to, self.generation) for slot, key, to in zip(
                reply.victim_slots, reply.victim_keys, reply.victim_demote_to, strict=True)]
            for err_rid, code, message in zip(reply.error_ids, reply.error_codes,
                                              reply.error_messages, strict=True):
                self._refused(err_rid, code, message)
        elif isinstance(reply, p.ErrorReply) and self._unacked.pop(rid, None) is not None:
            self._refused(rid, reply.code, reply.message)

    def _refused(self, rid: int, code: str, message: str) -> None:
        self.notify_errors += 1
        if code == p.ErrorCode.NOT_REGISTERED:
            self.needs_hello = True
        log.warning("one-way request %d refused by the daemon: %s: %s", rid, code, message)

    def _rehello(self) -> None:
        assert self._hello is not None
        self._reply(self._request(self._hello.message(self.engine_id)), lambda r: r)

    def _beat(self) -> None:
        """The heartbeat thread (see the module docstring)."""
        sock, rids, backoff = None, itertools.count(1), BACKOFF_MIN_S
        while not self._closing:
            if sock is None:
                sock = DealerSocket(self._ctx, self.endpoint,
                                    self.routing_id + p.HEARTBEAT_SUFFIX, self.curve)
            generation, rid = self.generation, next(rids)
            got = None
            if sock.send(p.Ping(engine_id=self._pinged_id(), info=True,
                                purged_upto=self.purged_upto).to_wire(rid), block=False):
                try:
                    got = _await(sock, rid, self.timeout_s, None)
                except p.ProtocolError:  # a reply this client cannot read: as good as none
                    got = None
            self.answering = got is not None
            if got is None:  # a fresh socket next time: no queue of PINGs to a dead daemon
                sock.close()
                sock, wait, backoff = None, backoff, min(backoff * 2, BACKOFF_MAX_S)
            else:
                wait, backoff = self._heard(generation, got), BACKOFF_MIN_S
            self._hb_wake.wait(wait)
            self._hb_wake.clear()
        if sock is not None:
            sock.close()

    def _heard(self, generation: int, got: p.Reply) -> float:
        """Keep a heartbeat's reply; returns the wait until the next beat."""
        if isinstance(got, p.PingReply):
            self._pong = (generation, got)
            self.info = DaemonInfo.of(got)  # PING with ``info``: its reply has the fields
        reg = self.registration
        return min(reg.lease_timeout_s / 3, BACKOFF_MAX_S) if reg else BACKOFF_MAX_S

    def close(self) -> None:
        """Stop the heartbeat, unmap the CPU tier and close the socket."""
        self._closing = True
        self._hb_wake.set()
        if self._hb_thread is not None:
            self._hb_thread.join(timeout=2)
        self._close_slab()
        self._sock.close()

    def __enter__(self) -> CacheClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _await(sock: DealerSocket, rid: int, timeout_s: float,
           other: Callable[[int, p.Reply], None] | None) -> p.Reply | None:
    """The reply to request ``rid`` (others go to ``other``, or are skipped), or None if none
    comes in time."""
    deadline = time.monotonic() + timeout_s
    while (frames := sock.recv(deadline - time.monotonic())) is not None:
        got, reply = p.decode_reply(frames)
        if got == rid and not isinstance(reply, p.Ack):
            return reply
        if other is not None:
            other(got, reply)
    return None

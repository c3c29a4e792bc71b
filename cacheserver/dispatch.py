"""From received frames to exactly one reply per request (one ACK for one-way requests).

:class:`Dispatcher` decodes each message of a batch, admits it against its peer's in-flight
bound, finds the handler (``handlers.HANDLERS``), runs it (inline, or as a task for asynchronous
ops) and sends the reply, recording latency and errors. An inline handler that needs I/O for part
of its answer (the remote tier) returns an awaitable instead of a reply: the reply is sent when it
completes, and the loop keeps serving meanwhile. A request that cannot be decoded, is
refused or makes a handler fail still gets an error reply; the daemon keeps serving.

"In flight" counts a peer's requests from receipt to reply. A batch is admitted as a whole before
any of it runs, so a peer that floods the socket gets BUSY for what is over the bound.

A one-way request (``notify``: COMMIT, RELEASE, CANCEL, ALLOCATE, FORGET) gets no reply of
its own and takes no in-flight unit (it is handled before the batch ends). It runs in its place
among the peer's requests, so a later LOOKUP sees it. Each peer that sent some gets one ACK:
how many, the highest request id, the refused ones with their errors, and the CPU slots and
victims they obtained; it goes out at the end of the batch or, sooner, just before any reply
to that peer. A notification that cannot be decoded is answered like any request (an error
reply under its id).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable

from asymcache.cacheserver import (  # noqa: F401 - register ops
    handlers_data,
    handlers_lookup,
    handlers_session,
    handlers_signals,
    handlers_tenants,
)
from asymcache.cacheserver.handlers import HANDLERS, Context, HandlerSpec
from asymcache.cacheserver.index import IndexFull
from asymcache.cacheserver.leases import EngineSession
from asymcache.cacheserver.protocol import (
    Ack,
    AllocateReply,
    Buffer,
    CommitReply,
    ErrorCode,
    ErrorReply,
    Message,
    ProtocolError,
    Reply,
    decode_request,
)
from asymcache.cacheserver.router import RouterSocket

log = logging.getLogger("asymcache.dispatch")
_REPLIES = (Message, ErrorReply)  # what a handler returns when it can answer at once


class Dispatcher:
    """Runs handlers for batches of ``[identity, header, *payload]`` messages."""

    def __init__(self, ctx: Context, router: RouterSocket, max_inflight: int) -> None:
        self.ctx = ctx
        self.router = router
        self.max_inflight = max_inflight
        self._limits = ctx.config.limits
        self._max_message = ctx.config.max_message_bytes
        self._inflight: dict[bytes, int] = {}
        self._tasks: set[asyncio.Task] = set()
        self._acks: dict[bytes, _AckState] = {}  # one-way requests handled, per peer

    def dispatch(self, batch: list[list[Buffer]]) -> None:
        """Answer every message of ``batch``: one that fails outside its handler (a bug) gets
        an INTERNAL reply, frees its in-flight unit and leaves the rest of the batch served."""
        t0 = time.perf_counter()
        admitted: list[tuple[bytes, int, Message, bool]] = []
        for msg in batch:
            identity = bytes(msg[0])
            try:
                rid, req = decode_request(msg[1:], self._limits)
            except ProtocolError as e:
                self._send(identity, e.request_id, ErrorReply(e.op, e.code, e.message), t0, False)
                continue
            except Exception as e:  # a decoder bug: answer it (no request id is known)
                self._send(identity, 0, _error_reply("", e), t0, False)
                continue
            if len(msg) > 2 and (size := _payload_bytes(msg)) > self._max_message:
                err = ErrorReply(req.OP, ErrorCode.TOO_LARGE, f"message of {size} bytes is over "
                                 f"max_message_bytes={self._max_message}: send fewer blocks "
                                 f"per request")
                self._send(identity, rid, err, t0, False)
                continue
            if getattr(req, "notify", False):
                admitted.append((identity, rid, req, True))
                continue
            n = self._inflight.get(identity, 0)
            if n >= self.max_inflight:
                busy = ErrorReply(req.OP, ErrorCode.BUSY, f"{n} requests in flight "
                                  f"(max_inflight={self.max_inflight}): wait for replies")
                self._send(identity, rid, busy, t0, False)
                continue
            self._inflight[identity] = n + 1
            admitted.append((identity, rid, req, False))
        for identity, rid, req, one_way in admitted:
            if one_way:
                self._note(identity, rid, req, t0)
                continue
            try:
                self._run(identity, rid, req, t0)
            except Exception as e:  # before its reply was sent (``_send`` never raises)
                self._send(identity, rid, _error_reply(req.OP, e), t0, True)
        if self._acks:
            self._send_acks()

    def _session(self, identity: bytes, req: Message, spec: HandlerSpec
                 ) -> tuple[EngineSession | None, ErrorReply | None]:
        """The peer's session (seen now), and the refusal when the op needs one and it has
        none."""
        ctx = self.ctx
        session = ctx.sessions.by_identity(identity)
        if session is not None:
            session.last_seen = ctx.clock()
        if spec.needs_session and session is None:
            return None, ErrorReply(req.OP, ErrorCode.NOT_REGISTERED,
                                    f"{req.OP.upper()} needs a HELLO first (daemon epoch "
                                    f"{ctx.epoch}; it may have restarted)")
        return session, None

    def _call(self, spec: HandlerSpec, identity: bytes, session: EngineSession | None,
              req: Message) -> Reply:
        """An inline handler's reply (an error reply if it raised; an awaitable from a handler
        that needs I/O first). Demotions to lower tiers that it causes are placed after its
        reply (``TierChain.defer``): an ALLOCATE that evicts CPU blocks to make room for its
        victims answers before they are written to disk."""
        chain = self.ctx.residency.chain
        chain.defer = self.ctx.after_reply
        try:
            return spec.fn(self.ctx, identity, session, req)
        except Exception as e:
            return _error_reply(req.OP, e)
        finally:
            chain.defer = None

    def _note(self, identity: bytes, rid: int, req: Message, t0: float) -> None:
        """Handle a one-way request; its outcome goes into the peer's next ACK."""
        ctx = self.ctx
        spec = HANDLERS[req.OP]
        session, refused = self._session(identity, req, spec)
        reply: Reply
        if refused is not None:
            reply = refused
        elif spec.is_async:
            reply = ErrorReply(req.OP, ErrorCode.BAD_FIELD, f"{req.OP.upper()} cannot be one-way")
        else:
            reply = self._call(spec, identity, session, req)
        ack = self._acks.get(identity)
        if ack is None:
            ack = self._acks[identity] = _AckState()
        ack.upto, ack.count = max(ack.upto, rid), ack.count + 1
        if isinstance(reply, ErrorReply):
            ack.errors.append((rid, str(reply.code), reply.message))
        elif isinstance(reply, AllocateReply) and reply.keys:
            ack.victims += zip(reply.slots, reply.keys, reply.demote_to, strict=True)
        elif isinstance(reply, CommitReply) and reply.reserved:
            ack.reserved += [(ref.key, s) for ref, s in zip(req.blocks, reply.reserved,  # type: ignore[attr-defined]
                                                             strict=True) if s >= 0]
        self._count(reply, t0)
        if ctx.deferred:
            self._run_deferred()

    def _send_acks(self) -> None:
        for identity in list(self._acks):
            self._send_ack(identity)

    def _send_ack(self, identity: bytes) -> None:
        """Send ``identity``'s pending ACK: at the end of a batch, or before any reply to it
        (a reply never overtakes the ACK of a one-way request handled before it)."""
        a = self._acks.pop(identity, None)
        if a is None:
            return
        ack = Ack(upto=a.upto, count=a.count, error_ids=[e[0] for e in a.errors],
                  error_codes=[e[1] for e in a.errors], error_messages=[e[2] for e in a.errors],
                  reserved_keys=[k for k, _ in a.reserved],
                  reserved_slots=[s for _, s in a.reserved], victim_slots=[v[0] for v in a.victims],
                  victim_keys=[v[1] for v in a.victims], victim_demote_to=[v[2] for v in a.victims])
        try:
            self.router.send(identity, ack.to_wire(a.upto))
        except Exception:
            log.exception("sending an ACK failed")

    def _run(self, identity: bytes, rid: int, req: Message, t0: float) -> None:
        ctx = self.ctx
        spec = HANDLERS[req.OP]
        session, refused = self._session(identity, req, spec)
        reply: Reply
        if refused is not None:
            reply = refused
        elif spec.is_async:
            self._spawn(self._run_async(spec, identity, session, rid, req, t0))
            return
        else:
            reply = self._call(spec, identity, session, req)
            if not isinstance(reply, _REPLIES):  # an awaitable: the handler needs I/O first
                self._spawn(self._finish(req.OP, reply, identity, rid, t0))
                if ctx.deferred:
                    self._run_deferred()
                return
        self._send(identity, rid, reply, t0, True)
        if ctx.deferred:
            self._run_deferred()

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, op: str, pending: Awaitable[Reply], identity: bytes, rid: int,
                      t0: float) -> None:
        try:
            reply = await pending
        except Exception as e:
            reply = _error_reply(op, e)
        self._send(identity, rid, reply, t0, True)

    def _run_deferred(self) -> None:
        """Work a handler left for after its reply (see ``Context.after_reply``)."""
        work, self.ctx.deferred = self.ctx.deferred, []
        for fn in work:
            try:
                fn()
            except Exception:
                log.exception("deferred work failed")

    async def _run_async(self, spec: HandlerSpec, identity: bytes, session: EngineSession | None,
                         rid: int, req: Message, t0: float) -> None:
        try:
            reply: Reply = await spec.fn(self.ctx, identity, session, req)
        except Exception as e:
            reply = _error_reply(req.OP, e)
        self._send(identity, rid, reply, t0, True)

    def _send(self, identity: bytes, rid: int, reply: Reply, t0: float, admitted: bool) -> None:
        """Send ``reply`` (an INTERNAL error instead if it cannot be encoded), count it and,
        if the request was ``admitted``, free its in-flight unit. Never raises."""
        try:
            try:
                frames = reply.to_wire(rid)
            except Exception as e:
                reply = _error_reply(getattr(reply, "OP", ""), e)
                frames = reply.to_wire(rid)
            if identity in self._acks:
                self._send_ack(identity)
            self.router.send(identity, frames)
            self._count(reply, t0)
        except Exception:
            log.exception("sending a reply to request %d failed", rid)
        finally:
            if admitted:
                self._release(identity)

    def _count(self, reply: Reply, t0: float) -> None:
        m = self.ctx.metrics
        if type(reply) is ErrorReply:
            m.error(reply.code)
            op = reply.op
        else:
            op = reply.OP
        latency = m.latency.get(op)
        if latency is not None:
            latency.observe(time.perf_counter() - t0)

    def _release(self, identity: bytes) -> None:
        n = self._inflight.get(identity, 0) - 1
        if n > 0:
            self._inflight[identity] = n
        else:
            self._inflight.pop(identity, None)

    async def drain(self, timeout_s: float) -> None:
        """Wait (bounded) for asynchronous requests to reply."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout_s)


class _AckState:
    __slots__ = ("count", "errors", "reserved", "upto", "victims")

    def __init__(self) -> None:
        self.upto, self.count = 0, 0
        self.errors: list[tuple[int, str, str]] = []
        self.reserved: list[tuple[bytes, int]] = []
        self.victims: list[tuple[int, bytes, int]] = []


def _payload_bytes(msg: list[Buffer]) -> int:
    """Bytes of a received ``[identity, header, *payload]`` message's frames, header included."""
    return sum(len(frame) for frame in msg[1:])


def _error_reply(op: str, e: Exception) -> ErrorReply:
    """The error reply for a handler's exception (unexpected ones are logged as INTERNAL)."""
    if isinstance(e, ProtocolError):
        return ErrorReply(op, e.code, e.message)
    if isinstance(e, IndexFull):
        return ErrorReply(op, ErrorCode.CAPACITY, str(e))
    log.error("%s failed", op.upper(), exc_info=e)
    return ErrorReply(op, ErrorCode.INTERNAL, f"{type(e).__name__}: {e}")

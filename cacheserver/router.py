"""The daemon's socket role: a ROUTER bound to the endpoint, read in batches from asyncio.

The socket itself is a plain (synchronous) pyzmq socket driven by the event loop through its
file descriptor: a reader callback drains the waiting messages without blocking and hands each
batch to the daemon's dispatcher right there (no task switch per request). ZeroMQ's descriptor is
edge-triggered and a send can consume the edge of a message that arrived meanwhile, so the drain
re-checks ``EVENTS`` after each batch, and a reply sent from outside a drain (an asynchronous
handler) schedules one when a message is waiting.

CURVE (``access.py``): with the daemon's key pair the socket is a CURVE server; a ZAP
authenticator thread admits only clients whose public keys are in the allow-list, and each
message's ZAP user id (its sender's public key) is checked again against the current list, so a
key removed while its client is connected gets no more replies (counted in ``refused``, the
metric ``asymcache_rpc_refused_messages_total``; logged once per key). Plain clients cannot
complete the handshake and are refused. The key each routing id spoke with is remembered
(:meth:`RouterSocket.client_key`): an engine id belongs to the key that registered it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import zmq

from asymcache.cacheserver.access import ClientKeys, ServerCurve
from asymcache.cacheserver.protocol.sockets import send_frames
from asymcache.cacheserver.protocol.wire import Buffer

log = logging.getLogger(__name__)
# Plain ints: pyzmq's flag enums make every ``|`` and comparison a Python-level call.
_EVENTS, _POLLIN, _RCVMORE = int(zmq.EVENTS), int(zmq.POLLIN), int(zmq.RCVMORE)
_NOBLOCK = int(zmq.NOBLOCK)
_ROUNDS = 8  # batches per drain before other callbacks get the loop
_KEYS_KEPT = 65536  # routing ids whose CURVE key is remembered (the oldest forgotten first)


class RouterSocket:
    """Binds a ROUTER; yields ``[identity, header, *payload]`` messages; sends replies.

    ``max_message_bytes`` disconnects peers that send a single frame bigger than that (the
    protocol limits, checked after receipt, answer smaller violations with an error reply).
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, *, curve: ServerCurve | None = None,
                 max_message_bytes: int = -1, hwm: int = 10_000, rcvhwm: int = 0) -> None:
        self.endpoint = endpoint
        self._ctx = ctx
        self._auth = None
        self._clients: ClientKeys | None = None  # CURVE: each message's sender is checked
        self._refused_keys: set[str] = set()  # revoked keys already logged
        self._sock = ctx.socket(zmq.ROUTER)
        for opt, value in ((zmq.LINGER, 0), (zmq.ROUTER_MANDATORY, 1), (zmq.ROUTER_HANDOVER, 1),
                           (zmq.SNDHWM, hwm), (zmq.RCVHWM, rcvhwm or hwm),
                           (zmq.MAXMSGSIZE, max_message_bytes)):
            self._sock.setsockopt(opt, value)
        if curve is not None:
            self._setup_curve(curve)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_batch: Callable[[list[list[Buffer]]], None] | None = None
        self._max_batch = 1
        self._draining = False  # inside _drain: it re-checks EVENTS after each batch itself
        self._scheduled = False  # a _drain is queued with call_soon
        self.dropped = 0
        self.refused = 0  # messages of clients whose key left the allow-list
        self._key_of: dict[bytes, str] = {}  # CURVE: routing id -> the key it last spoke with

    def _setup_curve(self, curve: ServerCurve) -> None:
        """CURVE server; the context's ZAP authenticator asks ``curve.clients`` at each
        handshake (it serves every CURVE socket of the context: the events sockets too)."""
        from zmq.auth.thread import ThreadAuthenticator

        curve.secure(self._sock)
        self._auth = ThreadAuthenticator(self._ctx)
        self._auth.start()
        self._auth.configure_curve_callback(domain="*", credentials_provider=curve.clients)
        self._clients = curve.clients

    def start(self, loop: asyncio.AbstractEventLoop,
              on_batch: Callable[[list[list[Buffer]]], None], max_batch: int) -> None:
        """Bind the endpoint; from now on ``on_batch(messages)`` is called on ``loop`` with up
        to ``max_batch`` waiting ``[identity, header, *payload]`` messages at a time."""
        self._sock.bind(self.endpoint)
        self._loop, self._on_batch, self._max_batch = loop, on_batch, max_batch
        loop.add_reader(self._sock.get(zmq.FD), self._drain)
        self._schedule()  # a peer may have queued messages before the reader was added

    def stop_reading(self) -> None:
        """Deliver no more messages (replies can still be sent)."""
        if self._loop is not None and self._on_batch is not None and not self._sock.closed:
            self._loop.remove_reader(self._sock.get(zmq.FD))
        self._on_batch = None

    def _schedule(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        """Dispatch waiting messages batch by batch; after ``_ROUNDS`` batches, yield the loop
        to other callbacks and come back (HTTP, housekeeping and tasks keep running)."""
        self._scheduled = False
        if self._on_batch is None or self._draining:
            return
        self._draining = True
        try:
            for _ in range(_ROUNDS):
                batch = self._recv_batch()
                if not batch or self._on_batch is None:
                    return
                try:
                    self._on_batch(batch)
                except Exception:  # a dispatcher bug: log it, keep serving
                    log.exception("dispatching a batch of %d messages failed", len(batch))
            self._schedule()
        finally:
            self._draining = False

    def _recv_batch(self) -> list[list[Buffer]]:
        """Up to ``max_batch`` waiting messages, without blocking (``[]``: none waiting; the
        descriptor's edge is re-armed by that ``EVENTS`` read)."""
        sock, out = self._sock, []
        try:
            while len(out) < self._max_batch and sock.get(_EVENTS) & _POLLIN:
                if self._clients is None:
                    out.append(self._recv_one())
                elif (msg := self._recv_allowed()) is not None:
                    out.append(msg)
        except zmq.Again:  # POLLIN promised a message that is not there
            pass
        return out

    def _recv_allowed(self) -> list[Buffer] | None:
        """A waiting message whose sender's key is still allowed; else it is read, dropped
        (no reply: the client times out and reconnects, and its handshake is refused), counted
        and, the first time for that key, logged."""
        assert self._clients is not None
        first = self._sock.recv(_NOBLOCK, copy=False)
        try:
            user = first.get("User-Id")
        except zmq.ZMQError:  # no ZAP user id: not an authenticated peer
            user = ""
        rest = self._recv_one(first.bytes)
        if self._clients.allows(user):
            keys = self._key_of
            if keys.get(first.bytes) != user:
                if len(keys) >= _KEYS_KEPT:
                    del keys[next(iter(keys))]
                keys[first.bytes] = user
            return rest
        self.refused += 1
        if user not in self._refused_keys and len(self._refused_keys) < 4096:
            self._refused_keys.add(user)
            log.warning("refused a message from client key %s: no longer in curve_clients_dir",
                        user)
        return None

    def _recv_one(self, identity: bytes | None = None) -> list[Buffer]:
        """``[identity, header, *payload]`` of a waiting message (``identity``: its first frame,
        already read): identity and header copied (small; copying is cheaper than zero-copy
        frames), payload frames as zero-copy views. ZeroMQ delivers a multipart message whole,
        so once ``POLLIN`` says one is waiting every part of it can be read without blocking."""
        sock = self._sock
        msg: list[Buffer] = [sock.recv(_NOBLOCK) if identity is None else identity]
        msg.append(sock.recv() if sock.get(_RCVMORE) else b"")
        while sock.get(_RCVMORE):
            msg.append(sock.recv(copy=False).buffer)
        return msg

    def client_key(self, identity: bytes) -> str:
        """The CURVE public key (Z85) the peer ``identity`` sent its latest message with; ""
        without CURVE. Engines are bound to it at HELLO (``handlers.hello``)."""
        return self._key_of.get(identity, "")

    def send(self, identity: bytes, frames: list[Buffer]) -> bool:
        """Send a reply; ``False`` (and counted in ``dropped``) when the peer is gone or full."""
        try:
            send_frames(self._sock, [identity, *frames], _NOBLOCK)
            ok = True
        except (zmq.Again, zmq.ZMQError) as e:
            log.debug("reply to %r dropped: %s", identity, e)
            self.dropped += 1
            ok = False
        if not self._draining and self._sock.get(_EVENTS) & _POLLIN:
            self._schedule()  # this send may have consumed the edge of a waiting message
        return ok

    def close(self) -> None:
        self.stop_reading()
        self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

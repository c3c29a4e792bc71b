"""Client-side socket role: a DEALER connection, optionally CURVE-secured; :func:`ping`.

Each wrapper hides connect/poll details and speaks in frames (``list`` of bytes-like objects):
the header frame arrives as ``bytes`` and payload frames as zero-copy ``memoryview`` s. The
daemon's side (the ROUTER) is ``cacheserver/router.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import zmq

from asymcache.cacheserver.protocol.framing import Buffer
from asymcache.cacheserver.protocol.messages import Ping, PingReply
from asymcache.cacheserver.protocol.wire import decode_reply

# a client's heartbeat socket: its routing id + HEARTBEAT_SUFFIX (the daemon takes a PING naming
# an engine as its heartbeat only from the socket that registered it or from that identity)
from asymcache.cacheserver.protocol.wire_types import HEARTBEAT_SUFFIX, ROUTING_ID_PREFIX

__all__ = ["HEARTBEAT_SUFFIX", "ROUTING_ID_PREFIX", "ClientCurve", "DealerSocket", "ping",
           "send_frames", "split_frames"]
_ZERO_COPY_MIN = 64 * 1024  # frames at least this big are sent without a copy
_SNDMORE = int(zmq.SNDMORE)  # a plain int: pyzmq's flag enums make ``|`` a Python-level call
_EVENTS, _POLLIN = int(zmq.EVENTS), int(zmq.POLLIN)


@dataclass(frozen=True)
class ClientCurve:
    """CURVE keys of a client (z85-encoded, 40 bytes each): the server's public key and the
    client's own key pair. ``from_files`` reads zmq certificates (``zmq.auth`` format)."""

    server_public: bytes
    public: bytes
    secret: bytes

    @classmethod
    def from_files(cls, server_cert: str, client_secret_cert: str) -> ClientCurve:
        import zmq.auth

        server_public, _ = zmq.auth.load_certificate(server_cert)
        public, secret = zmq.auth.load_certificate(client_secret_cert)
        if secret is None:
            raise ValueError(f"{client_secret_cert} holds no secret key (use the .key_secret file)")
        return cls(server_public, public, secret)

    def apply(self, sock: zmq.Socket) -> None:
        """Make ``sock`` a CURVE client of the server (before it connects)."""
        sock.curve_serverkey = self.server_public
        sock.curve_publickey = self.public
        sock.curve_secretkey = self.secret


def _dealer(ctx: zmq.Context, endpoint: str, routing_id: bytes | None,
            curve: ClientCurve | None) -> zmq.Socket:
    """A DEALER of ``ctx``, configured, connected to ``endpoint``."""
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if routing_id:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    if curve is not None:
        curve.apply(sock)
    sock.connect(endpoint)
    return sock


def send_frames(sock: zmq.Socket, frames: list[Buffer], flags: int = 0) -> None:
    """Send a multipart message; small frames are copied, big ones go zero-copy."""
    flags = int(flags)
    more = flags | _SNDMORE
    last = len(frames) - 1
    for i in range(last):
        frame = frames[i]
        sock.send(frame, more, copy=len(frame) < _ZERO_COPY_MIN)
    frame = frames[last]
    sock.send(frame, flags, copy=len(frame) < _ZERO_COPY_MIN)


def split_frames(parts: list[zmq.Frame]) -> list[Buffer]:
    """Received frames as ``[header bytes, *payload memoryviews]``."""
    return [parts[0].bytes, *(p.buffer for p in parts[1:])]


class DealerSocket:
    """A synchronous DEALER connected to the daemon (one caller thread at a time)."""

    def __init__(self, ctx: zmq.Context, endpoint: str, routing_id: bytes | None = None,
                 curve: ClientCurve | None = None) -> None:
        self.endpoint = endpoint
        self._sock = _dealer(ctx, endpoint, routing_id, curve)

    def send(self, frames: list[Buffer], block: bool = True) -> bool:
        """Send a message; with ``block=False``, ``False`` when the socket's queue is full (no
        daemon connected, or one that reads nothing)."""
        try:
            send_frames(self._sock, frames, 0 if block else zmq.NOBLOCK)
        except zmq.Again:
            return False
        return True

    def recv(self, timeout_s: float) -> list[Buffer] | None:
        """The next message, or ``None`` when nothing arrives within ``timeout_s``."""
        if timeout_s <= 0:  # only what is there: one EVENTS read, no poll call
            if not self._sock.get(_EVENTS) & _POLLIN:
                return None
        elif not self._sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            return None
        return split_frames(self._sock.recv_multipart(copy=False))

    def close(self) -> None:
        self._sock.close(linger=0)


def ping(endpoint: str, timeout_s: float = 1.0, context: zmq.Context | None = None,
         curve: ClientCurve | None = None) -> PingReply | None:
    """One PING over a fresh socket; the reply, or ``None`` if nothing answered in time."""
    ctx = context or zmq.Context.instance()
    sock = DealerSocket(ctx, endpoint, curve=curve)
    try:
        sock.send(Ping().to_wire(1))
        frames = sock.recv(timeout_s)
        if frames is None:
            return None
        _, reply = decode_reply(frames)
        return reply if isinstance(reply, PingReply) else None
    finally:
        sock.close()

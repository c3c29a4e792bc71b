"""The daemon's socket role: a ROUTER bound to the endpoint, read in batches from asyncio.

The socket itself is a plain (synchronous) pyzmq socket driven by the event loop through its
file descriptor: ``recv_batch`` drains every waiting message without blocking and only awaits when
there is none. ZeroMQ's descriptor is edge-triggered, so after every send the wrapper re-checks
``EVENTS`` and wakes a waiting reader itself.

CURVE: with a server secret key the socket is a CURVE server; a ZAP authenticator thread admits
only clients whose public certificates are in ``clients_dir`` (any CURVE client when it is empty).
Plain clients cannot complete the handshake and are refused.
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass

import zmq

from cacheserver.protocol.sockets import send_frames
from cacheserver.protocol.wire import Buffer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerCurve:
    """The server's CURVE certificate file and the directory of allowed client certificates."""

    secret_key_file: str
    clients_dir: str = ""


class RouterSocket:
    """Binds a ROUTER; yields ``[identity, header, *payload]`` messages; sends replies.

    ``max_message_bytes`` disconnects peers that send a single frame bigger than that (the
    protocol limits, checked after receipt, answer smaller violations with an error reply).
    """

    def __init__(self, ctx: zmq.Context, endpoint: str, *, curve: ServerCurve | None = None,
                 max_message_bytes: int = -1, hwm: int = 10_000) -> None:
        self.endpoint = endpoint
        self._ctx = ctx
        self._auth = None
        self._sock = ctx.socket(zmq.ROUTER)
        for opt, value in ((zmq.LINGER, 0), (zmq.ROUTER_MANDATORY, 1), (zmq.ROUTER_HANDOVER, 1),
                           (zmq.SNDHWM, hwm), (zmq.RCVHWM, hwm),
                           (zmq.MAXMSGSIZE, max_message_bytes)):
            self._sock.setsockopt(opt, value)
        if curve is not None:
            self._setup_curve(curve)
        self._ready: asyncio.Event | None = None
        self._waiting = False
        self._woken = False
        self.dropped = 0

    def _setup_curve(self, curve: ServerCurve) -> None:
        import zmq.auth
        from zmq.auth.thread import ThreadAuthenticator

        public, secret = zmq.auth.load_certificate(curve.secret_key_file)
        if secret is None:
            raise ValueError(f"curve_secret_key_file: {curve.secret_key_file} has no secret key")
        self._auth = ThreadAuthenticator(self._ctx)
        self._auth.start()
        location = curve.clients_dir or zmq.auth.CURVE_ALLOW_ANY
        if curve.clients_dir and not os.path.isdir(curve.clients_dir):
            raise ValueError(f"curve_clients_dir: {curve.clients_dir} is not a directory")
        self._auth.configure_curve(domain="*", location=location)
        self._sock.curve_server = True
        self._sock.curve_secretkey = secret
        self._sock.curve_publickey = public

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Bind the endpoint and register the descriptor with ``loop``."""
        self._sock.bind(self.endpoint)
        self._ready = asyncio.Event()
        loop.add_reader(self._sock.getsockopt(zmq.FD), self._ready.set)

    async def recv_batch(self, max_n: int) -> list[list[Buffer]]:
        """Up to ``max_n`` waiting messages, waiting for at least one; ``[]`` after ``wake``."""
        assert self._ready is not None, "bind() first"
        out: list[list[Buffer]] = []
        while True:
            while len(out) < max_n:
                try:
                    out.append(self._recv_one())
                except zmq.Again:
                    break
            if out or self._woken:
                self._woken = False
                return out
            self._ready.clear()
            if self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
                continue
            self._waiting = True
            try:
                await self._ready.wait()
            finally:
                self._waiting = False

    def _recv_one(self) -> list[Buffer]:
        """``[identity, header, *payload]``: identity and header copied (small; copying is
        cheaper than zero-copy frames), payload frames as zero-copy views. A multipart message
        is delivered whole, so only the first part can find nothing waiting."""
        sock = self._sock
        msg: list[Buffer] = [sock.recv(zmq.NOBLOCK)]
        if sock.getsockopt(zmq.RCVMORE):
            msg.append(sock.recv())
        else:
            msg.append(b"")
        while sock.getsockopt(zmq.RCVMORE):
            msg.append(sock.recv(copy=False).buffer)
        return msg

    def wake(self) -> None:
        """Make a pending ``recv_batch`` return (used to stop the main loop)."""
        self._woken = True
        if self._ready is not None:
            self._ready.set()

    def send(self, identity: bytes, frames: list[Buffer]) -> bool:
        """Send a reply; ``False`` (and counted in ``dropped``) when the peer is gone or full."""
        try:
            send_frames(self._sock, [identity, *frames], zmq.NOBLOCK)
            ok = True
        except (zmq.Again, zmq.ZMQError) as e:
            log.debug("reply to %r dropped: %s", identity, e)
            self.dropped += 1
            ok = False
        if self._waiting and self._sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self._ready.set()  # type: ignore[union-attr]
        return ok

    def close(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        if loop is not None and not self._sock.closed:
            loop.remove_reader(self._sock.getsockopt(zmq.FD))
        self._sock.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
            self._auth = None

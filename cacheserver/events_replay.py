"""The KV events' replay: the batches kept (bounded in bytes) and the ROUTER that sends them
again to a subscriber that missed some (docs/daemon.md, "KV events", Replay).

A replay of many batches is paged: the socket is ``ROUTER_MANDATORY``, so a subscriber whose
queue is full makes the send fail with ``EAGAIN`` instead of losing the batch; its cursor waits
and the pump comes back a moment later. At most ``MAX_ACTIVE`` replays run at once (a newer
request from the same peer replaces its older one; past the bound the oldest is ended early,
with the end marker, and its subscriber asks again from where it got to).
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections import deque
from dataclasses import dataclass

import zmq
from prometheus_client import Counter

log = logging.getLogger("asymcache.events")

END_SEQ = struct.pack(">q", -1)
MAX_ACTIVE = 64
_BUDGET = 256  # messages per replay per pass of the loop
_RETRY_S = 0.002


class ReplayBuffer:
    """Published batches ``(seq, topic, payload)``, consecutive sequence numbers, the oldest
    dropped past ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: deque[tuple[int, bytes, bytes]] = deque()
        self.bytes = 0

    def add(self, seq: int, topic: bytes, payload: bytes) -> None:
        assert not self.items or seq == self.items[-1][0] + 1, "sequence numbers are consecutive"
        self.items.append((seq, topic, payload))
        self.bytes += len(payload) + len(topic)
        while self.bytes > self.max_bytes and len(self.items) > 1:
            _, topic, old = self.items.popleft()
            self.bytes -= len(old) + len(topic)

    def at(self, seq: int) -> tuple[int, bytes, bytes] | None:
        """The kept batch ``seq`` (None past the newest); an older one than the oldest kept is
        not asked for (cursors move up to the oldest first)."""
        i = seq - self.items[0][0] if self.items else 0
        return self.items[i] if 0 <= i < len(self.items) else None

    @property
    def first(self) -> int:
        return self.items[0][0] if self.items else 0


@dataclass
class _Cursor:
    envelope: list[bytes]
    next: int
    prefix: bytes


class ReplayServer:
    """Answers replay requests on ``sock`` (a bound ROUTER) from ``buffer`` on ``loop``."""

    def __init__(self, sock: zmq.Socket, buffer: ReplayBuffer, replayed: Counter) -> None:
        self.sock, self.buffer, self.replayed = sock, buffer, replayed
        self._active: dict[bytes, _Cursor] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        loop.add_reader(self.sock.get(zmq.FD), self._read)
        loop.call_soon(self._read)

    def close(self) -> None:
        if self._loop is not None and not self.sock.closed:
            self._loop.remove_reader(self.sock.get(zmq.FD))
        if self._timer is not None:
            self._timer.cancel()
        self._active.clear()

    def _read(self) -> None:
        """Take every waiting request: ``[start_seq (8 bytes)]`` and an optional topic prefix,
        after an empty delimiter (REQ) or not (DEALER)."""
        sock = self.sock
        if sock.closed:
            return
        while sock.get(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            identity, rest = frames[0], frames[1:]
            envelope = [identity]
            if rest and rest[0] == b"":
                envelope, rest = [identity, b""], rest[1:]
            if not 1 <= len(rest) <= 2 or len(rest[0]) != 8:
                log.warning("malformed replay request (%d frames) answered with the end marker",
                            len(frames))
                self._send(envelope, [END_SEQ, b""])
                continue
            self._active.pop(identity, None)
            if len(self._active) >= MAX_ACTIVE:  # end the oldest: its subscriber asks again
                oldest = next(iter(self._active))
                self._send(self._active.pop(oldest).envelope, [END_SEQ, b""])
            self._active[identity] = _Cursor(envelope, int.from_bytes(rest[0], "big"),
                                             rest[1] if len(rest) == 2 else b"")
        self._pump()

    def _pump(self) -> None:
        """Send each active replay's next batches until its subscriber's queue is full or the
        budget is spent; come back later while any is unfinished."""
        for identity, cur in list(self._active.items()):
            for _ in range(_BUDGET):
                cur.next = max(cur.next, self.buffer.first)
                item = self.buffer.at(cur.next)
                if item is None:  # caught up with the newest batch: the end marker
                    if self._send(cur.envelope, [END_SEQ, b""]) is not None:
                        del self._active[identity]
                    break
                seq, topic, payload = item
                if topic.startswith(cur.prefix):
                    sent = self._send(cur.envelope, [seq.to_bytes(8, "big"), payload])
                    if sent is None:
                        break  # its queue is full: retry later
                    if not sent:
                        del self._active[identity]  # gone
                        break
                    self.replayed.inc()
                cur.next = seq + 1
        if self._loop is None or self.sock.closed:
            return
        if self._active and self._timer is None:
            self._timer = self._loop.call_later(_RETRY_S, self._tick)
        if self.sock.get(zmq.EVENTS) & zmq.POLLIN:  # a send may have taken a request's edge
            self._loop.call_soon(self._read)

    def _tick(self) -> None:
        self._timer = None
        self._pump()

    def _send(self, envelope: list[bytes], frames: list[bytes]) -> bool | None:
        """True sent; None the peer's queue is full (try again); False the peer is gone."""
        try:
            self.sock.send_multipart([*envelope, *frames], zmq.NOBLOCK)
            return True
        except zmq.Again:
            return None
        except zmq.ZMQError as e:
            log.debug("replay peer gone: %s", e)
            return False

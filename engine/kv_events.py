"""A consumer of the daemon's KV events (docs/daemon.md, "KV events"): one published batch
decoded, and a subscriber that fills gaps from the replay endpoint and says whether it has
followed the daemon's current epoch completely.

Used by the engine's LOOKUP mirror (``engine/lookup_mirror.py``), ``asymcache events`` and the
cache-aware router (``ops/route.py``, with ``ops/kv_events.py``'s index).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgpack
import zmq

ALL_TOPIC = b"kv/*"
TOPIC_PREFIX = b"kv/"
_END = -1
_MAX_PAYLOAD = 64 << 20


def topic_of(namespace: bytes) -> bytes:
    """The topic a namespace's events are published on."""
    return TOPIC_PREFIX + namespace.hex().encode()


@dataclass
class Batch:
    topic: bytes
    seq: int
    ts: float
    events: list[dict[str, Any]]
    topic_prev_seq: int
    epoch: int


def decode(seq: int, payload: bytes) -> Batch:
    """One published batch; ``ValueError`` if the payload is not one."""
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=True,
                               max_bin_len=_MAX_PAYLOAD, max_str_len=1 << 20)
    except Exception as e:
        raise ValueError(f"event batch {seq}: not msgpack ({e})") from None
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise ValueError(f"event batch {seq}: not an EventBatch map")
    return Batch(str(body.get("topic", "")).encode(), seq, float(body.get("ts", 0.0)),
                 body["events"], int(body.get("topic_prev_seq", -1)), int(body.get("epoch", 0)))


class EventSubscriber:
    """SUB to ``endpoint`` for ``topics`` (prefixes; the daemon-wide ``kv/*`` is always added).

    With ``replay_endpoint``: what the daemon still keeps is asked for at start (unless
    ``replay_at_start`` is false: then at :meth:`resync`), again when the first live batch
    arrives (what was published before the subscription took effect), and, until then, at most
    every ``reask_s`` seconds (0: never). A gap (a batch whose ``topic_prev_seq`` is not the
    last one accepted on its topic) is filled before the batch is delivered; one the replay
    cannot fill sets :attr:`gap`. Batches already delivered (replay and live overlap) are
    skipped. A batch of another ``epoch`` than the one followed means the daemon restarted: from
    then on only the new daemon's batches count, from its first (AllBlocksCleared resets an
    index). :attr:`complete` says whether every batch of the epoch followed has been delivered.
    A replay that does not answer within ``timeout_s`` raises ``TimeoutError`` (and sets
    :attr:`gap`)."""

    def __init__(self, endpoint: str, replay_endpoint: str = "",
                 topics: tuple[bytes, ...] = (TOPIC_PREFIX,), curve: Any = None,
                 timeout_s: float = 5.0, reask_s: float = 0.2,
                 replay_at_start: bool = True) -> None:
        self.ctx = zmq.Context.instance()  # shared: never terminated behind a caller's back
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.linger = 0
        self.curve, self.replay_endpoint, self.timeout_s = curve, replay_endpoint, timeout_s
        self.reask_s = reask_s
        if curve is not None:
            curve.apply(self.sub)
        self.topics = tuple(dict.fromkeys((*topics, ALL_TOPIC)))
        for topic in self.topics:
            self.sub.subscribe(topic)
        self.sub.connect(endpoint)
        self.gaps_filled = self.restarts = 0
        self.epoch: int | None = None  # the daemon followed
        self.seen: dict[bytes, int] = {}
        self._ready: list[Batch] = []
        self._high = -1
        self.started = self.live = self.gap = False
        self._asked = time.monotonic()
        if replay_at_start:
            self.resync()

    @property
    def complete(self) -> bool:
        """Every batch of the followed epoch on the subscribed topics was delivered: its first
        (seq 0, kept by the daemon's replay buffer since), the subscription works (a live batch
        came, and the replay asked after it), and no gap was left unfilled."""
        return self.started and self.live and not self.gap

    def waiting(self) -> bool:
        """Live batches wait in the socket, not read yet."""
        return bool(self.sub.poll(0))

    def resync(self) -> None:
        """Follow the current epoch again from its first batch (replay from 0)."""
        self._follow(self.epoch)
        self._replay_into(0)

    def replay(self, start: int, prefix: bytes = b"") -> list[Batch]:
        """Kept batches from ``start`` on whose topic starts with ``prefix`` and is subscribed,
        oldest first."""
        sock = self.ctx.socket(zmq.DEALER)
        sock.linger = 0
        if self.curve is not None:
            self.curve.apply(sock)
        sock.connect(self.replay_endpoint)
        out: list[Batch] = []
        try:
            sock.send_multipart([b"", start.to_bytes(8, "big"), prefix])
            while True:
                if not sock.poll(self.timeout_s * 1000):
                    self.gap = True
                    raise TimeoutError(f"no replay answer from {self.replay_endpoint}")
                frames = sock.recv_multipart()
                seq = int.from_bytes(frames[-2], "big", signed=True)
                if seq == _END:
                    break
                batch = decode(seq, frames[-1])
                if batch.topic.startswith(self.topics):
                    out.append(batch)
        finally:
            sock.close()
        return out

    def catch_up(self) -> Iterator[Batch]:
        """Deliver every kept batch not delivered yet (closes gaps no later batch revealed)."""
        self._replay_into(0)
        yield from self._drain()

    def batches(self, seconds: float, max_after: int = 10_000) -> Iterator[Batch]:
        """Deliver batches for up to ``seconds`` (then at most ``max_after`` more that are
        waiting already; 0 seconds: only those), in order, gaps filled."""
        deadline = time.monotonic() + seconds
        late = 0
        if not self.live and self.reask_s and time.monotonic() - self._asked > self.reask_s:
            self._asked = time.monotonic()
            self._replay_into(self._high + 1)
        while late < max_after:
            yield from self._drain()
            left = deadline - time.monotonic()
            late += left <= 0
            if not self.sub.poll(max(0, int(left * 1000))):
                return
            _, seq_bytes, payload = self.sub.recv_multipart()
            try:
                batch = decode(int.from_bytes(seq_bytes, "big"), payload)
            except ValueError:
                self.gap = True  # a batch lost: its events are unknown
                raise
            self._receive(batch)
        yield from self._drain()

    def _receive(self, batch: Batch) -> None:
        """A live batch: follow a restarted daemon, close the window before the subscription
        took effect, fill the gap it reveals, then accept it."""
        if batch.epoch != self.epoch:  # the first batch, or a restarted daemon's
            self.restarts += self.epoch is not None
            self._follow(batch.epoch)
        if not self.live:
            self.live = True
            self._replay_into(self._high + 1)  # from 0 after a restart
        last = self.seen.get(batch.topic, -1)
        if batch.seq > last and batch.topic_prev_seq > last and self.replay_endpoint:
            self.gaps_filled += 1
            self._replay_into(last + 1, batch.topic, below=batch.seq)
        self._accept(batch)

    def _replay_into(self, start: int, prefix: bytes | None = None,
                     below: int | None = None) -> None:
        """Accept the kept batches from ``start`` (of topics starting with ``prefix``, else of
        every subscribed topic) below ``below``; a reply from a restarted daemon makes it
        followed, from its first batch."""
        if not self.replay_endpoint:
            return
        got = self._fetch(start, prefix)
        if got and got[-1].epoch != self.epoch:  # the first reply, or a restarted daemon's
            self.restarts += self.epoch is not None
            self._follow(got[-1].epoch)
            if start > 0:
                got, below = self._fetch(0, None), None
        for batch in got:
            if below is None or batch.seq < below:
                self._accept(batch)

    def _fetch(self, start: int, prefix: bytes | None) -> list[Batch]:
        prefixes = (prefix,) if prefix is not None else tuple(
            t for t in self.topics if not any(t != o and t.startswith(o) for o in self.topics))
        got = {b.seq: b for p in prefixes for b in self.replay(start, p)}
        return [got[seq] for seq in sorted(got)]

    def _accept(self, batch: Batch) -> None:
        last = self.seen.get(batch.topic, -1)
        if batch.epoch != self.epoch or batch.seq <= last:
            return  # another daemon's, or delivered already
        if batch.topic_prev_seq != last:
            self.gap = True  # batches of this topic went missing and no replay had them
        self.seen[batch.topic] = batch.seq
        self._high = max(self._high, batch.seq)
        self.started = self.started or batch.seq == 0
        self._ready.append(batch)

    def _follow(self, epoch: int | None) -> None:
        """Follow ``epoch`` from nothing (batches accepted but not delivered are dropped: a
        resync or the new daemon's replay delivers what counts)."""
        self.epoch = epoch
        self.seen = {}  # topic -> last accepted seq
        self._high = -1  # highest sequence number accepted
        self.started = self.live = self.gap = False
        self._ready = []

    def _drain(self) -> Iterator[Batch]:
        ready, self._ready = self._ready, []
        yield from ready

    def close(self) -> None:
        self.sub.close(linger=0)

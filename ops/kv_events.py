"""A consumer of the daemon's KV events (docs/daemon.md, "KV events"): a subscriber that fills
gaps from the replay endpoint, and an index of which blocks each tier of a host holds.

Used by ``asymcache events`` (prints the stream) and by the cache-aware routing example.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgpack
import zmq

ALL_TOPIC = b"kv/*"
TOPIC_PREFIX = b"kv/"
_END = -1
_MAX_PAYLOAD = 64 << 20


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

    With ``replay_endpoint``: what the daemon still keeps is asked for at start (and again, at
    most every 0.2 s, until the first live batch shows the subscription works), and a gap (a
    batch whose ``topic_prev_seq`` is not the last one delivered on its topic) is filled before
    the batch is delivered. Batches already delivered (replay and live overlap) are skipped. A
    batch of another ``epoch`` than the one followed means the daemon restarted: from then on
    only the new daemon's batches count, from its first (AllBlocksCleared resets an index)."""

    def __init__(self, endpoint: str, replay_endpoint: str = "",
                 topics: tuple[bytes, ...] = (TOPIC_PREFIX,), curve: Any = None,
                 timeout_s: float = 5.0) -> None:
        self.ctx = zmq.Context.instance()  # shared: never terminated behind a caller's back
        self.sub = self.ctx.socket(zmq.SUB)
        self.sub.linger = 0
        self.curve, self.replay_endpoint, self.timeout_s = curve, replay_endpoint, timeout_s
        if curve is not None:
            curve.apply(self.sub)
        self.topics = tuple(dict.fromkeys((*topics, ALL_TOPIC)))
        for topic in self.topics:
            self.sub.subscribe(topic)
        self.sub.connect(endpoint)
        self.epoch: int | None = None  # the daemon followed
        self.seen: dict[bytes, int] = {}  # topic -> last delivered seq
        self.gaps_filled = self.restarts = 0
        self._ready: list[Batch] = self.replay(0) if replay_endpoint else []
        # until the first live batch arrives, the subscription may not be active yet: what is
        # published meanwhile is asked of the replay endpoint again (at most every 0.2 s)
        self._live, self._asked = False, time.monotonic()
        self._high = -1  # highest sequence number delivered

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
        if self.replay_endpoint:
            self._ready.extend(self.replay(0))
        yield from self._drain()

    def batches(self, seconds: float, max_after: int = 10_000) -> Iterator[Batch]:
        """Deliver batches for up to ``seconds`` (then at most ``max_after`` more that are
        waiting already; 0 seconds: only those), in order, gaps filled."""
        deadline = time.monotonic() + seconds
        late = 0
        if self.replay_endpoint and not self._live and time.monotonic() - self._asked > 0.2:
            self._asked = time.monotonic()
            self._ready.extend(self.replay(self._high + 1))
        while late < max_after:
            yield from self._drain()
            left = deadline - time.monotonic()
            late += left <= 0
            if not self.sub.poll(max(0, int(left * 1000))):
                return
            _, seq_bytes, payload = self.sub.recv_multipart()
            batch = decode(int.from_bytes(seq_bytes, "big"), payload)
            self._live = True
            if self.epoch is not None and batch.epoch != self.epoch:  # a restarted daemon
                self.restarts += 1
                self._follow(batch.epoch)
                if self.replay_endpoint:
                    self._ready.extend(self.replay(0))
            last = self.seen.get(batch.topic, -1)
            if batch.seq <= last:
                continue  # delivered by a replay already
            if self.replay_endpoint and batch.topic_prev_seq > last:
                self.gaps_filled += 1
                self._ready.extend(b for b in self.replay(last + 1, batch.topic)
                                   if b.seq < batch.seq)
            self._ready.append(batch)

    def _follow(self, epoch: int) -> None:
        self.epoch = epoch
        self.seen.clear()
        self._high = -1

    def _drain(self) -> Iterator[Batch]:
        ready, self._ready = self._ready, []
        for batch in ready:
            if self.epoch is None:
                self._follow(batch.epoch)
            if batch.epoch == self.epoch and batch.seq > self.seen.get(batch.topic, -1):
                self.seen[batch.topic] = batch.seq
                self._high = max(self._high, batch.seq)
                yield batch

    def close(self) -> None:
        self.sub.close(linger=0)


@dataclass
class HostIndex:
    """What one daemon's host holds, from its events: key -> set of places (``"CPU"``,
    ``"DISK"``, ``"REMOTE"``, ``"GPU:<engine>"``), and each block's parent."""

    places: dict[bytes, set[str]] = field(default_factory=dict)
    parents: dict[bytes, bytes | None] = field(default_factory=dict)

    def apply(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        if kind == "AllBlocksCleared":
            self.places.clear()
            self.parents.clear()
            return
        medium = event["medium"]
        place = f"GPU:{event['engine_id']}" if medium == "GPU" else medium
        if kind == "BlockStored":
            parent = event.get("parent_block_hash")
            for key in event["block_hashes"]:
                self.places.setdefault(key, set()).add(place)
                self.parents[key] = parent
                parent = key
        elif kind == "BlockRemoved":
            for key in event["block_hashes"]:
                held = self.places.get(key)
                if held is not None:
                    held.discard(place)
                    if not held:
                        del self.places[key]
                        self.parents.pop(key, None)

    def count(self, place: str) -> int:
        return sum(1 for held in self.places.values() if place in held)

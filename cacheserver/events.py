"""KV events: the daemon publishes which blocks each tier of the host holds, in the schema of
vLLM's KV events (docs/daemon.md, "KV events"), so that a router in front of several engines can
send a request where its prefix already lives.

:class:`EventLog` runs on the event-loop thread. The residency manager reports each block that
becomes readable in a tier (``stored``) or leaves one (``removed``); events queue per topic (one
topic per namespace: a tenant's router subscribes to its own) and are published once per pass of
the loop, a chain of stored blocks coalesced into one ``BlockStored`` as vLLM does. Each batch
gets the next sequence number of the daemon (one counter for all topics) and is kept in a replay
buffer bounded in bytes; a ROUTER socket answers replay requests from it (vLLM's framing). Both
sockets share the daemon's ZeroMQ context, so CURVE admits the same clients as the main socket.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

import msgpack
import zmq
from prometheus_client import CollectorRegistry, Counter, Histogram

from asymcache.cacheserver.events_replay import ReplayBuffer, ReplayServer

log = logging.getLogger("asymcache.events")

MEDIUM = {"gpu": "GPU", "cpu": "CPU", "disk": "DISK", "remote": "REMOTE"}
ALL_TOPIC = b"kv/*"  # events about every namespace (AllBlocksCleared)
TOPIC_PREFIX = b"kv/"  # + the namespace digest in hex
MAX_BATCH_EVENTS = 256  # events per published batch (a long flush is split)
_TOPICS_MAX = 4096  # namespace -> topic bytes kept (more are built per event)


def topic_of(namespace: bytes) -> bytes:
    return TOPIC_PREFIX + namespace.hex().encode()


class EventMetrics:
    """``asymcache_events_*``: registered whether or not events are enabled (zeros when off)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.published = Counter("asymcache_events_published", "KV events published on the "
                                 "events endpoint", registry=registry)
        self.dropped = Counter("asymcache_events_dropped", "KV events not published (the send "
                               "failed); subscribers see a gap in the sequence numbers",
                               registry=registry)
        self.replayed = Counter("asymcache_events_replayed", "Event batches sent again on the "
                                "replay endpoint", registry=registry)
        self.lag = Histogram("asymcache_events_publish_lag_seconds", "From a block's change "
                             "to the publication of its event", registry=registry,
                             buckets=(1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0))


class EventLog:
    """Queues, coalesces and publishes block events (see the module docstring)."""

    def __init__(self, zctx: zmq.Context, endpoint: str, replay_endpoint: str,
                 replay_bytes: int, metrics: EventMetrics, epoch: int,
                 secure: Callable[[zmq.Socket], None] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.metrics, self.clock, self.epoch = metrics, clock, epoch
        self._pub = zctx.socket(zmq.PUB)
        self._pub.set_hwm(100_000)
        self._replay: zmq.Socket | None = None
        self._socks = [self._pub]
        if replay_endpoint:
            self._replay = zctx.socket(zmq.ROUTER)
            self._replay.router_mandatory = 1  # a full subscriber queue: EAGAIN, not a loss
            self._socks.append(self._replay)
        for sock in self._socks:
            sock.linger = 0
            if secure is not None:
                secure(sock)
        self._pub.bind(endpoint)
        if self._replay is not None:
            self._replay.bind(replay_endpoint)
        self.seq = 0  # the next batch's sequence number
        self._pending: dict[bytes, list[dict[str, Any]]] = {}
        self._since = 0.0  # perf_counter of the oldest pending event
        self._last_seq: dict[bytes, int] = {}  # topic -> its last batch's sequence number
        self._buffer = ReplayBuffer(replay_bytes)
        self._replayer = (ReplayServer(self._replay, self._buffer, metrics.replayed)
                          if self._replay is not None else None)
        self._topics: dict[bytes, bytes] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled = False

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        if self._replayer is not None:
            self._replayer.start(loop)

    # ---- what the residency manager reports ---------------------------------------------
    def stored(self, tier: str, rec: Any, engine_id: str = "") -> None:
        """``rec`` (a block record) became readable in ``tier`` (``gpu``: in ``engine_id``'s
        pool)."""
        events = self._queue(rec.namespace)
        medium = MEDIUM[tier]
        last = events[-1] if events else None
        if (last is not None and last["type"] == "BlockStored" and last["medium"] == medium
                and last.get("engine_id", "") == engine_id
                and last["block_size"] == rec.n_tokens and rec.parent == last["block_hashes"][-1]):
            last["block_hashes"].append(rec.key)  # the next block of the same chain
            return
        event = {"type": "BlockStored", "block_hashes": [rec.key],
                 "parent_block_hash": rec.parent, "token_ids": [], "block_size": rec.n_tokens,
                 "lora_id": None, "medium": medium, "lora_name": None}
        if engine_id:
            event["engine_id"] = engine_id
        events.append(event)

    def removed(self, tier: str, key: bytes, namespace: bytes, engine_id: str = "") -> None:
        """Block ``key`` left ``tier`` (``gpu``: ``engine_id``'s pool)."""
        events = self._queue(namespace)
        medium = MEDIUM[tier]
        last = events[-1] if events else None
        if (last is not None and last["type"] == "BlockRemoved" and last["medium"] == medium
                and last.get("engine_id", "") == engine_id):
            last["block_hashes"].append(key)
            return
        event = {"type": "BlockRemoved", "block_hashes": [key], "medium": medium}
        if engine_id:
            event["engine_id"] = engine_id
        events.append(event)

    def cleared(self) -> None:
        """Every block of every tier is to be forgotten (a daemon start: what it holds after
        its disk rebuild follows as BlockStored)."""
        self._pending.clear()
        self._queue(None).append({"type": "AllBlocksCleared"})

    def _queue(self, namespace: bytes | None) -> list[dict[str, Any]]:
        if namespace is None:
            topic = ALL_TOPIC
        else:
            topic = self._topics.get(namespace)  # type: ignore[assignment]
            if topic is None:
                topic = topic_of(namespace)
                if len(self._topics) < _TOPICS_MAX:
                    self._topics[namespace] = topic
        events = self._pending.get(topic)
        if events is None:
            if not self._pending:
                self._since = time.perf_counter()
                self._schedule()
            events = self._pending[topic] = []
        return events

    def _schedule(self) -> None:
        if not self._scheduled and self._loop is not None:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    # ---- publication --------------------------------------------------------------------
    def flush(self) -> None:
        """Publish what is pending: daemon-wide events first, then each topic's in order."""
        self._scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, {}
        lag = time.perf_counter() - self._since
        ts = self.clock()
        order = sorted(pending, key=lambda t: t != ALL_TOPIC)
        for topic in order:
            events = pending[topic]
            for i in range(0, len(events), MAX_BATCH_EVENTS):
                self._publish(topic, ts, events[i:i + MAX_BATCH_EVENTS])
            self.metrics.lag.observe(lag)

    def _publish(self, topic: bytes, ts: float, events: list[dict[str, Any]]) -> None:
        seq = self.seq
        self.seq += 1
        n = sum(len(e.get("block_hashes", ())) or 1 for e in events)
        payload = msgpack.packb({"ts": ts, "events": events, "topic": topic.decode(),
                                 "topic_prev_seq": self._last_seq.get(topic, -1),
                                 "epoch": self.epoch})
        self._last_seq[topic] = seq
        self._buffer.add(seq, topic, payload)
        try:
            self._pub.send_multipart([topic, seq.to_bytes(8, "big"), payload], zmq.NOBLOCK)
        except zmq.ZMQError as e:  # PUB drops for slow subscribers itself; this is the socket
            log.warning("event batch %d not published: %s (replay still has it)", seq, e)
            self.metrics.dropped.inc(n)
            return
        self.metrics.published.inc(n)

    def close(self) -> None:
        self.flush()
        if self._replayer is not None:
            self._replayer.close()
        for sock in self._socks:
            sock.close(linger=0)


class NoEvents:
    """The events sink when no ``events_endpoint`` is configured."""

    def stored(self, tier: str, rec: Any, engine_id: str = "") -> None: ...

    def removed(self, tier: str, key: bytes, namespace: bytes, engine_id: str = "") -> None: ...

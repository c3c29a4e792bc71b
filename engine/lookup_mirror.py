"""The engine's mirror of its host: which blocks the daemon's CPU and disk tiers hold, fed by
the daemon's KV events (docs/daemon.md, "KV events"), so that a LOOKUP that cannot find
anything is not sent (docs/engine.md, "LOOKUP skip").

It follows one namespace's topic (the engine's, without a ``cache_salt``) and ``kv/*``, and
keeps a bounded map key -> media (CPU, DISK). GPU events are ignored: a LOOKUP finds only this
engine's own GPU blocks, and those the engine knows better (a LOOKUP with any of them goes out,
:meth:`asymcache.engine.cache_link.CacheLink.lookup`); REMOTE events too: a LOOKUP that asks
the remote tier is never skipped (other hosts write to a shared cluster).

The mirror says "none of these can be found" only while it is *authoritative*: its subscriber
has followed the daemon's current epoch completely (from the epoch's first batch, every gap
filled, the subscription proven by a live batch), the engine's daemon is in that epoch, no
live batch waits unread after a drain, and the map never reached its bound in this epoch.
Otherwise it says "maybe" and the LOOKUP goes out. A wrong "none" costs only recomputation,
never a different output. Blocks this engine has just written to the CPU tier itself
(:meth:`LookupMirror.expect`) count as held for ``expect_s``, until their events have surely
come. No thread: the socket is drained at the engine's tick and before each answer, at most
``max_batches`` batches at a time.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import zmq

from asymcache.engine.kv_events import Batch, EventSubscriber

log = logging.getLogger(__name__)

MEDIA = {"CPU": 1, "DISK": 2}  # the host tiers a LOOKUP without ``remote`` finds (bits)
MAX_BATCHES = 64  # batches applied per drain
RESYNC_S = 10.0  # after a gap the replay could not fill: replay from 0 at most this often
EXPECT_S = 2.0  # the engine's own CPU writes count as held this long (their events come later)


class LookupMirror:
    """See the module docstring. ``max_blocks`` bounds the map (sized by the caller to the
    daemon's CPU slots plus disk blocks); past it the mirror stays "maybe" until the daemon
    clears its blocks (a restart)."""

    def __init__(self, sub: EventSubscriber, namespace: bytes, max_blocks: int,
                 max_batches: int = MAX_BATCHES, resync_s: float = RESYNC_S,
                 expect_s: float = EXPECT_S, clock: Callable[[], float] = time.monotonic) -> None:
        if max_blocks <= 0:
            raise ValueError(f"LookupMirror: max_blocks must be positive, got {max_blocks}")
        self.sub, self.namespace, self.max_blocks = sub, namespace, max_blocks
        self.max_batches, self.resync_s, self.clock = max_batches, resync_s, clock
        self.expect_s = expect_s
        self.media: dict[bytes, int] = {}  # key -> MEDIA bits, never 0
        self._expected: dict[bytes, float] = {}  # the engine's own CPU writes -> until when
        self.epoch: int | None = None  # of the batches applied
        self.overflowed = False  # a block was not recorded: the map was full
        self.failures = 0  # drains that failed (replay timeout, undecodable batch)
        self._synced = False  # the first drain replays the epoch from its first batch
        self._resynced = clock()

    # ---- what the engine asks -----------------------------------------------------------
    def may_hold(self, namespace: bytes, keys: Sequence[bytes], epoch: int | None) -> bool:
        """Could the host's CPU or disk tier hold any of ``keys`` (of ``namespace``) for a
        daemon in ``epoch`` (None: unknown)? ``False`` only while authoritative."""
        self.drain()
        if namespace != self.namespace or not self.authoritative(epoch):
            return True
        self._expire()
        media, expected = self.media, self._expected
        return any(key in media or key in expected for key in keys)

    def expect(self, keys: Sequence[bytes]) -> None:
        """The engine has just made ``keys`` readable in the CPU tier (COMMIT, PUT): held for
        ``expect_s`` whatever the events say meanwhile (at most ``max_blocks`` such keys, the
        oldest forgotten first)."""
        until = self.clock() + self.expect_s
        expected = self._expected
        for key in keys:
            expected.pop(key, None)  # to the end: the order is by deadline
            expected[key] = until
        while len(expected) > self.max_blocks:
            del expected[next(iter(expected))]

    def _expire(self) -> None:
        now, expected = self.clock(), self._expected
        while expected:
            key = next(iter(expected))
            if expected[key] > now:
                return
            del expected[key]

    def authoritative(self, epoch: int | None) -> bool:
        """Whether a "no" can be trusted for a daemon in ``epoch`` (module docstring)."""
        return (epoch is not None and self.sub.complete and self.sub.epoch == epoch
                and self.epoch == epoch and not self.overflowed and not self.sub.waiting())

    # ---- feeding --------------------------------------------------------------------------
    def drain(self) -> None:
        """Apply at most ``max_batches`` waiting batches (never blocks on the live socket; a
        gap or a restart costs a replay round trip). The first drain replays the epoch from
        its first batch, and so does one after a gap the replay could not fill (at most every
        ``resync_s``)."""
        try:
            if not self._synced or (self.sub.gap
                                    and self.clock() - self._resynced >= self.resync_s):
                self._synced, self._resynced = True, self.clock()
                self.clear()
                self.sub.resync()
            for batch in self.sub.batches(0.0, max_after=self.max_batches):
                self.apply(batch)
        except (TimeoutError, ValueError, zmq.ZMQError) as e:
            self.failures += 1
            log.warning("KV events for the LOOKUP mirror: %s (LOOKUPs go out meanwhile)", e)

    def apply(self, batch: Batch) -> None:
        """Record one delivered batch (a new epoch starts from nothing)."""
        if batch.epoch != self.epoch:
            self.clear()
            self.epoch = batch.epoch
        for event in batch.events:
            kind = event.get("type")
            if kind == "AllBlocksCleared":
                self.clear()
                continue
            bit = MEDIA.get(event.get("medium", ""), 0)
            if not bit:
                continue  # GPU, REMOTE: see the module docstring
            if kind == "BlockStored":
                self._stored(event["block_hashes"], bit)
            elif kind == "BlockRemoved":
                self._removed(event["block_hashes"], bit)

    def clear(self) -> None:
        self.media.clear()
        self.overflowed = False

    def _stored(self, keys: Sequence[bytes], bit: int) -> None:
        media = self.media
        for key in keys:
            held = media.get(key, 0)
            if held:
                media[key] = held | bit
            elif len(media) < self.max_blocks:
                media[key] = bit
            elif not self.overflowed:
                self.overflowed = True
                log.warning("LOOKUP mirror full (%d blocks): LOOKUPs always go out until the "
                            "daemon restarts; raise lookup_mirror_blocks to the daemon's CPU "
                            "slots plus disk blocks", self.max_blocks)

    def _removed(self, keys: Sequence[bytes], bit: int) -> None:
        media = self.media
        for key in keys:
            held = media.get(key, 0) & ~bit
            if held:
                media[key] = held
            else:
                media.pop(key, None)

    def close(self) -> None:
        self.sub.close()

"""The engine's side of the cache daemon: a client that may be absent, die, or come back.

Every op degrades instead of failing: while the daemon is unreachable, LOOKUP finds nothing,
ALLOCATE names no victims, COMMIT/RELEASE/PIN are skipped, and the engine serves from its own
pool (local LRU) and recomputes the rest. The engine registers (HELLO) when it starts, so the
daemon counts it before any request. A background probe (its own socket, pinging every
``probe_s``) notices when the daemon answers again; the next :meth:`tick` then re-registers
with HELLO, announcing the blocks the engine holds (the client also re-HELLOs by itself when a
request meets a restarted daemon, and an idle engine's ticks PING to find out). Blocks in the
CPU tier are read and written through the zero-copy shared-memory mapping when the tier is on
this host, else with GET and PUT. A CPU slot is read or written only under the registration
that handed it out (:mod:`asymcache.engine.slot_grants`): a slot LOOKUP returned before the daemon
restarted is a block gone (recomputed), never bytes of the new daemon's slab.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from asymcache.cacheserver.blocks import KVLayout
from asymcache.cacheserver.protocol import BlockRef, ProtocolError, Where
from asymcache.engine.client import CacheClient, CacheClientError, DaemonUnavailable
from asymcache.engine.planner import MISS, Location
from asymcache.engine.slot_grants import SlotGrants

log = logging.getLogger(__name__)
Buffer = bytes | bytearray | memoryview
Held = Callable[[], list[tuple[BlockRef, int]]]
T = TypeVar("T")
_WHERE = {Where.GPU: "gpu", Where.CPU: "cpu", Where.DISK: "disk", Where.REMOTE: "remote"}
MAX_KEYS = 1024  # keys per request: well under the daemon's default limit (4096)
MAX_BLOCKS_PER_MESSAGE = 32  # block payloads per PUT/GET: bounded message size
CHECK_S = 2.0  # while idle: seconds between checks that the daemon still knows this engine
INFO_S = 10.0  # seconds between reads of the daemon's remote-tier load figures (STATS)
GIVE_BACK_S = 1.0  # at most one re-registration per this many seconds to give back reservations


class CacheLink:
    """See the module docstring. Used from the engine's thread only (the probe has its own
    socket and only sets a flag)."""

    def __init__(self, endpoint: str, engine_id: str, fingerprint: str, layout: KVLayout,
                 gpu_slots: int, timeout_s: float, probe_s: float = 0.5) -> None:
        self.endpoint, self.engine_id = endpoint, engine_id
        self.fingerprint, self.layout, self.gpu_slots = fingerprint, layout, gpu_slots
        self.client = CacheClient(endpoint, engine_id=engine_id, timeout_s=timeout_s)
        self.connected = False
        self.reconnects = 0
        self.errors = 0
        self.mapped = True  # the CPU tier's shared memory is reachable from here
        self.refused: str | None = None  # why the daemon refused our HELLO, if it did
        self.grants = SlotGrants()  # CPU slots handed out, by the registration they belong to
        self.stale_slots = 0  # CPU slots not used: handed out under an earlier registration
        self.given_back = 0  # unfilled CPU reservations given back (by registering again)
        self.give_back_s = GIVE_BACK_S
        self._gave_back_at = float("-inf")
        self._registered_before = False
        self._held: Held | None = None
        self._answering = threading.Event()
        self._stop = threading.Event()
        self._timeout_s, self._probe_s = timeout_s, probe_s
        self._answering.set()  # try at once on the first tick
        self._probe: threading.Thread | None = None
        self.check_s = CHECK_S
        self._checked = float("-inf")
        self.remote_tier = False  # the daemon has a remote tier (read from STATS)
        self.remote_load: tuple[float, float] | None = None  # its (latency_s, bandwidth_bps)
        self._info_at = float("-inf")

    # ---- connection -----------------------------------------------------------------------
    def tick(self, now: float, held: Held, idle: bool = False) -> None:
        """Called at start, once per engine step, and every so often while the engine is idle:
        (re-)register when the daemon answers again. While ``idle`` (nothing else talks to the
        daemon), at most every ``check_s`` a PING checks that the daemon still knows this
        engine (it may have restarted meanwhile) and a HELLO registers it again if not."""
        self._held = held
        if idle and self.connected and now - self._checked >= self.check_s:
            self._checked = now
            pong = self._guard(self.client.ping, None)
            if pong is not None and not pong.registered:
                self.connected = False
        if self.connected and self.remote_tier and now - self._info_at >= INFO_S:
            self._read_info(now)
        if self.connected and self.owed and now - self._gave_back_at >= self.give_back_s:
            self._give_back(now)
        if self.connected or self.refused is not None or not self._answering.is_set():
            return
        try:
            self.client.hello(self.fingerprint, self.layout, self.gpu_slots, self._held_refs)
        except DaemonUnavailable as e:
            self._down(e)
            return
        except CacheClientError as e:  # e.g. a layout the daemon's CPU tier cannot hold
            self.refused = str(e)
            log.error("the cache daemon refused this engine (%s); serving without it", e)
            return
        self.grants.settle()  # a new session: the old one's reservations are gone
        self.reconnects += self._registered_before
        self._registered_before = True
        self.connected = True
        reg = self.client.registration
        log.info("registered with the cache daemon at %s (epoch %s)", self.endpoint,
                 reg.epoch if reg is not None else "?")
        self._read_info(now)

    @property
    def owed(self) -> int:
        """CPU reservations of the current registration this engine could not fill."""
        return self.grants.owed(self.client.generation)

    def _give_back(self, now: float) -> None:
        """Give back unfilled CPU reservations. The daemon frees a reserved (``FILLING``) slot
        only with the engine's session, so register again: HELLO replaces the session (its
        leases and reservations dropped) and re-announces the blocks this engine holds."""
        self._gave_back_at = now
        owed = self.owed
        reg = self._guard(lambda: self.client.hello(self.fingerprint, self.layout,
                                                    self.gpu_slots, self._held_refs), None)
        if reg is not None:
            self.grants.settle()
            self.given_back += owed
            log.info("gave back %d unfilled CPU reservations (registered again)", owed)

    def _read_info(self, now: float) -> None:
        """Whether the daemon has a remote tier, and its load figures (from STATS)."""
        self._info_at = now
        stats = self._guard(self.client.stats, None)
        remote = stats.get("tiers", {}).get("remote", {}) if isinstance(stats, dict) else {}
        self.remote_tier = "ready" in remote  # reported only when a remote tier is configured
        load = remote.get("load")
        self.remote_load = (float(load[0]), float(load[1])) if load else None

    def _held_refs(self) -> tuple[list[BlockRef], list[int]]:
        held = self._held() if self._held is not None else []
        return [ref for ref, _ in held], [slot for _, slot in held]

    def _down(self, err: Exception) -> None:
        if self.connected:
            log.warning("cache daemon at %s unavailable (%s); serving from the local pool",
                        self.endpoint, err)
        self.connected = False
        self.errors += 1
        self._answering.clear()
        if self._probe is None:
            self._probe = threading.Thread(target=self._run_probe, daemon=True,
                                           name=f"asymcache-probe-{self.engine_id}")
            self._probe.start()

    def _run_probe(self) -> None:
        probe = CacheClient(self.endpoint, timeout_s=self._timeout_s, heartbeat=False)
        try:
            while not self._stop.wait(self._probe_s):
                if self._answering.is_set():
                    continue
                try:
                    probe.ping()
                    self._answering.set()
                except CacheClientError:
                    continue
        finally:
            probe.close()

    def _guard(self, fn: Callable[[], T], default: T) -> T:
        if not self.connected:
            return default
        try:
            return fn()
        except DaemonUnavailable as e:
            self._down(e)
        except (CacheClientError, ProtocolError) as e:  # refused, or a reply we cannot read
            self.errors += 1
            log.warning("cache daemon request failed: %s", e)
        return default

    # ---- ops (long key lists go in batches under the daemon's per-request limits) ---------
    def lookup(self, keys: Sequence[bytes], remote: bool = False) -> list[Location]:
        """Where each block is (leased when found in a local tier); misses while down. With
        ``remote`` (asked only of a daemon that has a remote tier), blocks only the cluster
        holds come back as ``remote`` (not leased: PROMOTE leases the CPU slot it fills)."""
        remote = remote and self.remote_tier
        out: list[Location] = []
        for part in _batches(keys, MAX_KEYS):
            res = self._guard(lambda part=part: self.client.lookup(part, remote=remote), None)
            if res is not None:
                self._grant(part, [s if w is Where.CPU else -1
                                   for w, s in zip(res.where, res.slots, strict=True)])
            out += [MISS] * len(part) if res is None else [
                MISS if w is Where.MISS else Location(_WHERE[w], s if s >= 0 else None)
                for w, s in zip(res.where, res.slots, strict=True)]
        return out

    def promote(self, keys: Sequence[bytes]) -> list[int]:
        """CPU slots of disk or remote blocks brought up (leased); -1 where that failed."""
        out: list[int] = []
        for part in _batches(keys, MAX_KEYS):
            got = self._guard(lambda part=part: self.client.promote(part), [-1] * len(part))
            self._grant(part, got)
            out += got
        return out

    def _grant(self, keys: Sequence[bytes], slots: Sequence[int]) -> None:
        """Record the CPU slots (``>= 0``) a reply just handed out, under the client's current
        registration (the one the reply came in)."""
        generation = self.client.generation
        for key, slot in zip(keys, slots, strict=True):
            if slot >= 0:
                self.grants.grant(key, slot, generation)

    def read_cpu(self, slots: Sequence[int | None], keys: Sequence[bytes]) -> list[Buffer | None]:
        """Host bytes of leased CPU-tier blocks: zero-copy views, or GET when not mapped."""
        nbytes = self.layout.bytes_per_block
        if self.mapped:
            views = [self.cpu_view(s, k) if s is not None else None
                     for s, k in zip(slots, keys, strict=True)]
            if self.mapped or not self.connected:
                return views
        got: list[Buffer | None] = []
        for part in _batches(keys, MAX_BLOCKS_PER_MESSAGE):
            got += self._guard(lambda part=part: self.client.get(part), [None] * len(part))
        return [g if g is not None and len(g) == nbytes else None for g in got]

    def cpu_view(self, slot: int, key: bytes) -> memoryview | None:
        """Writable view of CPU slot ``slot``, leased or reserved for ``key`` (consumes that
        grant). ``None`` when the tier cannot be mapped from here, the daemon is down, or the
        slot was handed out under an earlier registration (counted in ``stale_slots``)."""
        if not self.mapped:
            return None
        generation = self._current_grant(key, slot)
        return None if generation is None else self._view(slot, generation)

    def reserved_views(self, pairs: Sequence[tuple[bytes, int]]) -> list[memoryview | None]:
        """Views of the CPU slots reserved for ``(key, slot)`` (demotions, write-through), to
        copy into and then COMMIT. ``None`` where the slot is stale or cannot be written; a
        reservation of the current registration left unfilled is owed back (next :meth:`tick`)."""
        views: list[memoryview | None] = []
        for key, slot in pairs:
            generation = self._current_grant(key, slot)
            view = None if generation is None else self._view(slot, generation)
            if generation is not None and view is None:
                self.grants.owe(generation)
            views.append(view)
        return views

    def _current_grant(self, key: bytes, slot: int) -> int | None:
        """The generation ``slot`` was granted in for ``key``, if it is the current one."""
        generation = self.grants.take(key, slot)
        if generation is None or generation != self.client.generation:
            self.stale_slots += 1
            return None
        return generation

    def _view(self, slot: int, generation: int) -> memoryview | None:
        if not self.mapped:
            return None
        nbytes = self.layout.bytes_per_block
        try:
            return self._guard(
                lambda: self.client.cpu_slot(slot, generation=generation)[:nbytes], None)
        except (OSError, ValueError) as e:  # no such segment here: the daemon is on another host
            log.info("CPU tier of %s is not mappable here (%s); using GET/PUT", self.endpoint, e)
            self.mapped = False
            return None

    def abandon(self, pairs: Sequence[tuple[bytes, int]]) -> None:
        """Reservations ``(key, slot)`` the engine will not fill (e.g. a victim whose slot holds
        another block by now): owed back if they belong to the current registration."""
        for key, slot in pairs:
            if self.grants.take(key, slot) == self.client.generation:
                self.grants.owe(self.client.generation)

    def victims(self, n: int) -> list[tuple[int, bytes, int]]:
        """``(gpu_slot, key, demote_to)`` of blocks to give up; none while down."""
        got = self._guard(lambda: self.client.allocate(n, demote=self.mapped), [])
        self._grant([v.key for v in got], [v.demote_to for v in got])
        return [(v.gpu_slot, v.key, v.demote_to) for v in got]

    def reserve_cpu(self, refs: Sequence[BlockRef]) -> list[int]:
        out: list[int] = []
        for part in _batches(refs, MAX_KEYS):
            got = self._guard(lambda part=part: self.client.reserve_cpu(part), [-1] * len(part))
            self._grant([ref.key for ref in part], got)
            out += got
        return out

    def commit(self, tier: str, refs: Sequence[BlockRef], slots: Sequence[int],
               lease: bool = False) -> None:
        """COMMIT ``refs[i]`` in ``slots[i]`` of ``tier``; with ``lease``, leased until
        RELEASE (the caller adds the keys to what it releases)."""
        for i in range(0, len(refs), MAX_KEYS):
            part, at = refs[i:i + MAX_KEYS], slots[i:i + MAX_KEYS]
            self._guard(lambda part=part, at=at: self.client.commit(part, at, tier=tier,
                                                                    lease=lease), None)

    @property
    def generation(self) -> int:
        """The client's current registration (CPU slots granted now belong to it)."""
        return self.client.generation

    def confirm_cpu(self, copies: Sequence[tuple[BlockRef, int, int]]) -> int:
        """COMMIT (``tier="cpu"``) the reserved CPU slots filled by ``(ref, cpu slot,
        generation)`` copies, in as few requests as the daemon's limits allow. A copy made
        under an earlier registration is not confirmed (its slot number may name another
        reservation now; the old one went with that session) and counts in ``stale_slots``.
        Returns how many were sent."""
        current = [(ref, slot) for ref, slot, gen in copies if gen == self.client.generation]
        self.stale_slots += len(copies) - len(current)
        if current:
            self.commit("cpu", [ref for ref, _ in current], [slot for _, slot in current])
        return len(current)

    def put(self, refs: Sequence[BlockRef], payloads: Sequence[bytes]) -> list[bool]:
        out: list[bool] = []
        for i in range(0, len(refs), MAX_BLOCKS_PER_MESSAGE):
            part, data = refs[i:i + MAX_BLOCKS_PER_MESSAGE], payloads[i:i + MAX_BLOCKS_PER_MESSAGE]
            res = self._guard(lambda part=part, data=data: self.client.put(part, data), None)
            out += [False] * len(part) if res is None else list(res.stored)
        return out

    def release(self, keys: Sequence[bytes]) -> None:
        self.grants.drop(keys)
        for part in _batches(keys, MAX_KEYS):
            self._guard(lambda part=part: self.client.release(part), 0)

    def pin(self, keys: Sequence[bytes], ttl_s: float) -> None:
        for part in _batches(keys, MAX_KEYS):
            self._guard(lambda part=part: self.client.pin(part, ttl_s), 0)

    def close(self) -> None:
        """Release every lease, stop the probe and close the client."""
        self._guard(lambda: self.client.release(everything=True), 0)
        self._stop.set()
        if self._probe is not None:
            self._probe.join(timeout=2 * self._timeout_s + self._probe_s)
        self.client.close()

    def stats(self) -> dict[str, Any]:
        return {"connected": self.connected, "reconnects": self.reconnects, "errors": self.errors,
                "stale_slots": self.stale_slots}


def _batches(items: Sequence[T], size: int) -> list[list[T]]:
    return [list(items[i:i + size]) for i in range(0, len(items), size)]

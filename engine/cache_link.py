"""The engine's side of the cache daemon: a client that may be absent, die, or come back.

COMMIT, RELEASE, CANCEL and SIGNAL are one-way (the step does not wait for them); ACKs are read
at each :meth:`CacheLink.tick`, and one that says the daemon does not know this engine makes
the next tick register again.

Every op degrades instead of failing: while the daemon is unreachable, LOOKUP finds nothing,
ALLOCATE names no victims, COMMIT/RELEASE/PIN/SIGNAL are skipped, and the engine serves from its
own pool (local LRU) and recomputes the rest. The engine registers (HELLO) when it starts, so the
daemon counts it before any request. The client's heartbeats are the one liveness signal: when
they get a reply again (``client.answering``), or say that the daemon no longer knows this
engine (``client.last_pong``: it restarted, or expired a silent session), the next :meth:`tick`
registers with HELLO, announcing the blocks the engine holds (the client also re-HELLOs by itself
when a request meets a restarted daemon). Whether the daemon has a remote tier, and its load
figures, come with HELLO and heartbeat replies (``client.info``); CPU reservations the engine
cannot fill are given back with CANCEL. Blocks in the CPU tier are read and written through the
shared-memory mapping when the tier is on this host, else with GET and PUT. Every process of the
daemon's user can write that mapping, so a block is read by copying its slot out and checking
the copy against the checksum LOOKUP or PROMOTE gave for it: a mismatch is a miss (recomputed),
counted in :attr:`CacheLink.corrupt` and reported to the daemon (VERIFY, one-way), which checks
the slot itself and forgets the block. A CPU copy's COMMIT carries the checksum of the bytes
written. A CPU slot is read or written only under the registration that handed it out
(:mod:`asymcache.engine.slot_grants`): a slot LOOKUP returned before the daemon restarted is a
block gone (recomputed), never bytes of the new daemon's slab (these slot methods are
:class:`asymcache.engine.cpu_slots.CpuSlotAccess`). With a
:class:`asymcache.engine.lookup_mirror.LookupMirror` (the daemon's KV events), a LOOKUP that
cannot find anything is not sent: :meth:`CacheLink.lookup` answers it with misses.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.blocks import KVLayout
from asymcache.cacheserver.protocol import BlockRef, ProtocolError, Where
from asymcache.engine.client import (
    CacheClient,
    CacheClientError,
    DaemonError,
    DaemonUnavailable,
)
from asymcache.engine.cpu_slots import (
    MAX_BLOCKS_PER_MESSAGE,
    MAX_KEYS,
    CpuSlotAccess,
    batches,
)
from asymcache.engine.planner import MISS, Location
from asymcache.engine.slot_grants import SlotGrants

if TYPE_CHECKING:
    from asymcache.cacheserver.protocol.sockets import ClientCurve
    from asymcache.engine.lookup_mirror import LookupMirror

log = logging.getLogger(__name__)
Held = Callable[[], list[tuple[BlockRef, int]]]
T = TypeVar("T")
_WHERE = {Where.GPU: "gpu", Where.CPU: "cpu", Where.DISK: "disk", Where.REMOTE: "remote"}
REFUSED_RETRY_S = 30.0  # a refused HELLO is sent again this much later


class CacheLink(CpuSlotAccess):
    """See the module docstring (the CPU slots' methods are in ``cpu_slots.py``). Used from
    the engine's thread only."""

    def __init__(self, endpoint: str, engine_id: str, fingerprint: str, layout: KVLayout,
                 gpu_slots: int, timeout_s: float, mirror: LookupMirror | None = None,
                 curve: ClientCurve | None = None) -> None:
        self.endpoint, self.engine_id = endpoint, engine_id
        self.mirror = mirror  # the host's CPU and disk blocks, from the daemon's KV events
        self.lookups_skipped = 0  # LOOKUPs not sent: the mirror said nothing could be found
        self.fingerprint, self.layout, self.gpu_slots = fingerprint, layout, gpu_slots
        self.client = CacheClient(endpoint, engine_id=engine_id, timeout_s=timeout_s, curve=curve)
        self.connected = False
        self.reconnects = 0
        self.errors = 0
        self.mapped = True  # the CPU tier's shared memory is reachable from here
        self.refused: str | None = None  # why the daemon refused our HELLO, if it did
        self._refused_at = 0.0
        self.grants = SlotGrants()  # CPU slots handed out, by the registration they belong to
        self.stale_slots = 0  # CPU slots not used: handed out under an earlier registration
        self.given_back = 0  # unfilled CPU reservations given back (CANCEL)
        self.corrupt = 0  # CPU-tier blocks whose bytes failed their checksum (recomputed)
        self._sums: dict[bytes, int] = {}  # checksum each granted CPU block must have
        self._owed: tuple[int, list[bytes]] = (-1, [])  # (generation, keys) not to be filled
        self._registered_before = False
        self._held: Held | None = None
        self._prefetch = -1  # request id of the one-way ALLOCATE out, if any
        self.tenants_unsupported = False  # the daemon answered TENANTS with unknown_op
        self.cost_profile: dict | None = None  # sent with HELLO: the daemon prices with it

    # ---- connection -----------------------------------------------------------------------
    def tick(self, held: Held) -> None:
        """Called at start, once per engine step and while idle: register when the daemon
        answers after a failure or has forgotten this engine; give back (CANCEL) the CPU
        reservations the engine could not fill."""
        self._held = held
        if self.connected:  # ACKs of one-way COMMIT/RELEASE/CANCEL; none for long: down
            self._guard(self.client.check_acks, None)
        pong = self.client.last_pong
        if self.connected and (self.client.needs_hello
                               or (pong is not None and not pong.registered)):
            self.connected = False  # a restarted daemon, or an expired session
        if self.connected and self.owed:
            self._give_back()
        if self.connected and self.mirror is not None:
            self.mirror.drain()
        if self.refused is not None and time.monotonic() - self._refused_at >= REFUSED_RETRY_S:
            self.refused = None  # the daemon may have been upgraded or reconfigured since
        if self.connected or self.refused is not None or not self.client.answering:
            return
        try:
            self.client.hello(self.fingerprint, self.layout, self.gpu_slots, self._held_refs,
                              self.cost_profile)
        except DaemonUnavailable as e:
            self._down(e)
            return
        except (CacheClientError, ProtocolError) as e:  # e.g. a layout the CPU tier cannot
            # hold, or a daemon of another protocol version
            if self.cost_profile is not None and "cost_profile" in str(e):
                log.warning("the cache daemon predates engine cost profiles (%s): registering "
                            "without one (its preset prices this engine's blocks); upgrade "
                            "the daemon", e)
                self.cost_profile = None  # the next tick registers again
                return
            self.refused, self._refused_at = str(e), time.monotonic()
            log.error("the cache daemon refused this engine (%s); serving without it, asking "
                      "again in %.0f s", e, REFUSED_RETRY_S)
            return
        self.reconnects += self._registered_before
        self._registered_before = True
        self.connected = True
        reg = self.client.registration
        log.info("registered with the cache daemon at %s (epoch %s)", self.endpoint,
                 reg.epoch if reg is not None else "?")

    def take_purged(self) -> list[bytes]:
        """Namespaces the daemon purged that this engine has not dropped yet (its heartbeat
        reply names them); the caller drops them at once: the next heartbeat confirms."""
        pong = self.client.last_pong
        if pong is None or not pong.purged or pong.purge_seq <= self.client.purged_upto:
            return []
        self.client.purged_upto = pong.purge_seq
        return list(pong.purged)

    def tenants(self, entries: Sequence[tuple[bytes, bytes, str]], model: str) -> bool:
        """Tell the daemon whose namespaces these are (TENANTS), in batches; whether it heard
        (a daemon that predates TENANTS counts as having heard: it has no tenants to keep)."""
        if self.tenants_unsupported or not self.connected:
            return self.tenants_unsupported
        for part in batches(list(entries), MAX_KEYS):
            try:
                self.client.tenants([e[0] for e in part], [e[1] for e in part],
                                    [e[2] for e in part], model)
            except DaemonError as e:
                if e.code == p.ErrorCode.UNKNOWN_OP:
                    log.warning("the cache daemon predates tenants (TENANTS): no quotas or "
                                "purge for this engine's blocks; upgrade the daemon")
                    self.tenants_unsupported = True
                    return True
                self.errors += 1
                log.warning("cache daemon refused TENANTS: %s", e)
                return True  # a refusal names a bad entry: sending it again would not help
            except DaemonUnavailable as e:
                self._down(e)
                return False
            except (CacheClientError, ProtocolError) as e:
                self.errors += 1
                log.warning("cache daemon request failed: %s", e)
                return False
        return True

    @property
    def remote_tier(self) -> bool:
        """The daemon has a remote tier (said by its HELLO and heartbeat replies)."""
        return "remote" in self.client.info.tiers

    @property
    def remote_load(self) -> tuple[float, float] | None:
        """``(latency_s, bandwidth_bps)`` of a load from the daemon's remote tier, if known."""
        return self.client.info.remote_load

    def _held_refs(self) -> tuple[list[BlockRef], list[int]]:
        held = self._held() if self._held is not None else []
        return [ref for ref, _ in held], [slot for _, slot in held]

    def _down(self, err: Exception) -> None:
        if self.connected:
            log.warning("cache daemon at %s unavailable (%s); serving from the local pool",
                        self.endpoint, err)
        self.connected = False
        self.errors += 1

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
    def lookup(self, keys: Sequence[bytes], remote: bool = False, namespace: bytes | None = None,
               in_pool: bool = False) -> list[Location]:
        """Where each block is (leased when found in a local tier); misses while down. With
        ``remote`` (asked only of a daemon that has a remote tier), blocks only the cluster
        holds come back as ``remote`` (not leased: PROMOTE leases the CPU slot it fills).

        Not sent, all misses, when the mirror says no block of ``namespace`` among ``keys``
        can be found; never when ``in_pool`` (some are in this engine's pool: the daemon leases
        them, and their events may not have come yet) or with ``remote``."""
        remote = remote and self.remote_tier
        if self._skippable(keys, remote, namespace, in_pool):
            self.lookups_skipped += 1
            return [MISS] * len(keys)
        out: list[Location] = []
        for part in batches(keys, MAX_KEYS):
            res = self._guard(lambda part=part: self.client.lookup(part, remote=remote), None)
            if res is not None:
                self._grant(part, [s if w is Where.CPU else -1
                                   for w, s in zip(res.where, res.slots, strict=True)],
                            res.checksums)
            out += [MISS] * len(part) if res is None else [
                MISS if w is Where.MISS else Location(_WHERE[w], s if s >= 0 else None)
                for w, s in zip(res.where, res.slots, strict=True)]
        return out

    def _skippable(self, keys: Sequence[bytes], remote: bool, namespace: bytes | None,
                   in_pool: bool) -> bool:
        if (self.mirror is None or not self.connected or remote or in_pool or namespace is None
                or not keys):
            return False
        return not self.mirror.may_hold(namespace, keys, self.daemon_epoch)

    @property
    def daemon_epoch(self) -> int | None:
        """The epoch of the daemon this engine is registered with, as its replies say (None
        while unknown, or while a heartbeat says it changed and no HELLO followed yet)."""
        reg, pong = self.client.registration, self.client.last_pong
        if reg is None or (pong is not None and pong.epoch != reg.epoch):
            return None
        return reg.epoch

    def promote(self, keys: Sequence[bytes]) -> list[int]:
        """CPU slots of disk or remote blocks brought up (leased); -1 where that failed."""
        out: list[int] = []
        for part in batches(keys, MAX_KEYS):
            got, sums = self._guard(lambda part=part: self.client.promote_verified(part),
                                    ([-1] * len(part), []))
            self._grant(part, got, sums)
            out += got
        return out

    def prefetch_victims(self, n: int) -> None:
        """Ask, one-way, for ``n`` victims ahead of need; at most one such request is out at
        a time (:attr:`prefetching`). They come with an ACK: :meth:`take_victims`."""
        if self.prefetching or n <= 0:
            return
        self._prefetch = self._guard(lambda: self.client.notify(
            p.Allocate(tier="gpu", n=n, demote=self.mapped, notify=True)), -1)

    @property
    def prefetching(self) -> bool:
        return self._prefetch >= 0 and self.connected and not self.client.acked(self._prefetch)

    def take_victims(self) -> list[tuple[int, bytes, int]]:
        """Victims named ahead of need whose ACKs have come, ``(gpu_slot, key, demote_to)``,
        their CPU slots granted to this registration; those of an earlier one are dropped
        (that registration's HELLO re-announced the blocks)."""
        got = self.client.take_victims()
        current = [(s, k, d) for s, k, d, gen in got if gen == self.client.generation]
        self._grant([k for _, k, _ in current], [d for _, _, d in current])
        return current

    def forget(self, pairs: Sequence[tuple[int, bytes]]) -> None:
        """Tell the daemon, one-way, that GPU slots ``(slot, key)`` no longer hold those
        blocks (victims named ahead, given up)."""
        for part in batches(pairs, MAX_KEYS):
            self._guard(lambda part=part: self.client.notify(p.Forget(
                slots=[s for s, _ in part], keys=[k for _, k in part], notify=True)), None)

    def victims(self, n: int) -> list[tuple[int, bytes, int]]:
        """``(gpu_slot, key, demote_to)`` of blocks to give up; none while down."""
        got = self._guard(lambda: self.client.allocate(n, demote=self.mapped), [])
        self._grant([v.key for v in got], [v.demote_to for v in got])
        return [(v.gpu_slot, v.key, v.demote_to) for v in got]

    def reserve_cpu(self, refs: Sequence[BlockRef]) -> list[int]:
        out: list[int] = []
        for part in batches(refs, MAX_KEYS):
            got = self._guard(lambda part=part: self.client.reserve_cpu(part), [-1] * len(part))
            self._grant([ref.key for ref in part], got)
            out += got
        return out

    def commit(self, tier: str, refs: Sequence[BlockRef], slots: Sequence[int],
               lease: bool = False, reserve: bool = False,
               checksums: Sequence[int] | None = None) -> None:
        """COMMIT ``refs[i]`` in ``slots[i]`` of ``tier``, one-way; with ``lease``, leased until
        RELEASE (the caller adds the keys to what it releases); with ``reserve`` (gpu), the
        daemon reserves CPU slots to write them through to (see :meth:`take_reserved`).
        ``checksums`` (cpu): of the bytes copied into each slot (None: the client computes
        them from the slots now)."""
        if tier == "cpu" and self.mirror is not None:
            self.mirror.expect([ref.key for ref in refs])  # their events come later
        for i in range(0, len(refs), MAX_KEYS):
            part, at = refs[i:i + MAX_KEYS], slots[i:i + MAX_KEYS]
            sums = None if checksums is None else checksums[i:i + MAX_KEYS]
            self._guard(lambda part=part, at=at, sums=sums: self.client.commit(
                part, at, tier=tier, lease=lease, notify=True, reserve=reserve,
                checksums=sums), None)

    def wait_acks(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` until every one-way request is acknowledged (reading
        ACKs)."""
        deadline = time.monotonic() + timeout_s
        while self.connected and self._guard(self.client.poll_acks, 0):
            if time.monotonic() >= deadline:
                return
            time.sleep(0.0005)

    def take_reserved(self) -> list[tuple[bytes, int]]:
        """``(key, CPU slot)`` reserved by one-way COMMITs with ``reserve`` whose ACKs have
        come, granted to this registration (fill them, then COMMIT tier=cpu, or
        :meth:`abandon` them); those of an earlier registration went with it."""
        got = self.client.take_reservations()  # ACKs were read by this step's tick
        current = [(k, s) for k, s, gen in got if gen == self.client.generation]
        self.stale_slots += len(got) - len(current)
        self._grant([k for k, _ in current], [s for _, s in current])
        return current

    @property
    def generation(self) -> int:
        """The client's current registration (CPU slots granted now belong to it)."""
        return self.client.generation

    def confirm_cpu(self, copies: Sequence[tuple[BlockRef, int, int]],
                    checksums: Sequence[int] | None = None) -> int:
        """COMMIT (``tier="cpu"``) the reserved CPU slots filled by ``(ref, cpu slot,
        generation)`` copies, with the ``checksums`` of the bytes copied (None: computed from
        the slots now), in as few requests as the daemon's limits allow. A copy made under an
        earlier registration is not confirmed (its slot number may name another reservation
        now; the old one went with that session) and counts in ``stale_slots``. Returns how
        many were sent."""
        sums = [0] * len(copies) if checksums is None else list(checksums)
        current = [(ref, slot, c) for (ref, slot, gen), c in zip(copies, sums, strict=True)
                   if gen == self.client.generation]
        self.stale_slots += len(copies) - len(current)
        if current:
            self.commit("cpu", [ref for ref, _, _ in current], [slot for _, slot, _ in current],
                        checksums=None if checksums is None else [c for _, _, c in current])
        return len(current)

    def flush(self, timeout_s: float) -> bool:
        """FLUSH: wait (up to ``timeout_s``) until the daemon's disk writes are synced and its
        remote writes sent (after every one-way request before it); whether it answered."""
        if not self.connected:
            return False
        saved, self.client.timeout_s = self.client.timeout_s, max(timeout_s, 0.001)
        try:
            return self._guard(self.client.flush, None) is not None
        finally:
            self.client.timeout_s = saved

    def put(self, refs: Sequence[BlockRef], payloads: Sequence[bytes]) -> list[bool]:
        if self.mirror is not None:
            self.mirror.expect([ref.key for ref in refs])  # their events come later
        out: list[bool] = []
        for i in range(0, len(refs), MAX_BLOCKS_PER_MESSAGE):
            part, data = refs[i:i + MAX_BLOCKS_PER_MESSAGE], payloads[i:i + MAX_BLOCKS_PER_MESSAGE]
            res = self._guard(lambda part=part, data=data: self.client.put(part, data), None)
            out += [False] * len(part) if res is None else list(res.stored)
        return out

    def release(self, keys: Sequence[bytes]) -> None:
        self.grants.drop(keys)
        for key in keys:
            self._sums.pop(key, None)
        for part in batches(keys, MAX_KEYS):
            self._guard(lambda part=part: self.client.release(part, notify=True), None)

    def pin(self, keys: Sequence[bytes], ttl_s: float) -> None:
        for part in batches(keys, MAX_KEYS):
            self._guard(lambda part=part: self.client.pin(part, ttl_s), 0)

    def signal(self, keys: Sequence[bytes], session: bytes | None, retention_s: float) -> None:
        """SIGNAL, one-way: a request of ``session`` (``blocks.session_digest``; None: none)
        used ``keys``, whose client asked to keep them ``retention_s`` (0: not asked). Advice:
        skipped while the daemon is down, never an error."""
        for part in batches(keys, MAX_KEYS):
            self._guard(lambda part=part: self.client.signal(
                part, session, retention_s, notify=True), None)

    def end_session(self, session: bytes) -> bool:
        """SIGNAL ``end``, one-way: the client ended ``session``; whether it was sent."""
        return self._guard(lambda: self.client.signal(session=session, end=True,
                                                      notify=True) is None, False)

    def close(self) -> None:
        """Release every lease, give back the CPU slots reserved for this engine that it will
        not fill now (victims named ahead, write-through), and close the client (and its
        heartbeat). The RELEASE's reply comes after every earlier one-way request's ACK."""
        if self.owed:
            self._give_back()
        self._guard(lambda: self.client.release(everything=True), 0)
        keys = [k for _, k, d, _ in self.client.take_victims() if d >= 0]
        keys += [k for k, _, _ in self.client.take_reservations()]
        for part in batches(keys, MAX_KEYS):
            self._guard(lambda part=part: self.client.cancel(part), 0)
        self.client.close()
        if self.mirror is not None:
            self.mirror.close()


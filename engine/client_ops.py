"""Parts of the daemon client (``engine/client.py``): errors, result types, the op methods,
and connection state (backoff, what the daemon said of itself, CPU-tier mapping). No torch.
"""

from __future__ import annotations

import itertools
import secrets
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from time import monotonic
from typing import Any

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.blocks import KVLayout
from asymcache.cacheserver.protocol.sockets import ClientCurve
from asymcache.engine.pinned import PinnedRegion, PinStatus
from asymcache.tiers.base import checksum

HeldBlocks = Callable[[], tuple[Sequence[p.BlockRef], Sequence[int]]]
BACKOFF_MIN_S, BACKOFF_MAX_S = 0.05, 2.0


class CacheClientError(Exception):
    """Base of every client error."""


class DaemonUnavailable(CacheClientError):
    """No answer in time, or still backing off after one: recompute instead of fetching."""


class DaemonError(CacheClientError):
    """The daemon refused the request: ``code`` (``protocol.ErrorCode``) and ``message``."""

    def __init__(self, op: str, code: str, message: str) -> None:
        super().__init__(f"{op.upper() or 'request'} refused ({code}): {message}")
        self.op, self.code, self.message = op, code, message


class BusyError(DaemonError):
    """Too many requests in flight for this client; retry after replies arrive."""


class NotRegisteredError(DaemonError):
    """The op needs a HELLO first."""


class StaleSlotError(CacheClientError):
    """A CPU slot handed out under an earlier registration (the daemon restarted, or this
    engine registered again): its bytes are gone; recompute the block, skip the demotion."""


def raise_for(reply: p.ErrorReply) -> None:
    cls = {p.ErrorCode.BUSY: BusyError, p.ErrorCode.NOT_REGISTERED: NotRegisteredError}
    raise cls.get(reply.code, DaemonError)(reply.op, reply.code, reply.message)


@dataclass(frozen=True)
class Registration:
    """What HELLO returned: the daemon's ``epoch`` and its CPU tier's geometry."""

    epoch: int
    restored: int
    cpu_shm_name: str
    cpu_slot_bytes: int
    cpu_num_slots: int
    lease_timeout_s: float


@dataclass(frozen=True)
class DaemonInfo:
    """What HELLO and PING replies (``info``) say of the daemon: its ``tiers`` in order, and a
    load's ``(latency_s, bandwidth_bps)`` from its remote tier (None while unknown)."""

    tiers: tuple[str, ...]
    remote_load: tuple[float, float] | None

    @classmethod
    def of(cls, reply: p.HelloReply | p.PingReply) -> DaemonInfo:
        lat, bw = reply.remote_latency_s, reply.remote_bandwidth_bps
        return cls(tuple(reply.tiers), None if lat is None or bw is None else (lat, bw))


@dataclass(frozen=True)
class LookupResult:
    """Per key: ``where[i]`` (a :class:`protocol.Where`), ``slots[i]`` (GPU or CPU slot, -1)
    and ``checksums[i]``: what a CPU hit's bytes must hash to (``tiers.base.checksum``; 0 for
    other keys, empty from a daemon that predates checksums). Check the bytes copied out of the
    slot against it: another process mapping the tier may have overwritten them."""

    where: list[p.Where]
    slots: list[int]
    checksums: list[int] = field(default_factory=list)


@dataclass(frozen=True)
class Victim:
    """Give up ``gpu_slot`` (holding ``key``); first copy it to CPU slot ``demote_to`` (unless
    -1) and COMMIT it there with ``tier="cpu"``."""

    gpu_slot: int
    key: bytes
    demote_to: int


@dataclass(frozen=True)
class PutResult:
    stored: list[bool]
    durable: bool


@dataclass(frozen=True)
class HelloParams:
    fingerprint: str
    layout: KVLayout
    gpu_slots: int
    held: HeldBlocks | None
    cost_profile: dict | None = None  # the engine's cost model (CostModel.to_dict())

    def message(self, engine_id: str) -> p.Hello:
        refs, slots = self.held() if self.held is not None else ((), ())
        return p.Hello(engine_id=engine_id, model_fingerprint=self.fingerprint,
                       layout=self.layout.to_dict(), gpu_slots=self.gpu_slots,
                       held=list(refs), held_slots=list(slots), info=True,
                       cost_profile=dict(self.cost_profile or {}))


def _unpack_get(reply: p.GetReply) -> list[p.Buffer | None]:
    frames = iter(reply.frames)
    return [next(frames) if f else None for f in reply.found]


def _prefault(buf: memoryview) -> None:
    """Read one byte per page so later copies into the mapping take no page faults."""
    import mmap

    import numpy as np

    int(np.frombuffer(buf, np.uint8)[:: mmap.PAGESIZE].max())


class ClientBase:
    """Connection state and the ops; ``_call(msg, post)`` (the client's) sends ``msg`` and
    returns ``post(reply)``."""

    _call: Callable[[p.Message, Callable[[Any], Any]], Any]
    notify: Callable[[p.Message], int]

    def __init__(self, endpoint: str, engine_id: str | None, timeout_s: float,
                 curve: ClientCurve | None) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        if engine_id:
            problem = p.identifier_problem(engine_id, p.ENGINE_ID_MAX_BYTES)
            if problem is not None:  # the daemon would refuse it; its routing id must fit too
                raise ValueError(f"engine_id {problem[1]}: ZeroMQ routing ids are at most "
                                 f"{p.ROUTING_ID_MAX_BYTES} bytes, with room for the prefix "
                                 f"{p.ROUTING_ID_PREFIX!r} and the suffix {p.HEARTBEAT_SUFFIX!r}")
        self.endpoint = endpoint
        self.engine_id = engine_id or f"engine-{uuid.uuid4().hex[:12]}"
        self.timeout_s = timeout_s
        self.curve = curve
        self.registration: Registration | None = None
        self.generation = 0  # HELLO replies so far: CPU slots are valid within one generation
        self.info = DaemonInfo((), None)  # from the latest HELLO or heartbeat reply
        self.answering = True  # the latest request or heartbeat got a reply
        self._hello: HelloParams | None = None
        self._rid = itertools.count(1)
        self._down_until = 0.0
        self._backoff = BACKOFF_MIN_S
        self._stale = False  # the socket timed out: replace it and check the epoch
        self._slab: Any = None
        self._pinned: PinnedRegion | None = None
        self.pin_device: str | None = None  # the engine's device: the CPU tier is pinned for CUDA
        self.prefault = True  # map the CPU tier with every page faulted in (see cpu_slot)
        self.notify_errors = 0  # one-way requests the daemon refused (ACK errors)
        self.reservations: list[tuple[bytes, int, int]] = []  # ACKs' (key, CPU slot, generation)
        self.stocked: list[tuple[int, bytes, int, int]] = []  # ACKs' victims, + generation
        self.needs_hello = False  # an ACK said the daemon does not know this engine
        self.purged_upto = 0  # the last purge the engine applied (PINGs and heartbeats say so)
        self._nonce = secrets.token_hex(p.ROUTING_ID_NONCE_BYTES // 2).encode()

    @property
    def routing_id(self) -> bytes:
        """``ROUTING_ID_PREFIX``, the engine id and a random nonce of this client
        (``ROUTING_ID_NONCE_BYTES``): the same across reconnects of this client, never guessed
        by another, so no other peer can take over the connection the daemon replies on
        (ZeroMQ hands a routing id over to its newest connection)."""
        return p.ROUTING_ID_PREFIX + self.engine_id.encode() + b"#" + self._nonce

    def _check_backoff(self) -> None:
        wait = self._down_until - monotonic()
        if wait > 0:
            raise DaemonUnavailable(f"daemon at {self.endpoint} unreachable; retrying in "
                                    f"{wait:.2f}s")

    def _went_down(self) -> DaemonUnavailable:
        self._stale, self.answering = True, False
        self._down_until = monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
        return DaemonUnavailable(f"no reply from {self.endpoint} within {self.timeout_s}s")

    def _came_back(self) -> None:
        self._backoff, self.answering = BACKOFF_MIN_S, True

    def _registered(self, reply: p.HelloReply) -> None:
        """A HELLO reply: the new registration starts a new generation."""
        self.registration = Registration(reply.epoch, reply.restored, reply.cpu_shm_name,
                                         reply.cpu_slot_bytes, reply.cpu_num_slots,
                                         reply.lease_timeout_s)
        self.info = DaemonInfo.of(reply)
        self.generation += 1
        self.needs_hello = False

    def cpu_slot(self, slot: int, generation: int | None = None) -> memoryview:
        """Writable zero-copy view of CPU-tier slot ``slot`` (``cpu_slot_bytes`` bytes). The tier
        is mapped on first use, every page faulted in once (``prefault``; about 0.1 s per GiB)
        so that copies run at memory speed. Only blocks this engine reserved (or leased) may be
        touched. ``generation``: the :attr:`generation` the slot was handed out in; raises
        :class:`StaleSlotError` if the client registered again since (the slot number would
        name another block, or another daemon's slab)."""
        reg = self.registration
        if reg is None:
            raise NotRegisteredError("hello", "not_registered", "call hello() first")
        if generation is not None and generation != self.generation:
            raise StaleSlotError(f"CPU slot {slot} is from registration {generation}; this "
                                 f"client registered again since (now {self.generation})")
        if self._slab is None or self._slab.name != reg.cpu_shm_name.lstrip("/"):
            from asymcache.tiers.shm import attach

            self._close_slab()
            self._slab = attach(reg.cpu_shm_name, reg.cpu_slot_bytes, reg.cpu_num_slots)
            if self.prefault:
                _prefault(self._slab.buffer)
            self._pinned = PinnedRegion(self._slab.buffer, self.pin_device)
        return self._slab.slot(slot)

    @property
    def cpu_tier_pin(self) -> PinStatus | None:
        """Whether the mapped CPU tier is registered with CUDA, and why not (None: not
        mapped)."""
        return None if self._pinned is None else self._pinned.status

    def cpu_tier_view(self) -> memoryview:
        """Writable zero-copy view of the whole CPU tier (``cpu_num_slots * cpu_slot_bytes``
        bytes, slot ``i`` at offset ``i * cpu_slot_bytes``), e.g. for one numpy/torch array."""
        self.cpu_slot(0)
        return self._slab.buffer

    def _close_slab(self) -> None:
        if self._pinned is not None:  # unregister before the mapping goes away
            self._pinned.close()
            self._pinned = None
        if self._slab is not None:
            self._slab.close()
            self._slab = None

    def take_victims(self) -> list[tuple[int, bytes, int, int]]:
        """``(gpu_slot, key, demote_to, generation)`` named by one-way ALLOCATEs whose ACKs
        have been read since the last call."""
        got, self.stocked = self.stocked, []
        return got

    def take_reservations(self) -> list[tuple[bytes, int, int]]:
        """``(key, CPU slot, generation)`` reserved by one-way COMMITs with ``reserve`` whose
        ACKs have been read since the last call."""
        got, self.reservations = self.reservations, []
        return got

    def _reply(self, reply: p.Reply, post: Callable[[Any], Any]) -> Any:
        if isinstance(reply, p.ErrorReply):
            raise_for(reply)
        return post(reply)

    def lookup(self, keys: Sequence[bytes], lease: bool = True,
               remote: bool = False) -> LookupResult:
        """Where each key is for this engine; found blocks are leased until :meth:`release`.
        With ``remote``, blocks only the daemon's remote tier holds come back as
        ``Where.REMOTE`` (bring them with :meth:`promote`) instead of MISS; the daemon may then
        take a round trip to its cluster before it answers."""
        return self._call(p.Lookup(keys=list(keys), lease=lease, remote=remote, verify=True),
                          lambda r: LookupResult([p.Where(w) for w in r.where], r.slots,
                                                 r.checksums))

    def allocate(self, n: int, demote: bool = True, notify: bool = False) -> list[Victim] | None:
        """Ask which of this engine's unleased GPU blocks to give up to free ``n`` slots;
        ``demote=False`` when this engine cannot write the CPU tier (no slots reserved).
        ``notify``: one-way; the victims come in an ACK (:meth:`take_victims`)."""
        if notify:
            self.notify(p.Allocate(tier="gpu", n=n, demote=demote, notify=True))
            return None
        return self._call(p.Allocate(tier="gpu", n=n, demote=demote),
                          lambda r: [Victim(*v) for v in zip(r.slots, r.keys, r.demote_to,
                                                             strict=True)])

    def reserve_cpu(self, blocks: Sequence[p.BlockRef]) -> list[int]:
        """CPU slots to copy ``blocks`` into (then ``commit(..., tier="cpu")``): -1 = no room,
        -2 = already in the CPU tier."""
        return self._call(p.Allocate(tier="cpu", blocks=list(blocks)), lambda r: r.slots)

    def cancel(self, keys: Sequence[bytes], notify: bool = False) -> int | None:
        """Give back the CPU slots reserved for ``keys`` (by :meth:`allocate` or
        :meth:`reserve_cpu`) that this engine will not fill; returns how many were held
        (``notify``: one-way, returns None)."""
        if notify:
            self.notify(p.Cancel(keys=list(keys), notify=True))
            return None
        return self._call(p.Cancel(keys=list(keys)), lambda r: r.cancelled)

    def commit(self, blocks: Sequence[p.BlockRef], slots: Sequence[int],
               tier: str = "gpu", lease: bool = False, notify: bool = False,
               reserve: bool = False, checksums: Sequence[int] | None = None
               ) -> list[bool] | None:
        """``blocks[i]`` now holds its bytes in ``slots[i]`` of ``tier`` (``gpu``/``cpu``).
        With ``lease``, each accepted block is leased in that tier until :meth:`release`
        (never named a victim meanwhile). ``notify``: one-way (no wait; returns None).
        ``reserve`` (gpu): the daemon also reserves a CPU slot for each block not in the CPU
        tier; with ``notify`` they arrive in an ACK, in :attr:`reservations`. ``checksums``
        (cpu): of the bytes written into each slot, best taken right after the copy; None =
        computed here from the mapped slots (:meth:`cpu_checksums`)."""
        if tier == "cpu" and checksums is None and self._slab is not None:
            checksums = self.cpu_checksums(slots)
        msg = p.Commit(tier=tier, blocks=list(blocks), slots=list(slots), lease=lease,
                       notify=notify, reserve=reserve,
                       checksums=list(checksums) if tier == "cpu" and checksums else [])
        if notify:
            self.notify(msg)
            return None
        return self._call(msg, lambda r: r.accepted)

    def release(self, keys: Sequence[bytes] = (), everything: bool = False,
                notify: bool = False) -> int | None:
        """Drop one lease per key (or all of this engine's); returns how many were held
        (``notify``: one-way, returns None)."""
        msg = p.Release(keys=list(keys), everything=everything, notify=notify)
        if notify:
            self.notify(msg)
            return None
        return self._call(msg, lambda r: r.released)

    def pin(self, keys: Sequence[bytes], ttl_s: float | None = None) -> int:
        """Keep blocks resident until :meth:`unpin` or for ``ttl_s``; returns how many known."""
        return self._call(p.Pin(keys=list(keys), ttl_s=ttl_s), lambda r: r.count)

    def signal(self, keys: Sequence[bytes] = (), session: bytes | None = None,
               retention_s: float = 0.0, end: bool = False,
               notify: bool = False) -> p.SignalReply | None:
        """Tell the residency policy what the client said (``p.Signal``): ``keys`` were used by
        ``session`` (``blocks.session_digest``), keep them ``retention_s``, or ``end`` the
        session. Returns the reply (``notify``: one-way, None)."""
        msg = p.Signal(session=session, keys=list(keys), retention_s=retention_s, end=end,
                       notify=notify)
        if notify:
            self.notify(msg)
            return None
        return self._call(msg, lambda r: r)

    def unpin(self, keys: Sequence[bytes]) -> int:
        return self._call(p.Unpin(keys=list(keys)), lambda r: r.count)

    def promote(self, keys: Sequence[bytes], lease: bool = True) -> list[int]:
        """Bring DISK or REMOTE blocks into CPU slots (leased); -1 for a key that is nowhere
        (or whose copy failed its checks)."""
        return self._call(p.Promote(keys=list(keys), lease=lease), lambda r: r.slots)

    def promote_verified(self, keys: Sequence[bytes], lease: bool = True
                         ) -> tuple[list[int], list[int]]:
        """:meth:`promote`, with the checksum each CPU slot's bytes must have (0 where -1)."""
        return self._call(p.Promote(keys=list(keys), lease=lease, verify=True),
                          lambda r: (r.slots, r.checksums or [0] * len(r.slots)))

    def verify(self, keys: Sequence[bytes], notify: bool = False) -> int | None:
        """Say that the bytes read from these keys' CPU slots failed their checksums: the
        daemon checks the slots and forgets those that fail; returns how many did
        (``notify``: one-way, returns None)."""
        if notify:
            self.notify(p.Verify(keys=list(keys), notify=True))
            return None
        return self._call(p.Verify(keys=list(keys)), lambda r: r.corrupt)

    def cpu_checksums(self, slots: Sequence[int]) -> list[int]:
        """The checksum (``tiers.base.checksum``) of the block bytes in each mapped CPU slot
        (the registered layout's ``bytes_per_block``)."""
        nbytes = self._hello.layout.bytes_per_block if self._hello is not None else 0
        return [checksum(self.cpu_slot(s)[:nbytes]) for s in slots]

    def put(self, blocks: Sequence[p.BlockRef], payloads: Sequence[p.Buffer],
            durable: bool = False) -> PutResult:
        """Send block bytes; ``durable`` returns once they are on disk."""
        return self._call(p.Put(blocks=list(blocks), durable=durable, frames=list(payloads)),
                          lambda r: PutResult(r.stored, r.durable))

    def get(self, keys: Sequence[bytes]) -> list[p.Buffer | None]:
        """Bytes of each block (from CPU or disk), ``None`` for a miss."""
        return self._call(p.Get(keys=list(keys)), _unpack_get)

    def flush(self) -> int:
        """Wait until the daemon's pending disk writes are durable; returns disk blocks."""
        return self._call(p.Flush(), lambda r: r.disk_blocks)

    def stats(self) -> dict:
        """The daemon's STATS reply as a plain dict (JSON-ready: ``asymcache stats --json``)."""
        return self._call(p.Stats(), lambda r: {f.name: getattr(r, f.name) for f in fields(r)})

    def tenants(self, namespaces: Sequence[bytes], tenants: Sequence[bytes],
                labels: Sequence[str], model: str = "") -> int:
        """Tell the daemon whose namespaces these are (``blocks.tenant_digest`` of each salt,
        the label it is counted under); how many it did not know."""
        return self._call(p.Tenants(namespaces=list(namespaces), tenants=list(tenants),
                                    labels=list(labels), model=model), lambda r: r.recorded)

    def purge(self, tenant: bytes, model: str = "") -> p.PurgeReply:
        """Remove tenant ``tenant``'s blocks (``blocks.tenant_digest``) from every tier."""
        return self._call(p.Purge(tenant=tenant, model=model), lambda r: r)

    def ping(self) -> p.PingReply:
        """Liveness and the daemon's epoch; also this engine's heartbeat."""
        return self._call(p.Ping(engine_id=self._pinged_id(), purged_upto=self.purged_upto),
                          lambda r: r)

    def _pinged_id(self) -> str:
        return self.engine_id if self._hello is not None else ""

"""Request handlers of the control plane: HELLO, ALLOCATE, COMMIT, RELEASE, PIN, UNPIN.

A handler is ``fn(ctx, identity, session, request) -> reply`` registered with :func:`handler`;
it raises :class:`ProtocolError` for a request it refuses (the server turns that into an error
reply). Handlers run on the event loop thread, one at a time, so they see a consistent index.
LOOKUP is in ``handlers_lookup.py``, the data-plane ops (PROMOTE, PUT, GET, FLUSH, STATS) in
``handlers_data.py``, PING and CANCEL in ``handlers_session.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from asymcache.cacheserver.blocks import KVLayout
from asymcache.cacheserver.config import ServerConfig
from asymcache.cacheserver.index import BlockIndex, BlockRecord
from asymcache.cacheserver.leases import EngineSession, SessionTable
from asymcache.cacheserver.metrics import DaemonMetrics
from asymcache.cacheserver.movers import Residency
from asymcache.cacheserver.policy import ResidencyPolicy
from asymcache.cacheserver.policy.cost import CostModel
from asymcache.cacheserver.protocol import (
    Allocate,
    AllocateReply,
    BlockRef,
    Commit,
    CommitReply,
    ErrorCode,
    Hello,
    HelloReply,
    Message,
    Pin,
    PinReply,
    ProtocolError,
    Release,
    ReleaseReply,
    Unpin,
    UnpinReply,
)

log = logging.getLogger("asymcache.handlers")


@dataclass
class Context:
    """What handlers share: configuration, state and the daemon's identity (``epoch``)."""

    config: ServerConfig
    index: BlockIndex
    sessions: SessionTable
    residency: Residency
    metrics: DaemonMetrics
    epoch: int
    clock: Callable[[], float]
    make_gpu_policy: Callable[[int], ResidencyPolicy]
    tier_blocks: int  # CPU + DISK capacity in blocks: the index bound without engines
    deferred: list[Callable[[], None]] = field(default_factory=list)
    client_key: Callable[[bytes], str] = lambda identity: ""  # CURVE key of a routing id

    def after_reply(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` right after the current reply is sent, before any other request is
        handled: its effects are ordered exactly as if it ran first, but the reply leaves
        sooner (used for policy bookkeeping on the LOOKUP path)."""
        self.deferred.append(fn)

    def policies(self, session: EngineSession) -> dict[str, ResidencyPolicy]:
        return session.policies(self.residency.policies)

    def resize_index(self) -> None:
        self.index.resize(self.tier_blocks + self.sessions.total_gpu_slots)


@dataclass(frozen=True)
class HandlerSpec:
    fn: Callable
    needs_session: bool
    is_async: bool


HANDLERS: dict[str, HandlerSpec] = {}


def handler(op: str, needs_session: bool = True, is_async: bool = False) -> Callable:
    """Register ``fn`` as the handler of ``op``."""

    def deco(fn: Callable) -> Callable:
        HANDLERS[op] = HandlerSpec(fn, needs_session, is_async)
        return fn

    return deco


def bad(message: str, code: ErrorCode = ErrorCode.BAD_FIELD) -> ProtocolError:
    return ProtocolError(code, message)


def drop_session(ctx: Context, session: EngineSession) -> None:
    """Forget an engine: its leases, its CPU reservations and its GPU slots."""
    now = ctx.clock()
    ctx.sessions.release_all(session, ctx.policies(session), now)
    for key in list(session.reservations):
        rec = ctx.index.get(key)
        if rec is not None and rec.cpu_owner == session.engine_id:
            ctx.residency.cpu_abort(rec, session)
    session.reservations.clear()
    for slot in list(session.slot_keys):
        ctx.residency.gpu_forget(session, slot)
    ctx.sessions.remove(session)
    ctx.resize_index()


def _ensure(ctx: Context, session: EngineSession, ref: BlockRef) -> BlockRecord:
    ctx.residency.costs.note(ref.namespace, session)
    return ctx.index.ensure(ref, session.n_tokens, session.n_bytes, session.layout_text)


# ---- HELLO --------------------------------------------------------------------------------
def _check_hello(ctx: Context, req: Hello) -> KVLayout:
    try:
        layout = KVLayout.from_dict(req.layout)
    except ValueError as e:
        raise bad(f"layout: {e}", ErrorCode.BAD_LAYOUT) from None
    slot_bytes = ctx.residency.cpu.slot_bytes
    if layout.bytes_per_block > slot_bytes:
        raise bad(f"a block of this layout is {layout.bytes_per_block} bytes but the CPU tier's "
                  f"slots are {slot_bytes} bytes; restart the daemon with cpu_slot_bytes >= "
                  f"{layout.bytes_per_block}", ErrorCode.BAD_LAYOUT)
    if not 0 <= req.gpu_slots <= ctx.config.max_gpu_slots:
        raise bad(f"gpu_slots must be in [0, {ctx.config.max_gpu_slots}], got {req.gpu_slots}",
                  ErrorCode.CAPACITY)
    if not req.engine_id or not req.model_fingerprint:
        raise bad("engine_id and model_fingerprint must be non-empty")
    if len(req.held) != len(req.held_slots):
        raise bad(f"held has {len(req.held)} blocks but held_slots {len(req.held_slots)}")
    if any(not 0 <= s < req.gpu_slots for s in req.held_slots):
        raise bad(f"held_slots must be in [0, {req.gpu_slots})")
    return layout


@handler("hello", needs_session=False)
def hello(ctx: Context, identity: bytes, session: EngineSession | None, req: Hello) -> Message:
    layout = _check_hello(ctx, req)
    previous = ctx.sessions.by_engine(req.engine_id)
    key = ctx.client_key(identity)
    if previous is not None and previous.client_key != key:
        raise bad(f"engine_id {req.engine_id!r} is registered by another CURVE client key; an "
                  f"engine re-registers with its own key (or after its session expires, "
                  f"lease_timeout_s)", ErrorCode.BAD_FIELD)
    for old in (previous, session if session is not previous else None):
        if old is not None:
            drop_session(ctx, old)  # a re-HELLO (reconnect or engine restart) starts afresh
    if len(ctx.sessions) >= ctx.config.max_engines:
        raise bad(f"{ctx.config.max_engines} engines are registered (max_engines)",
                  ErrorCode.CAPACITY)
    raw_cost, cost = _engine_cost(ctx, req)
    gpu_policy = ctx.make_gpu_policy(req.gpu_slots)
    gpu_policy.set_spill_tier(ctx.residency.top.name)  # engines demote their victims there
    gpu_policy.set_sessions(ctx.residency.chain.sessions)
    if cost is not None:
        gpu_policy.cost_model = cost
    new = EngineSession(req.engine_id, identity, req.model_fingerprint, layout, req.gpu_slots,
                        gpu_policy, ctx.clock(), raw_cost_model=raw_cost, cost_model=cost,
                        client_key=key)
    ctx.sessions.add(new)
    ctx.resize_index()
    purged = ctx.residency.tenants.unconfirmed(req.engine_id)  # the engine drops them soon
    for ref, slot in zip(req.held, req.held_slots, strict=True):
        if ref.namespace not in purged:
            ctx.residency.gpu_commit(new, _ensure(ctx, new, ref), slot)
    cpu = ctx.residency.cpu
    from asymcache.cacheserver.handlers_session import daemon_info  # it imports this module

    return HelloReply(epoch=ctx.epoch, engine_id=req.engine_id, restored=len(new.key_slots),
                      cpu_shm_name=cpu.shm_name, cpu_slot_bytes=cpu.slot_bytes,
                      cpu_num_slots=cpu.num_slots, lease_timeout_s=ctx.config.lease_timeout_s,
                      max_inflight=ctx.config.max_inflight, max_keys=ctx.config.max_keys,
                      **(daemon_info(ctx) if req.info else {}))


def _engine_cost(ctx: Context, req: Hello) -> tuple[CostModel | None, CostModel | None]:
    """The engine's cost model as sent and as the daemon uses it (``engine_costs.py``); a bad
    profile is refused naming its field, none is logged (the preset prices its blocks)."""
    if not req.cost_profile:
        log.info("engine %s sent no cost profile: its blocks are priced with the daemon's "
                 "preset %r", req.engine_id, ctx.config.cost_preset or "(none)")
        return None, None
    try:
        raw = CostModel.from_dict(req.cost_profile)
    except ValueError as e:
        raise bad(f"cost_profile: {e}") from None
    cost = ctx.residency.costs.model_of(req.cost_profile)
    log.info("engine %s prices its blocks with its own cost model (%s)", req.engine_id,
             cost.name)
    return raw, cost


# ---- ALLOCATE / COMMIT --------------------------------------------------------------------
@handler("allocate")
def allocate(ctx: Context, identity: bytes, session: EngineSession, req: Allocate) -> Message:
    if req.notify and req.tier != "gpu":
        raise bad("a one-way ALLOCATE names GPU victims; reserve CPU slots with a reply")
    if req.tier == "gpu":
        if not 0 <= req.n <= session.gpu_slots:
            raise bad(f"n must be in [0, {session.gpu_slots}], got {req.n}")
        victims = ctx.residency.gpu_victims(session, req.n, demote=req.demote, ahead=req.notify)
        return AllocateReply(slots=[v[0] for v in victims], keys=[v[1] for v in victims],
                             demote_to=[v[2] for v in victims])
    if req.tier != "cpu":
        raise bad(f"tier must be 'gpu' or 'cpu', got {req.tier!r}")
    return AllocateReply(slots=_reserve_cpu(ctx, session, req.blocks))


@handler("commit")
def commit(ctx: Context, identity: bytes, session: EngineSession, req: Commit) -> Message:
    if len(req.blocks) != len(req.slots):
        raise bad(f"blocks has {len(req.blocks)} entries but slots {len(req.slots)}")
    if req.reserve_next and (req.tier != "cpu" or req.notify):
        raise bad("reserve_next goes with a COMMIT of tier 'cpu' that waits for its reply")
    sums = _commit_checksums(req)
    res = ctx.residency
    accepted = []
    if req.tier == "gpu":
        if any(not 0 <= s < session.gpu_slots for s in req.slots):
            raise bad(f"slots must be in [0, {session.gpu_slots}) for this engine")
        for ref, slot in zip(req.blocks, req.slots, strict=True):
            res.gpu_commit(session, _ensure(ctx, session, ref), slot)
            accepted.append(True)
        if req.reserve:
            return _leased(ctx, session, req, accepted, _reserve_cpu(ctx, session, req.blocks))
    elif req.tier == "cpu":
        for ref, slot, sum_ in zip(req.blocks, req.slots, sums, strict=True):
            rec = ctx.index.get(ref.key)
            ok = rec is not None and res.cpu_confirm(rec, session, slot, sum_)
            if ok:
                ctx.metrics.moved["gpu_to_cpu"].inc(rec.n_bytes)
            accepted.append(ok)
        if req.reserve_next:
            return _leased(ctx, session, req, accepted,
                           _reserve_cpu(ctx, session, req.reserve_next))
    else:
        raise bad(f"tier must be 'gpu' or 'cpu', got {req.tier!r}")
    return _leased(ctx, session, req, accepted, [])


def _commit_checksums(req: Commit) -> list[int]:
    """One checksum per block of a CPU COMMIT (0 where not given: the daemon computes it)."""
    if not req.checksums:
        return [0] * len(req.blocks)
    if req.tier != "cpu":
        raise bad("checksums go with a COMMIT of tier 'cpu'")
    if len(req.checksums) != len(req.blocks):
        raise bad(f"blocks has {len(req.blocks)} entries but checksums {len(req.checksums)}")
    if any(not 0 <= c < 1 << 64 for c in req.checksums):
        raise bad("checksums must be unsigned 64-bit ints (xxh3-64 digests)")
    return req.checksums


def _leased(ctx: Context, session: EngineSession, req: Commit, accepted: list[bool],
            reserved: list[int]) -> CommitReply:
    if req.lease:  # as LOOKUP's leases: no victim until RELEASE or the session ends
        policy = ctx.policies(session)[req.tier]
        for ref, ok in zip(req.blocks, accepted, strict=True):
            if ok:
                ctx.sessions.lease(session, ref.key, req.tier, policy)
    return CommitReply(accepted=accepted, reserved=reserved)


def _reserve_cpu(ctx: Context, session: EngineSession, blocks: list[BlockRef]) -> list[int]:
    """A CPU slot reserved for each block (-1: no room; -2: in the CPU tier already)."""
    slots = []
    for ref in blocks:
        rec = _ensure(ctx, session, ref)
        if rec.cpu >= 0 or rec.cpu_pending >= 0:
            slots.append(-2)
            continue
        slots.append(ctx.residency.cpu_reserve(rec, session))
        ctx.index.discard_if_unheld(rec)
    return slots


# ---- RELEASE / PIN / UNPIN ----------------------------------------------------------------
@handler("release")
def release(ctx: Context, identity: bytes, session: EngineSession, req: Release) -> Message:
    if req.everything:
        return ReleaseReply(released=ctx.sessions.release_all(session, ctx.policies(session),
                                                              ctx.clock()))
    return ReleaseReply(released=release_keys(ctx, session, req.keys))


def release_keys(ctx: Context, session: EngineSession, keys: list[bytes]) -> int:
    """RELEASE of ``keys`` (LOOKUP's ``release`` too): how many leases were dropped."""
    now, policies = ctx.clock(), ctx.policies(session)
    return sum(ctx.sessions.release(session, k, policies, now) for k in keys)


@handler("pin")
def pin(ctx: Context, identity: bytes, session: EngineSession, req: Pin) -> Message:
    if req.ttl_s is not None and req.ttl_s <= 0:
        raise bad(f"ttl_s must be positive, got {req.ttl_s}")
    rec = next((r for k in req.keys if (r := ctx.index.get(k)) is not None), None)
    ttl = capped(ctx, "max_pin_ttl_s", req.ttl_s, rec)
    until = None if ttl is None else ctx.clock() + ttl
    return PinReply(count=_pin(ctx, req.keys, until, on=True))


@handler("unpin")
def unpin(ctx: Context, identity: bytes, session: EngineSession, req: Unpin) -> Message:
    return UnpinReply(count=_pin(ctx, req.keys, None, on=False))


def capped(ctx: Context, name: str, seconds: float | None, rec: BlockRecord | None
           ) -> float | None:
    """``seconds`` (None: no end) within cap ``name`` (``max_pin_ttl_s``, ``max_retention_s``;
    0 = none) of ``rec``'s tenant, counting each cap applied (``asymcache_policy_signals``)."""
    if rec is None:
        return seconds
    cap = ctx.residency.tenants.time_cap(name, rec.namespace)
    if cap > 0 and (seconds is None or seconds > cap):
        ctx.residency.signal_counts["capped"] += 1
        return cap
    return seconds


def _pin(ctx: Context, keys: list[bytes], until: float | None, on: bool) -> int:
    """Pin (or unpin) the indexed (pinned) blocks of ``keys`` in every tier; how many."""
    now, records = ctx.clock(), [ctx.index.get(key) for key in keys]
    held = [rec for rec in records if rec is not None and (on or rec.pinned)]
    for rec in held:
        ctx.residency.chain.pin(rec, until, now, on)
    return len(held)

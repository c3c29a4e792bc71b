"""Request handlers of the data plane and service ops: PROMOTE, PUT, GET, VERIFY, FLUSH, STATS.

PUT with ``durable`` and FLUSH are asynchronous: the blocks are placed at once, then the
handler awaits the disk tier's ``flush`` in a worker thread (the event loop keeps serving) and
replies when the bytes are durable. PUT's ``stored`` and ``durable`` are read from the index
after the blocks are placed (and synced): a block that a later block of the same PUT evicted,
or whose disk write failed, is reported as not stored / not durable. Everything else answers
synchronously.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from asymcache.cacheserver import remote_io
from asymcache.cacheserver.handlers import Context, bad, handler
from asymcache.cacheserver.leases import EngineSession
from asymcache.cacheserver.metrics import TIERS, StateSnapshot
from asymcache.cacheserver.protocol import (
    Flush,
    FlushReply,
    Get,
    GetReply,
    Message,
    Promote,
    PromoteReply,
    Put,
    PutReply,
    Stats,
    StatsReply,
    Verify,
    VerifyReply,
)

if TYPE_CHECKING:
    from asymcache.cacheserver.policy import ResidencyPolicy


@handler("promote")
def promote(ctx: Context, identity: bytes, session: EngineSession, req: Promote) -> Message:
    """CPU slot per key: already there, brought from disk, or (asynchronously) fetched from
    the remote tier; -1 if nowhere. With ``lease`` each slot is leased."""
    res = ctx.residency
    cpu_policy = res.policies["cpu"]
    slots = []
    for key in req.keys:
        rec = ctx.index.get(key)
        if rec is not None and rec.cpu < 0 and (src := res.promote(rec)) is not None:
            ctx.metrics.moved[f"{src}_to_cpu"].inc(rec.n_bytes)
            ctx.metrics.promotions.inc()
        slot = rec.cpu if rec is not None else -1
        if slot >= 0 and req.lease:
            ctx.sessions.lease(session, key, "cpu", cpu_policy)
        slots.append(slot)
    missing = [i for i, slot in enumerate(slots) if slot < 0]
    remote = res.tier("remote")
    if missing and remote is not None and remote.ready:  # type: ignore[attr-defined]
        return _promote_rest(ctx, session, req, slots, missing)
    return _promoted(ctx, req, slots)


def _promoted(ctx: Context, req: Promote, slots: list[int]) -> PromoteReply:
    """PROMOTE's reply; with ``verify``, the checksum of each CPU slot's bytes."""
    if not req.verify:
        return PromoteReply(slots=slots)
    sums = ctx.residency.cpu.checksums(req.keys)
    return PromoteReply(slots=slots, checksums=[c if s >= 0 else 0
                                                for c, s in zip(sums, slots, strict=True)])


async def _promote_rest(ctx: Context, session: EngineSession, req: Promote, slots: list[int],
                        missing: list[int]) -> PromoteReply:
    """Fetch the blocks no local tier holds from the remote tier and place them in CPU slots."""
    fetched = await remote_io.fetch(ctx, [req.keys[i] for i in missing])
    live = ctx.sessions.by_engine(session.engine_id) is session  # it may have expired meanwhile
    res = ctx.residency
    for i, got in zip(missing, fetched, strict=True):
        key = req.keys[i]
        rec = ctx.index.get(key)
        if got is not None and (rec is None or rec.cpu < 0) and live:
            rec = remote_io.place(ctx, session, key, *got)
        elif got is None and rec is not None and res.holds(rec, "remote"):
            res.forget("remote", key)  # gone from the cluster (TTL, eviction)
            rec = ctx.index.get(key)
        slots[i] = rec.cpu if rec is not None and live else -1
        if slots[i] >= 0 and req.lease:
            ctx.sessions.lease(session, key, "cpu", res.policies["cpu"])
    return _promoted(ctx, req, slots)


async def _wait_durable(ctx: Context) -> list[bytes]:
    """Wait for the disk tier's queue to be synced; the keys whose writes failed."""
    disk = ctx.residency.tier("disk")
    if disk is None:
        return []
    await asyncio.get_running_loop().run_in_executor(None, disk.flush)
    return ctx.residency.poll_failures()


@handler("put", is_async=True)
async def put(ctx: Context, identity: bytes, session: EngineSession, req: Put) -> Message:
    if len(req.frames) != len(req.blocks):
        raise bad(f"PUT has {len(req.blocks)} blocks but {len(req.frames)} payload frames")
    for i, frame in enumerate(req.frames):
        if len(frame) != session.n_bytes:
            raise bad(f"payload {i} is {len(frame)} bytes; this engine's blocks are "
                      f"{session.n_bytes} bytes")
    res, moved = ctx.residency, ctx.metrics.moved
    for ref, frame in zip(req.blocks, req.frames, strict=True):
        rec = ctx.index.ensure(ref, session.n_tokens, session.n_bytes, session.layout_text)
        if res.store("cpu", rec, frame):
            moved["net_to_cpu"].inc(rec.n_bytes)
        if ((req.durable or rec.cpu < 0) and not res.holds(rec, "disk")
                and res.store("disk", rec, frame)):
            moved["net_to_disk"].inc(rec.n_bytes)
        ctx.index.discard_if_unheld(rec)
    if req.durable:
        await _wait_durable(ctx)  # forgets blocks whose writes failed
    # from the index now: a later block of this PUT (or a failed write) may have evicted one
    stored, on_disk = [], []
    for ref in req.blocks:
        rec = ctx.index.get(ref.key)
        stored.append(rec is not None and rec.where != 0)
        on_disk.append(rec is not None and res.holds(rec, "disk"))
    durable = req.durable and res.tier("disk") is not None and all(on_disk)
    return PutReply(stored=stored, durable=durable)


@handler("get", needs_session=False)
def get(ctx: Context, identity: bytes, session: EngineSession | None, req: Get) -> Message:
    """Bytes of each block from the CPU tier, the disk or (asynchronously) the remote tier."""
    res, m = ctx.residency, ctx.metrics
    datas: list[bytes | memoryview | None] = []
    for key in req.keys:
        rec = ctx.index.get(key)
        view = res.read("cpu", rec) if rec is not None else None  # a checked private copy
        data = None if view is None else bytes(view)
        if data is not None:
            m.hits["cpu"].inc()
            m.moved["cpu_to_net"].inc(len(data))
        elif rec is not None and res.holds(rec, "disk"):
            m.misses["cpu"].inc()
            raw = res.read("disk", rec)
            data = None if raw is None else bytes(raw)
            (m.hits if data is not None else m.misses)["disk"].inc()
            if data is not None:
                m.moved["disk_to_net"].inc(len(data))
        else:
            m.misses["cpu"].inc()
            m.misses["disk"].inc()
        datas.append(data)
    missing = [i for i, data in enumerate(datas) if data is None]
    remote = res.tier("remote")
    if missing and remote is not None and remote.ready:  # type: ignore[attr-defined]
        return _get_rest(ctx, req.keys, datas, missing)
    return _get_reply(datas)


@handler("verify")
def verify(ctx: Context, identity: bytes, session: EngineSession, req: Verify) -> Message:
    """An engine found CPU-tier bytes that did not match their checksum: check each key's slot
    here (a false report costs a read and drops nothing); a block that fails is counted
    (``asymcache_tier_errors_total{tier="cpu",kind="checksum"}``) and forgotten."""
    res = ctx.residency
    corrupt = 0
    for key in dict.fromkeys(req.keys):
        rec = ctx.index.get(key)
        if rec is not None and rec.cpu >= 0 and res.read("cpu", rec) is None:
            corrupt += 1
    return VerifyReply(corrupt=corrupt)


async def _get_rest(ctx: Context, keys: list[bytes], datas: list[bytes | memoryview | None],
                    missing: list[int]) -> GetReply:
    fetched = await remote_io.fetch(ctx, [keys[i] for i in missing])
    m = ctx.metrics
    for i, got in zip(missing, fetched, strict=True):
        (m.hits if got is not None else m.misses)["remote"].inc()
        if got is not None:
            datas[i] = got[1]
            m.moved["remote_to_net"].inc(got[1].nbytes)
    return _get_reply(datas)


def _get_reply(datas: list[bytes | memoryview | None]) -> GetReply:
    return GetReply(found=[d is not None for d in datas],
                    frames=[d for d in datas if d is not None])


@handler("flush", needs_session=False, is_async=True)
async def flush(ctx: Context, identity: bytes, session: EngineSession | None,
                req: Flush) -> Message:
    await _wait_durable(ctx)
    await remote_io.flush(ctx)
    ctx.residency.poll_failures()
    disk = ctx.residency.tier("disk")
    return FlushReply(disk_blocks=len(disk) if disk is not None else 0)


@handler("stats", needs_session=False)
def stats(ctx: Context, identity: bytes, session: EngineSession | None, req: Stats) -> Message:
    return stats_reply(ctx)


def snapshot(ctx: Context, ready: bool = True, dropped: int = 0,
             refused: int = 0) -> StateSnapshot:
    """The daemon's levels now (what ``/metrics`` and STATS report)."""
    res = ctx.residency
    occupancy = {"gpu": sum(len(s.slot_keys) for s in ctx.sessions), "cpu": len(res.cpu)}
    capacity = {"gpu": ctx.sessions.total_gpu_slots, **res.max_blocks}
    errors = {("cpu", k): v for k, v in res.cpu.error_counts().items()}
    for name in res.policies:
        tier = res.tier(name)
        if name != "cpu" and tier is not None:
            occupancy[name] = len(tier)
            errors.update({(name, k): v for k, v in tier.error_counts().items()})
    remote = res.tier("remote")
    book = res.tenants
    return StateSnapshot(occupancy=occupancy, capacity=capacity, tier_errors=errors,
                         engines=len(ctx.sessions), index_blocks=len(ctx.index),
                         leases=sum(s.lease_count for s in ctx.sessions),
                         dropped_replies=dropped, refused_messages=refused, ready=ready,
                         remote_ready=None if remote is None else remote.ready,  # type: ignore[attr-defined]
                         remote_load=res.load_figures("remote"),
                         tenant_blocks=list(book.top(ctx.config.quotas.metrics_top)),
                         tenant_namespaces=len(book.by_ns),
                         quota_evictions=dict(book.quota_evictions),
                         purged_blocks=dict(book.purged_blocks),
                         signals=dict(res.signal_counts),
                         sessions_ended=len(res.chain.sessions),
                         rankings=rankings(res.policies, [s.gpu_policy for s in ctx.sessions]))


def rankings(shared: Mapping[str, ResidencyPolicy], gpu: Sequence[ResidencyPolicy]
             ) -> dict[tuple[str, str], int]:
    """``(tier, "value" | "recency") -> pools`` of the policies that switch (``ranking``):
    the shared tiers' and each engine's GPU pool. Both rankings of such a tier are listed,
    with 0 where none ranks that way."""
    out: dict[tuple[str, str], int] = {}
    for tier, policies in (("gpu", gpu), *((name, [pol]) for name, pol in shared.items())):
        for pol in policies:
            how = pol.ranking
            if how is None:
                continue
            for label in ("value", "recency"):
                out.setdefault((tier, label), 0)
            out[(tier, how)] += 1
    return out


def _tier_counters(ctx: Context) -> dict[tuple[str, str], int]:
    """``(metric name, tier) -> value`` of the per-tier counters, in one pass."""
    out: dict[tuple[str, str], int] = {}
    for family in ctx.metrics.registry.collect():
        if family.name.startswith("asymcache_tier_") and family.type == "counter":
            for sample in family.samples:
                if sample.name.endswith("_total") and "tier" in sample.labels:
                    out[(sample.name, sample.labels["tier"])] = int(sample.value)
    return out


def stats_reply(ctx: Context) -> StatsReply:
    """Levels, per-tier counters and the main configuration."""
    snap = snapshot(ctx)
    counters = _tier_counters(ctx)
    tiers = {}
    for t in TIERS:
        tiers[t] = {"blocks": snap.occupancy.get(t, 0), "capacity_blocks": snap.capacity.get(t, 0)}
        for what in ("hits", "misses", "evictions", "demotions"):
            tiers[t][what] = counters.get((f"asymcache_tier_{what}_total", t), 0)
        tiers[t]["errors"] = {k: v for (tier, k), v in snap.tier_errors.items() if tier == t}
    if snap.remote_ready is not None:
        tiers["remote"]["ready"] = snap.remote_ready
        tiers["remote"]["load"] = list(snap.remote_load) if snap.remote_load else None
    cfg = ctx.config
    return StatsReply(
        epoch=ctx.epoch, engines=snap.engines, index_blocks=snap.index_blocks,
        leases=snap.leases, tiers=tiers,
        config={"endpoint": cfg.endpoint, "data_dir": cfg.data_dir, "policy": cfg.policy,
                "cpu_slot_bytes": cfg.cpu_slot_bytes, "disk_bytes": cfg.disk_bytes,
                "remote_nodes": cfg.remote.nodes, "remote_bytes": cfg.remote.capacity_bytes})

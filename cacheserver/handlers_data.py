"""Request handlers of the data plane and service ops: PROMOTE, PUT, GET, FLUSH, STATS, PING.

PUT with ``durable`` and FLUSH are asynchronous: the blocks are placed at once, then the
handler awaits the disk tier's ``flush`` in a worker thread (the event loop keeps serving) and
replies when the bytes are durable. Everything else answers synchronously.
"""

from __future__ import annotations

import asyncio
import time

from cacheserver.handlers import Context, bad, handler
from cacheserver.leases import EngineSession
from cacheserver.metrics import TIERS, StateSnapshot
from cacheserver.protocol import (
    PROTOCOL_VERSION,
    Flush,
    FlushReply,
    Get,
    GetReply,
    Message,
    Ping,
    PingReply,
    Promote,
    PromoteReply,
    Put,
    PutReply,
    Stats,
    StatsReply,
)


@handler("promote")
def promote(ctx: Context, identity: bytes, session: EngineSession, req: Promote) -> Message:
    res = ctx.residency
    cpu_policy = res.policies["cpu"]
    slots = []
    for key in req.keys:
        rec = ctx.index.get(key)
        if rec is not None and rec.cpu < 0 and rec.disk:
            data = res.disk_read(rec)
            if data is not None and res.cpu_store(rec, data):
                ctx.metrics.moved["disk_to_cpu"].inc(rec.n_bytes)
                ctx.metrics.promotions.inc()
        slot = rec.cpu if rec is not None else -1
        if slot >= 0 and req.lease:
            session.take_lease(key, "cpu", cpu_policy)
        slots.append(slot)
    return PromoteReply(slots=slots)


async def _wait_durable(ctx: Context) -> list[bytes]:
    """Wait for the disk tier's queue to be synced; the keys whose writes failed."""
    disk = ctx.residency.disk
    if disk is None:
        return []
    await asyncio.get_running_loop().run_in_executor(None, disk.flush)
    return ctx.residency.poll_disk_failures()


@handler("put", is_async=True)
async def put(ctx: Context, identity: bytes, session: EngineSession, req: Put) -> Message:
    if len(req.frames) != len(req.blocks):
        raise bad(f"PUT has {len(req.blocks)} blocks but {len(req.frames)} payload frames")
    for i, frame in enumerate(req.frames):
        if len(frame) != session.n_bytes:
            raise bad(f"payload {i} is {len(frame)} bytes; this engine's blocks are "
                      f"{session.n_bytes} bytes")
    res, moved = ctx.residency, ctx.metrics.moved
    stored, on_disk = [], []
    for ref, frame in zip(req.blocks, req.frames, strict=True):
        rec = ctx.index.ensure(ref, session.n_tokens, session.n_bytes, session.layout_text)
        if res.cpu_store(rec, frame):
            moved["net_to_cpu"].inc(rec.n_bytes)
        if (req.durable or rec.cpu < 0) and not rec.disk and res.disk_store(rec, frame):
            moved["net_to_disk"].inc(rec.n_bytes)
        stored.append(rec.cpu >= 0 or rec.disk)  # a later block of this PUT may evict it
        on_disk.append(rec.disk)
        ctx.index.discard_if_unheld(rec)
    durable = req.durable and res.disk is not None and all(on_disk)
    if req.durable:
        failed = set(await _wait_durable(ctx))
        durable = durable and not any(ref.key in failed for ref in req.blocks)
    return PutReply(stored=stored, durable=durable)


@handler("get", needs_session=False)
def get(ctx: Context, identity: bytes, session: EngineSession | None, req: Get) -> Message:
    res, m = ctx.residency, ctx.metrics
    found: list[bool] = []
    frames: list[bytes] = []
    for key in req.keys:
        rec = ctx.index.get(key)
        data = res.cpu_read(rec) if rec is not None else None
        if data is not None:
            m.hits["cpu"].inc()
            m.moved["cpu_to_net"].inc(len(data))
        elif rec is not None and rec.disk:
            m.misses["cpu"].inc()
            raw = res.disk_read(rec)
            data = None if raw is None else bytes(raw)
            (m.hits if data is not None else m.misses)["disk"].inc()
            if data is not None:
                m.moved["disk_to_net"].inc(len(data))
        else:
            m.misses["cpu"].inc()
            m.misses["disk"].inc()
        found.append(data is not None)
        if data is not None:
            frames.append(data)
    return GetReply(found=found, frames=frames)


@handler("flush", needs_session=False, is_async=True)
async def flush(ctx: Context, identity: bytes, session: EngineSession | None,
                req: Flush) -> Message:
    await _wait_durable(ctx)
    disk = ctx.residency.disk
    return FlushReply(disk_blocks=len(disk) if disk is not None else 0)


@handler("ping", needs_session=False)
def ping(ctx: Context, identity: bytes, session: EngineSession | None, req: Ping) -> Message:
    target = ctx.sessions.by_engine(req.engine_id) if req.engine_id else session
    if target is not None:
        target.last_seen = ctx.clock()
    return PingReply(epoch=ctx.epoch, server_time=time.time(), version=PROTOCOL_VERSION,
                     registered=target is not None)


@handler("stats", needs_session=False)
def stats(ctx: Context, identity: bytes, session: EngineSession | None, req: Stats) -> Message:
    return StatsReply(stats=stats_dict(ctx))


def snapshot(ctx: Context, ready: bool = True, dropped: int = 0) -> StateSnapshot:
    """The daemon's levels now (what ``/metrics`` and STATS report)."""
    res = ctx.residency
    occupancy = {"gpu": sum(len(s.slot_keys) for s in ctx.sessions), "cpu": len(res.cpu)}
    capacity = {"gpu": ctx.sessions.total_gpu_slots, **res.max_blocks}
    errors = {("cpu", k): v for k, v in res.cpu.error_counts().items()}
    if res.disk is not None:
        occupancy["disk"] = len(res.disk)
        errors.update({("disk", k): v for k, v in res.disk.error_counts().items()})
    return StateSnapshot(occupancy=occupancy, capacity=capacity, tier_errors=errors,
                         engines=len(ctx.sessions), index_blocks=len(ctx.index),
                         leases=sum(s.lease_count for s in ctx.sessions),
                         dropped_replies=dropped, ready=ready)


def _tier_counters(ctx: Context) -> dict[tuple[str, str], int]:
    """``(metric name, tier) -> value`` of the per-tier counters, in one pass."""
    out: dict[tuple[str, str], int] = {}
    for family in ctx.metrics.registry.collect():
        if family.name.startswith("asymcache_tier_") and family.type == "counter":
            for sample in family.samples:
                if sample.name.endswith("_total") and "tier" in sample.labels:
                    out[(sample.name, sample.labels["tier"])] = int(sample.value)
    return out


def stats_dict(ctx: Context) -> dict:
    """STATS reply: levels, per-tier counters and the main configuration, plain types only."""
    snap = snapshot(ctx)
    counters = _tier_counters(ctx)
    tiers = {}
    for t in TIERS:
        tiers[t] = {"blocks": snap.occupancy.get(t, 0), "capacity_blocks": snap.capacity.get(t, 0)}
        for what in ("hits", "misses", "evictions", "demotions"):
            tiers[t][what] = counters.get((f"asymcache_tier_{what}_total", t), 0)
        tiers[t]["errors"] = {k: v for (tier, k), v in snap.tier_errors.items() if tier == t}
    cfg = ctx.config
    return {
        "epoch": ctx.epoch, "engines": snap.engines, "index_blocks": snap.index_blocks,
        "leases": snap.leases, "tiers": tiers,
        "config": {"endpoint": cfg.endpoint, "data_dir": cfg.data_dir, "policy": cfg.policy,
                   "cpu_slot_bytes": cfg.cpu_slot_bytes, "disk_bytes": cfg.disk_bytes},
    }

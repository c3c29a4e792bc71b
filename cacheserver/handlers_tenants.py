"""Tenant handlers: TENANTS (an engine says whose namespaces it uses) and PURGE (remove a
tenant's blocks from every tier). The registry, counts and quotas are ``tenants.py``'s.

A purge drops every indexed block of the tenant's namespaces (of one model when asked) from the
engines' GPU index, the CPU tier, the disk (values overwritten before LMDB frees their pages) and
the remote tier (this daemon's blocks through the index, then every host's by a scan of the
cluster), waits until the disk deletes are synced and the remote DELs sent, and answers how many
blocks left each tier. The engines that held blocks of it drop them from their pools at their
next heartbeat (``TenantBook.pending_for``). Requests of the tenant that run meanwhile may write
new blocks: stop its traffic first for a purge that leaves nothing.
"""

from __future__ import annotations

import asyncio
from collections import Counter

from asymcache.cacheserver import remote_io
from asymcache.cacheserver.blocks import TENANT_LABEL_MAX_BYTES
from asymcache.cacheserver.handlers import Context, bad, handler
from asymcache.cacheserver.handlers_data import _wait_durable
from asymcache.cacheserver.leases import EngineSession
from asymcache.cacheserver.protocol import (
    FINGERPRINT_MAX_BYTES,
    Message,
    Purge,
    PurgeReply,
    Tenants,
    TenantsReply,
)
from asymcache.cacheserver.protocol.wire_types import identifier_problem


def _check_name(name: str, value: str, max_bytes: int, empty_ok: bool) -> None:
    if not value and not empty_ok:
        raise bad(f"{name} must be non-empty")
    problem = identifier_problem(value, max_bytes)
    if problem is not None:
        raise bad(f"{name} {problem[1]}", problem[0])


@handler("tenants")
def tenants(ctx: Context, identity: bytes, session: EngineSession, req: Tenants) -> Message:
    n = len(req.namespaces)
    if len(req.tenants) != n or len(req.labels) != n:
        raise bad(f"namespaces, tenants and labels must be as long: {n}, {len(req.tenants)}, "
                  f"{len(req.labels)}")
    for label in req.labels:
        _check_name("labels[i]", label, TENANT_LABEL_MAX_BYTES, empty_ok=False)
    _check_name("model", req.model, FINGERPRINT_MAX_BYTES, empty_ok=True)
    book = ctx.residency.tenants
    book.aware.add(session.engine_id)
    new = book.register(zip(req.namespaces, req.tenants, req.labels, strict=True), req.model,
                        session.model_fingerprint)
    return TenantsReply(recorded=new)


@handler("purge", needs_session=False, is_async=True)
async def purge(ctx: Context, identity: bytes, session: EngineSession | None,
                req: Purge) -> Message:
    _check_name("model", req.model, FINGERPRINT_MAX_BYTES, empty_ok=True)
    book, res = ctx.residency.tenants, ctx.residency
    namespaces = book.namespaces_of(req.tenant, req.model)
    doomed = set(namespaces)
    removed: Counter[str] = Counter()
    now = ctx.clock()
    disk = res.tier("disk")
    records = [rec for rec in ctx.index.records() if rec.namespace in doomed]
    in_remote = {r.key for r in records if res.holds(r, "remote")}
    if disk is not None:  # scrubbing deletes first: the chain's own delete is then a no-op
        disk.delete([r.key for r in records if res.holds(r, "disk")],  # type: ignore[call-arg]
                    scrub=True)
    for rec in records:
        for engine_id in rec.gpu:
            s = ctx.sessions.by_engine(engine_id)
            slot = None if s is None else s.key_slots.get(rec.key)
            if s is not None and slot is not None:
                res.gpu_forget(s, slot)
                removed["gpu"] += 1
        for level in res.chain.levels:
            if rec.where & level.bit:
                res.chain.leave(level, rec.key, now, evicted=False)
                removed[level.name] += 1
    if namespaces:
        # every registered engine (those whose GPU index held blocks of them are among them):
        # one that holds blocks the index no longer knows (a victim named ahead, a slot given
        # up) drops them as well
        book.purged(namespaces, [s.engine_id for s in ctx.sessions])
    remote = res.tier("remote")
    if remote is not None and doomed:  # every host's blocks, not only the indexed ones
        scanned = await asyncio.get_running_loop().run_in_executor(
            None, remote.purge, doomed)  # type: ignore[attr-defined]
        removed["remote"] += len(set(scanned) - in_remote)
    await _wait_durable(ctx)
    await remote_io.flush(ctx)
    for tier, n in removed.items():
        book.purged_blocks[tier] += n
    return PurgeReply(namespaces=len(namespaces),
                      removed={t: removed.get(t, 0) for t in ("gpu", "cpu", "disk", "remote")})

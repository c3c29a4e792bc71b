"""SIGNAL: what clients said about their blocks, for the residency policy.

An engine sends one SIGNAL (one-way) when a request that carried a session key
(``prompt_cache_key``) or a retention (``prompt_cache_retention``) finishes, naming the request's
full blocks, and one with ``end`` when its client ends the session. The daemon caps the
retention per tenant (``quotas.max_retention_s``), writes the signals on the blocks' records
(``TierChain.signal``: they travel with the blocks into every tier) and re-ranks them in every
tier and engine GPU index that holds them; an end is recorded in the chain's session book and
re-ranks that session's blocks (``policy/sessions.py``). Keys the daemon does not hold are
skipped: a signal is advice, never a command.
"""

from __future__ import annotations

from asymcache.cacheserver.handlers import Context, bad, capped, handler
from asymcache.cacheserver.leases import EngineSession
from asymcache.cacheserver.protocol import Message, Signal, SignalReply


@handler("signal")
def signal(ctx: Context, identity: bytes, session: EngineSession, req: Signal) -> Message:
    if req.retention_s < 0:
        raise bad(f"retention_s must be >= 0, got {req.retention_s}")
    if req.end and req.session is None:
        raise bad("end needs the session it ends")
    now, chain, counts = ctx.clock(), ctx.residency.chain, ctx.residency.signal_counts
    records = [rec for key in req.keys if (rec := ctx.index.get(key)) is not None]
    granted = req.retention_s
    if granted > 0 and records:  # a request's keys share one namespace: one tenant's cap
        granted = capped(ctx, "max_retention_s", granted, records[0]) or 0.0
    if req.session is not None and req.keys:
        counts["session"] += 1
    if granted > 0 and records:
        counts["retention"] += 1
    if req.end:
        counts["end"] += 1
    until = now + granted if granted > 0 else 0.0
    if req.session is not None or until > 0:
        for rec in records:
            chain.signal(rec, req.session, until, now)
    if req.end:
        chain.end_session(req.session, now)
    return SignalReply(count=len(records), retention_s=granted if records else 0.0)

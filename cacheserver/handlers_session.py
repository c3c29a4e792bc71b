"""Request handlers of an engine's session besides HELLO (``handlers.py``): PING, CANCEL,
FORGET.

PING is liveness and, naming an engine, that engine's heartbeat; a heartbeat's reply names the
namespaces purged since the engine last confirmed (``purged_upto``), for its pool to drop. With
``info``, PING and HELLO replies also say what an engine plans with: the daemon's tiers and
the remote tier's load figures (:func:`daemon_info`), so engines never scrape STATS. CANCEL
gives back CPU reservations an engine will not fill (a ``FILLING`` slot is otherwise freed only
by a COMMIT ``cpu`` or the end of the session). FORGET says which victims named ahead the
engine gave up.
"""

from __future__ import annotations

import time
from typing import Any

from asymcache.cacheserver.handlers import Context, bad, handler
from asymcache.cacheserver.handlers_data import snapshot
from asymcache.cacheserver.leases import EngineSession
from asymcache.cacheserver.metrics import TIERS
from asymcache.cacheserver.protocol import (
    HEARTBEAT_SUFFIX,
    PROTOCOL_VERSION,
    Cancel,
    CancelReply,
    Forget,
    ForgetReply,
    Message,
    Ping,
    PingReply,
)


def daemon_info(ctx: Context) -> dict[str, Any]:
    """The ``info`` fields of HELLO and PING replies: tiers present, remote load figures."""
    snap = snapshot(ctx)
    load = snap.remote_load or (None, None)
    return {"tiers": [t for t in TIERS if t in snap.occupancy],  # a level per tier present
            "remote_latency_s": load[0], "remote_bandwidth_bps": load[1]}


@handler("ping", needs_session=False)
def ping(ctx: Context, identity: bytes, session: EngineSession | None, req: Ping) -> Message:
    """Liveness; a heartbeat for the named engine (else this socket's) only when it comes from
    the socket that registered it or from that socket's heartbeat identity (its routing id +
    ``HEARTBEAT_SUFFIX``). ``registered``: whether that engine has a session."""
    target = ctx.sessions.by_engine(req.engine_id) if req.engine_id else session
    purged: dict[str, Any] = {}
    if target is not None and identity in (target.identity, target.identity + HEARTBEAT_SUFFIX):
        target.last_seen = ctx.clock()
        namespaces, seq = ctx.residency.tenants.pending_for(target.engine_id, req.purged_upto)
        if namespaces:
            purged = {"purged": namespaces, "purge_seq": seq}
    return PingReply(epoch=ctx.epoch, server_time=time.time(), version=PROTOCOL_VERSION,
                     registered=target is not None, **(daemon_info(ctx) if req.info else {}),
                     **purged)


@handler("forget")
def forget(ctx: Context, identity: bytes, session: EngineSession, req: Forget) -> Message:
    """Forget GPU slots the engine gave up without telling ALLOCATE (victims named ahead)."""
    if len(req.slots) != len(req.keys):
        raise bad(f"slots has {len(req.slots)} entries but keys {len(req.keys)}")
    forgotten = 0
    for slot, key in zip(req.slots, req.keys, strict=True):
        if session.slot_keys.get(slot) == key:
            ctx.residency.gpu_forget(session, slot)
            forgotten += 1
    return ForgetReply(forgotten=forgotten)


@handler("cancel")
def cancel(ctx: Context, identity: bytes, session: EngineSession, req: Cancel) -> Message:
    """Free the ``FILLING`` CPU slots this engine reserved for ``keys``; other keys (never
    reserved, already confirmed, or reserved by another engine) are left alone."""
    cancelled = 0
    for key in dict.fromkeys(req.keys):
        rec = ctx.index.get(key)
        if rec is not None and key in session.reservations:
            ctx.residency.cpu_abort(rec, session)
            cancelled += 1
    return CancelReply(cancelled=cancelled)

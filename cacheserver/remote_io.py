"""The daemon's reads from the remote tier, off the event loop.

The remote tier's reads wait on the network (each node bounded by ``remote_timeout_s``; a node
that failed is skipped at once), so handlers await them here: the call runs in a worker thread
and the event loop keeps serving other requests. Handlers come here only for keys no local tier
can serve, and only with a remote tier configured and reachable.

* :func:`probe` — which keys the cluster holds (EXISTS), for LOOKUP;
* :func:`fetch` — verified ``(header, payload)`` per key (GET), for PROMOTE and GET;
* :func:`place` — a fetched block into the index, adopted by the remote tier (another host
  stored it) and copied into a CPU slot; it must match the asking engine's layout.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from asymcache.cacheserver.blocks import ROOT_PARENT
from asymcache.cacheserver.index import BlockRecord, IndexFull
from asymcache.cacheserver.leases import EngineSession
from asymcache.cacheserver.protocol import BlockRef
from asymcache.tiers.base import BlockHeader

if TYPE_CHECKING:
    from asymcache.cacheserver.handlers import Context
    from asymcache.tiers.remote import Found, RemoteTier

log = logging.getLogger("asymcache.remote")


def _tier(ctx: Context) -> RemoteTier:
    remote = ctx.residency.tier("remote")
    assert remote is not None, "remote_io needs a remote tier"
    return remote  # type: ignore[return-value]


async def probe(ctx: Context, keys: list[bytes]) -> list[bool]:
    """Whether the cluster holds each key (unreachable nodes: False, counted by the tier)."""
    if not keys:
        return []
    return await asyncio.get_running_loop().run_in_executor(None, _tier(ctx).contains, keys)


async def fetch(ctx: Context, keys: list[bytes]) -> list[Found | None]:
    """The verified header and payload of each key, or None (absent, corrupt, unreachable)."""
    if not keys:
        return []
    return await asyncio.get_running_loop().run_in_executor(None, _tier(ctx).fetch, keys)


async def flush(ctx: Context) -> None:
    """Wait (bounded by the tier) until the remote tier's queued writes are sent."""
    remote = ctx.residency.tier("remote")
    if remote is not None:
        await asyncio.get_running_loop().run_in_executor(None, remote.flush)


def place(ctx: Context, session: EngineSession, key: bytes, header: BlockHeader,
          payload: memoryview) -> BlockRecord | None:
    """Index a block fetched for ``session``, mark it held by the remote tier and copy it into
    a CPU slot (evicting there as usual); None when it does not match the engine's layout (a
    counted ``mismatch`` error) or the index is full. The record may end up without a CPU slot
    when none can be had."""
    if header.layout != session.layout_text or header.length != session.n_bytes:
        log.warning("remote block %s has layout %r (%d bytes); engine %s expects %r (%d bytes)",
                    key.hex(), header.layout, header.length, session.engine_id,
                    session.layout_text, session.n_bytes)
        _tier(ctx).count_error("mismatch")
        return None
    parent = None if header.parent == ROOT_PARENT else header.parent
    try:
        rec = ctx.index.ensure(BlockRef(key, header.namespace, parent, header.position),
                               session.n_tokens, header.length, header.layout)
    except IndexFull:
        return None
    res = ctx.residency
    res.store("remote", rec, None)  # adopted: another host stored it
    if rec.cpu < 0 and rec.cpu_pending < 0 and res.store("cpu", rec, payload):
        ctx.metrics.moved["remote_to_cpu"].inc(rec.n_bytes)
        ctx.metrics.promotions.inc()
    ctx.index.discard_if_unheld(rec)
    return rec

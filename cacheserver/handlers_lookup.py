"""LOOKUP: where each of an engine's blocks is, a lease where asked, and the policies' hits.

Per key the engine's own GPU slot, else a readable CPU slot, else DISK, else (when the request
sets ``remote``) REMOTE, else MISS. The policy bookkeeping of the hits (an access each, and a
lease with ``lease``) runs after the reply is sent unless the reply must wait for the remote
tier (then before, so that its leases are taken before the loop moves on).
"""

from __future__ import annotations

from asymcache.cacheserver import remote_io
from asymcache.cacheserver.handlers import Context, handler, release_keys
from asymcache.cacheserver.index import BlockIndex
from asymcache.cacheserver.leases import EngineSession
from asymcache.cacheserver.protocol import Lookup, LookupReply, Message, Where

_TIER_NAMES = ("", "gpu", "cpu", "disk", "remote")  # indexed by Where code


def count_lookups(ctx: Context, found: list[int], remote: bool = False) -> None:
    """``found[w]`` blocks were found at Where code ``w``: one hit in that tier, one miss in
    each tier probed before it (GPU, then CPU, then disk, then, when ``remote`` was probed,
    the remote tier)."""
    m, n = ctx.metrics, sum(found)
    probed = n
    codes = (Where.GPU, Where.CPU, Where.DISK, Where.REMOTE) if remote else (
        Where.GPU, Where.CPU, Where.DISK)
    for code in codes:
        tier = _TIER_NAMES[code]
        if found[code]:
            m.hits[tier].inc(found[code])
        if probed - found[code]:
            m.misses[tier].inc(probed - found[code])
        probed -= found[code]


@handler("lookup")
def lookup(ctx: Context, identity: bytes, session: EngineSession, req: Lookup) -> Message:
    """Per key: this engine's GPU slot, else a readable CPU slot, else DISK, else (when the
    request sets ``remote``) REMOTE, else MISS. Each hit is an access in that tier's policy and,
    with ``lease``, a lease there. Keys no local tier knows are asked of the remote tier; the
    reply then waits for that round trip (the loop keeps serving). ``release``: leases dropped
    first, as RELEASE would."""
    if req.release:
        release_keys(ctx, session, req.release)
    keys = req.keys
    remote_tier = ctx.residency.tier("remote")
    remote = req.remote and remote_tier is not None
    slots = [session.key_slots.get(key, -1) for key in keys]  # GPU slots are >= 0
    if -1 in slots:
        codes = ctx.residency.codes if remote else ctx.residency.local_codes
        where, found = _locate(ctx.index, keys, slots, codes)
    else:  # the common case: all in this engine's GPU pool
        where, found = [int(Where.GPU)] * len(keys), [0, len(keys), 0, 0, 0]
    sums = cpu_checksums(ctx, keys, where) if req.verify else []
    if remote and found[0] and remote_tier.ready:  # type: ignore[union-attr]
        _touch(ctx, session, keys, where, req.lease)  # now: leases before the loop moves on
        return _lookup_rest(ctx, keys, where, slots, found, sums)
    count_lookups(ctx, found, remote)
    if found[0] != len(keys):
        ctx.after_reply(lambda: _touch(ctx, session, keys, where, req.lease))
    return LookupReply(where=where, slots=slots, checksums=sums)


def cpu_checksums(ctx: Context, keys: list[bytes], where: list[int]) -> list[int]:
    """The checksum of each CPU hit's bytes (``where`` code 2), 0 for the other keys."""
    if Where.CPU not in where:
        return [0] * len(keys)
    sums = ctx.residency.cpu.checksums(keys)
    return [c if w == Where.CPU else 0 for c, w in zip(sums, where, strict=True)]


def _locate(index: BlockIndex, keys: list[bytes], slots: list[int],
            codes: list[int]) -> tuple[list[int], list[int]]:
    """``where`` code per key and ``found`` count per code; ``slots`` holds each key's GPU slot
    (-1: not in the engine's pool) and gets the CPU slot of blocks found there; ``codes`` maps
    a record's ``where`` to the code of the highest level reported."""
    records = index.get
    where: list[int] = []
    found = [0, 0, 0, 0, 0]
    for i, slot in enumerate(slots):
        if slot >= 0:
            w = 1
        elif (rec := records(keys[i])) is None:
            w = 0
        else:
            w = codes[rec.where]
            if w == 2:
                slots[i] = rec.cpu
        found[w] += 1
        where.append(w)
    return where, found


async def _lookup_rest(ctx: Context, keys: list[bytes], where: list[int], slots: list[int],
                       found: list[int], sums: list[int]) -> LookupReply:
    """Ask the remote tier about the keys nothing local holds; they become REMOTE (no lease:
    PROMOTE leases the CPU slot it fills)."""
    missing = [i for i, w in enumerate(where) if w == Where.MISS]
    there = await remote_io.probe(ctx, [keys[i] for i in missing])
    where = list(where)
    for i, hit in zip(missing, there, strict=True):
        if hit:
            where[i] = int(Where.REMOTE)
            found[Where.MISS] -= 1
            found[Where.REMOTE] += 1
    count_lookups(ctx, found, remote=True)
    return LookupReply(where=where, slots=slots, checksums=sums)


def _touch(ctx: Context, session: EngineSession, keys: list[bytes], where: list[int],
           lease: bool) -> None:
    """LOOKUP's policy bookkeeping: an access per hit and, with ``lease``, a lease there.

    Without leases the hits of each tier go to its policy as one ``access_many`` (request
    order); with leases each access is followed by its lease, as the policies' copies see them.
    """
    now = ctx.clock()
    shared = ctx.residency.policies
    policies = (None, session.gpu_policy, shared.get("cpu"), shared.get("disk"),
                shared.get("remote"))
    if not lease:
        if where.count(1) == len(keys):  # the common case: all in this engine's GPU pool
            session.gpu_policy.access_many(keys, now)
            return
        hits: tuple[list[bytes], ...] = ([], [], [], [], [])
        for key, w in zip(keys, where, strict=True):
            hits[w].append(key)
        for w in range(1, len(hits)):
            if hits[w]:
                policies[w].access_many(hits[w], now)  # type: ignore[union-attr]
        return
    for key, w in zip(keys, where, strict=True):
        if w:
            policy = policies[w]
            policy.access(key, now)  # type: ignore[union-attr]
            ctx.sessions.lease(session, key, _TIER_NAMES[w], policy)  # type: ignore[arg-type]

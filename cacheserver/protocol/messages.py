"""The request and reply dataclasses of every op (encoding rules live in ``wire.py``).

Fields added after version 1 carry ``OMIT_DEFAULT``: a request field is sent only when set (a
daemon that predates it refuses it by name), and a reply field only when the request asked for
it (``info``), so a client that predates it never receives it.
"""

from __future__ import annotations

from dataclasses import field

from asymcache.cacheserver.protocol.framing import Buffer
from asymcache.cacheserver.protocol.wire import OMIT_DEFAULT, Message, message
from asymcache.cacheserver.protocol.wire_types import BlockRef, EngineId, Fingerprint, Key


# ---- requests (engine/tool -> daemon) -----------------------------------------------------
@message("hello")
class Hello(Message):
    """Register an engine: its model, KV layout (``KVLayout.to_dict()``), GPU pool size, and the
    blocks it already holds (``held[i]`` sits in GPU slot ``held_slots[i]``)."""

    engine_id: EngineId
    model_fingerprint: Fingerprint
    layout: dict
    gpu_slots: int
    held: list[BlockRef] = field(default_factory=list)
    held_slots: list[int] = field(default_factory=list)
    info: bool = field(default=False, metadata={OMIT_DEFAULT: True})  # see HelloReply.tiers
    # the engine's cost model (asymcache-cost-profile/1): the daemon prices its blocks with it
    cost_profile: dict = field(default_factory=dict, metadata={OMIT_DEFAULT: True})


@message("lookup")
class Lookup(Message):
    """Where is each block? With ``lease``, what was found is leased until RELEASE. With
    ``remote``, blocks only the remote tier holds are reported as REMOTE (else MISS); the field
    is sent only when set, so daemons that predate it keep answering other LOOKUPs."""

    keys: list[Key]
    lease: bool = True
    remote: bool = field(default=False, metadata={OMIT_DEFAULT: True})
    # leases to drop first, one per key, as RELEASE does (a stream's previous batch)
    release: list[Key] = field(default_factory=list, metadata={OMIT_DEFAULT: True})
    # also answer the checksum of each CPU hit's bytes (LookupReply.checksums)
    verify: bool = field(default=False, metadata={OMIT_DEFAULT: True})


@message("allocate")
class Allocate(Message):
    """``tier="gpu"``: free ``n`` GPU slots (the daemon names victims and CPU slots to demote
    them to; ``demote=False``, sent only when false, by an engine that cannot write the CPU
    tier: no CPU slot is reserved for the victims). ``tier="cpu"``: reserve a CPU slot for each
    of ``blocks`` (then copy, COMMIT)."""

    tier: str = "gpu"
    n: int = 0
    blocks: list[BlockRef] = field(default_factory=list)
    demote: bool = field(default=True, metadata={OMIT_DEFAULT: True})
    notify: bool = field(default=False, metadata={OMIT_DEFAULT: True})  # gpu: victims in the ACK


@message("commit")
class Commit(Message):
    """``blocks[i]`` now holds its bytes in ``slots[i]`` of ``tier`` (``gpu``, or ``cpu`` to
    confirm a reserved CPU slot after the copy). With ``lease``, each accepted block is also
    leased to this engine in that tier (never a victim until RELEASE, like LOOKUP's leases;
    dropped with the engine's session); the field is sent only when set, so clients that
    predate it keep the old behaviour."""

    tier: str
    blocks: list[BlockRef]
    slots: list[int]
    lease: bool = field(default=False, metadata={OMIT_DEFAULT: True})
    notify: bool = field(default=False, metadata={OMIT_DEFAULT: True})  # one-way: see Ack
    # gpu: also reserve a CPU slot for each block not in the CPU tier (write-through), told in
    # the reply's ``reserved`` (one-way: in the ACK)
    reserve: bool = field(default=False, metadata={OMIT_DEFAULT: True})
    # cpu, with a reply: then reserve CPU slots for these blocks, as ALLOCATE cpu does, told in
    # the reply's ``reserved`` (a stream's next batch)
    reserve_next: list[BlockRef] = field(default_factory=list, metadata={OMIT_DEFAULT: True})
    # cpu: the xxh3-64 checksum of the bytes written into each slot (tiers.base.checksum; 0 =
    # not given: the daemon computes it from the slot when it handles the COMMIT). Reads of the
    # block are checked against it.
    checksums: list[int] = field(default_factory=list, metadata={OMIT_DEFAULT: True})


@message("release")
class Release(Message):
    """Drop one lease on each key (or every lease of this engine with ``everything``)."""

    keys: list[Key] = field(default_factory=list)
    everything: bool = False
    notify: bool = field(default=False, metadata={OMIT_DEFAULT: True})  # one-way: see Ack


@message("pin")
class Pin(Message):
    """Keep the blocks resident until UNPIN, or for ``ttl_s`` seconds."""

    keys: list[Key]
    ttl_s: float | None = None


@message("unpin")
class Unpin(Message):
    keys: list[Key]


@message("signal")
class Signal(Message):
    """What a client said about its blocks, for the residency policy (docs/policy.md, "Client
    signals"). ``session`` is ``blocks.session_digest(cache_salt, prompt_cache_key)`` (never the
    key itself; None: no session). A request of that session used ``keys`` (its full blocks,
    in order); ``retention_s`` > 0 asks to rank them last for that long (capped per tenant by
    the daemon); ``end`` says the session is over: its blocks that no other session used go
    first. ``notify``: one-way (ACK), as COMMIT."""

    session: Key | None = None
    keys: list[Key] = field(default_factory=list)
    retention_s: float = 0.0
    end: bool = False
    notify: bool = field(default=False, metadata={OMIT_DEFAULT: True})


@message("promote")
class Promote(Message):
    """Bring DISK- or REMOTE-only blocks to CPU slots ahead of use; ``lease`` leases the CPU
    slots."""

    keys: list[Key]
    lease: bool = True
    # also answer the checksum of each CPU slot's bytes (PromoteReply.checksums)
    verify: bool = field(default=False, metadata={OMIT_DEFAULT: True})


@message("verify")
class Verify(Message):
    """The bytes an engine copied out of these keys' CPU slots did not match their checksums:
    the daemon checks the slots itself and forgets (and counts) those that fail."""

    keys: list[Key]
    notify: bool = field(default=False, metadata={OMIT_DEFAULT: True})  # one-way: see Ack


@message("put")
class Put(Message):
    """Store block bytes (``frames[i]`` for ``blocks[i]``); ``durable`` waits for the disk."""

    blocks: list[BlockRef]
    durable: bool = False
    frames: list[Buffer] = field(default_factory=list)


@message("get")
class Get(Message):
    keys: list[Key]


@message("forget")
class Forget(Message):
    """This engine's GPU slots ``slots[i]`` no longer hold ``keys[i]`` (it gave up victims the
    daemon named ahead); a pair the daemon does not have is left alone."""

    slots: list[int]
    keys: list[Key]
    notify: bool = field(default=False, metadata={OMIT_DEFAULT: True})  # one-way: see Ack


@message("cancel")
class Cancel(Message):
    """Give back this engine's CPU reservations (ALLOCATE's ``demote_to``, or ``tier="cpu"``
    slots) of ``keys``, which it will not fill: their ``FILLING`` slots become free."""

    keys: list[Key]
    notify: bool = field(default=False, metadata={OMIT_DEFAULT: True})  # one-way: see Ack


@message("flush")
class Flush(Message):
    """Wait until every accepted disk write is durable."""


@message("stats")
class Stats(Message):
    pass


@message("ping")
class Ping(Message):
    """Liveness; with ``engine_id`` it is also that engine's heartbeat (keeps its leases).
    ``info``: also answer with the daemon's tiers and load (as HELLO's reply)."""

    engine_id: EngineId = ""
    info: bool = field(default=False, metadata={OMIT_DEFAULT: True})
    # the engine dropped the purged namespaces the daemon announced up to this number
    purged_upto: int = field(default=0, metadata={OMIT_DEFAULT: True})


@message("tenants")
class Tenants(Message):
    """Which tenant each namespace belongs to, sent by an engine once per namespace and
    registration: ``tenants[i]`` is ``blocks.tenant_digest(cache_salt)`` of ``namespaces[i]``
    (never the salt), ``labels[i]`` the name it is counted under (metrics, quotas), ``model``
    the name the engine serves its model under (``asymcache purge --model``)."""

    namespaces: list[Key]
    tenants: list[Key]
    labels: list[str]
    model: str = ""


@message("purge")
class Purge(Message):
    """Remove every block of the tenant ``tenant`` (``blocks.tenant_digest``) from every tier;
    ``model`` (a served model name or fingerprint; "" = all) narrows it to one model."""

    tenant: Key
    model: str = ""


# ---- replies (daemon -> engine/tool) ------------------------------------------------------
@message("hello", reply=True)
class HelloReply(Message):
    epoch: int
    engine_id: EngineId
    restored: int
    cpu_shm_name: str
    cpu_slot_bytes: int
    cpu_num_slots: int
    lease_timeout_s: float
    max_inflight: int
    max_keys: int
    # sent only when the request set ``info``: the daemon's tiers in order ("gpu", "cpu",
    # "disk", "remote"), and a load's latency and bandwidth from its remote tier (configured, or
    # measured once connected; absent while unknown)
    tiers: list[str] = field(default_factory=list, metadata={OMIT_DEFAULT: True})
    remote_latency_s: float | None = field(default=None, metadata={OMIT_DEFAULT: True})
    remote_bandwidth_bps: float | None = field(default=None, metadata={OMIT_DEFAULT: True})


@message("lookup", reply=True)
class LookupReply(Message):
    """``where[i]`` is a :class:`Where` code; ``slots[i]`` the GPU or CPU slot, else -1
    (REMOTE only when the request set ``remote``)."""

    where: list[int]
    slots: list[int]
    # with ``verify``: the checksum of each CPU hit's bytes (0 for other keys)
    checksums: list[int] = field(default_factory=list, metadata={OMIT_DEFAULT: True})


@message("allocate", reply=True)
class AllocateReply(Message):
    """GPU: give up ``slots[i]`` (holding ``keys[i]``) after copying it to CPU slot
    ``demote_to[i]`` when that is not -1. CPU: ``slots[i]`` reserved for ``blocks[i]``, -1 when
    refused (no room) or -2 when the block is already in the CPU tier."""

    slots: list[int]
    keys: list[Key] = field(default_factory=list)
    demote_to: list[int] = field(default_factory=list)


@message("commit", reply=True)
class CommitReply(Message):
    accepted: list[bool]
    reserved: list[int] = field(default_factory=list,  # reserve / reserve_next
                                metadata={OMIT_DEFAULT: True})


@message("release", reply=True)
class ReleaseReply(Message):
    released: int


@message("pin", reply=True)
class PinReply(Message):
    count: int


@message("unpin", reply=True)
class UnpinReply(Message):
    count: int


@message("signal", reply=True)
class SignalReply(Message):
    count: int  # keys the daemon holds that took the signal
    retention_s: float = 0.0  # the retention granted (after the tenant's cap)


@message("promote", reply=True)
class PromoteReply(Message):
    """CPU slot of each key, -1 when it is on no tier or its disk or remote copy failed its
    checks (or could not be reached)."""

    slots: list[int]
    # with ``verify``: the checksum of each CPU slot's bytes (0 where the slot is -1)
    checksums: list[int] = field(default_factory=list, metadata={OMIT_DEFAULT: True})


@message("verify", reply=True)
class VerifyReply(Message):
    corrupt: int  # CPU blocks among the keys whose bytes failed their checksum (now forgotten)


@message("put", reply=True)
class PutReply(Message):
    stored: list[bool]
    durable: bool


@message("get", reply=True)
class GetReply(Message):
    """``found[i]`` per key; one payload frame per found key, in key order."""

    found: list[bool]
    frames: list[Buffer] = field(default_factory=list)


@message("ack", reply=True)
class Ack(Message):
    """Sent, unasked, after the daemon handled one or more one-way requests (``notify``) of a
    peer that arrived together: under request id ``upto``, the highest of them. ``count`` of
    them were handled; those refused are listed by request id with their error code and
    message (everything else about a notification's outcome is not reported)."""

    upto: int
    count: int
    error_ids: list[int] = field(default_factory=list)
    error_codes: list[str] = field(default_factory=list)
    error_messages: list[str] = field(default_factory=list)
    # CPU slots reserved by one-way COMMITs with ``reserve`` (copy, then COMMIT tier=cpu)
    reserved_keys: list[Key] = field(default_factory=list, metadata={OMIT_DEFAULT: True})
    reserved_slots: list[int] = field(default_factory=list, metadata={OMIT_DEFAULT: True})
    # victims named by one-way ALLOCATEs (gpu): as AllocateReply's slots, keys, demote_to
    victim_slots: list[int] = field(default_factory=list, metadata={OMIT_DEFAULT: True})
    victim_keys: list[Key] = field(default_factory=list, metadata={OMIT_DEFAULT: True})
    victim_demote_to: list[int] = field(default_factory=list, metadata={OMIT_DEFAULT: True})


@message("forget", reply=True)
class ForgetReply(Message):
    forgotten: int


@message("cancel", reply=True)
class CancelReply(Message):
    cancelled: int  # reservations given back (keys this engine had no reservation of: none)


@message("flush", reply=True)
class FlushReply(Message):
    disk_blocks: int


@message("stats", reply=True)
class StatsReply(Message):
    """For people and tools (engines learn what they need from HELLO and PING): per tier
    ``blocks``, ``capacity_blocks``, ``hits``, ``misses``, ``evictions``, ``demotions``,
    ``errors`` (kind -> count) and, for the remote tier, ``ready`` and ``load``."""

    epoch: int
    engines: int
    index_blocks: int
    leases: int
    tiers: dict  # tier -> its figures (above)
    config: dict  # the main settings: endpoint, data_dir, policy, tier sizes


@message("ping", reply=True)
class PingReply(Message):
    epoch: int
    server_time: float
    version: int
    registered: bool
    # with ``info``: as in HelloReply
    tiers: list[str] = field(default_factory=list, metadata={OMIT_DEFAULT: True})
    remote_latency_s: float | None = field(default=None, metadata={OMIT_DEFAULT: True})
    remote_bandwidth_bps: float | None = field(default=None, metadata={OMIT_DEFAULT: True})
    # namespaces purged since the engine's ``purged_upto`` (its pool drops their blocks), and
    # the number of the last one; sent only to the heartbeat of a registered engine
    purged: list[Key] = field(default_factory=list, metadata={OMIT_DEFAULT: True})
    purge_seq: int = field(default=0, metadata={OMIT_DEFAULT: True})


@message("tenants", reply=True)
class TenantsReply(Message):
    recorded: int  # namespaces newly recorded (known ones are not counted again)


@message("purge", reply=True)
class PurgeReply(Message):
    """How many namespaces matched and blocks were removed, per tier (``gpu``: blocks dropped
    from the engines' pools, which they free at their next heartbeat)."""

    namespaces: int
    removed: dict  # tier -> blocks



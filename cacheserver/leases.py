"""Registered engines and their leases.

An :class:`EngineSession` is what the daemon knows about one engine: its layout, its GPU pool
(which key sits in which slot, and the GPU residency policy that picks victims there), the leases
it holds and the CPU slots it reserved for demotions. Any request (or a PING naming the engine)
is a heartbeat; a session silent for ``lease_timeout_s`` is expired by the daemon, which then
drops its leases, aborts its reservations and forgets its GPU slots.

A lease is counted here and only here, per engine and (key, tier): LOOKUP leases the tier where
it found the block, PROMOTE the CPU slot it filled; one RELEASE of a key drops one unit of every
tier the key is leased in. The tier's policy is told when a block's first lease in it is taken
and its last dropped, over all engines (``protect``/``unprotect``), and never evicts it between.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from asymcache.cacheserver.blocks import KVLayout
from asymcache.cacheserver.policy import ResidencyPolicy
from asymcache.cacheserver.policy.cost import CostModel


@dataclass
class EngineSession:
    engine_id: str
    identity: bytes
    model_fingerprint: str
    layout: KVLayout
    gpu_slots: int
    gpu_policy: ResidencyPolicy
    last_seen: float
    slot_keys: dict[int, bytes] = field(default_factory=dict)  # GPU slot -> key
    key_slots: dict[bytes, int] = field(default_factory=dict)  # key -> GPU slot
    leases: dict[bytes, dict[str, int]] = field(default_factory=dict)  # key -> tier -> units
    reservations: set[bytes] = field(default_factory=set)  # keys with a CPU slot reserved
    raw_cost_model: CostModel | None = None  # the profile the engine sent with HELLO
    cost_model: CostModel | None = None  # that, completed with the daemon's tier figures
    client_key: str = ""  # the CURVE key that registered it ("" without CURVE)

    layout_text: str = field(init=False)  # derived from ``layout`` once (hot path)
    n_bytes: int = field(init=False)
    n_tokens: int = field(init=False)

    def __post_init__(self) -> None:
        self.layout_text = self.layout.canonical()
        self.n_bytes = self.layout.bytes_per_block
        self.n_tokens = self.layout.block_size

    @property
    def lease_count(self) -> int:
        return sum(sum(t.values()) for t in self.leases.values())

    def policies(self, shared: dict[str, ResidencyPolicy]) -> dict[str, ResidencyPolicy]:
        """The per-tier policies as this engine sees them (its own GPU policy + shared ones)."""
        return {**shared, "gpu": self.gpu_policy}


class SessionTable:
    """Sessions by ZeroMQ identity and by engine id; bounded by ``max_engines``."""

    def __init__(self, max_engines: int) -> None:
        self.max_engines = max_engines
        self._by_identity: dict[bytes, EngineSession] = {}
        self._by_engine: dict[str, EngineSession] = {}

    def __len__(self) -> int:
        return len(self._by_engine)

    def __iter__(self) -> Iterator[EngineSession]:
        return iter(list(self._by_engine.values()))

    def by_identity(self, identity: bytes) -> EngineSession | None:
        return self._by_identity.get(identity)

    def by_engine(self, engine_id: str) -> EngineSession | None:
        return self._by_engine.get(engine_id)

    def add(self, session: EngineSession) -> None:
        if session.engine_id in self._by_engine or session.identity in self._by_identity:
            raise ValueError(f"engine {session.engine_id!r} is already registered")
        if len(self._by_engine) >= self.max_engines:
            raise ValueError(f"{self.max_engines} engines are registered already (max_engines)")
        self._by_engine[session.engine_id] = session
        self._by_identity[session.identity] = session

    def remove(self, session: EngineSession) -> None:
        self._by_engine.pop(session.engine_id, None)
        if self._by_identity.get(session.identity) is session:
            del self._by_identity[session.identity]

    def lease(self, session: EngineSession, key: bytes, tier: str,
              policy: ResidencyPolicy) -> None:
        """One more lease unit of ``session`` on ``key`` in ``tier`` (``policy``: that tier's)."""
        units = session.leases.setdefault(key, {})
        if not units.get(tier) and not self._leased_elsewhere(session, key, tier):
            policy.protect(key)
        units[tier] = units.get(tier, 0) + 1

    def release(self, session: EngineSession, key: bytes, policies: dict[str, ResidencyPolicy],
                now: float) -> bool:
        """Drop one unit of every tier ``key`` is leased in; ``False`` if it held no lease."""
        units = session.leases.get(key)
        if not units:
            return False
        for tier in list(units):
            units[tier] -= 1
            if units[tier] == 0:
                del units[tier]
                self._unprotect(session, key, tier, policies[tier], now)
        if not units:
            del session.leases[key]
        return True

    def release_all(self, session: EngineSession, policies: dict[str, ResidencyPolicy],
                    now: float) -> int:
        """Drop every lease of ``session``; how many units it held."""
        n = session.lease_count
        leases, session.leases = session.leases, {}
        for key, units in leases.items():
            for tier in units:
                self._unprotect(session, key, tier, policies[tier], now)
        return n

    def _unprotect(self, session: EngineSession, key: bytes, tier: str, policy: ResidencyPolicy,
                   now: float) -> None:
        if not self._leased_elsewhere(session, key, tier):
            policy.unprotect(key, now)

    def _leased_elsewhere(self, session: EngineSession, key: bytes, tier: str) -> bool:
        """Whether another engine leases ``key`` in shared ``tier`` (each GPU pool is its own)."""
        return tier != "gpu" and any(
            s is not session and tier in s.leases.get(key, ()) for s in self._by_engine.values())

    def expired(self, now: float, timeout_s: float) -> list[EngineSession]:
        return [s for s in self._by_engine.values() if now - s.last_seen > timeout_s]

    @property
    def total_gpu_slots(self) -> int:
        return sum(s.gpu_slots for s in self._by_engine.values())

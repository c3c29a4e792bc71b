"""The daemon's Prometheus metrics, registered on a ``CollectorRegistry`` that is passed in.

Names follow ``asymcache_<subsystem>_<what>_<unit>`` (``_total`` on counters); the full list,
with labels, is in ``docs/daemon.md``. Event counters are incremented where things happen, on
the event-loop thread, as plain numbers (``metrics_events.py``: no lock per request); every
label value known up front (ops, tiers, directions, error codes) has its series from the start,
at 0, so ``rate()`` sees the first event. Levels (occupancy, capacity, engines, tier error
counts) are read from the live state at scrape time through :class:`StateCollector`, so they are
never stale and never double-counted. The remote tier's round trips are counted from its
threads, with ``prometheus_client``'s thread-safe classes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from asymcache.cacheserver.metrics_events import EventCounter, EventFamily, EventHistogram
from asymcache.cacheserver.protocol import ErrorCode

TIERS = ("gpu", "cpu", "disk", "remote")
DIRECTIONS = ("gpu_to_cpu", "cpu_to_disk", "disk_to_cpu", "net_to_cpu", "net_to_disk",
              "cpu_to_net", "disk_to_net", "cpu_to_remote", "remote_to_cpu", "remote_to_net")
REMOTE_OPS = ("get", "exists", "write")  # pipelined rounds of the remote tier
_LATENCY_BUCKETS = (2e-5, 5e-5, 1e-4, 2e-4, 5e-4, 1e-3, 2e-3, 5e-3, 1e-2, 5e-2, 0.25, 1.0, 5.0)


class DaemonMetrics:
    """Event counters and the RPC latency histogram; hot-path children are pre-resolved.

    ``latency[op]``, ``hits[tier]``, ``misses[tier]``, ``moved[direction]``,
    ``evictions[tier]``, ``demotions[tier]``, ``promotions`` and ``expired_engines`` have
    ``inc``/``observe`` like ``prometheus_client`` children; call them on the event-loop thread.
    """

    def __init__(self, registry: CollectorRegistry, ops: list[str]) -> None:
        self.registry = registry
        self._families: list[EventFamily] = []
        self.latency: dict[str, EventHistogram] = self._family(  # type: ignore[assignment]
            "asymcache_rpc_latency_seconds", "Time from receipt to reply, by op", "op", ops,
            _LATENCY_BUCKETS)
        self._errors = EventFamily("asymcache_rpc_errors_total", "Error replies, by error code",
                                   "code", [c.value for c in ErrorCode])
        self._families.append(self._errors)
        self.hits = self._family("asymcache_tier_hits_total",
                                 "Blocks found in a tier (LOOKUP, GET)", "tier", TIERS)
        self.misses = self._family("asymcache_tier_misses_total",
                                   "Blocks looked for in a tier and not found there", "tier", TIERS)
        self.moved = self._family("asymcache_tier_moved_bytes_total",
                                  "Block bytes moved, by direction", "direction", DIRECTIONS)
        self.evictions = self._family("asymcache_tier_evictions_total",
                                      "Blocks that left a tier to make room", "tier", TIERS)
        self.demotions = self._family("asymcache_tier_demotions_total",
                                      "Evicted blocks copied to the next tier down", "tier", TIERS)
        self.promotions = self._family("asymcache_tier_promotions_total",
                                       "Blocks promoted to the CPU tier (from disk or remote)",
                                       None)[""]
        remote_s = Histogram("asymcache_tier_remote_seconds", "Remote tier round trips (one "
                             "pipeline per node, all nodes), by op", ["op"], registry=registry,
                             buckets=_LATENCY_BUCKETS)
        remote_b = Counter("asymcache_tier_remote_bytes_total", "Value bytes moved by remote "
                           "tier round trips, by op", ["op"], registry=registry)
        self._remote = {op: (remote_s.labels(op), remote_b.labels(op)) for op in REMOTE_OPS}
        self.expired_engines = self._family("asymcache_server_expired_engines_total",
                                            "Engines dropped after missing heartbeats", None)[""]
        registry.register(self)

    def _family(self, name: str, doc: str, label: str | None, values: tuple | list = ("",),
                buckets: tuple[float, ...] | None = None) -> dict[str, EventCounter]:
        family = EventFamily(name, doc, label, values, buckets)
        self._families.append(family)
        return family.children  # type: ignore[return-value]

    def collect(self) -> Iterator[Metric]:
        """The event families (the registry calls this on each scrape)."""
        for family in self._families:
            yield family.to_metric()

    def error(self, code: str) -> None:
        """Count one error reply with ``code``."""
        self._errors.child(code).inc()  # type: ignore[union-attr]

    def remote_round(self, op: str, seconds: float, nbytes: int) -> None:
        """One pipelined round of the remote tier (called from its threads: thread-safe)."""
        latency, moved = self._remote[op]
        latency.observe(seconds)
        if nbytes:
            moved.inc(nbytes)


SIGNAL_KINDS = ("session", "retention", "end", "capped")


@dataclass
class StateSnapshot:
    """Levels read at scrape time (see :class:`StateCollector`)."""

    occupancy: dict[str, int] = field(default_factory=dict)
    capacity: dict[str, int] = field(default_factory=dict)
    tier_errors: dict[tuple[str, str], int] = field(default_factory=dict)
    engines: int = 0
    index_blocks: int = 0
    leases: int = 0
    dropped_replies: int = 0
    refused_messages: int = 0  # of CURVE clients whose key left the allow-list
    ready: bool = False
    remote_ready: bool | None = None  # None = no remote tier
    remote_load: tuple[float, float] | None = None  # (latency_s, bandwidth_bps) in use
    tenant_blocks: list[tuple[str, str, int]] = field(default_factory=list)  # tier, tenant, n
    tenant_namespaces: int = 0
    quota_evictions: dict[str, int] = field(default_factory=dict)  # tier -> blocks
    purged_blocks: dict[str, int] = field(default_factory=dict)  # tier -> blocks
    signals: dict[str, int] = field(default_factory=dict)  # SIGNAL kind -> count
    sessions_ended: int = 0  # ended sessions the chain's book remembers
    rankings: dict[tuple[str, str], int] = field(default_factory=dict)  # (tier, ranking) -> pools


class StateCollector:
    """A custom collector: calls ``snapshot()`` on each scrape and reports its levels."""

    def __init__(self, snapshot: Callable[[], StateSnapshot]) -> None:
        self._snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self._snapshot()
        occ = GaugeMetricFamily("asymcache_tier_occupancy_blocks", "Blocks held now, by tier",
                                labels=["tier"])
        cap = GaugeMetricFamily("asymcache_tier_capacity_blocks", "Most blocks a tier holds",
                                labels=["tier"])
        for tier in TIERS:
            occ.add_metric([tier], s.occupancy.get(tier, 0))
            cap.add_metric([tier], s.capacity.get(tier, 0))
        errs = CounterMetricFamily("asymcache_tier_errors", "Tier read/write errors (checksum, "
                                   "short, io, full...), by tier and kind", labels=["tier", "kind"])
        for (tier, kind), n in sorted(s.tier_errors.items()):
            errs.add_metric([tier, kind], n)
        yield from (occ, cap, errs)
        yield _gauge("asymcache_server_connected_engines", "Registered engines", s.engines)
        yield _gauge("asymcache_index_blocks", "Blocks in the daemon's index", s.index_blocks)
        yield _gauge("asymcache_index_leases", "Leases held by engines", s.leases)
        yield _gauge("asymcache_server_ready", "1 once tiers are open and the index rebuilt",
                     int(s.ready))
        dropped = CounterMetricFamily("asymcache_rpc_dropped_replies",
                                      "Replies that could not be delivered (peer gone or full)")
        dropped.add_metric([], s.dropped_replies)
        yield dropped
        refused = CounterMetricFamily("asymcache_rpc_refused_messages",
                                      "Messages dropped unanswered: their CURVE client key is no "
                                      "longer in curve_clients_dir")
        refused.add_metric([], s.refused_messages)
        yield refused
        yield from _tenant_families(s)
        signals = CounterMetricFamily(
            "asymcache_policy_signals", "Client signals received (SIGNAL): requests with a "
            "session, with a retention, session ends, and retentions or pins capped per tenant",
            labels=["kind"])
        for kind in SIGNAL_KINDS:
            signals.add_metric([kind], s.signals.get(kind, 0))
        yield signals
        ranking = GaugeMetricFamily(
            "asymcache_policy_ranking", "Pools whose policy ranks its victims by value or by "
            "recency now (asym's selector switches between them), by tier (gpu: one pool per "
            "engine)", labels=["tier", "ranking"])
        for (tier, how), n in sorted(s.rankings.items()):
            ranking.add_metric([tier, how], n)
        yield ranking
        yield _gauge("asymcache_policy_ended_sessions", "Ended sessions the daemon remembers "
                     "(their own blocks rank first)", s.sessions_ended)
        if s.remote_ready is not None:
            yield _gauge("asymcache_tier_remote_ready", "1 while a node of the remote cluster "
                         "answers", int(s.remote_ready))
        if s.remote_load is not None:
            yield _gauge("asymcache_tier_remote_load_latency_seconds", "Latency of a load from "
                         "the remote tier in the cost model", s.remote_load[0])
            yield _gauge("asymcache_tier_remote_load_bandwidth_bytes_per_second", "Bandwidth of "
                         "a load from the remote tier in the cost model", s.remote_load[1])


def _tenant_families(s: StateSnapshot) -> Iterator[Metric]:
    """Per-tenant levels (the largest tenants by name, the rest as ``other``), quota
    evictions and purged blocks (``cacheserver/tenants.py``)."""
    blocks = GaugeMetricFamily("asymcache_tenant_blocks", "Blocks held now, by tenant (the "
                               "largest by name, the rest as other) and tier",
                               labels=["tenant", "tier"])
    for tier, tenant, n in sorted(s.tenant_blocks):
        blocks.add_metric([tenant, tier], n)
    yield blocks
    yield _gauge("asymcache_tenant_namespaces", "Namespaces in the tenant registry",
                 s.tenant_namespaces)
    quota = CounterMetricFamily("asymcache_tenant_quota_evictions", "Blocks evicted because "
                                "their tenant was at its quota in the tier", labels=["tier"])
    purged = CounterMetricFamily("asymcache_tenant_purged_blocks", "Blocks removed by purges, "
                                 "by tier", labels=["tier"])
    for tier in TIERS:
        if tier != "gpu":
            quota.add_metric([tier], s.quota_evictions.get(tier, 0))
        purged.add_metric([tier], s.purged_blocks.get(tier, 0))
    yield from (quota, purged)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    g = GaugeMetricFamily(name, doc)
    g.add_metric([], value)
    return g

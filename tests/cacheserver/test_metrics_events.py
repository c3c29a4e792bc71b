"""The daemon's lock-free event counters export exactly what prometheus_client's classes do."""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from asymcache.cacheserver.metrics import DaemonMetrics
from asymcache.cacheserver.metrics_events import EventFamily
from asymcache.cacheserver.protocol import ErrorCode

BUCKETS = (1e-4, 1e-3, 0.01, 1.0)
SAMPLES = (5e-5, 1e-4, 2e-4, 0.003, 0.003, 0.5, 7.0)  # on, under and over the bounds


def _text(collector_or_registry: CollectorRegistry) -> str:
    """Exposition text with the ``_created`` timestamps blanked (they differ by creation)."""
    text = generate_latest(collector_or_registry).decode()
    return re.sub(r"(_created\{[^}]*\}|_created) \S+", r"\1 T", text)


def test_event_histogram_exports_the_same_text_as_a_prometheus_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    family = EventFamily("x_latency_seconds", "doc", "op", ["a", "b"], BUCKETS)
    ours.register(family)  # type: ignore[arg-type]
    hist = Histogram("x_latency_seconds", "doc", ["op"], registry=theirs, buckets=BUCKETS)
    for op in ("a", "b"):
        hist.labels(op)
    for v in SAMPLES:
        family.children["a"].observe(v)  # type: ignore[union-attr]
        hist.labels("a").observe(v)
    assert _text(ours) == _text(theirs)


def test_event_counter_exports_the_same_text_as_a_prometheus_counter() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    family = EventFamily("x_moved_bytes_total", "doc", "tier", ["gpu", "cpu"])
    ours.register(family)  # type: ignore[arg-type]
    counter = Counter("x_moved_bytes_total", "doc", ["tier"], registry=theirs)
    for tier in ("gpu", "cpu"):
        counter.labels(tier)
    for n in (3, 4096):
        family.children["cpu"].inc(n)  # type: ignore[union-attr]
        counter.labels("cpu").inc(n)
    unlabelled = EventFamily("y_total", "doc", None)
    unlabelled.children[""].inc()  # type: ignore[union-attr]
    ours.register(unlabelled)  # type: ignore[arg-type]
    Counter("y_total", "doc", registry=theirs).inc()
    assert _text(ours) == _text(theirs)


def test_every_error_code_is_exported_at_zero_before_its_first_error() -> None:
    registry = CollectorRegistry()
    metrics = DaemonMetrics(registry, ["ping"])
    for code in ErrorCode:
        assert registry.get_sample_value("asymcache_rpc_errors_total", {"code": code}) == 0
    metrics.error(ErrorCode.BUSY)
    metrics.error("not_a_known_code")  # still counted, in a series of its own
    assert registry.get_sample_value("asymcache_rpc_errors_total", {"code": "busy"}) == 1
    assert registry.get_sample_value("asymcache_rpc_errors_total",
                                     {"code": "not_a_known_code"}) == 1
    assert registry.get_sample_value("asymcache_rpc_latency_seconds_count", {"op": "ping"}) == 0

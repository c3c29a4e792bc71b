"""The engine's Prometheus metrics, on a ``CollectorRegistry`` that is passed in.

Names are ``asymcache_engine_<what>_<unit>`` (``_total`` on counters); ``docs/engine.md`` lists
them all with their labels. Events (tokens, requests, bytes, step times) are counted where they
happen; levels (running and waiting requests, pool occupancy, daemon link state) are read from
the live engine at scrape time through :class:`EngineStateCollector`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from asymcache.engine.request import Request

SOURCES = ("resident", "fetched", "recomputed", "new")
DIRECTIONS = ("cpu_to_gpu", "gpu_to_cpu_demote", "gpu_to_cpu_offload")
FINISH_REASONS = ("stop", "length", "abort", "drain")
# Where a step's wall time goes, in the order a step runs them (``LLMEngine.step``): daemon
# upkeep (registration, cancels, purges, tenants), admission (lookups, allocation, fetches into
# the pool), scheduling, the model (forward pass and sampling, the device's wait included),
# commits (token bookkeeping, blocks committed and offloaded), and the settle of a step that
# leaves the engine idle (its last blocks written through).
STEP_PHASES = ("daemon", "admit", "schedule", "model", "commit", "settle")
_TIME_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                 30.0, 60.0)
_TOKEN_BUCKETS = (1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192)


class EngineMetrics:
    """Counters and histograms of one engine; see the module docstring."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        h = {"registry": registry, "buckets": _TIME_BUCKETS}
        self.ttft = Histogram("asymcache_engine_ttft_seconds",
                              "Time to first token: arrival to first output token", **h)
        self.tpot = Histogram("asymcache_engine_tpot_seconds",
                              "Time per output token: gap between consecutive tokens", **h)
        self.e2e = Histogram("asymcache_engine_request_latency_seconds",
                             "Arrival to last token of finished requests", **h)
        self.queue = Histogram("asymcache_engine_queue_time_seconds",
                               "Arrival to first admission (planning, allocation, fetch)", **h)
        self.step = Histogram("asymcache_engine_step_duration_seconds",
                              "Wall time of one engine step (forward, sampling, bookkeeping)", **h)
        self.step_tokens = Histogram("asymcache_engine_step_tokens",
                                     "Query tokens computed per step", registry=registry,
                                     buckets=_TOKEN_BUCKETS)
        prompt = Counter("asymcache_engine_prompt_tokens_total",
                         "Prompt tokens by source: resident, fetched, recomputed, new",
                         ["source"], registry=registry)
        self.prompt = {s: prompt.labels(s) for s in SOURCES}
        self.generated = Counter("asymcache_engine_generation_tokens_total",
                                 "Output tokens sampled", registry=registry)
        self.recomputed_after_preemption = Counter(
            "asymcache_engine_preemption_recomputed_tokens_total",
            "Tokens computed again after a preemption", registry=registry)
        finished = Counter("asymcache_engine_requests_total", "Finished requests by reason",
                           ["finish_reason"], registry=registry)
        self.finished = {r: finished.labels(r) for r in FINISH_REASONS}
        self.preemptions = Counter("asymcache_engine_preemptions_total",
                                   "Running requests preempted because the pool was full",
                                   registry=registry)
        moved = Counter("asymcache_engine_moved_bytes_total",
                        "KV bytes moved between the pool and the CPU tier, by direction",
                        ["direction"], registry=registry)
        self.moved = {d: moved.labels(d) for d in DIRECTIONS}
        phases = Counter("asymcache_engine_step_phase_seconds_total",
                         "Engine step wall time by phase: daemon upkeep, admission (lookups, "
                         "allocation, fetches), scheduling, model (forward and sampling), "
                         "commits (offload), idle settle", ["phase"], registry=registry)
        self._phases = {p: phases.labels(p) for p in STEP_PHASES}
        self.phase_seconds = dict.fromkeys(STEP_PHASES, 0.0)  # the same sums, for benchmarks
        self.rejected = Counter("asymcache_engine_rejected_requests_total",
                                "Prompts refused before running (empty, bad token ids, too long)",
                                registry=registry)

    def on_phase(self, phase: str, seconds: float) -> None:
        """Add ``seconds`` of step wall time to ``phase`` (one of :data:`STEP_PHASES`)."""
        self._phases[phase].inc(seconds)
        self.phase_seconds[phase] += seconds

    def on_admitted(self, req: Request) -> None:
        """Count a request's prompt tokens by source and its queue time (first admission)."""
        s = req.stats
        for source, n in zip(SOURCES, (s.resident_tokens, s.fetched_tokens, s.recomputed_tokens,
                                       s.new_tokens), strict=True):
            self.prompt[source].inc(n)
        if s.first_scheduled is not None:
            self.queue.observe(s.first_scheduled - s.arrival)

    def on_finished(self, req: Request) -> None:
        """Count a finished request: bytes it moved, recomputation, latency, reason."""
        s = req.stats
        self.recomputed_after_preemption.inc(s.preempted_recompute_tokens)
        for direction, n in zip(DIRECTIONS, (s.bytes_fetched, s.bytes_demoted,
                                             s.bytes_offloaded), strict=True):
            self.moved[direction].inc(n)
        self.finished[req.finish_reason or "abort"].inc()
        if s.finished is not None:
            self.e2e.observe(s.finished - s.arrival)

    def on_token(self, req: Request) -> None:
        """Count one output token of ``req`` (its time is the last of ``token_times``)."""
        self.generated.inc()
        times = req.stats.token_times
        if len(times) == 1:
            self.ttft.observe(times[0] - req.stats.arrival)
        else:
            self.tpot.observe(times[-1] - times[-2])


@dataclass(frozen=True)
class EngineState:
    """Levels read at scrape time."""

    running: int
    waiting: int
    blocks_used: int
    blocks_idle: int
    blocks_empty: int
    daemon_connected: bool | None  # None: no daemon configured
    daemon_reconnects: int
    daemon_errors: int
    lookups_skipped: int  # LOOKUPs the mirror of the daemon's tiers found needless
    overdue_steps: int  # steps whose split the TTFT deadline changed (adaptive chunking)


class EngineStateCollector:
    """Exports :class:`EngineState` levels, and ``info`` labels (model, fingerprint, reuse,
    chunking, ...) as ``asymcache_engine_info``; register with ``registry.register(...)``."""

    def __init__(self, state: Callable[[], EngineState], info: dict[str, str]) -> None:
        self.state = state
        self.info = dict(info)

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("asymcache_engine_info", "Constant 1, labelled with the "
                                 "engine's model and configuration", labels=sorted(self.info))
        info.add_metric([self.info[k] for k in sorted(self.info)], 1)
        yield info
        st = self.state()
        reqs = GaugeMetricFamily("asymcache_engine_requests", "Requests in the engine by state",
                                 labels=["state"])
        reqs.add_metric(["running"], st.running)
        reqs.add_metric(["waiting"], st.waiting)
        yield reqs
        blocks = GaugeMetricFamily("asymcache_engine_kv_blocks",
                                   "KV pool slots: used by requests, idle cached, empty",
                                   labels=["state"])
        for name, n in (("used", st.blocks_used), ("idle", st.blocks_idle),
                        ("empty", st.blocks_empty)):
            blocks.add_metric([name], n)
        yield blocks
        yield CounterMetricFamily("asymcache_engine_overdue_steps",
                                  "Steps whose split the TTFT deadline changed: a prefill past "
                                  "ttft_slo_s took more of the step than the step-time "
                                  "objective gave it", value=st.overdue_steps)
        if st.daemon_connected is not None:
            yield GaugeMetricFamily("asymcache_engine_daemon_connected",
                                    "1 while the cache daemon answers",
                                    value=int(st.daemon_connected))
            yield CounterMetricFamily("asymcache_engine_daemon_reconnects",
                                      "Times the engine registered again with the daemon",
                                      value=st.daemon_reconnects)
            yield CounterMetricFamily("asymcache_engine_daemon_errors",
                                      "Daemon requests that failed or timed out",
                                      value=st.daemon_errors)
            yield CounterMetricFamily("asymcache_engine_lookups_skipped",
                                      "LOOKUPs not sent: the engine's mirror of the daemon's "
                                      "tiers said none of their blocks could be found",
                                      value=st.lookups_skipped)

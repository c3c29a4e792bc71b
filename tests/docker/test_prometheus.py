"""The shipped Prometheus config is valid, and a real Prometheus scraping a real daemon and a real
engine with it sees exactly the ``asymcache_*`` series this test's own traffic caused."""

from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from asymcache.cacheserver.blocks import (
    KVLayout,
    block_keys,
    namespace_id,
    session_digest,
    tenant_digest,
)
from asymcache.cacheserver.protocol import BlockRef
from asymcache.engine.client import CacheClient, DaemonError
from asymcache.engine.metrics import STEP_PHASES
from tests.docker.prom import SHIPPED, Prometheus
from tests.docker.services import Service, http_post_json, poll, sample

LAYOUT = KVLayout(num_layers=2, num_kv_heads=2, head_dim=16, block_size=16, dtype="float16")
DAEMON, ENGINE = "asymcache-daemon", "asymcache-engine"
PROMPT = ("Deployment check: the quick brown fox jumps over the lazy dog, then the dog chases "
          "the fox through the forest until night falls over the hills.")


def _refs(n: int, model: str) -> list[BlockRef]:
    ns = namespace_id(model, LAYOUT)
    keys = block_keys(ns, list(range(n * LAYOUT.block_size)), LAYOUT.block_size)
    return [BlockRef(k, ns, keys[i - 1] if i else None, i) for i, k in enumerate(keys)]


def _payload(ref: BlockRef) -> bytes:
    seed = hashlib.blake2b(ref.key, digest_size=32).digest()
    return (seed * (LAYOUT.bytes_per_block // 32))[: LAYOUT.bytes_per_block]


def _series(name: str, job: str, **labels: str) -> str:
    matchers = [f'job="{job}"'] + [f'{k}="{v}"' for k, v in labels.items()]
    return f"{name}{{{','.join(matchers)}}}"


def _wait_for_values(prom: Prometheus, expected: dict[str, float]) -> None:
    """Poll until every PromQL expression has its expected value; fail listing mismatches."""
    def mismatches() -> dict[str, tuple[float, float | None]]:
        got = {expr: prom.value(expr) for expr in expected}
        return {expr: (want, got[expr]) for expr, want in expected.items() if got[expr] != want}

    try:
        poll("Prometheus to scrape the test's traffic", lambda: not mismatches(), timeout_s=20)
    except TimeoutError:
        pytest.fail(f"Prometheus values differ (expected, got): {mismatches()}")


def test_shipped_prometheus_config_passes_promtool() -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is not installed: run `bash .ci/setup --test`"
    done = subprocess.run([promtool, "check", "config", str(SHIPPED)], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout + done.stderr


def test_prometheus_scrapes_the_daemon_and_the_engine_jobs(prometheus: Prometheus) -> None:
    both_up = {DAEMON: 1.0, ENGINE: 1.0}
    poll("both targets up", lambda: prometheus.targets_up() == both_up, timeout_s=20)
    assert prometheus.value(_series("asymcache_server_ready", DAEMON)) == 1.0



def test_daemon_series_of_the_test_traffic_reach_prometheus_exactly(
        daemon: Service, endpoint: str, prometheus: Prometheus) -> None:
    refs = _refs(3, "deploy-test-model")
    unknown = _refs(5, "deploy-test-other")[3:]
    size = LAYOUT.bytes_per_block
    baseline = daemon.metrics()
    with CacheClient(endpoint, engine_id="deploy-test", heartbeat=False) as client:
        client.hello("deploy-test-model", LAYOUT, gpu_slots=8)
        assert client.put(refs, [_payload(r) for r in refs]).stored == [True, True, True]
        got = client.get([r.key for r in refs + unknown])
        assert [bytes(g) if g is not None else None for g in got] == \
            [_payload(r) for r in refs] + [None, None]
        with pytest.raises(DaemonError) as refused:
            client.put(refs[:1], [b"short"])
    deltas = {
        ("asymcache_tier_hits_total", "tier", "cpu"): 3,
        ("asymcache_tier_misses_total", "tier", "cpu"): 2,
        ("asymcache_tier_misses_total", "tier", "disk"): 2,
        ("asymcache_tier_moved_bytes_total", "direction", "net_to_cpu"): 3 * size,
        ("asymcache_tier_moved_bytes_total", "direction", "cpu_to_net"): 3 * size,
        ("asymcache_rpc_latency_seconds_count", "op", "hello"): 1,
        ("asymcache_rpc_latency_seconds_count", "op", "put"): 2,
        ("asymcache_rpc_latency_seconds_count", "op", "get"): 1,
        ("asymcache_rpc_errors_total", "code", refused.value.code): 1,
    }
    # no CURVE on this daemon: no client key can be withdrawn, nothing is refused unanswered
    assert prometheus.value(_series("asymcache_rpc_refused_messages_total", DAEMON)) == 0.0
    _wait_for_values(prometheus, {
        _series(name, DAEMON, **{label: value}):
            sample(baseline, name, **{label: value}) + delta
        for (name, label, value), delta in deltas.items()})


def _complete(engine: Service) -> dict:
    reply = http_post_json(engine.url + "/v1/completions", {
        "model": "builtin", "prompt": PROMPT, "max_tokens": 4, "temperature": 0})
    assert reply["choices"][0]["finish_reason"] == "length"
    return reply


def test_engine_series_of_the_test_requests_reach_prometheus_exactly(
        engine: Service, prometheus: Prometheus) -> None:
    baseline = engine.metrics()
    first, second = _complete(engine), _complete(engine)
    assert second["choices"][0]["text"] == first["choices"][0]["text"]
    prompt_tokens = first["usage"]["prompt_tokens"]
    cached = [r["usage"]["prompt_tokens_details"]["cached_tokens"] for r in (first, second)]
    assert cached[1] >= LAYOUT.block_size, "the second request reused no full block"

    def was(name: str, **labels: str) -> float:
        return sample(baseline, name, **labels)

    tokens = "asymcache_engine_prompt_tokens_total"
    reused = sum(was(tokens, source=s) for s in ("resident", "fetched"))
    everything = sum(was(tokens, source=s) for s in ("resident", "fetched", "recomputed", "new"))
    _wait_for_values(prometheus, {
        _series("asymcache_engine_requests_total", ENGINE, finish_reason="length"):
            was("asymcache_engine_requests_total", finish_reason="length") + 2,
        _series("asymcache_engine_generation_tokens_total", ENGINE):
            was("asymcache_engine_generation_tokens_total") + 8,
        _series("asymcache_engine_ttft_seconds_count", ENGINE):
            was("asymcache_engine_ttft_seconds_count") + 2,
        _series("asymcache_engine_tpot_seconds_count", ENGINE):
            was("asymcache_engine_tpot_seconds_count") + 6,
        f'sum({tokens}{{job="{ENGINE}"}})': everything + 2 * prompt_tokens,
        f'sum({tokens}{{job="{ENGINE}",source=~"resident|fetched"}})': reused + sum(cached),
        # The engine registers with the daemon on its first request.
        _series("asymcache_engine_daemon_connected", ENGINE): 1.0,
        # no events endpoint configured: no LOOKUP mirror, every LOOKUP goes out
        _series("asymcache_engine_lookups_skipped_total", ENGINE): 0.0,
        # one request at a time: no prefill ever ran beside a decode, the deadline never bound
        _series("asymcache_engine_overdue_steps_total", ENGINE):
            was("asymcache_engine_overdue_steps_total"),
        f'asymcache_server_connected_engines{{job="{DAEMON}"}} >= bool 1': 1.0,
    })
    # Step time by phase: once the engine is idle its sums stand still, and Prometheus holds
    # exactly what the engine exports; the two requests' forward passes added model time.
    phase = "asymcache_engine_step_phase_seconds_total"
    reads: list[dict[str, float]] = []

    def still() -> bool:  # two reads in a row agree: no step ran between them
        text = engine.metrics()
        reads.append({p: sample(text, phase, phase=p) for p in STEP_PHASES})
        return len(reads) > 1 and reads[-1] == reads[-2]

    poll("the engine's step phases to stand still", still, timeout_s=10)
    assert reads[-1]["model"] > was(phase, phase="model")
    _wait_for_values(prometheus, {_series(phase, ENGINE, phase=p): v
                                  for p, v in reads[-1].items()})


def test_tenant_series_reach_prometheus_exactly(
        daemon: Service, endpoint: str, prometheus: Prometheus) -> None:
    refs = _refs(2, "deploy-tenant-model")
    baseline = daemon.metrics()
    purged = "asymcache_tenant_purged_blocks_total"
    with CacheClient(endpoint, engine_id="deploy-tenant", heartbeat=False) as client:
        client.hello("deploy-tenant-model", LAYOUT, gpu_slots=8)
        assert client.tenants([refs[0].namespace], [tenant_digest("")], ["deploy-tenant"],
                              model="deploy") == 1
        assert client.put(refs, [_payload(r) for r in refs]).stored == [True, True]
        _wait_for_values(prometheus, {
            _series("asymcache_tenant_blocks", DAEMON, tenant="deploy-tenant", tier="cpu"): 2.0,
            _series("asymcache_tenant_quota_evictions_total", DAEMON, tier="cpu"): 0.0,
        })
        got = client.purge(tenant_digest(""), "deploy")  # only this model's namespace
        assert got.namespaces == 1 and got.removed["cpu"] == 2
    _wait_for_values(prometheus, {
        _series(purged, DAEMON, tier="cpu"): sample(baseline, purged, tier="cpu") + 2,
        f'count({_series("asymcache_tenant_blocks", DAEMON, tenant="deploy-tenant")}) '
        "or vector(0)": 0.0,
    })


def test_signal_series_reach_prometheus_exactly(
        daemon: Service, endpoint: str, prometheus: Prometheus) -> None:
    refs = _refs(2, "deploy-signal-model")
    baseline = daemon.metrics()
    signals = "asymcache_policy_signals_total"
    with CacheClient(endpoint, engine_id="deploy-signal", heartbeat=False) as client:
        client.hello("deploy-signal-model", LAYOUT, gpu_slots=8)
        assert client.commit(refs, [0, 1]) == [True, True]
        session = session_digest("", "deploy-conversation")
        assert client.signal([r.key for r in refs], session, retention_s=30.0).count == 2
        client.signal(session=session, end=True)
    _wait_for_values(prometheus, {
        _series(signals, DAEMON, kind=kind): sample(baseline, signals, kind=kind) + 1
        for kind in ("session", "retention", "end")
    } | {f'{_series("asymcache_policy_ended_sessions", DAEMON)} >= bool 1': 1.0})


def test_policy_ranking_series_reach_prometheus_exactly(
        daemon: Service, endpoint: str, prometheus: Prometheus) -> None:
    """One series per tier and ranking: the shared CPU tier's asym (64 slots: it runs its
    selector, ranking by recency until a sampled copy shows value pays) and one more GPU pool,
    ranking by recency for good (8 slots, under asym's ``select_min_blocks``), while an engine
    is registered."""
    name = "asymcache_policy_ranking"
    baseline = daemon.metrics()
    gpu = {how: sample(baseline, name, tier="gpu", ranking=how) for how in ("value", "recency")}
    cpu = sum(sample(baseline, name, tier="cpu", ranking=how) for how in ("value", "recency"))
    assert cpu == 1.0  # exactly one CPU tier, whichever way it ranks now
    with CacheClient(endpoint, engine_id="deploy-ranking", heartbeat=False) as client:
        client.hello("deploy-ranking-model", LAYOUT, gpu_slots=8)
        _wait_for_values(prometheus, {
            _series(name, DAEMON, tier="gpu", ranking="recency"): gpu["recency"] + 1,
            _series(name, DAEMON, tier="gpu", ranking="value"): gpu["value"],
            f'sum({_series(name, DAEMON, tier="cpu")})': 1.0,
        })

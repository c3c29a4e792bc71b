"""The Grafana dashboard: generated, on the provisioned data source, and every query names only
metrics the live daemon and engine export and evaluates in a real Prometheus scraping them.
Grafana itself is not packaged by Debian, so it is checked statically."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import yaml

from tests.docker.compose import rendered
from tests.docker.prom import Prometheus
from tests.docker.services import DOCKER, Service, exported_names, poll

GRAFANA = DOCKER / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "asymcache.json"
_NOT_METRICS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                "offset", "and", "or", "unless", "inf", "nan"}
# What the issue asks the dashboard to show, as the metrics that carry it.
REQUIRED = {
    "TTFT": "asymcache_engine_ttft_seconds_bucket",
    "TPOT": "asymcache_engine_tpot_seconds_bucket",
    "hit ratio per tier": "asymcache_tier_hits_total",
    "prompt tokens by source": "asymcache_engine_prompt_tokens_total",
    "bytes moved": "asymcache_tier_moved_bytes_total",
    "evictions": "asymcache_tier_evictions_total",
    "occupancy": "asymcache_tier_occupancy_blocks",
    "RPC latency": "asymcache_rpc_latency_seconds_bucket",
    "errors": "asymcache_rpc_errors_total",
    "KV events": "asymcache_events_published_total",
    "LOOKUPs skipped": "asymcache_engine_lookups_skipped_total",
    "steps the TTFT deadline decided": "asymcache_engine_overdue_steps_total",
    "step time by phase": "asymcache_engine_step_phase_seconds_total",
    "messages of withdrawn keys": "asymcache_rpc_refused_messages_total",
    "blocks by tenant": "asymcache_tenant_blocks",
    "quota evictions": "asymcache_tenant_quota_evictions_total",
    "purges": "asymcache_tenant_purged_blocks_total",
    "client signals": "asymcache_policy_signals_total",
    "ended sessions": "asymcache_policy_ended_sessions",
    "policy ranking": "asymcache_policy_ranking",
}


def _targets() -> list[dict]:
    board = json.loads(DASHBOARD.read_text())
    return [t for p in board["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, labels or keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", text)  # label matchers, ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    names = set()
    for m in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        if text[m.end():].lstrip().startswith("(") or m.group().lower() in _NOT_METRICS:
            continue
        names.add(m.group())
    return names


def for_prometheus(expr: str) -> str:
    """Grafana's ``$__rate_interval`` as a plain range Prometheus accepts."""
    return expr.replace("$__rate_interval", "1m")


def _sampled(exposition: str) -> set[str]:
    """Names of the series that have a sample in a ``/metrics`` text."""
    return {m.group() for line in exposition.splitlines() if not line.startswith("#")
            for m in [re.match(r"[A-Za-z_:][A-Za-z0-9_:]*", line)] if m}


def test_dashboard_json_is_what_dashboard_py_generates() -> None:
    done = subprocess.run([sys.executable, str(GRAFANA / "dashboard.py"), "--check"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def test_dashboard_uses_the_provisioned_data_source_everywhere() -> None:
    provisioned = yaml.safe_load((GRAFANA / "provisioning/datasources/prometheus.yml").read_text())
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    expected = {"type": "prometheus", "uid": source["uid"]}
    board = json.loads(DASHBOARD.read_text())
    panels = [p for p in board["panels"] if p["type"] != "row"]
    assert panels and all(p["datasource"] == expected for p in panels)
    assert all(t["datasource"] == expected for t in _targets())


def test_grafana_loads_the_dashboard_from_where_compose_mounts_it() -> None:
    provider = yaml.safe_load((GRAFANA / "provisioning/dashboards/asymcache.yml").read_text())
    (entry,) = provider["providers"]
    grafana = rendered()["services"]["grafana"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts[entry["options"]["path"]] == str(DASHBOARD.parent)
    assert mounts["/etc/grafana/provisioning"] == str(GRAFANA / "provisioning")
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home == f"{entry['options']['path']}/{DASHBOARD.name}"


def test_dashboard_shows_every_topic_the_deployment_promises() -> None:
    used = set().union(*(metric_names(t["expr"]) for t in _targets()))
    missing = {topic: name for topic, name in REQUIRED.items() if name not in used}
    assert not missing, f"no panel shows {missing}"


def test_dashboard_queries_name_only_metrics_the_live_services_export(
        daemon: Service, engine: Service) -> None:
    exported = exported_names(daemon.metrics()) | exported_names(engine.metrics())
    for target in _targets():
        names = metric_names(target["expr"])
        assert names, f"no metric found in {target['expr']!r}"
        unknown = names - exported
        assert not unknown, f"{target['expr']!r} names metrics nobody exports: {unknown}"


def test_every_dashboard_query_evaluates_on_the_scraped_data(
        daemon: Service, engine: Service, prometheus: Prometheus) -> None:
    with_samples = _sampled(daemon.metrics()) | _sampled(engine.metrics())
    poll("3 scrapes of each job (rate needs 2)", lambda: prometheus.query(
        "min(count_over_time(up[1m])) >= 3 and count(count_over_time(up[1m])) == 2"),
        timeout_s=20)
    targets = _targets()
    sampled = [t for t in targets if metric_names(t["expr"]) <= with_samples]
    # The fixture's traffic must give most panels data, or this test would check nothing.
    assert len(sampled) >= len(targets) // 2, (
        f"only {len(sampled)} of {len(targets)} dashboard queries have sampled metrics")
    for target in sampled:
        result = prometheus.query(for_prometheus(target["expr"]))
        assert result, f"{target['expr']!r} is empty although its metrics have samples"

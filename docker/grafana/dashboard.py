"""Writes the Grafana dashboard of the deployment: ``docker/grafana/dashboards/asymcache.json``.

The JSON is generated so that every panel is one readable line here; edit this file, then run
``python docker/grafana/dashboard.py`` (``--check`` only compares, exit 1 if the JSON is stale;
``tests/docker`` runs that). Every query uses the provisioned data source (uid
``asymcache-prometheus``, see ``provisioning/datasources/prometheus.yml``) and only metrics the
daemon (``cacheserver/metrics.py``) and the engine (``engine/metrics.py``) export.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

DATASOURCE = {"type": "prometheus", "uid": "asymcache-prometheus"}
OUT = Path(__file__).resolve().parent / "dashboards" / "asymcache.json"
RATE = "[$__rate_interval]"
_WIDTH = 24


@dataclass(frozen=True)
class Panel:
    """One panel: ``queries`` are ``(PromQL, legend)`` pairs; ``unit`` is a Grafana unit id."""

    title: str
    queries: tuple[tuple[str, str], ...]
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    stack: bool = False
    width: int = 8
    description: str = ""


def rate(metric: str, by: str = "", where: str = "") -> str:
    """``sum by (by) (rate(metric{where}[$__rate_interval]))``."""
    selector = f"{metric}{{{where}}}" if where else metric
    group = f" by ({by})" if by else ""
    return f"sum{group} (rate({selector}{RATE}))"


def quantile(q: float, histogram: str, by: str = "") -> str:
    """The ``q`` quantile of a histogram's ``_bucket`` rate, optionally per ``by`` label."""
    labels = f"{by}, le" if by else "le"
    return f"histogram_quantile({q}, sum by ({labels}) (rate({histogram}_bucket{RATE})))"


def _latency(title: str, histogram: str, description: str) -> Panel:
    return Panel(title, tuple((quantile(q, histogram), f"p{round(q * 100)}")
                              for q in (0.5, 0.9, 0.99)), "s", description=description)


def engine_panels() -> list[Panel]:
    tokens = "asymcache_engine_prompt_tokens_total"
    cached = rate(tokens, where='source=~"resident|fetched"')
    return [
        Panel("Engines linked to the daemon", (("sum(asymcache_engine_daemon_connected)",
                                                "connected"),), kind="stat"),
        Panel("Daemon reconnects", (("sum(asymcache_engine_daemon_reconnects_total)",
                                     "reconnects"),), kind="stat"),
        Panel("LOOKUPs skipped", ((rate("asymcache_engine_lookups_skipped_total"),
                                   "skipped/s"),), "ops", kind="stat",
              description="LOOKUPs not sent: the engines' mirrors of the daemon's tiers (KV "
                          "events) said nothing could be found; zero without events endpoints"),
        _latency("Time to first token", "asymcache_engine_ttft_seconds",
                 "Arrival to first output token, all engines"),
        _latency("Time per output token", "asymcache_engine_tpot_seconds",
                 "Gap between consecutive output tokens, all engines"),
        Panel("Prompt tokens by source", ((rate(tokens, "source"), "{{source}}"),),
              "short", stack=True,
              description="tokens/s: resident in the pool, fetched from the CPU/disk tier, "
                          "recomputed (holes), new"),
        Panel("Prompt tokens served from cache",
              ((f"{cached} / {rate(tokens)}",
                "cached share"),), "percentunit"),
        Panel("Throughput", ((rate("asymcache_engine_generation_tokens_total"), "output tok/s"),
                             (rate(tokens), "prompt tok/s"))),
        Panel("Finished requests", ((rate("asymcache_engine_requests_total", "finish_reason"),
                                     "{{finish_reason}}"),), "reqps", stack=True),
        Panel("Requests in the engines", (("sum by (state) (asymcache_engine_requests)",
                                           "{{state}}"),), stack=True),
        Panel("KV pool slots", (("sum by (state) (asymcache_engine_kv_blocks)", "{{state}}"),),
              stack=True),
        Panel("Engine KV bytes moved", ((rate("asymcache_engine_moved_bytes_total", "direction"),
                                         "{{direction}}"),), "Bps"),
        Panel("Steps decided by the TTFT deadline",
              ((f"{rate('asymcache_engine_overdue_steps_total')} / "
                f"{rate('asymcache_engine_step_duration_seconds_count')}", "share of steps"),),
              "percentunit",
              description="Steps whose split the TTFT deadline changed: a prefill past "
                          "ttft_slo_s took more than adaptive chunking's step objective gave "
                          "it; high for long: past the knee"),
        Panel("Engine step time by phase",
              ((rate("asymcache_engine_step_phase_seconds_total", "phase"), "{{phase}}"),),
              "percentunit", stack=True,
              description="Share of wall time the engines' steps spend in each phase: model "
                          "(forward, sampling), admit (lookups, allocation, fetches), commit "
                          "(offload), daemon upkeep, schedule, idle settle; the stack's top is "
                          "how busy the engines are"),
        _latency("Queue time", "asymcache_engine_queue_time_seconds",
                 "Arrival to first admission (lookup, planning, allocation, fetch)"),
        _latency("Request latency", "asymcache_engine_request_latency_seconds",
                 "Arrival to last token of finished requests"),
        Panel("Engine errors", (
            (rate("asymcache_engine_rejected_requests_total"), "rejected requests"),
            (rate("asymcache_engine_preemptions_total"), "preemptions"),
            (rate("asymcache_engine_daemon_errors_total"), "daemon request failures"),
        ), "ops"),
    ]


def daemon_panels() -> list[Panel]:
    hits, misses = "asymcache_tier_hits_total", "asymcache_tier_misses_total"
    return [
        Panel("Daemon ready", (("min(asymcache_server_ready)", "ready"),), kind="stat", width=6),
        Panel("Connected engines", (("sum(asymcache_server_connected_engines)", "engines"),),
              kind="stat", width=6),
        Panel("Blocks indexed", (("sum(asymcache_index_blocks)", "blocks"),), kind="stat",
              width=6),
        Panel("Leases held", (("sum(asymcache_index_leases)", "leases"),), kind="stat", width=6),
        Panel("Hit ratio per tier",
              ((f"{rate(hits, 'tier')} / ({rate(hits, 'tier')} + {rate(misses, 'tier')})",
                "{{tier}}"),), "percentunit",
              description="Blocks found / blocks looked for, per tier probed (LOOKUP, GET)"),
        Panel("Tier occupancy",
              (("sum by (tier) (asymcache_tier_occupancy_blocks) / "
                "(sum by (tier) (asymcache_tier_capacity_blocks) > 0)", "{{tier}}"),),
              "percentunit"),
        Panel("Bytes moved by direction",
              ((rate("asymcache_tier_moved_bytes_total", "direction"), "{{direction}}"),), "Bps"),
        Panel("Evictions, demotions, promotions", (
            (rate("asymcache_tier_evictions_total", "tier"), "evicted from {{tier}}"),
            (rate("asymcache_tier_demotions_total", "tier"), "demoted from {{tier}}"),
            (rate("asymcache_tier_promotions_total"), "promoted disk to cpu"),
        ), "ops"),
        Panel("RPC latency p99 by op",
              ((quantile(0.99, "asymcache_rpc_latency_seconds", "op"), "{{op}}"),), "s"),
        Panel("RPC rate by op", ((rate("asymcache_rpc_latency_seconds_count", "op"), "{{op}}"),),
              "reqps", stack=True),
        Panel("KV events", (
            (rate("asymcache_events_published_total"), "published"),
            (rate("asymcache_events_dropped_total"), "dropped"),
            (rate("asymcache_events_replayed_total"), "batches replayed"),
        ), "ops", description="Block events on the daemon's events endpoint (docs/daemon.md, "
                              "'KV events'); all zero when it has none"),
        Panel("KV events publish lag p99",
              ((quantile(0.99, "asymcache_events_publish_lag_seconds"), "p99"),), "s"),
        Panel("Blocks by tenant", (("sum by (tenant) (asymcache_tenant_blocks)",
                                    "{{tenant}}"),), stack=True,
              description="Blocks of each tenant in the shared tiers (the largest "
                          "quotas.metrics_top by name, the rest as other)"),
        Panel("Quota evictions and purges", (
            (rate("asymcache_tenant_quota_evictions_total", "tier"), "quota evictions {{tier}}"),
            (rate("asymcache_tenant_purged_blocks_total", "tier"), "purged from {{tier}}"),
        ), "ops", description="Blocks a tenant at its quota evicted of its own, and blocks "
                              "removed by asymcache purge"),
        Panel("Client signals", (
            (rate("asymcache_policy_signals_total", "kind"), "{{kind}}"),
            ("asymcache_policy_ended_sessions", "ended sessions remembered"),
        ), "ops", description="SIGNALs from engines: requests with a session "
                              "(prompt_cache_key), with a retention, session ends, and asks "
                              "capped per tenant (docs/policy.md, 'Client signals')"),
        Panel("Policy ranking by value or recency", (
            ("sum by (tier, ranking) (asymcache_policy_ranking)", "{{tier}} by {{ranking}}"),
        ), description="Pools whose asym policy ranks victims by value (reuse x position-aware "
                       "cost) or by recency now: its selector switches to value only while a "
                       "sampled copy shows that it saves more (docs/policy.md, 'asym'); gpu "
                       "counts one pool per engine"),
        Panel("Daemon errors", (
            (rate("asymcache_rpc_errors_total", "code"), "reply {{code}}"),
            (rate("asymcache_tier_errors_total", "tier, kind"), "{{tier}} {{kind}}"),
            (rate("asymcache_rpc_dropped_replies_total"), "dropped replies"),
            (rate("asymcache_rpc_refused_messages_total"), "refused (key withdrawn)"),
            (rate("asymcache_server_expired_engines_total"), "expired engines"),
        ), "ops", width=24),
    ]


def panel_json(panel: Panel, panel_id: int, x: int, y: int) -> dict:
    """Grafana's JSON for ``panel`` at grid position ``(x, y)``."""
    height = 4 if panel.kind == "stat" else 8
    targets = [{"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr,
                "legendFormat": legend, "range": True}
               for i, (expr, legend) in enumerate(panel.queries)]
    custom = {"stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
              "fillOpacity": 20 if panel.stack else 0, "lineWidth": 1, "showPoints": "never"}
    options = ({"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                "colorMode": "value", "graphMode": "none"} if panel.kind == "stat" else
               {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                "tooltip": {"mode": "multi", "sort": "desc"}})
    defaults: dict = {"unit": panel.unit}
    if panel.kind == "timeseries":
        defaults["custom"] = custom
    return {"id": panel_id, "type": panel.kind, "title": panel.title,
            "description": panel.description, "datasource": DATASOURCE,
            "gridPos": {"h": height, "w": panel.width, "x": x, "y": y},
            "fieldConfig": {"defaults": defaults, "overrides": []}, "options": options,
            "targets": targets}


def layout(rows: list[tuple[str, list[Panel]]]) -> list[dict]:
    """Rows of panels, left to right, wrapping at Grafana's 24 columns."""
    out: list[dict] = []
    y = 0
    for title, panels in rows:
        out.append({"id": len(out) + 1, "type": "row", "title": title, "collapsed": False,
                    "gridPos": {"h": 1, "w": _WIDTH, "x": 0, "y": y}, "panels": []})
        y += 1
        x, line_height = 0, 0
        for panel in panels:
            if x + panel.width > _WIDTH:
                x, y, line_height = 0, y + line_height, 0
            out.append(panel_json(panel, len(out) + 1, x, y))
            x += panel.width
            line_height = max(line_height, out[-1]["gridPos"]["h"])
        y += line_height
    return out


def dashboard() -> dict:
    """The whole dashboard (uid ``asymcache-overview``)."""
    return {
        "uid": "asymcache-overview", "title": "AsymCache", "tags": ["asymcache"],
        "description": "Engines (TTFT, TPOT, prompt tokens by source) and the cache daemon "
                       "(hit ratio per tier, bytes moved, evictions, occupancy, RPC latency, "
                       "errors)",
        "editable": False, "graphTooltip": 1, "timezone": "browser", "refresh": "10s",
        "schemaVersion": 39, "version": 1, "time": {"from": "now-30m", "to": "now"},
        "annotations": {"list": []}, "templating": {"list": []}, "links": [],
        "panels": layout([("Engines", engine_panels()), ("Cache daemon", daemon_panels())]),
    }


def render() -> str:
    return json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write (or --check) the Grafana dashboard JSON.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the JSON is stale")
    parser.add_argument("--out", type=Path, default=OUT, help=f"default {OUT}")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run python {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

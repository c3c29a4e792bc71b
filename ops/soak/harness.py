"""One soak run, from set-up to teardown (``asymcache soak``).

1. The no-cache reference engine and a first few batches of prompts with their references
   (``prompts.py``, in this process); ``feeder.py`` keeps computing more during the run.
2. The stack (``stack.py``): Redis Cluster, daemon, engines.
3. The load (``load.py``) and the monitor (``monitor.py``) start; the faults run on their
   schedule (``config.py``) in this thread (``faults.py``, ``faults_data.py``).
4. After ``duration_s`` (or ``settle_s`` after the last fault if they ran late; never after
   ``hard_limit_s``) the load stops, the summary is computed, everything is stopped, and the
   logs are copied next to the outputs.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from asymcache.ops.soak import faults_data  # noqa: F401 - registers the data faults
from asymcache.ops.soak.config import MIN_GAP_S, NEEDS_REDIS, SoakConfig
from asymcache.ops.soak.faults import FaultContext, inject
from asymcache.ops.soak.feeder import Feeder
from asymcache.ops.soak.load import Load
from asymcache.ops.soak.monitor import Monitor
from asymcache.ops.soak.plot import plot
from asymcache.ops.soak.prompts import MARGIN, TENANTS, References, prompt_stream
from asymcache.ops.soak.report import sample_rows, summarize, table
from asymcache.ops.soak.stack import Stack
from asymcache.ops.soak.tenancy import Ledger, Mix

INITIAL_BATCHES = 3  # of prompts with references before the load starts


def run_soak(cfg: SoakConfig, out_dir: Path, json_path: Path | None = None,
             log: Callable[[str], None] = print) -> dict:
    """Run, write ``soak.json`` and ``soak.png`` (and ``json_path``) and the logs into
    ``out_dir``, print the table; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t_setup = time.monotonic()
    refs = References(cfg.max_tokens)
    mix = Mix(TENANTS, cfg.seed)
    feeder = Feeder(prompt_stream(cfg.seed), refs, mix, log)
    stack = Stack(cfg, refs.keys, log)
    try:
        feeder.fill(INITIAL_BATCHES)
        log(f"references: {feeder.made} prompts ready, smallest top-1 margin "
            f"{refs.smallest:.3g} (> {MARGIN:g})")
        stack.start()
        summary, records, samples = _run(cfg, stack, mix, feeder, log, t_setup)
    finally:
        feeder.stop()
        stack.close(keep_logs=out_dir / "logs")
        refs.close()
    summary["prompts"] = {"with_reference": feeder.made, "dropped_small_margin": refs.dropped,
                          "smallest_margin": refs.smallest, "margin_limit": MARGIN,
                          "fresh_picks_starved": mix.starved, "feeder_error": feeder.error}
    text = json.dumps(summary, indent=2)
    (out_dir / "soak.json").write_text(text)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(text)
    plot(out_dir / "soak.png", records, samples, summary["faults"])
    log(table(summary))
    log(f"wrote {out_dir / 'soak.json'}, {out_dir / 'soak.png'} and logs in "
        f"{out_dir / 'logs'}" + (f"; {json_path}" if json_path else ""))
    return summary


def _run(cfg: SoakConfig, stack: Stack, mix: Mix, feeder: Feeder,
         log: Callable[[str], None], t_setup: float) -> tuple[dict, list, list]:
    load = Load(stack, mix, Ledger(TENANTS, stack.keys.block_size), cfg.max_tokens,
                cfg.clients, cfg.max_requests, cfg.seed)
    skipped = {k: "redis-server is not installed" for k in cfg.faults
               if k in NEEDS_REDIS and stack.cluster is None}
    plan = cfg.schedule(tuple(k for k in cfg.faults if k not in skipped))
    faults: list[dict] = []
    monitor = Monitor(stack, load, cfg.progress_every_s,
                      lambda: f"{len(faults)}/{len(plan)}", log)
    monitor.warmup_s = cfg.warmup_s
    ctx = FaultContext(cfg, stack, load, mix, log)
    started = time.monotonic()
    load.start()
    feeder.start()
    monitor.start()
    log(f"load started: {cfg.clients} clients, {cfg.duration_s:.0f} s, {len(plan)} faults")
    try:
        for at, kind in plan:
            if not _sleep_until(load, at, cfg.hard_limit_s):
                break
            faults.append(inject(kind, ctx))
            time.sleep(min(MIN_GAP_S, cfg.duration_s / 60))
        last = faults[-1]["at_s"] + faults[-1]["took_s"] if faults else 0.0
        end = min(max(cfg.duration_s, last + cfg.settle_s), cfg.hard_limit_s)
        _sleep_until(load, end, cfg.hard_limit_s)
    finally:
        load.stop()
        monitor.stop()
    starts = [t - load.t0 for t, _ in stack.lifetimes]
    extra = {"engines": cfg.engines, "clients": cfg.clients, "tenants": TENANTS,
             "remote": stack.cluster is not None, "skipped_faults": skipped,
             "examples": load.examples, "daemon_restarts": len(stack.lifetimes) - 1,
             "engine_restarts": sum(e.starts - 1 for e in stack.engines),
             "final_daemon_stats": _final_stats(stack),
             "setup_s": round(started - t_setup, 1),
             "daemon_fd_kinds": {str(k): v for k, v in monitor.fds.items()},
             "daemon_samples": sample_rows(monitor.samples)}
    records = load.snapshot()
    return summarize(cfg, records, faults, monitor.samples, starts, extra), records, \
        monitor.samples


def _sleep_until(load: Load, at_s: float, hard_limit_s: float) -> bool:
    """Sleep until ``at_s`` load seconds (False if that is past the hard limit)."""
    if at_s > hard_limit_s:
        return False
    while load.now() < at_s:
        time.sleep(max(0.0, min(0.5, at_s - load.now())))
    return True


def _final_stats(stack: Stack) -> dict | None:
    try:
        stats = stack.daemon_stats()
    except Exception:  # reported as missing
        return None
    return {"engines": stats.get("engines"), "tiers": {
        name: {k: t.get(k) for k in ("blocks", "hits", "misses", "evictions", "errors")}
        for name, t in stats.get("tiers", {}).items()}}

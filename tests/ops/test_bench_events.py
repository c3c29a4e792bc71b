"""``asymcache bench events`` as a script runs it: a short mixed run against a real daemon."""

from __future__ import annotations

import json
import subprocess
import sys


def test_bench_events_short_run_loses_nothing_and_the_index_equals_the_daemons(tmp_path):
    out = tmp_path / "events.json"
    run = subprocess.run([sys.executable, "-m", "asymcache.ops.cli", "bench", "events",
                          "--seconds", "4", "--json", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    res = json.loads(out.read_text())
    assert res["mismatches"] == 0 and res["lost_batches"] == 0, res
    assert res["lookup_mismatches"] == 0 and res["count_mismatches"] == 0, res
    assert res["events"] > 0 and res["batches"] > 0 and res["gaps_filled"] > 0
    assert res["tiers"]["disk"]["daemon"] > 0  # blocks were demoted on to disk
    assert res["daemon_stats"]["cpu"]["evictions"] > 0
    assert all(t["daemon"] == t["consumer"] for t in res["tiers"].values())
    assert "mismatches" in run.stdout  # the printed table

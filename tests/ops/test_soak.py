"""The crash matrix (issue 18, part 7): ``asymcache soak`` for one minute, every fault kind on a
compressed schedule, against real processes (a daemon with CPU, disk and remote tiers, four
engine servers, a three-node Redis Cluster). About 90 s on two cores.

Also the soak's own bookkeeping, which the verdict rests on: what counts as a cross-tenant
hit, which failed requests were expected, and the schedule.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asymcache.ops.cli import main
from asymcache.ops.soak.config import FAULT_KINDS, FAULTS_FROM, FAULTS_UNTIL, SoakConfig
from asymcache.ops.soak.load import Record
from asymcache.ops.soak.monitor import Sample
from asymcache.ops.soak.prompts import Prompt
from asymcache.ops.soak.report import expected, kill_windows, memory
from asymcache.ops.soak.tenancy import Ledger

B = 16
PREFIX = tuple(range(100, 100 + 4 * B))  # four blocks both tenants' prompts start with


def _prompt(pid: int, body: int) -> Prompt:
    tokens = PREFIX + tuple(range(body, body + 3 * B))
    return Prompt(pid, "twin", (0, 1), tokens, ref_ids=tuple(range(7, 7 + B)))


def test_a_prefix_only_the_other_tenant_sent_is_not_the_tenants_own() -> None:
    ledger, twin = Ledger(2, B), _prompt(1, 500)
    ledger.sent(0, twin)
    ledger.sent(1, twin)
    own, other = ledger.judge(1, twin)
    assert own == 0 and other == 7 * B  # tenant 0 sent all 7 full blocks; 1 only this request
    ledger.sent(1, _prompt(2, 900))  # another of tenant 1's prompts, same system prefix
    assert ledger.judge(1, twin) == (4 * B, 7 * B)
    ledger.sent(1, twin)  # the same prompt again (in flight or done): all of it is its own
    assert ledger.judge(1, twin)[0] == 7 * B


def test_a_cross_tenant_hit_is_cached_tokens_above_the_tenants_own_prefix() -> None:
    hit = Record(1.0, 2.0, engine=0, tenant=1, pid=1, ok=True, cached=5 * B, own=4 * B)
    assert hit.cross
    assert not Record(1.0, 2.0, 0, 1, 1, ok=True, cached=4 * B, own=4 * B).cross
    assert not Record(1.0, 2.0, 0, 1, 1, ok=False, cached=0, own=0).cross


def test_only_failures_in_flight_at_a_killed_engine_are_expected() -> None:
    faults = [{"kind": "engine_kill", "engine": 2, "window": [10.0, 20.0]},
              {"kind": "engine_kill", "engine": 3, "window": [30.0, None]},
              {"kind": "daemon_kill", "at_s": 15.0}]
    windows = kill_windows(faults, end_s=50.0)

    def fail(engine: int, a: float, b: float) -> Record:
        return Record(a, b, engine, 0, 0, ok=False)

    assert expected(fail(2, 9.0, 10.5), windows)  # sent before, failed during
    assert expected(fail(3, 45.0, 45.1), windows)  # a window never closed lasts to the end
    assert not expected(fail(1, 12.0, 13.0), windows)  # another engine
    assert not expected(fail(2, 21.0, 22.0), windows)  # after the engine was back


def test_memory_is_compared_within_one_daemon_lifetime_after_its_warm_up() -> None:
    mib = 2**20
    first = [Sample(t, 0, (50 + t) * mib, 40, 10, rss_anon=30 * mib) for t in range(0, 60)]
    # a restart at 60 s: the new process starts small; after its 10 s warm-up it grows 2%
    last = [Sample(t, 1, (100 if t < 90 else 102) * mib, 42, 11, rss_anon=30 * mib)
            for t in range(61, 121)]
    mem = memory(first + last, starts_s=[0.0, 60.0], warmup_s=10.0)
    assert mem["measured_lifetime"] == 1
    assert mem["pick"]["rss_growth_pct"] == 2.0 and mem["pick"]["rss_anon_growth_pct"] == 0.0
    assert mem["pick"]["from_s"] == 70 and mem["pick"]["fds_growth"] == 0
    assert mem["lifetimes"][0]["rss_growth_pct"] > 50  # lifetime 0 grew, and is not the one


def test_every_fault_kind_is_scheduled_in_the_window_left_for_faults() -> None:
    cfg = SoakConfig(minutes=10)
    plan = cfg.schedule(FAULT_KINDS)
    assert [k for _, k in plan] == list(FAULT_KINDS)
    assert plan[0][0] == pytest.approx(FAULTS_FROM * 600)
    assert plan[-1][0] == pytest.approx(FAULTS_UNTIL * 600)
    assert len(SoakConfig(minutes=60).schedule(FAULT_KINDS)) == 6 * len(FAULT_KINDS)
    with pytest.raises(ValueError, match="minutes"):
        SoakConfig(minutes=61)


def test_the_crash_matrix_loses_no_output_leaks_nothing_and_recovers_from_every_fault(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "soak"
    status = main(["soak", "--minutes", "1", "--json", str(tmp_path / "soak.json"),
                   "--out", str(out)])
    printed = capsys.readouterr().out
    s = json.loads((tmp_path / "soak.json").read_text())
    for key in ("requests", "failed_requests", "outputs_differ", "cross_tenant_hits",
                "rss_growth_pct", "faults"):
        assert key in s, f"the JSON lacks {key!r}"
    assert s["requests"] > 100 and s["outputs_differ"] == 0, printed
    assert s["cross_tenant_hits"] == 0 and s["leak_opportunities"] > 0, printed
    assert s["failed_requests"] == 0, s["examples"]
    injected = [f["kind"] for f in s["faults"]]
    assert sorted(injected + list(s["skipped_faults"])) == sorted(FAULT_KINDS)
    for f in s["faults"]:
        assert {"kind", "at_s", "recovered", "recovery_s"} <= set(f)
        assert f["recovered"] is True, f
    restarts = [f for f in s["faults"] if "serving_s" in f]
    assert all(f["serving_s"] <= 10 and f["engines_back_s"] <= 5 for f in restarts)
    assert (out / "soak.png").stat().st_size > 0 and (out / "logs" / "daemon.log").exists()
    assert "checks:" in printed
    assert status in (0, 1)  # 1 only for memory over a one-minute run (not judged here)

"""``asymcache bench sweep``: the grid stops one rate past configuration 3's knee, goodput is
bisected to the tolerance, the 80%-busy rate is interpolated, and a real quick run writes its
files with the keys scripts read."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from asymcache.ops.e2e import sweep as sw
from asymcache.ops.e2e.configs import select
from asymcache.ops.e2e.sources import SourceSpec


class FakeSweep(sw._Sweep):
    """The sweep's decisions with a model in place of runs: configuration ``k`` meets the SLOs
    up to ``limits[k]`` requests/s, and is ``rate / 10`` busy."""

    def __init__(self, plan: sw.SweepPlan, limits: dict[str, float]) -> None:
        self.plan, self.log, self.limits = plan, lambda _: None, limits
        self.result = sw.SweepResult("fake")
        self.met = {c.key: {} for c in plan.configs}
        self.lags: dict[float, float] = {}
        self.started = 0.0
        self.runs: list[tuple[str, float, str]] = []

    def _measure(self, cfg, rate, kind, factor, round_=0):  # type: ignore[override]
        ok = rate <= self.limits[cfg.key]
        self.runs.append((cfg.key, rate, kind))
        self.met[cfg.key][rate] = ok
        ttft = {"4": 0.1, "B": 0.05}.get(cfg.key, 0.25)
        self.result.rows.append({"config_id": cfg.key, "kind": kind, "repeat": round_,
                                 "rate_per_s": rate, "engine_busy_share": rate / 10,
                                 "ttft_mean_s": ttft, "ttfts": [ttft], "slo_met": ok})
        return ok

    def _over_budget(self, what: str) -> bool:
        return False


def _plan(**kw: object) -> sw.SweepPlan:
    return sw.SweepPlan(configs=tuple(select(["1", "3", "4"])), source=SourceSpec(), **kw)


def test_the_grid_stops_one_rate_past_the_knee_and_skips_configurations_that_failed() -> None:
    s = FakeSweep(_plan(factors=(1.0, 2.0, 4.0, 8.0, 16.0)), {"1": 1.5, "3": 3.0, "4": 6.0})
    s._grid(1.0)
    assert s.result.knee_rate == 4.0  # configuration 3 missed first at x4
    rates = {k: [r for key, r, _ in s.runs if key == k] for k in "134"}
    assert rates == {"1": [1.0, 2.0], "3": [1.0, 2.0, 4.0], "4": [1.0, 2.0, 4.0, 8.0]}


def test_goodput_is_bisected_to_the_tolerance_and_censored_when_every_rate_met() -> None:
    s = FakeSweep(_plan(factors=(1.0, 2.0, 4.0, 8.0), tolerance=1.05),
                  {"1": 1.5, "3": 3.0, "4": 100.0})
    s.result.base_rate = 1.0
    s._grid(1.0)
    for cfg in s.plan.configs:
        s._goodput(cfg)
    good = s.result.goodput_rps
    assert 3.0 / 1.05 <= good["3"] <= 3.0 and 1.5 / 1.05 <= good["1"] <= 1.5
    assert [k for _, _, k in s.runs if k == "bisect"]  # found between the grid's rates
    assert s.result.goodput_censored == {"1": False, "3": False, "4": True}
    assert good["4"] == 12.0  # it climbed past the grid to max_factor; at least: none failed
    assert [r for k, r, kind in s.runs if kind == "climb"] == [12.0]


def test_a_configuration_that_outlasts_the_grid_climbs_until_it_misses_then_bisects() -> None:
    s = FakeSweep(_plan(factors=(1.0, 2.0, 4.0), tolerance=1.05), {"1": 1.5, "3": 3.0, "4": 7.0})
    s.result.base_rate = 1.0
    s._grid(1.0)
    assert s.result.knee_rate == 4.0  # the grid stops at 3's knee, 4 met every rate
    for cfg in s.plan.configs:
        s._goodput(cfg)
    climbs = [r for k, r, kind in s.runs if kind == "climb"]
    assert climbs == [pytest.approx(6.0), pytest.approx(9.0)]  # met at 6, missed at 9
    assert s.result.goodput_censored["4"] is False
    assert 7.0 / 1.05 <= s.result.goodput_rps["4"] <= 7.0  # bisected between 6 and 9


def test_the_80pct_busy_rate_is_interpolated_and_the_ratio_is_a_median_of_rounds() -> None:
    assert sw.busy_rate([(1.0, 0.5), (2.0, 0.7), (3.0, 0.9)], 0.8) == pytest.approx(2.5)
    assert sw.busy_rate([(1.0, 0.5), (2.0, 0.6)], 0.8) is None
    s = FakeSweep(_plan(factors=(2.0, 6.0, 9.0), rounds=3), {"1": 100, "3": 100, "4": 100})
    s.result.base_rate = 1.0
    for r in (2.0, 6.0, 9.0):
        s._measure(select(["3"])[1], r, "grid", r)  # select puts configuration 1 first
    s._busy80()
    assert s.result.rate_at_80pct_busy == pytest.approx(8.0)
    assert s.result.ttft_ratio_runs == [2.5, 2.5, 2.5] and s.result.ttft_ratio_at_80pct_busy == 2.5
    assert s.result.busy_rate_extrapolated is False


def test_the_80pct_busy_rate_is_extrapolated_when_configuration_3_stopped_below_it() -> None:
    assert sw.extrapolated_busy_rate([(1.0, 0.5), (2.0, 0.7)], 0.8) == pytest.approx(2.5)
    assert sw.extrapolated_busy_rate([(1.0, 0.2), (2.0, 0.3)], 0.8) is None  # 7/s: too far
    assert sw.extrapolated_busy_rate([(1.0, 0.6), (2.0, 0.5)], 0.8) is None  # not rising
    assert sw.extrapolated_busy_rate([(2.0, 0.7)], 0.8) is None
    s = FakeSweep(_plan(rounds=1), {"1": 100, "3": 100, "4": 100})
    s.result.base_rate = 1.0
    for r in (2.0, 6.0):  # the fake is rate / 10 busy: 20% and 60%
        s._measure(select(["3"])[1], r, "grid", r)
    s._measure(select(["3"])[1], 5.0, "bisect", 5.0)  # a bisection point counts too
    s._busy80()
    assert s.result.rate_at_80pct_busy == pytest.approx(8.0)  # through (5, 50%) and (6, 60%)
    assert s.result.busy_rate_extrapolated is True
    assert [k for k, _, kind in s.runs if kind == "busy80"] == ["3", "4"]
    assert s.result.summary()["rate_at_80pct_busy_extrapolated"] is True


def test_b_runs_in_the_80pct_busy_rounds_and_reports_the_gap_closed() -> None:
    plan = sw.SweepPlan(configs=tuple(select(["1", "3", "4", "B"])), source=SourceSpec(),
                        factors=(2.0, 6.0, 9.0), rounds=3)
    s = FakeSweep(plan, {"1": 100, "3": 100, "4": 100, "B": 100})
    s.result.base_rate = 1.0
    for r in (2.0, 6.0, 9.0):
        s._measure(select(["3"])[1], r, "grid", r)
    s._busy80()
    busy = [k for k, _, kind in s.runs if kind == "busy80"]
    # configuration 1 first (B's lag at that rate), then interleaved rounds
    assert busy == ["1"] + ["3", "4", "B"] * 3
    # the fake's TTFTs: 3 0.25 s, 4 0.1 s, B 0.05 s: 4 closes (0.25 - 0.1) / (0.25 - 0.05)
    assert s.result.b_gap["b_gap_closed"] == pytest.approx(0.75)
    assert s.result.b_gap["ttft_ratio_vs_belady_runs"] == [5.0, 5.0, 5.0]
    assert s.result.summary()["b_gap_closed"] == pytest.approx(0.75)


def test_b_runs_with_configuration_1s_lag_at_its_rate_or_the_nearest_above(monkeypatch) -> None:
    seen: list[tuple[str, float, float]] = []
    monkeypatch.setattr(sw, "run_config", lambda cfg, w, setup, on_done: seen.append(
        (cfg.key, w.rate, setup.oracle_lag_s)))

    class Work:
        name = "fake"

        def __init__(self, rate: float) -> None:
            self.rate = rate

        def __len__(self) -> int:
            return 1

    s = FakeSweep(_plan(), {"1": 100, "3": 100, "4": 100})
    s.setup, s.progress = sw.RunSetup(capacities=None, cost_model="x"), lambda *a: None  # type: ignore[arg-type]
    b = select(["B"])[1]
    s.lags = {0.5: 2.0, 2.0: 3.0, 4.0: 6.0}
    for rate in (2.0, 1.0, 0.1, 8.0):
        s._run(b, Work(rate), "grid")  # type: ignore[arg-type]
    s._run(select(["3"])[1], Work(2.0), "grid")  # type: ignore[arg-type]
    # at its rate, else the nearest above, else configuration 1's highest; others: the default
    assert seen == [("B", 2.0, 3.0), ("B", 1.0, 3.0), ("B", 0.1, 2.0), ("B", 8.0, 6.0),
                    ("3", 2.0, sw.RunSetup(capacities=None, cost_model="x").oracle_lag_s)]  # type: ignore[arg-type]
    assert s.lag_rate(8.0) == 4.0
    s.lags = {}
    with pytest.raises(RuntimeError, match="configuration 1"):
        s.lag_rate(1.0)


def test_slo_figures_count_requests_meeting_both_slos() -> None:
    class Out:
        def __init__(self, ttft: float, tpot: float | None) -> None:
            self.ttft, self.tpot = ttft, tpot

    got = sw.slo_figures([Out(0.1, 0.01), Out(0.2, 0.05), Out(0.9, 0.01), Out(0.1, None)],
                          0.5, 0.02)
    assert got["slo_attainment"] == 0.5 and got["ttfts"] == [0.1, 0.2, 0.9, 0.1]
    assert got["slo_met"] is False  # p90 TTFT 0.69 s is over 0.5 s


def test_bad_plans_fail_naming_the_knob() -> None:
    with pytest.raises(ValueError, match="configuration 1 first"):
        sw.SweepPlan(configs=tuple(select(["3", "4"])[1:]), source=SourceSpec())
    with pytest.raises(ValueError, match="tolerance"):
        _plan(tolerance=1.0)


@pytest.mark.slow
def test_a_quick_sweep_writes_its_rows_report_and_plot(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "asymcache.ops.cli", "bench", "sweep",
                           "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    rows = json.loads((tmp_path / "sweep.json").read_text())
    report = json.loads((tmp_path / "sweep-report.json").read_text())
    assert {r["config_id"] for r in rows} == {"1", "3", "4", "P", "B"}
    assert all("goodput_rps" in r and r["outputs_identical"] for r in rows)
    assert all(r["oracle_lag_s"] >= 2.0 for r in rows if r["config_id"] == "B")
    work = report["workloads"]["chat-quick"]
    assert set(work["goodput_rps"]) == {"1", "3", "4", "P", "B"}
    assert "ttft_ratio_at_80pct_busy" in work and "b_gap_closed" in work
    assert (tmp_path / "sweep-chat-quick.png").read_bytes()[:4] == b"\x89PNG"

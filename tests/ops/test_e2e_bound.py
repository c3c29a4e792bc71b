"""Configuration B (``belady-bound``) of ``asymcache bench e2e``: configuration 4's engine and
capacities with a daemon given the replayed future, the oracle it gets, and ``b_gap_closed``.
One real run (the built-in model, a real daemon reading a real oracle file, about 10 s)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from asymcache.cacheserver.blocks import block_keys
from asymcache.cacheserver.oracle_file import read_oracle
from asymcache.ops.e2e import experiment, oracle
from asymcache.ops.e2e.configs import CONFIGS, QUICK_KEYS, select
from asymcache.ops.e2e.driver import Outcome, replay
from asymcache.ops.e2e.experiment import Plan, b_gap_closed
from asymcache.ops.e2e.runner import RunSetup
from asymcache.ops.e2e.sources import SourceSpec, build


def test_b_is_selectable_in_quick_and_has_configuration_4s_engine_and_capacities() -> None:
    by_key, by_name = select(["B"]), select(["belady-bound"])
    assert [c.key for c in by_key] == [c.key for c in by_name] == ["1", "B"]
    assert "B" in QUICK_KEYS and "B" in [c.key for c in select(None)]  # --quick runs all
    chosen = {c.key: c for c in select(["4", "B"])}
    four, bound = chosen["4"], chosen["B"]
    assert (bound.policy, bound.oracle, bound.bound) == ("belady", True, False)
    assert [c.key for c in CONFIGS if c.oracle] == ["B"]  # only B is given the future
    w = build("quick", SourceSpec(requests=12))
    setup = RunSetup(experiment.capacities(w, Plan(configs=(), source=SourceSpec()), 32768),
                     "unused")
    assert setup.engine_options(bound, "ipc://x") == setup.engine_options(four, "ipc://x")
    assert "B" in Plan(configs=(), source=SourceSpec()).repeat_configs


@pytest.mark.parametrize(("t3", "t4", "tb", "closed"), [
    (0.3, 0.2, 0.1, 0.5), (0.3, 0.05, 0.1, 1.25), (0.3, 0.3, 0.2, 0.0),
    (0.3, 0.2, 0.26, None),  # 3/B = 1.15: no gap worth closing
    (None, 0.2, 0.1, None), (0.3, None, 0.1, None), (0.3, 0.2, None, None)])
def test_b_gap_closed_is_the_share_of_the_3_to_b_gap_or_none(t3, t4, tb, closed) -> None:
    got = b_gap_closed(t3, t4, tb)
    assert got == (None if closed is None else pytest.approx(closed))


def test_goals_give_the_median_b_gap_of_the_rounds_and_the_simulators_beside_it() -> None:
    def row(cid: str, ttft: float, rnd: int, sim: float | None = None) -> dict:
        return {"config_id": cid, "kind": "headline" if rnd == 0 else "repeat", "repeat": rnd,
                "ttft_mean_s": ttft, "tpot_mean_s": 0.01, "sim_h100_ttft_s": sim}

    rows = [row("3", 0.3, 0, 0.3), row("4", 0.2, 0, 0.15), row("B", 0.1, 0, 0.1),
            row("3", 0.4, 1), row("4", 0.1, 1), row("B", 0.2, 1)]
    g = experiment.goals(rows)
    assert g["b_gap_closed_runs"] == pytest.approx([0.5, 1.5])
    assert g["b_gap_closed"] == pytest.approx(1.0) and g["b_gap_goal_met"]
    assert g["sim_b_gap_closed_h100"] == pytest.approx(0.75)
    assert g["sim_b_gap_closed_local"] is None
    assert experiment.goals(rows[:2])["b_gap_closed"] is None  # B did not run
    flat = [row("3", 0.3, 0), row("4", 0.2, 0), row("B", 0.28, 0)]
    assert experiment.goals(flat)["b_gap_closed"] is None  # 3/B = 1.07


def test_workload_uses_list_each_keys_due_times_once_per_request() -> None:
    w = build("quick", SourceSpec(requests=12)).at_rate(3.0)
    ns = bytes(range(16))
    uses = oracle.workload_uses(w, ns, t0=100.0)
    for r in w.requests:
        for key in block_keys(ns, list(r.prompt), w.block_size):
            assert 100.0 + r.arrival_s in uses[key]
    assert all(times == sorted(set(times)) for times in uses.values())
    assert max(len(t) for t in uses.values()) > 1  # shared prefixes are used again


def test_lag_is_a_multiple_of_the_reference_latency_with_a_floor() -> None:
    def done(due: float, last: float) -> Outcome:
        return Outcome("r", due, due, [1], [last], due, {}, {})

    assert oracle.oracle_lag([done(0.0, 0.1)]) == oracle.LAG_MIN_S
    assert oracle.oracle_lag([done(0.0, 3.0), done(5.0, 6.0)]) == pytest.approx(
        oracle.LAG_FACTOR * 3.0)


def test_replay_refuses_a_start_time_that_has_passed() -> None:
    class Clocked:  # the replay reads only the engine's clock before it would start
        clock = staticmethod(lambda: 50.0)

    w = build("quick", SourceSpec(requests=2))
    with pytest.raises(RuntimeError, match=r"due to start at t0 10\.0 s ago"):
        replay(Clocked(), w, t0=40.0)  # type: ignore[arg-type]


def test_b_runs_with_its_oracle_and_the_report_says_b_gap_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from asymcache.ops.bench import e2e
    from asymcache.ops.e2e import runner

    written: list[str] = []
    real = runner.write_workload_oracle

    def keep(path, workload, options, lag_s, lead_s=None):  # the file B's daemon reads
        t0 = real(path, workload, options, lag_s, 3.0)
        written.append(Path(path).read_bytes().hex())
        return t0

    monkeypatch.setattr(runner, "write_workload_oracle", keep)
    plan = Plan(configs=tuple(select(["B"])), source=SourceSpec(requests=4), rate=4.0)
    code = e2e._run(plan, ["quick"], tmp_path, None, True, Path(__file__).resolve().parents[2])
    assert code == 0 and len(written) == 1  # configuration 1 got no oracle
    rows = json.loads((tmp_path / "e2e.json").read_text())
    b = rows[1]
    assert (b["config_id"], b["policy"], b["outputs_identical"]) == ("B", "belady", True)
    assert b["oracle_lag_s"] >= oracle.LAG_MIN_S
    report = json.loads((tmp_path / "e2e-report.json").read_text())
    assert report["workloads"]["chat-quick"]["b_gap_closed"] is None  # 3 and 4 did not run
    path = tmp_path / "o.msgpack"
    path.write_bytes(bytes.fromhex(written[0]))
    assert read_oracle(path).next_use(bytes(16), 0.0) == math.inf
    assert len(read_oracle(path)) > 0

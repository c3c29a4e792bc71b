"""The end-to-end benchmark's correctness checks: outputs are compared with the no-cache run
request by request, token by token, and a difference fails the run loudly (exit status 1, the
rows say which configuration). One real run: an engine on the built-in model, a real daemon
process, four short chat requests (about 15 s)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from asymcache.ops.e2e import experiment
from asymcache.ops.e2e.configs import select
from asymcache.ops.e2e.driver import Outcome
from asymcache.ops.e2e.experiment import Plan
from asymcache.ops.e2e.sources import SourceSpec
from asymcache.ops.e2e.summary import Mismatch, OutputMismatch, check_outputs, compare_outputs


def _outcome(rid: str, tokens: list[int]) -> Outcome:
    return Outcome(rid, 0.0, 0.0, tokens, [0.1 * i for i in range(len(tokens))], 0.0, {}, {})


def test_outputs_are_compared_request_by_request_token_by_token() -> None:
    ref = {"a": [5, 6, 7, 8], "b": [9, 9], "c": [1, 2, 3]}
    got = [_outcome("a", [5, 6, 7, 8]), _outcome("b", [9, 4]), _outcome("c", [1, 2]),
           _outcome("d", [3])]
    assert compare_outputs("x", ref, got) == [
        Mismatch("x", "b", 1, 9, 4), Mismatch("x", "c", 2, 3, None), Mismatch("x", "d", 0, None, 3)]
    assert compare_outputs("x", ref, [_outcome("a", [5, 6, 7, 8])]) == []


def test_a_mismatch_raises_naming_configuration_request_and_position() -> None:
    rows = [{"config": "no-cache", "outputs_identical": True},
            {"config": "asymcache", "outputs_identical": False}]
    with pytest.raises(OutputMismatch, match=r"asymcache: r7 differs at output token 3 "
                                             r"\(no cache: 11, got: 12\)"):
        check_outputs(rows, [Mismatch("asymcache", "r7", 3, 11, 12)])
    with pytest.raises(OutputMismatch, match="asymcache"):  # a row flagged without details
        check_outputs(rows, [])
    check_outputs(rows[:1], [])


def test_quick_path_checks_real_outputs_and_fails_loudly_on_a_difference(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from asymcache.ops.bench import e2e

    real = experiment.run_config

    def corrupt_5c(cfg, workload, setup, **kw):  # one wrong token in configuration 5c
        run = real(cfg, workload, setup, **kw)
        if cfg.key == "5c":
            run.replay.outcomes[1].token_ids[2] += 1
        return run

    monkeypatch.setattr(experiment, "run_config", corrupt_5c)
    plan = Plan(configs=tuple(select(["4", "5c", "P"])), source=SourceSpec(requests=4),
                rate=4.0)
    code = e2e._run(plan, ["quick"], tmp_path, str(tmp_path / "rows.json"), True,
                    Path(__file__).resolve().parents[2])
    out = capsys.readouterr().out
    assert code == 1 and "OUTPUTS DIFFER FROM THE NO-CACHE RUN in 1 request(s)" in out
    rows = json.loads((tmp_path / "rows.json").read_text())
    assert [(r["config"], r["outputs_identical"], r["mismatched_requests"]) for r in rows] == [
        ("no-cache", True, 0), ("asymcache", True, 0), ("asym-fixed2048", False, 1),
        ("perfect-cache", True, 0)]
    assert all({"ttft_mean_s", "tpot_mean_s"} <= set(r) for r in rows)
    assert rows[0]["min_top1_margin"] > 5e-4  # the reference's greedy tokens are not noise
    assert rows[1]["tokens_resident"] + rows[1]["tokens_fetched_cpu"] > 0  # the cache served
    rpc = rows[1]["daemon_rpc"]
    waited = sum(v["calls"] for op, v in rpc.items()
                 if "one-way" not in op and op not in ("poll_acks", "check_acks", "notify"))
    assert rows[1]["rpc_per_request"] == waited / 4 > 0 and rpc["commit (one-way)"]["calls"] > 0
    assert rows[1]["bytes_offloaded"] > 0  # written through (its CPU slots came in ACKs)
    assert rows[1]["daemon_moved_bytes"]["gpu_to_cpu"] >= rows[1]["bytes_offloaded"]
    assert 0 < rows[1]["daemon_share_of_busy"] < 1
    assert (tmp_path / "e2e.png").stat().st_size > 0 and (tmp_path / "e2e.md").exists()
    perfect = rows[3]  # the bound computes only tokens no earlier request had
    assert perfect["tokens_recomputed"] == 0 and "daemon_tiers" not in perfect
    assert perfect["tokens_resident"] > 0 and perfect["tokens_fetched_cpu"] == 0
    assert perfect["prefill_tokens_computed"] < rows[0]["prefill_tokens_computed"]


def test_the_perfect_cache_bound_gets_a_pool_that_never_evicts_and_no_daemon() -> None:
    from asymcache.ops.e2e.configs import Capacities
    from asymcache.ops.e2e.predict import sim_spec
    from asymcache.ops.e2e.runner import RunSetup
    from asymcache.ops.e2e.sources import build

    w = build("quick", SourceSpec(requests=12))
    caps = experiment.capacities(w, Plan(configs=(), source=SourceSpec()), 32768)
    chosen = {c.key: c for c in select(["P", "4"])}
    bound, asym = chosen["P"], chosen["4"]
    assert (bound.bound, bound.uses_daemon, asym.bound) == (True, False, False)
    opts = RunSetup(caps, "unused").engine_options(bound, None)
    assert opts["num_gpu_blocks"] == caps.all_blocks == (
        w.unique_blocks() + w.output_blocks() + caps.gpu_blocks)
    assert (opts["reuse"], opts["fetch_tiers"], opts["chunking"]) == ("msa", (), "fixed")
    assert RunSetup(caps, "unused").engine_options(asym, "ipc://x")["num_gpu_blocks"] == \
        caps.gpu_blocks
    spec = sim_spec(bound, caps)
    assert [(t.name, t.capacity) for t in spec.tiers] == [("gpu", caps.all_blocks)]
    assert isinstance(caps, Capacities) and caps.to_dict()["all_blocks"] == caps.all_blocks


def test_predictions_hold_the_requests_in_flight_at_each_configuration_s_own_tpot() -> None:
    from asymcache.ops.e2e.sources import build

    w = build("quick", SourceSpec(requests=12)).at_rate(4.0)
    caps = experiment.capacities(w, Plan(configs=(), source=SourceSpec()), 32768)
    configs = select(["1", "4", "5a"])
    rows = [{"config_id": "1", "repeat": 0, "tpot_mean_s": 0.02},
            {"config_id": "4", "repeat": 0, "tpot_mean_s": 0.5},
            {"config_id": "4", "repeat": 1, "tpot_mean_s": 0.0},  # a repeat's TPOT is not used
            {"config_id": "5a", "repeat": 0, "tpot_mean_s": None}]
    experiment._attach_predictions(rows, w, caps, configs, "h100-llama3-8b", True)
    held = [r["sim_h100_gpu_held"] for r in rows]
    assert held[1] == held[2] and 0 < held[1] <= 1  # 4: requests overlap for seconds
    assert held[3] is None  # no TPOT measured: one request at a time
    assert held[0] == 0  # no cache: nothing to hold


def test_goal_ratios_are_the_median_over_rounds_of_the_same_runs() -> None:
    def row(cid: str, ttft: float, tpot: float, rnd: int) -> dict:
        return {"config_id": cid, "kind": "headline" if rnd == 0 else "repeat", "repeat": rnd,
                "ttft_mean_s": ttft, "tpot_mean_s": tpot}

    rows = [row("3", 0.2, 0.01, 0), row("4", 0.1, 0.01, 0), row("5c", 0.1, 0.02, 0),
            row("3", 0.3, 0.01, 1), row("4", 0.1, 0.01, 1), row("5c", 0.12, 0.016, 1),
            row("3", 0.1, 0.01, 2), row("4", 0.1, 0.01, 2), row("5c", 0.1, 0.01, 2),
            {"config_id": "4", "kind": "sweep", "ttft_mean_s": 9.0, "tpot_mean_s": 9.0}]
    g = experiment.goals(rows)
    assert g["ttft_ratio_vs_prefix_offload_runs"] == pytest.approx([2.0, 3.0, 1.0])
    assert g["ttft_ratio_vs_prefix_offload"] == pytest.approx(2.0) and g["ttft_goal_met"]
    assert g["tpot_ratio_vs_fixed2048"] == pytest.approx(1.6) and g["tpot_goal_met"]
    assert g["ttft_ratio_vs_fixed2048"] == pytest.approx(1.0)
    assert "ttft_bound_vs_prefix_offload" not in g  # no perfect-cache run


def test_bounds_are_configuration_3_over_the_perfect_cache_and_tpot_over_decode_steps() -> None:
    rows = [{"config_id": c, "kind": "headline", "repeat": 0, "ttft_mean_s": t,
             "tpot_mean_s": 0.006, "decode_only_steps": 100, "decode_only_steps_s": 0.4}
            for c, t in (("3", 0.3), ("4", 0.2), ("5c", 0.25), ("P", 0.2))]
    rows += [{**r, "kind": "repeat", "repeat": 1} for r in rows if r["config_id"] in ("3", "P")]
    rows[-1]["ttft_mean_s"] = 0.1
    g = experiment.goals(rows)
    assert g["ttft_bound_vs_prefix_offload_runs"] == pytest.approx([1.5, 3.0])
    assert g["ttft_bound_vs_prefix_offload"] == pytest.approx(2.25)
    assert g["tpot_bound_vs_fixed2048"] == pytest.approx(1.5)  # 6 ms over 4 ms steps


def test_a_session_waits_for_its_previous_answer_and_its_job_latency_spans_the_session() -> None:
    from asymcache.engine.metrics import STEP_PHASES
    from asymcache.ops.e2e.driver import previous_in_session, replay
    from asymcache.ops.e2e.summary import job_latencies
    from asymcache.ops.e2e.workload import E2ERequest, Workload
    from tests.engine.engine_fixtures import make_llm

    llm = make_llm()
    try:
        prompts = [list(range(10, 50)), list(range(10, 60)), list(range(200, 230))]
        reqs = (E2ERequest("a0", 0.0, tuple(prompts[0]), 12, session=0),
                E2ERequest("b0", 0.0, tuple(prompts[2]), 4, session=1),
                E2ERequest("a1", 0.001, tuple(prompts[1]), 4, session=0, session_end=True))
        w = Workload("causal", reqs, 1.0, 16)
        assert previous_in_session(w) == {"a1": "a0"}
        rep = replay(llm.engine, w)
        by = {o.request_id: o for o in rep.outcomes}
        # a1 was due 1 ms after a0 but is sent only once a0's answer (12 tokens) is complete
        assert by["a1"].due == by["a0"].token_times[-1] > by["a0"].due + 0.001
        assert by["b0"].due == by["a0"].due  # another session is not held back
        # the pool share the running requests held after each step: a0's 3 blocks and b0's 2
        # after the first, none once the last request finished
        pool = llm.engine.kv.blocks.num_slots
        assert len(rep.held) == len(rep.steps) and rep.held[0] == 5 / pool
        assert rep.held[-1] == 0 and all(0 <= h <= 1 for h in rep.held)
        # step time by phase, over the whole replay (steps that ran nothing included)
        assert set(rep.phase_s) == set(STEP_PHASES) and rep.phase_s["model"] > 0
        assert sum(rep.phase_s.values()) >= sum(s for _, _, s in rep.steps) - 1e-3 * len(rep.steps)
        jobs = job_latencies(rep.outcomes, {r.request_id: r.session for r in reqs})
        spans = [by["a1"].token_times[-1] - by["a0"].due, by["b0"].token_times[-1] - by["b0"].due]
        assert jobs["job_latency_mean_s"] == pytest.approx(sum(spans) / 2)
        assert job_latencies(rep.outcomes, {}) == {"job_latency_mean_s": None,
                                                   "job_latency_p90_s": None}
    finally:
        llm.close()


def test_step_phases_give_the_model_and_admission_shares_of_step_time() -> None:
    from asymcache.ops.e2e.summary import phase_shares

    got = phase_shares({"daemon": 0.5, "admit": 1.0, "schedule": 0.25, "model": 8.0, "commit": 0.25,
                   "settle": 0.0})
    assert got["model_share_of_steps"] == 0.8 and got["admit_share_of_steps"] == 0.1
    assert got["step_phase_s"]["model"] == 8.0
    assert phase_shares({})["model_share_of_steps"] == 0.0  # no step ran

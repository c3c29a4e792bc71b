"""Continuous batching seen from the engine: decodes every step, prefill chunks sized by the
fixed budget or by the adaptive step-time objective, and preemption instead of failure."""

from __future__ import annotations

import itertools
import json

from asymcache.cacheserver.policy.cost import CostModel, TierLink
from tests.engine.engine_fixtures import corpus_ids, greedy, make_llm

LINEAR, PASS, TARGET = 1e-3, 0.01, 0.05


def _profile(tmp_path, linear: float = LINEAR) -> str:
    cost = CostModel(device="test", model="builtin", kv_bytes_per_token=2048,
                     linear_s_per_token=linear, attn_s_per_token_position=0.0, pass_s=PASS,
                     segment_s=0.0, load=(TierLink("cpu", 1e10, 1e-6),))
    path = tmp_path / "profile.json"
    path.write_text(json.dumps(cost.to_dict()))
    return str(path)


def _run(llm, decoders, long_prompt, steps=400):
    """Start ``decoders`` decoding, then add the long prompt; record every step's shape."""
    engine = llm.engine
    for i, p in enumerate(decoders):
        engine.add_request(f"d{i}", p, greedy(200))
    while any(r.in_prefill or not r.output_token_ids for r in engine.scheduler.running) \
            or engine.scheduler.waiting:
        engine.step()
    engine.add_request("long", long_prompt, greedy(4))
    shapes = []
    for _ in range(steps):
        engine.step()
        shapes.append(engine.last_step)
        if "long" not in engine._requests:
            break
    return shapes


def test_adaptive_chunks_fit_the_step_objective_beside_the_decodes(tmp_path) -> None:
    llm = make_llm(chunking="adaptive", cost_model=_profile(tmp_path), target_step_s=TARGET,
                   min_prefill_tokens=8, num_gpu_blocks=128, step_calibration=False,
                   ttft_slo_s=0, tpot_window=1)
    prompts = corpus_ids(llm, 5, 64)
    shapes = _run(llm, prompts[:4], corpus_ids(llm, 1, 600, offset=3)[0])
    overdue_steps = llm.engine.state().overdue_steps
    llm.close()
    with_decodes = [s for s in shapes if s.decodes == 4 and s.prefill_tokens]
    assert with_decodes, "the long prompt never ran beside the decodes"
    assert overdue_steps == 0  # no deadline (ttft_slo_s=0): the objective sized every step
    budget = round((TARGET - PASS - 4 * LINEAR) / LINEAR)  # 36 tokens
    assert all(s.prefill_tokens <= budget for s in with_decodes)
    assert max(s.prefill_tokens for s in with_decodes) == budget
    assert all(s.decodes >= 4 for s in shapes)  # no decode ever skipped a step


def test_a_prefill_takes_what_the_decodes_saved_and_their_windows_hold(tmp_path) -> None:
    """On a device exactly as profiled (the engine's clock moves by the profile's price of each
    forward), the long prompt beside four decodes runs in far fewer steps than with a bound on
    every step, and every decode keeps its pace: its ``i``-th token within ``i - 1 + 15``
    targets of its first, no gap over 16 targets."""
    def run(window: int) -> tuple[list, dict[str, list[float]]]:
        llm = make_llm(chunking="adaptive", cost_model=_profile(tmp_path), target_step_s=TARGET,
                       min_prefill_tokens=8, num_gpu_blocks=128, step_calibration=False,
                       ttft_slo_s=0, tpot_window=window)
        now = [0.0]
        engine = llm.engine
        engine.clock = lambda: now[0]
        launch = engine.runner.launch

        def priced_launch(batch):  # the forward takes what the profile says it takes
            now[0] += PASS + LINEAR * sum(len(s.positions) for s in batch)
            return launch(batch)
        engine.runner.launch = priced_launch
        prompts = corpus_ids(llm, 5, 64)
        shapes = _run(llm, prompts[:4], corpus_ids(llm, 1, 600, offset=3)[0])
        times = {r.request_id: list(r.stats.token_times) for r in engine.scheduler.running}
        llm.close()
        return shapes, times

    per_step, _ = run(1)
    windowed, times = run(16)
    beside = [s.prefill_tokens for s in windowed if s.decodes == 4 and s.prefill_tokens]
    assert len(beside) < len([s for s in per_step if s.decodes == 4 and s.prefill_tokens]) / 4
    assert max(beside) > 36  # more than the per-step budget (the test above)
    assert len(times) == 4
    for gaps in times.values():
        assert all(b - a <= 16 * TARGET + 1e-9 for a, b in itertools.pairwise(gaps))
        assert all(gaps[i] - gaps[0] <= (i + 15) * TARGET + 1e-9 for i in range(len(gaps)))


def test_adaptive_chunker_learns_from_every_step_the_engine_ran(tmp_path) -> None:
    """The engine reports each step's wall time to the chunker, whose correction of the cost
    model moves toward what the decode-only steps measured (the learning itself is pinned in
    tests/engine/test_chunking.py)."""
    linear = 0.02  # 20 ms a token: far from this model on any CPU
    llm = make_llm(chunking="adaptive", cost_model=_profile(tmp_path, linear=linear),
                   target_step_s=TARGET, min_prefill_tokens=8, num_gpu_blocks=128, ttft_slo_s=0)
    prompts = corpus_ids(llm, 5, 64)
    shapes = _run(llm, prompts[:4], corpus_ids(llm, 1, 600, offset=3)[0], steps=80)
    for _ in range(40):  # decode-only steps (the decoders want 200 tokens)
        llm.engine.step()
        shapes.append(llm.engine.last_step)
    clock = llm.engine.scheduler.chunker.clock
    llm.close()
    ratios = sorted(s.seconds / (PASS + s.decodes * linear) for s in shapes
                    if s.decodes and not s.prefill_tokens)
    assert len(ratios) >= 20
    measured = ratios[len(ratios) // 2]
    assert clock.observed >= len(shapes)
    if measured < 0.67:
        assert clock.fixed < 0.9, (clock.fixed, measured)
    elif measured > 1.5:
        assert clock.fixed > 1.1, (clock.fixed, measured)


def test_an_overdue_prefill_takes_the_whole_step_beside_the_decodes(tmp_path) -> None:
    """The scheduler tells the chunker how long each prefill has waited since its arrival: past
    ``ttft_slo_s`` (here at once) the long prompt gets every token the decodes leave."""
    llm = make_llm(chunking="adaptive", cost_model=_profile(tmp_path), target_step_s=TARGET,
                   min_prefill_tokens=8, num_gpu_blocks=128, max_num_batched_tokens=256,
                   step_calibration=False, ttft_slo_s=1e-9, tpot_window=1)
    prompts = corpus_ids(llm, 5, 64)
    shapes = _run(llm, prompts[:4], corpus_ids(llm, 1, 600, offset=3)[0])
    overdue_steps = llm.engine.state().overdue_steps
    llm.close()
    with_decodes = [s for s in shapes if s.decodes == 4 and s.prefill_tokens]
    assert with_decodes, "the long prompt never ran beside the decodes"
    # every step that ran a prefill beside decodes was the deadline's, and only those
    assert overdue_steps == sum(1 for s in shapes if s.decodes and s.prefill_tokens)
    assert max(s.prefill_tokens for s in with_decodes) == 256 - 4  # not the objective's 36
    assert all(s.decodes >= 4 for s in shapes)  # the decodes still advance every step


def test_fixed_chunks_share_one_token_budget_with_the_decodes() -> None:
    llm = make_llm(chunking="fixed", chunk_tokens=48, num_gpu_blocks=128)
    prompts = corpus_ids(llm, 5, 64)
    shapes = _run(llm, prompts[:4], corpus_ids(llm, 1, 400, offset=3)[0])
    llm.close()
    assert all(s.decodes + s.prefill_tokens <= 48 for s in shapes)
    assert max(s.prefill_tokens for s in shapes) == 44
    assert all(s.decodes >= 4 for s in shapes)


def test_without_decodes_a_prefill_takes_the_whole_step(tmp_path) -> None:
    llm = make_llm(chunking="adaptive", cost_model=_profile(tmp_path), target_step_s=TARGET,
                   max_num_batched_tokens=256, num_gpu_blocks=128)
    engine = llm.engine
    engine.add_request("solo", corpus_ids(llm, 1, 600)[0], greedy(1))
    engine.step()
    assert engine.last_step.prefill_tokens == 256
    llm.close()

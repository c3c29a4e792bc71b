"""Chunk sizing: fixed budgets, and adaptive chunks that fit the step-time objective."""

from __future__ import annotations

import pytest

from asymcache.cacheserver.policy.cost import CostModel, TierLink
from asymcache.engine.chunking import AdaptiveChunker, FixedChunker, create_chunker
from asymcache.engine.step_clock import LIMIT, StepClock


def _cost(attn: float = 0.0) -> CostModel:
    """1 ms per token of linear work, 10 ms per pass, ``attn`` s per token per position."""
    return CostModel(device="t", model="t", kv_bytes_per_token=1, linear_s_per_token=1e-3,
                     attn_s_per_token_position=attn, pass_s=0.01, segment_s=0.0,
                     load=(TierLink("cpu", 1e9, 0.0),))


def test_fixed_gives_prefill_what_the_decodes_leave() -> None:
    chunker = FixedChunker(max_tokens=4096, chunk_tokens=512)
    assert chunker.split([100] * 12, [(0, 300), (0, 1000)]) == [300, 200]
    assert chunker.split([100] * 600, [(0, 300)]) == [0]


def test_adaptive_fills_the_target_step_time_left_by_the_decodes() -> None:
    chunker = AdaptiveChunker(4096, _cost(), target_step_s=0.05, min_prefill_tokens=16)
    # decodes: 10 ms pass + 10 × 1 ms = 20 ms; 30 ms left = 30 prefill tokens
    assert chunker.split([100] * 10, [(0, 1000)]) == [30]
    assert chunker.split([100] * 10, [(0, 20), (0, 1000)]) == [20, 10]


def test_adaptive_charges_attention_over_the_prefix() -> None:
    chunker = AdaptiveChunker(4096, _cost(attn=1e-5), target_step_s=0.05, min_prefill_tokens=1)
    n = chunker.split([0], [(1000, 10_000)])[0]
    cost = _cost(attn=1e-5)
    left = 0.05 - chunker.step_time([0])
    assert cost.recompute_cost(1000, n) <= left < cost.recompute_cost(1000, n + 1)


def test_adaptive_never_starves_prefill_and_uses_everything_without_decodes() -> None:
    chunker = AdaptiveChunker(2048, _cost(), target_step_s=0.05, min_prefill_tokens=16)
    assert chunker.split([100] * 100, [(0, 1000)]) == [16]
    assert chunker.split([], [(0, 5000)]) == [2048]


def test_adaptive_finishes_a_short_prefill_behind_a_long_one_in_the_same_step() -> None:
    chunker = AdaptiveChunker(4096, _cost(), target_step_s=0.05, min_prefill_tokens=4)
    # 30 ms left: the oldest's floor (4), the 20-token prefill behind it whole, then the rest
    assert chunker.split([100] * 10, [(0, 1000), (0, 20)]) == [10, 20]
    assert chunker.split([100] * 10, [(0, 1000), (0, 26)]) == [4, 26]  # the oldest still moves
    assert chunker.split([100] * 10, [(0, 1000), (0, 27)]) == [30, 0]  # too long to finish


def test_adaptive_floor_is_shared_first_come_first_served() -> None:
    chunker = AdaptiveChunker(4096, _cost(), target_step_s=0.05, min_prefill_tokens=16)
    assert chunker.split([100] * 100, [(0, 5), (0, 100)]) == [5, 11]


def test_adaptive_yields_the_whole_step_to_an_overdue_prefill() -> None:
    chunker = AdaptiveChunker(2048, _cost(), target_step_s=0.05, min_prefill_tokens=16,
                              ttft_slo_s=1.0)
    decodes, prefills = [100] * 10, [(0, 1000), (0, 2000)]
    assert chunker.split(decodes, prefills, [0.99, 0.5]) == [30, 0]  # the objective holds
    assert chunker.split(decodes, prefills, [1.0, 0.5]) == [1000, 1038]  # first come first
    assert chunker.split(decodes, prefills) == [30, 0]  # ages unknown: none overdue
    assert chunker.split([], prefills, [5.0, 5.0]) == [1000, 1048]
    assert chunker.overdue_steps == 1  # only the step the deadline took from the decodes
    assert chunker.split(decodes, [(0, 20)], [5.0]) == [20]  # fits the objective as it is
    assert chunker.overdue_steps == 1  # the deadline changed nothing: not counted
    never = AdaptiveChunker(2048, _cost(), target_step_s=0.05, min_prefill_tokens=16,
                            ttft_slo_s=0.0)
    assert never.split(decodes, prefills, [1e6, 1e6]) == [30, 0]
    assert never.overdue_steps == 0
    with pytest.raises(ValueError, match="ttft_slo_s"):
        AdaptiveChunker(2048, _cost(), target_step_s=0.05, min_prefill_tokens=16,
                        ttft_slo_s=-1.0)


def test_adaptive_lets_decodes_fall_behind_their_pace_by_their_allowance() -> None:
    """A decode may fall ``tpot_window - 1`` targets behind its pace: its bank starts full, each
    gap adds the target minus itself (never past full), and a step may take the target and
    the smallest bank beside it, never less than the target."""
    chunker = AdaptiveChunker(4096, _cost(), target_step_s=0.05, min_prefill_tokens=16,
                              tpot_window=16)
    assert chunker.banks and chunker.bank_cap == pytest.approx(0.75)
    assert chunker.settle(None, []) == pytest.approx(0.75)  # a new decode: full
    assert chunker.settle(None, [0.3]) == pytest.approx(0.5)  # one long gap spends it
    assert chunker.settle(0.5, [0.02, 0.02]) == pytest.approx(0.56)  # fast gaps refill it
    assert chunker.settle(0.74, [0.0, 0.0]) == pytest.approx(0.75)  # never past full
    assert chunker.settle(0.0, [0.2]) == pytest.approx(-0.15)  # a misjudged step: behind
    decodes, prefill = [100] * 10, [(0, 5000)]
    # 50 ms + 250 ms of bank: a 300 ms step, 20 of it the pass and the decodes, 280 tokens
    assert chunker.split(decodes, prefill, [], [0.25]) == [280]
    assert chunker.split(decodes, prefill, [], [0.25, 0.01]) == [40]  # the smallest decides
    assert chunker.split(decodes, prefill, [], [-0.5]) == [30]  # never below the target
    assert chunker.split(decodes, prefill) == [30]
    per_step = AdaptiveChunker(4096, _cost(), target_step_s=0.05, min_prefill_tokens=16)
    assert not per_step.banks and per_step.settle(None, [0.01]) == 0.0
    assert not FixedChunker(4096, 512).banks
    with pytest.raises(ValueError, match="tpot_window"):
        AdaptiveChunker(4096, _cost(), target_step_s=0.05, min_prefill_tokens=16,
                        tpot_window=0)


def test_an_overdue_step_still_teaches_the_step_clock() -> None:
    """A step the deadline sized is planned and observed like any other."""
    chunker = AdaptiveChunker(2048, _cost(), target_step_s=0.05, min_prefill_tokens=16,
                              ttft_slo_s=1.0)
    chunker.split([100] * 10, [(0, 1000)], [2.0])
    chunker.observe(2 * (0.02 + 1.0))  # twice the priced decodes plus 1000 tokens
    assert chunker.clock.observed == 1 and chunker.clock.work > 1.0


def test_create_chunker_by_name_and_errors() -> None:
    assert isinstance(create_chunker("fixed", max_tokens=8, chunk_tokens=4, cost=None,
                                     target_step_s=1.0, min_prefill_tokens=1), FixedChunker)
    with pytest.raises(ValueError, match="cost model"):
        create_chunker("adaptive", max_tokens=8, chunk_tokens=4, cost=None, target_step_s=1.0,
                       min_prefill_tokens=1)
    with pytest.raises(ValueError, match="chunking"):
        create_chunker("dynamic", max_tokens=8, chunk_tokens=4, cost=None, target_step_s=1.0,
                       min_prefill_tokens=1)


def test_step_clock_learns_the_fixed_part_then_the_work() -> None:
    clock = StepClock(alpha=0.5)
    for _ in range(40):  # decode-only steps run at twice the estimate
        clock.observe(0.01, 0.0, 0.02)
    assert clock.fixed == pytest.approx(2.0, rel=1e-3)
    assert clock.work == 1.0
    for _ in range(40):  # prefill work at half the estimate, after the fixed part
        clock.observe(0.01, 0.1, 0.02 + 0.05)
    assert clock.work == pytest.approx(0.5, rel=1e-3)
    assert clock.seconds(0.01, 0.1) == pytest.approx(0.07, rel=1e-3)


def test_step_clock_is_not_thrown_by_one_stall_and_stays_bounded() -> None:
    clock = StepClock(alpha=0.5)
    clock.observe(0.01, 0.0, 100.0)  # one pause of 10,000x: moved by at most half of 4x
    assert clock.fixed == pytest.approx(2.0)
    for _ in range(200):
        clock.observe(0.01, 0.0, 1e4)
    assert clock.fixed == pytest.approx(LIMIT)
    clock.observe(0.0, 0.0, 1.0)  # nothing estimated: nothing learned
    clock.observe(0.01, 0.0, 0.0)
    assert clock.fixed == pytest.approx(LIMIT)
    with pytest.raises(ValueError, match="alpha"):
        StepClock(alpha=0.0)


def test_adaptive_sizes_chunks_by_what_its_steps_really_took() -> None:
    chunker = AdaptiveChunker(4096, _cost(), target_step_s=0.05, min_prefill_tokens=1)
    assert chunker.split([100] * 10, [(0, 1000)]) == [30]  # the model: 30 ms left, 1 ms each
    for _ in range(400):  # decode-only steps take what the model says...
        chunker.split([100] * 10, [])
        chunker.observe(0.02)
        n = chunker.split([100] * 10, [(0, 1000)])[0]  # ...prefill tokens take twice as long
        chunker.observe(0.02 + 2 * n * 1e-3)
    assert chunker.clock.fixed == pytest.approx(1.0, rel=1e-3)
    assert chunker.clock.work == pytest.approx(2.0, rel=1e-2)
    assert chunker.split([100] * 10, [(0, 1000)]) == [15]
    chunker.observe(0.05)
    assert FixedChunker(64, 32).split([1], [(0, 100)]) == [31]  # fixed has nothing to learn

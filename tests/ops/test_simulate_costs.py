"""The simulator's arithmetic: hand-computed TTFTs on a three-request trace."""

from __future__ import annotations

import pytest

from asymcache.cacheserver.policy.cost import CostModel, TierLink
from asymcache.ops.sim.config import RunSpec, TierSpec
from asymcache.ops.sim.replay import Replay
from asymcache.ops.sim.trace import Request, Trace

# recompute(p, n) = n * 1e-3 + n * (p + n/2) * 1e-5; a pass costs 0.01, a segment 0.002;
# a 4-token block is 4000 bytes and loads from CPU in 1e-3 + 4000 / 1e6 = 0.005 s.
COST = CostModel(device="test", model="test", kv_bytes_per_token=1000, linear_s_per_token=1e-3,
                 attn_s_per_token_position=1e-5, pass_s=0.01, segment_s=0.002,
                 load=(TierLink("cpu", 1e6, 1e-3),))


def rc(p: int, n: int) -> float:
    return n * 1e-3 + n * (p + n / 2) * 1e-5


def three_requests() -> Trace:
    """r0 fills the GPU with 1, 2, 3; r1 evicts block 1 (LRU); r2 needs 1, 2, 3, 4."""
    return Trace("hand", 4, [
        Request(0.0, (1, 2, 3), 13),
        Request(1.0, (7, 8), 9),
        Request(2.0, (1, 2, 3, 4), 17),
    ])


def replay(semantics: str, tiers: tuple[TierSpec, ...]) -> Replay:
    rp = Replay(three_requests(), COST, RunSpec("lru", semantics, tiers))
    rp.run()
    return rp


R0 = 0.01 + rc(0, 4) + rc(4, 4) + rc(8, 4) + rc(12, 1)
R1 = 0.01 + rc(0, 4) + rc(4, 4) + rc(8, 1)


def test_prefix_reuse_recomputes_everything_behind_the_first_hole() -> None:
    rp = replay("prefix", (TierSpec("gpu", 4),))
    r2 = 0.01 + rc(0, 4) + rc(4, 4) + rc(8, 4) + rc(12, 4) + rc(16, 1)
    assert rp.stats.ttft.tolist() == pytest.approx([R0, R1, r2])
    assert rp.stats.hits["gpu"] == 0
    assert rp.stats.tokens_recomputed == 13 + 9 + 17


def test_msa_reuse_recomputes_only_the_holes_and_pays_one_more_segment() -> None:
    rp = replay("msa", (TierSpec("gpu", 4),))
    r2 = 0.01 + rc(0, 4) + rc(12, 4) + rc(16, 1) + 0.002
    assert rp.stats.ttft.tolist() == pytest.approx([R0, R1, r2])
    assert rp.stats.hits["gpu"] == 2
    assert rp.stats.row()["gpu_hit_ratio"] == pytest.approx(2 / 9, abs=1e-6)
    assert rp.stats.tokens_recomputed == 13 + 9 + 9


def test_a_cpu_copy_is_loaded_under_prefix_but_recomputed_where_that_is_cheaper() -> None:
    tiers = (TierSpec("gpu", 4), TierSpec("cpu", 8))
    prefix = replay("prefix", tiers)
    # block 1 went to CPU when r1 evicted it: prefix reuse must load it (0.005 s) ...
    assert prefix.stats.ttft[2] == pytest.approx(0.01 + 0.005 + rc(12, 4) + rc(16, 1))
    assert prefix.stats.hits == {"gpu": 2, "cpu": 1}
    assert prefix.stats.bytes_loaded == 4000
    # ... while MSA recomputes it, as rc(0, 4) = 0.00408 < 0.005
    msa = replay("msa", tiers)
    assert msa.stats.ttft[2] == pytest.approx(0.01 + rc(0, 4) + rc(12, 4) + rc(16, 1) + 0.002)
    assert msa.stats.bytes_loaded == 0
    # demotions to CPU: block 1 (by r1), then 7 and 8 to make room for 1 and 4 (by r2)
    assert msa.stats.bytes_written["cpu"] == 3 * 4000
    assert msa.stats.evictions == {"gpu": 3, "cpu": 0}


def test_the_fifo_queue_adds_waiting_time_to_ttft() -> None:
    trace = Trace("q", 4, [Request(0.0, (), 1), Request(0.001, (), 1)])
    rp = Replay(trace, COST, RunSpec("lru", "msa", (TierSpec("gpu", 1),), queue=True))
    stats = rp.run()
    one = 0.01 + rc(0, 1)
    assert stats.ttft.tolist() == pytest.approx([one, one])
    assert stats.ttft_queue.tolist() == pytest.approx([one, 2 * one - 0.001])

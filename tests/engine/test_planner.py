"""Segment planner: per-block actions under none / prefix / msa reuse, and the todo ranges."""

from __future__ import annotations

from asymcache.cacheserver.policy.cost import CostModel, TierLink
from asymcache.engine.planner import (
    MISS,
    Location,
    PlanInputs,
    plan_blocks,
    remote_may_pay,
    todo_ranges,
    with_remote_load,
)
from asymcache.engine.request import Action

R, FC, FD, RC, NEW = (Action.RESIDENT, Action.FETCH_CPU, Action.FETCH_DISK, Action.RECOMPUTE,
                      Action.NEW)
GPU, CPU, DISK = Location("gpu", 0), Location("cpu", 3), Location("disk")


def _inputs(reuse: str, fetch_tiers: tuple[str, ...] = ("cpu", "disk")) -> PlanInputs:
    return PlanInputs(reuse=reuse, block_size=4, bytes_per_block=1000, fetch_tiers=fetch_tiers)


def _cost(disk_latency_s: float = 0.0, segment_s: float = 0.0) -> CostModel:
    """Recomputing 4 tokens at position p costs 4·(1 + (p + 2)·0.1) s; loads cost latency."""
    return CostModel(
        device="test", model="test", kv_bytes_per_token=250, linear_s_per_token=1.0,
        attn_s_per_token_position=0.1, pass_s=0.0, segment_s=segment_s,
        load=(TierLink("cpu", 1e12, 0.0), TierLink("disk", 1e12, disk_latency_s)),
    )


def test_msa_reuses_every_found_block_and_recomputes_holes() -> None:
    found = [GPU, MISS, CPU, MISS, DISK, MISS]
    actions = plan_blocks(found, 26, _inputs("msa"), _cost())
    assert actions == [R, RC, FC, RC, FD, NEW]
    assert todo_ranges(actions, 26, 4) == [[4, 8], [12, 16], [20, 26]]


def test_prefix_stops_at_the_first_hole() -> None:
    found = [GPU, CPU, MISS, GPU, MISS]
    assert plan_blocks(found, 21, _inputs("prefix"), _cost()) == [R, FC, RC, RC, NEW]


def test_none_computes_everything_as_new() -> None:
    assert plan_blocks([GPU, CPU], 9, _inputs("none"), _cost()) == [NEW, NEW]


def test_the_block_holding_the_last_token_is_always_computed() -> None:
    actions = plan_blocks([GPU, GPU], 8, _inputs("msa"), _cost())
    assert actions == [R, RC]
    assert todo_ranges(actions, 8, 4) == [[4, 8]]


def test_a_disk_block_at_position_zero_is_recomputed_when_loading_is_dearer() -> None:
    # block 0 recomputes in 4·(1 + 0.2) = 4.8 s, block 1 in 4·(1 + 0.6) = 6.4 s; disk costs 5 s
    actions = plan_blocks([DISK, DISK, MISS], 13, _inputs("msa"), _cost(disk_latency_s=5.0))
    assert actions == [RC, FD, NEW]


def test_splitting_a_reused_run_is_charged_one_segment() -> None:
    # block 1 recomputes in 6.4 s and its load costs 6.5 s: without the segment charge it would
    # be recomputed; with 0.2 s per extra segment, loading wins.
    found = [GPU, Location("disk"), GPU, MISS]
    assert plan_blocks(found, 17, _inputs("msa"), _cost(6.5))[1] == RC
    assert plan_blocks(found, 17, _inputs("msa"), _cost(6.5, segment_s=0.2))[1] == FD


def test_tiers_outside_fetch_tiers_count_as_found_but_are_recomputed() -> None:
    actions = plan_blocks([CPU, GPU, MISS], 12, _inputs("msa", fetch_tiers=()), _cost())
    assert actions == [RC, R, NEW]


REMOTE = Location("remote")
FR = Action.FETCH_REMOTE
ALL_TIERS = ("cpu", "disk", "remote")


def test_remote_blocks_are_fetched_when_loading_beats_recomputing_at_their_position() -> None:
    # remote loads cost 5 s: block 0 (4.8 s to recompute) is computed, block 1 (6.4 s) fetched
    cost = with_remote_load(_cost(), (5.0, 1e12))
    actions = plan_blocks([REMOTE, REMOTE, MISS], 13, _inputs("msa", ALL_TIERS), cost)
    assert actions == [RC, FR, NEW]
    assert plan_blocks([REMOTE, MISS], 9, _inputs("msa"), cost) == [RC, NEW]  # not fetched from


def test_the_remote_load_figures_price_only_a_cost_model_without_its_own() -> None:
    cost = with_remote_load(_cost(), (0.5, 2000.0))
    assert cost.load_cost("remote", 1000) == 0.5 + 1000 / 2000.0
    own = with_remote_load(cost, (9.0, 1.0))
    assert own.load_cost("remote", 1000) == 1.0  # its own figures win
    assert with_remote_load(_cost(), None) == _cost()


def test_the_remote_tier_is_asked_only_when_a_load_from_it_could_pay() -> None:
    msa = _inputs("msa", ALL_TIERS)
    # 13 tokens: the deepest reusable block is block 2 (position 8), 4·(1 + 1.0) = 8 s to redo
    assert remote_may_pay(13, msa, with_remote_load(_cost(), (7.9, 1e12)))
    assert not remote_may_pay(13, msa, with_remote_load(_cost(), (8.1, 1e12)))
    assert remote_may_pay(13, msa, _cost())  # no figures yet: asked, as loads are assumed cheap
    assert remote_may_pay(13, _inputs("prefix", ALL_TIERS), with_remote_load(_cost(), (99, 1)))
    assert not remote_may_pay(13, _inputs("msa"), _cost())  # remote is not a fetch tier
    assert not remote_may_pay(4, msa, _cost())  # one block, holding the last token

"""Belady over due times (the belady-bound daemon's oracle): a due use stays pending while its
request queues, until the daemon sees the key used or the lag passes."""

from __future__ import annotations

from asymcache.cacheserver.policy import BlockInfo
from asymcache.cacheserver.policy.belady import BeladyPolicy, DueTimeOracle


def _info(key: str, position: int = 0) -> BlockInfo:
    return BlockInfo(key, None, position, 16, 4096)


def _policy(oracle: DueTimeOracle, tier: str = "cpu", *keys: str) -> BeladyPolicy:
    policy = BeladyPolicy(len(keys), oracle=oracle, semantics="msa", tier=tier)
    for i, key in enumerate(keys):
        policy.insert(_info(key, i), 0.0)
    return policy


def test_a_queued_request_keeps_its_blocks_until_the_lag_passes() -> None:
    oracle = DueTimeOracle({"a": [10.0, 100.0], "b": [20.0]}, lag_s=5.0)
    assert oracle.next_use("a", 12.0) == 10.0  # due 2 s ago, not served yet: pending
    policy = _policy(oracle, "cpu", "a", "b")
    assert policy.evict(12.0) == "b"  # "a" is needed now (its request waits), "b" at 20
    oracle2 = DueTimeOracle({"a": [10.0, 100.0], "b": [20.0]}, lag_s=5.0)
    assert _policy(oracle2, "cpu", "a", "b").evict(16.0) == "a"  # lapsed: next use at 100


def test_a_use_seen_in_one_tier_moves_the_block_on_in_every_tier() -> None:
    oracle = DueTimeOracle({"a": [10.0, 100.0], "b": [50.0]}, lag_s=30.0)
    cpu = _policy(oracle, "cpu", "a", "b")
    gpu = BeladyPolicy(4, oracle=oracle, semantics="msa", tier="gpu")
    gpu.insert(_info("a"), 11.0)  # an engine committed "a": its request (due 10) ran
    assert oracle.next_use("a", 11.0) == 100.0
    assert cpu.evict(12.0) == "a"  # the CPU copy is re-read: needed at 100, "b" at 50


def test_an_access_consumes_the_due_use_and_a_cpu_insert_does_not() -> None:
    oracle = DueTimeOracle({"a": [10.0, 40.0], "b": [30.0]}, lag_s=60.0)
    policy = _policy(oracle, "cpu", "a", "b")  # CPU inserts (demotions) are not uses
    assert oracle.next_use("a", 12.0) == 10.0
    policy.access("a", 12.0)  # a LOOKUP hit: the request due at 10 is served
    assert policy.evict(13.0) == "a"  # next use 40, after "b"'s 30


def test_admission_bypasses_a_block_needed_later_than_every_resident_one() -> None:
    oracle = DueTimeOracle({"a": [10.0], "b": [20.0], "c": [90.0], "d": [5.0]}, lag_s=1.0)
    policy = _policy(oracle, "cpu", "a", "b")
    assert not policy.admit(_info("c"), 1.0)
    assert policy.admit(_info("d"), 1.0)

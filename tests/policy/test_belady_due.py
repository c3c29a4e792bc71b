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


def test_a_visit_consumes_one_use_not_the_next_turn_due_before_it() -> None:
    # turn 1 of a session is due at 10, turn 2 at 11 (its arrival time; the driver sends it
    # only after turn 1's answer): turn 1 is served at 12, and turn 2 still needs "a"
    oracle = DueTimeOracle({"a": [10.0, 11.0, 90.0], "b": [50.0]}, lag_s=30.0)
    policy = _policy(oracle, "cpu", "a", "b")
    policy.access("a", 12.0)
    assert oracle.next_use("a", 12.0) == 11.0
    assert policy.evict(13.0) == "b"
    policy.access("a", 20.0)  # turn 2 served
    assert oracle.next_use("a", 20.0) == 90.0
    policy.access("a", 21.0)  # a visit with no use due: nothing more is consumed
    assert oracle.next_use("a", 21.0) == 90.0


def test_a_visit_skips_lapsed_uses() -> None:
    oracle = DueTimeOracle({"a": [10.0, 30.0, 40.0]}, lag_s=5.0)
    oracle.used("a", 36.0)  # the use due at 10 lapsed unseen; this visit is the one due at 30
    assert oracle.next_use("a", 36.0) == 40.0


def test_a_commit_of_a_block_held_below_is_the_same_visit_as_its_lookup() -> None:
    from asymcache.cacheserver.index import BlockRecord

    def record(key: str, where: int) -> BlockRecord:
        return BlockRecord(key.encode(), b"ns", None, 0, 16, 4096, "l", where=where)

    oracle = DueTimeOracle({b"f": [10.0, 11.0, 90.0], b"c": [10.0, 11.0, 90.0]}, lag_s=30.0)
    cpu = BeladyPolicy(4, oracle=oracle, semantics="msa", tier="cpu")
    gpu = BeladyPolicy(4, oracle=oracle, semantics="msa", tier="gpu")
    cpu.insert(record("f", 1), 0.0)
    cpu.access(b"f", 12.0)  # LOOKUP found "f" in the CPU tier: the request due at 10
    gpu.insert(record("f", 1), 12.1)  # fetched into the engine's pool: the same request
    assert oracle.next_use(b"f", 12.1) == 11.0
    gpu.insert(record("c", 0), 12.1)  # computed (no level held it): this is its visit
    assert oracle.next_use(b"c", 12.1) == 11.0
    gpu.insert(record("c", 0), 15.0)  # the next request computed it again
    assert oracle.next_use(b"c", 15.0) == 90.0


def test_admission_bypasses_a_block_needed_later_than_every_resident_one() -> None:
    oracle = DueTimeOracle({"a": [10.0], "b": [20.0], "c": [90.0], "d": [5.0]}, lag_s=1.0)
    policy = _policy(oracle, "cpu", "a", "b")
    assert not policy.admit(_info("c"), 1.0)
    assert policy.admit(_info("d"), 1.0)

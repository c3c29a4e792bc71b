"""Client signals in the pure policies: bands (ended first, retained last), retention lapsing,
shared blocks, the session book's bound, and the reuse classes by session kind."""

from __future__ import annotations

import pytest

from asymcache.cacheserver.policy import BlockInfo, create_policy
from asymcache.cacheserver.policy.asym import AsymConfig
from asymcache.cacheserver.policy.reuse import HISTORIES, KIND_PRIVATE, ReuseEstimator
from asymcache.cacheserver.policy.sessions import SessionBook


def _policy(name: str, capacity: int = 4, **kw: object):
    extra = {"config": AsymConfig(select=False)} if name == "asym" else {}
    pol = create_policy(name, capacity, semantics="msa", tier="cpu", signals=True,
                        **{**extra, **kw})
    book = SessionBook()
    pol.set_sessions(book)
    return pol, book


def _fill(pol, n: int = 4) -> list[BlockInfo]:
    infos = [BlockInfo(k, None, 0, 16, 1024) for k in range(n)]
    for t, info in enumerate(infos):
        pol.insert(info, float(t))
    return infos


@pytest.mark.parametrize("name", ["lru_signals", "asym"])
def test_an_ended_sessions_blocks_go_first_and_retained_blocks_last(name: str) -> None:
    pol, book = _policy(name)
    infos = _fill(pol)
    infos[3].session = "s"  # the newest block, of session s
    pol.resignal(3, 4.0)
    infos[0].retain_until = 100.0  # the oldest block, retained
    pol.resignal(0, 4.0)
    book.end("s")
    pol.session_ended("s", 5.0)
    order = pol.victims(4, 6.0)
    assert order[0] == 3 and order[-1] == 0 and sorted(order) == [0, 1, 2, 3]
    if name == "lru_signals":
        assert order == [3, 1, 2, 0]  # recency within the middle band


@pytest.mark.parametrize("name", ["lru_signals", "asym"])
def test_retention_lapses_by_itself_and_a_shared_block_outlives_its_sessions_end(
        name: str) -> None:
    pol, book = _policy(name)
    infos = _fill(pol)
    infos[0].retain_until = 10.0
    pol.resignal(0, 4.0)
    infos[1].session, infos[1].shared = "s", True  # used by s and another session
    pol.resignal(1, 4.0)
    book.end("s")
    pol.session_ended("s", 5.0)
    assert pol.evict(20.0) == 0  # its retention lapsed at 10: the oldest again
    assert pol.evict(20.0) == 1  # shared: ranked by use, not dropped first


def test_a_policy_without_signals_ignores_them() -> None:
    pol = create_policy("lru_tail", 4, semantics="msa", tier="cpu")
    infos = _fill(pol)
    infos[3].session = "s"
    pol.resignal(3, 4.0)
    pol.session_ended("s", 5.0)
    assert pol.victims(4, 6.0) == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="does not rank by client signals"):
        create_policy("pensieve", 4, signals=True)


def test_the_session_book_forgets_the_oldest_ended_session_past_its_bound() -> None:
    book = SessionBook(max_ended=2)
    for s in ("a", "b", "c"):
        book.end(s)
    assert (book.is_ended("a"), book.is_ended("b"), book.is_ended("c"), len(book)) == (
        False, True, True, 2)
    assert book.revive("b") and not book.is_ended("b") and not book.revive("zzz")


def test_a_use_classed_again_by_its_session_kind_moves_its_count() -> None:
    est = ReuseEstimator(history=16)
    rec = est.observe(None, 0.0)
    moved = est.reclass(rec, KIND_PRIVATE)
    assert moved.cls == rec.cls + KIND_PRIVATE * HISTORIES
    assert est.table()[moved.cls][0] == 1.0 and rec.cls not in est.table()
    again = est.observe(moved, 5.0, None, KIND_PRIVATE)  # the private block came back
    assert again.cls >= KIND_PRIVATE * HISTORIES
    assert est.probability(moved.cls) > est.probability(rec.cls)  # followed once of one

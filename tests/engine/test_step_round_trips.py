"""The engine's round trips to the daemon per step (real daemon process, real CPU tier): the CPU
copies of a step (demotions and write-through) are confirmed by one COMMIT, the requests that
finish in a step release their leases with one RELEASE after the COMMIT of their last blocks,
and a copy made under an earlier registration is never confirmed (DESIGN.md §6: an unconfirmed
CPU slot is never readable, and a slot number means something only in its registration)."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from asymcache.cacheserver.protocol import Where
from asymcache.engine.cache_link import CacheLink
from asymcache.engine.client import CacheClient
from asymcache.engine.metrics import STEP_PHASES
from tests.cacheserver.daemon_fixtures import BLOCK_BYTES, LAYOUT, make_refs, payload
from tests.engine.engine_fixtures import assert_same, corpus_ids, greedy, make_llm, reference

LEN, OUT, B = 200, 8, 16


class CallLog:
    """Stands in for a link's client: forwards every call, and records ``(step, op, tier)`` of
    the requests that change the daemon's state."""

    OPS = frozenset({"lookup", "allocate", "reserve_cpu", "commit", "release", "promote"})

    def __init__(self, client: Any) -> None:
        self._client = client
        self.step = 0
        self.calls: list[tuple[int, str, str]] = []
        self.leased: list[bool | None] = []  # COMMIT's lease flag, per call

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in self.OPS:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((self.step, name, kwargs.get("tier", "")))
            self.leased.append(bool(kwargs.get("lease")) if name == "commit" else None)
            return attr(*args, **kwargs)

        return call

    def per_step(self, op: str, tier: str = "") -> Counter[int]:
        return Counter(s for s, o, t in self.calls if o == op and t == tier)


def _run(llm: Any, proxy: Any, prompts: list[list[int]], out: int = OUT,
         observe: Callable[[dict[str, float]], None] | None = None) -> list[Any]:
    """Run ``prompts`` to the end with ``proxy`` in front of the link's client (a
    :class:`CallLog`'s ``step`` set to each step's number); ``observe`` gets the engine's
    phase sums from before each step, after it. Returns the final outputs in prompt order."""
    engine = llm.engine
    engine.kv.link.client = proxy
    for i, ids in enumerate(prompts):
        engine.add_request(str(i), ids, greedy(out))
    outs: dict[str, Any] = {}
    for step in range(1000):  # bounded: a few prompts of 13 blocks take far fewer steps
        if not engine.has_unfinished:
            break
        if isinstance(proxy, CallLog):
            proxy.step = step
        before = dict(engine.metrics.phase_seconds)
        outs.update({o.request_id: o for o in engine.step() if o.finished})
        if observe is not None:
            observe(before)
    engine.kv.link.client = proxy._client
    return [outs[str(i)] for i in range(len(prompts))]


def _run_logged(llm: Any, prompts: list[list[int]], out: int = OUT
                ) -> tuple[list[Any], CallLog]:
    log = CallLog(llm.engine.kv.link.client)
    return _run(llm, log, prompts, out), log


def test_a_steps_cpu_copies_are_confirmed_by_one_commit_and_stay_lossless(daemons) -> None:
    prompts = corpus_ids(make_llm(reuse="none"), 3, LEN, offset=11)
    want = reference(prompts, OUT)
    daemons.start()
    # 3 prompts x 13 blocks do not fit 30 slots: ALLOCATE names victims, demoted to CPU slots
    # (no write-through: no victim is in the CPU tier already)
    with make_llm(cache_endpoint=daemons.endpoint, num_gpu_blocks=30,
                  write_through=False) as llm:
        outs, log = _run_logged(llm, prompts)
        assert_same(outs, want)
        cpu_commits = log.per_step("commit", "cpu")
        assert cpu_commits and max(cpu_commits.values()) == 1  # one per step, at most
        victim_steps = log.per_step("allocate")
        assert victim_steps  # the pool was full: victims named, demoted in those steps
        gpu_commits = log.per_step("commit", "gpu")
        assert max(gpu_commits.values()) == 1
        assert len(gpu_commits) < len({s for s, _, _ in log.calls})  # some steps wait
        with CacheClient(daemons.endpoint, engine_id="w", heartbeat=False) as w:
            stats = w.stats()
            assert stats["tiers"]["gpu"]["demotions"] > 0
            assert stats["leases"] == 0  # every lease went with its request's RELEASE
            keys = [k for o in outs for k in _keys(llm, o.prompt_token_ids)]
        where = llm.engine.kv.link.client.lookup(keys, lease=False).where
        assert Where.MISS not in where  # every block is held somewhere the daemon knows
        # the demoted blocks come back from the CPU tier, with the no-cache tokens
        again = llm.generate(prompts[:1], greedy(OUT))[0]
        assert again.token_ids == want[0]


def _keys(llm: Any, ids: list[int]) -> list[bytes]:
    from asymcache.cacheserver.blocks import ROOT_PARENT, block_key

    ns = llm.engine.kv.namespace("")
    keys: list[bytes] = []
    for i in range(len(ids) // B):
        keys.append(block_key(ns, keys[-1] if keys else ROOT_PARENT, ids[i * B:(i + 1) * B]))
    return keys


def test_a_finished_request_commits_its_last_block_leased_then_releases_once(daemons) -> None:
    out = 1  # the prefill's last step completes block 13 (209 tokens) and finishes it
    prompts = corpus_ids(make_llm(reuse="none"), 1, LEN + 9, offset=5)
    want = reference(prompts, out)
    daemons.start()
    with make_llm(cache_endpoint=daemons.endpoint) as llm:
        outs, log = _run_logged(llm, prompts, out)
        assert_same(outs, want)
        releases = log.per_step("release")
        assert list(releases.values()) == [1]
        (step,) = releases
        ops = [(o, t, lease) for (s, o, t), lease in zip(log.calls, log.leased, strict=True)
               if s == step]
        assert ops[:2] == [("commit", "gpu", True), ("release", "", None)]
        with CacheClient(daemons.endpoint, engine_id="w", heartbeat=False) as w:
            assert w.stats()["leases"] == 0
            assert w.stats()["tiers"]["gpu"]["blocks"] == (LEN + 9) // B


def test_a_copy_made_under_an_earlier_registration_is_never_confirmed(daemons) -> None:
    daemons.start(disk_bytes=0)
    old, new = make_refs(2, start=70_000)
    link = CacheLink(daemons.endpoint, "eng", "test-model", LAYOUT, 4, timeout_s=5)
    try:
        link.tick(lambda: [])
        (slot,) = link.reserve_cpu([old])
        (view,) = link.reserved_views([(old.key, slot)])
        view[:BLOCK_BYTES] = payload(old)
        copied_in = link.generation
        link.client.hello("test-model", LAYOUT, gpu_slots=4)  # registered again meanwhile
        assert link.confirm_cpu([(old, slot, copied_in)]) == 0
        assert link.stale_slots == 1
        (slot2,) = link.reserve_cpu([new])
        (view2,) = link.reserved_views([(new.key, slot2)])
        view2[:BLOCK_BYTES] = payload(new)
        assert link.confirm_cpu([(new, slot2, link.generation)]) == 1
        where = link.client.lookup([old.key, new.key], lease=False).where
        assert where == [Where.MISS, Where.CPU]
        assert bytes(link.client.get([new.key])[0]) == payload(new)
    finally:
        link.close()


def test_decodes_growing_in_one_step_get_their_slots_from_one_allocate(daemons) -> None:
    out = 12  # 200-token prompts: both need a 14th slot at the same decode step
    first, *pair = corpus_ids(make_llm(reuse="none"), 3, LEN, offset=17)
    want = reference(pair, out)
    daemons.start()
    # one 512-token chunk prefills both in the same step: they decode in lockstep
    with make_llm(cache_endpoint=daemons.endpoint, num_gpu_blocks=30, chunk_tokens=512) as llm:
        llm.generate([first], greedy(out))  # leaves 13 idle blocks in a 30-slot pool
        outs, log = _run_logged(llm, pair, out)
        assert_same(outs, want)
        allocates = log.per_step("allocate")
        # the pair's admission and their growth: one ALLOCATE each at most (victims named
        # ahead, KVConfig.victim_stock, may serve either without one)
        assert len(allocates) <= 2 and set(allocates.values()) <= {1}
        with CacheClient(daemons.endpoint, engine_id="w", heartbeat=False) as w:
            assert w.stats()["leases"] == 0


class Hooked:
    """Stands in for a link's client: forwards every call; ``hook(name, args)`` runs before
    each call of a method named in ``names``."""

    def __init__(self, client: Any, names: set[str], hook: Callable[[str, tuple], None]) -> None:
        self._client, self._names, self._hook = client, names, hook

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in self._names:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._hook(name, args)
            return attr(*args, **kwargs)

        return call


DELAY_S = 0.05  # how much slower the daemon answers each LOOKUP below


def test_step_time_is_split_into_phases_and_a_slow_daemon_shows_in_admission(daemons) -> None:
    prompts = corpus_ids(make_llm(reuse="none"), 2, LEN, offset=3)
    want = reference(prompts, OUT)
    daemons.start()
    with make_llm(cache_endpoint=daemons.endpoint) as llm:
        engine = llm.engine
        lookups = []

        def slower(name: str, args: tuple) -> None:  # as from a daemon that answers slowly
            lookups.append(args)
            time.sleep(DELAY_S)

        slow = Hooked(engine.kv.link.client, {"lookup"}, slower)
        steps = []  # (phase seconds of each step, its StepInfo)

        def observe(before: dict[str, float]) -> None:
            now = engine.metrics.phase_seconds
            steps.append(({p: now[p] - before[p] for p in STEP_PHASES}, engine.last_step))

        outs = _run(llm, slow, prompts, observe=observe)
    assert_same(outs, want)
    for phases, info in steps:  # the phases cover the step's wall time, nothing twice
        assert abs(sum(phases.values()) - info.seconds) < 5e-3, (phases, info)
        assert (phases["model"] > 0) == (info.seqs > 0)
    assert [p["settle"] > 0 for p, _ in steps] == [False] * (len(steps) - 1) + [True]
    assert lookups  # the prompts' admissions looked up their blocks
    admit = sum(p["admit"] for p, _ in steps)
    assert admit >= len(lookups) * DELAY_S  # the daemon's delay is admission's


@pytest.mark.parametrize("stock", [0, 16])
def test_victims_are_named_ahead_only_with_a_victim_stock(daemons, stock: int) -> None:
    prompts = corpus_ids(make_llm(reuse="none"), 3, LEN, offset=23)
    want = reference(prompts, OUT)
    daemons.start()
    # 3 prompts x 13 blocks do not fit 30 slots: the pool runs full and needs victims
    with make_llm(cache_endpoint=daemons.endpoint, num_gpu_blocks=30,
                  victim_stock=stock) as llm:
        ahead = []  # one-way ALLOCATEs: victims named ahead of need
        log = Hooked(llm.engine.kv.link.client, {"notify"},
                     lambda name, args: ahead.append(args[0].OP == "allocate"))
        assert_same(_run(llm, log, prompts), want)
    assert any(ahead) == (stock > 0)

"""Lossless serving without a daemon: cold, full hit, holes, tenants, preemption, stopping."""

from __future__ import annotations

import pytest

from asymcache.engine.sampling import SamplingParams
from tests.engine.engine_fixtures import assert_same, corpus_ids, greedy, make_llm, reference

B = 16


@pytest.fixture(scope="module")
def llm():
    engine = make_llm(num_gpu_blocks=96)
    yield engine
    engine.close()


@pytest.fixture(scope="module")
def prompts(llm):
    return corpus_ids(llm, 3, 200)


@pytest.fixture(scope="module")
def ref(prompts):
    return reference(prompts, 24)


def test_cold_then_full_hit_equal_the_no_cache_run(llm, prompts, ref) -> None:
    cold = llm.generate(prompts, greedy(24))
    assert_same(cold, ref)
    assert [o.stats.new_tokens for o in cold] == [200] * 3
    hot = llm.generate(prompts, greedy(24))
    assert_same(hot, ref)
    assert [o.stats.resident_tokens for o in hot] == [192] * 3  # 12 full blocks; 8 tokens new
    assert [o.stats.new_tokens for o in hot] == [8] * 3


def test_holes_in_the_middle_are_recomputed_and_outputs_stay_equal(llm, prompts, ref) -> None:
    llm.generate(prompts[:1], greedy(24))
    kv = llm.engine.kv
    keys = _prompt_keys(llm, prompts[0])
    for i in (2, 3, 7):
        slot = kv.blocks.lookup(keys[i])
        assert slot is not None and kv.blocks.evict(slot) == keys[i]
        kv.blocks.release([slot])
    out = llm.generate(prompts[:1], greedy(24))[0]
    assert out.token_ids == ref[0]
    assert (out.stats.resident_tokens, out.stats.recomputed_tokens) == (9 * B, 3 * B)


def test_prefix_reuse_recomputes_everything_after_the_first_hole(prompts, ref) -> None:
    llm = make_llm(reuse="prefix")
    llm.generate(prompts[:1], greedy(24))
    keys = _prompt_keys(llm, prompts[0])
    slot = llm.engine.kv.blocks.lookup(keys[4])
    llm.engine.kv.blocks.evict(slot)
    llm.engine.kv.blocks.release([slot])
    out = llm.generate(prompts[:1], greedy(24))[0]
    llm.close()
    assert out.token_ids == ref[0]
    assert (out.stats.resident_tokens, out.stats.recomputed_tokens) == (4 * B, 8 * B)


def test_two_tenants_with_different_salts_share_nothing(llm, prompts, ref) -> None:
    a = llm.generate(prompts[1:2], greedy(24, cache_salt="tenant-a"))[0]
    b = llm.generate(prompts[1:2], greedy(24, cache_salt="tenant-b"))[0]
    a2 = llm.generate(prompts[1:2], greedy(24, cache_salt="tenant-a"))[0]
    assert a.token_ids == b.token_ids == a2.token_ids == ref[1]
    assert b.stats.resident_tokens == 0 and a2.stats.resident_tokens == 192


def test_preemption_under_a_full_pool_keeps_outputs_equal(prompts) -> None:
    long_prompts = [p[:100] for p in prompts]
    want = reference(long_prompts, 60)
    llm = make_llm(num_gpu_blocks=22, max_num_seqs=3)  # 3 × (100 + 60) tokens need 30 slots
    outs = llm.generate(long_prompts, greedy(60))
    preempted = llm.engine.metrics.preemptions._value.get()
    llm.close()
    assert_same(outs, want)
    assert preempted >= 1
    assert sum(o.stats.preemptions for o in outs) == preempted


def test_stop_strings_tokens_and_max_tokens(llm, prompts, ref) -> None:
    text = llm.tokenizer.decode(ref[0])
    stop = text[5:9]
    out = llm.generate(prompts[:1], greedy(24, stop=[stop]))[0]
    assert out.finish_reason == "stop" and out.text == text[: text.index(stop)]
    out = llm.generate(prompts[:1], greedy(24, stop_token_ids=[ref[0][3]]))[0]
    assert out.token_ids == ref[0][:4] and out.finish_reason == "stop"
    out = llm.generate(prompts[:1], greedy(5))[0]
    assert out.token_ids == ref[0][:5] and out.finish_reason == "length"


def test_seeded_sampling_is_the_same_alone_and_in_a_batch(llm, prompts) -> None:
    p = SamplingParams(temperature=0.8, top_p=0.9, seed=11, max_tokens=12)
    alone = llm.generate(prompts[:1], p)[0]
    other = SamplingParams(temperature=1.0, max_tokens=12, seed=1)
    batch = llm.generate([prompts[0], prompts[1], prompts[0]], [p, other, p])
    assert batch[0].token_ids == alone.token_ids
    assert batch[2].token_ids == alone.token_ids


def test_text_prompts_and_bad_prompts(llm) -> None:
    out = llm.generate("Once upon a time", SamplingParams(temperature=0.0, max_tokens=4))[0]
    assert len(out.token_ids) == 4 and out.prompt_token_ids[:1] == llm.tokenizer.encode("x")[:1]
    with pytest.raises(ValueError, match="maximum context length"):
        llm.generate([[1] * 10], SamplingParams(max_tokens=10**6))
    with pytest.raises(ValueError, match="token ids"):
        llm.generate([[1, 10**9]], SamplingParams())
    assert not llm.engine.has_unfinished


def _prompt_keys(llm, ids: list[int]) -> list[bytes]:
    from asymcache.cacheserver.blocks import block_keys

    return block_keys(llm.engine.kv.namespace(""), ids, B)


def test_a_ttl_pin_keeps_blocks_through_pressure_until_it_expires(prompts) -> None:
    llm = make_llm(num_gpu_blocks=30)
    now = [0.0]
    llm.engine.clock = lambda: now[0]
    llm.generate(prompts[:1], greedy(4, pin_ttl_s=100.0))
    llm.generate(prompts[1:3], greedy(4))  # 28 more slots: only unpinned blocks can go
    pinned = llm.generate(prompts[:1], greedy(4))[0]
    assert pinned.stats.resident_tokens == 192
    now[0] = 200.0  # the pin lapsed: the blocks compete again (least recently used first)
    llm.generate(prompts[1:3], greedy(4))
    later = llm.generate(prompts[:1], greedy(4))[0]
    llm.close()
    assert later.stats.resident_tokens < 192

"""The engine on the Triton kernels (interpreter mode on CPU, set by tests/conftest.py):
chunked prefill, a recomputed hole before resident blocks, and decode give the tokens of a
no-cache run on the torch path. Small on purpose: interpreted kernels take seconds per step."""

from __future__ import annotations

from asymcache.cacheserver.blocks import block_keys
from tests.engine.engine_fixtures import assert_same, corpus_ids, greedy, make_llm, reference


def test_triton_kernels_serve_exactly_the_no_cache_tokens() -> None:
    llm = make_llm(attn_backend="triton", chunk_tokens=24, num_gpu_blocks=16)
    prompts = corpus_ids(llm, 2, 40, offset=11)
    want = reference(prompts, 3)
    assert_same(llm.generate(prompts, greedy(3)), want)
    kv = llm.engine.kv
    key = block_keys(kv.namespace(""), prompts[0], 16)[0]
    slot = kv.blocks.lookup(key)
    assert kv.blocks.evict(slot) == key  # a hole at position 0, block 1 stays resident
    kv.blocks.release([slot])
    again = llm.generate(prompts, greedy(3))
    llm.close()
    assert_same(again, want)
    assert [(o.stats.resident_tokens, o.stats.recomputed_tokens) for o in again] == \
        [(16, 16), (32, 0)]

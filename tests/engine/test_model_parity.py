"""Logits of the paged model equal transformers' (the oracle) for random-weight models, in fp32.

Every way of feeding the same tokens must give the single full pass's logits: one pass, two
chunks, recomputed holes with the rest of the KV already in the pool (NaN in the holes until
rewritten), token-by-token decode, and two sequences packed in one step. Tolerance: maximum
absolute difference at most ``TOL`` times the largest reference logit (fp32 rounding only; the
observed difference is about 1e-6 of it).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from asymcache.engine.model import allocate_kv_pool, load_model
from asymcache.kernels.metadata import AttentionMetadata

TOL = 2e-5
BLOCK = 16
SMALL = dict(vocab_size=211, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
             initializer_range=0.1, rms_norm_eps=1e-6)
CONFIGS = {
    "llama": (LlamaForCausalLM, lambda: LlamaConfig(**SMALL)),
    "llama3-rope": (LlamaForCausalLM, lambda: LlamaConfig(**SMALL, rope_scaling={
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 32}, rope_theta=500000.0)),
    "llama-linear-bias": (LlamaForCausalLM, lambda: LlamaConfig(
        **SMALL, rope_scaling={"rope_type": "linear", "factor": 4.0}, attention_bias=True,
        mlp_bias=True)),
    "qwen2-tied": (Qwen2ForCausalLM, lambda: Qwen2Config(**SMALL, tie_word_embeddings=True)),
    "mistral": (MistralForCausalLM, lambda: MistralConfig(**SMALL, sliding_window=None,
                                                          head_dim=24)),
}


def make_hf_model(kind: str, folder: Path, seed: int = 0) -> torch.nn.Module:
    """A random-weight transformers model saved to ``folder``; norms and biases randomised too."""
    cls, config = CONFIGS[kind]
    torch.manual_seed(seed)
    hf = cls(config()).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.1)
    hf.save_pretrained(folder)
    return hf


def reference_logits(hf: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return hf(ids[None]).logits[0].float()


def step(model, pool, ids, positions, kv_len, table) -> torch.Tensor:
    """One forward step of one sequence: query ``positions``, KV ``[0, kv_len)``."""
    meta = AttentionMetadata.for_sequences([positions], [kv_len], [table], BLOCK)
    return model(ids[positions], meta, pool)


def assert_close(ours: torch.Tensor, ref: torch.Tensor) -> None:
    diff = float((ours - ref).abs().max())
    assert diff <= TOL * float(ref.abs().max()), f"max |diff| {diff:.3g}"


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def pair(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    hf = make_hf_model(request.param, folder)
    model, info = load_model(folder, "cpu", "float32")
    ids = torch.randint(0, SMALL["vocab_size"], (70,), generator=torch.Generator().manual_seed(1))
    return model, info, ids, reference_logits(hf, ids)


def scrambled_table(n: int) -> list[int]:
    """Physical blocks out of order, so that paging (not contiguity) is exercised."""
    return [(7 * i + 3) % 11 for i in range(n)]


def test_full_pass_matches_transformers(pair):
    model, info, ids, ref = pair
    pool = allocate_kv_pool(info, 11, BLOCK)
    ours = step(model, pool, ids, list(range(len(ids))), len(ids), scrambled_table(5))
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    assert_close(ours, ref)


def test_two_chunks_over_the_paged_pool_match_the_full_pass(pair):
    model, info, ids, ref = pair
    pool, table = allocate_kv_pool(info, 11, BLOCK), scrambled_table(5)
    first = step(model, pool, ids, list(range(37)), 37, table)
    second = step(model, pool, ids, list(range(37, 70)), 70, table)
    assert_close(torch.cat([first, second]), ref)


def test_recomputed_holes_with_resident_kv_match_the_full_pass(pair):
    model, info, ids, ref = pair
    pool, table = allocate_kv_pool(info, 11, BLOCK), scrambled_table(5)
    step(model, pool, ids, list(range(70)), 70, table)
    holes = list(range(16, 32)) + list(range(48, 64))  # blocks 1 and 3 lost
    tail = list(range(64, 70))
    for logical in (1, 3):
        pool[table[logical]] = float("nan")
    ours = step(model, pool, ids, holes + tail, 70, table)
    assert_close(ours, ref[holes + tail])


def test_holes_and_new_suffix_in_non_contiguous_segments_match(pair):
    model, info, ids, ref = pair
    pool, table = allocate_kv_pool(info, 11, BLOCK), scrambled_table(5)
    step(model, pool, ids, list(range(50)), 50, table)  # 50 tokens resident
    queries = [0, 1, 2, *range(20, 27), *range(50, 70)]  # three segments
    for p in queries[:10]:
        pool[table[p // BLOCK], :, :, p % BLOCK] = float("nan")
    ours = step(model, pool, ids, queries, 70, table)
    assert_close(ours, ref[queries])


def test_token_by_token_decode_matches_the_full_pass(pair):
    model, info, ids, ref = pair
    pool, table = allocate_kv_pool(info, 11, BLOCK), scrambled_table(5)
    rows = [step(model, pool, ids, list(range(40)), 40, table)]
    for p in range(40, 70):
        meta = AttentionMetadata.for_sequences([[p]], [p + 1], [table], BLOCK)
        assert meta.is_decode
        rows.append(model(ids[p:p + 1], meta, pool))
    assert_close(torch.cat(rows), ref)


def test_two_sequences_in_one_step_match_their_single_runs(pair):
    model, info, ids, ref = pair
    other = ids.flip(0)
    pool = allocate_kv_pool(info, 11, BLOCK)
    table_a, table_b = [0, 1, 2, 3, 4], [10, 9, 8, 7, 6]
    step(model, pool, other, list(range(69)), 69, table_b)
    meta = AttentionMetadata.for_sequences([list(range(70)), [69]], [70, 70],
                                           [table_a, table_b], BLOCK)
    packed = torch.cat([ids, other[69:]])
    index = torch.tensor([10, 69, 70])
    ours = model(packed, meta, pool, index)
    alone = step(model, allocate_kv_pool(info, 11, BLOCK), other, list(range(70)), 70, table_b)
    assert_close(ours[:2], ref[[10, 69]])
    assert_close(ours[2:], alone[69:])


def test_wrong_pool_shape_or_dtype_is_refused(pair):
    model, info, ids, _ = pair
    meta = AttentionMetadata.for_sequences([[0, 1]], [2], [[0]], BLOCK)
    bad = torch.zeros(4, info.num_layers + 1, 2, BLOCK, info.num_kv_heads, info.head_dim)
    with pytest.raises(ValueError, match="kv_pool must be"):
        model(ids[:2], meta, bad)
    with pytest.raises(ValueError, match="kv_pool must be"):
        model(ids[:2], meta, allocate_kv_pool(info, 4, BLOCK).double())
    with pytest.raises(ValueError, match="must match input_ids"):
        model(ids[:3], meta, allocate_kv_pool(info, 4, BLOCK))

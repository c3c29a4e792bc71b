"""The model on the Triton kernels (interpreter mode on this CPU) still matches transformers.

2 layers, 64 tokens: a full pass, then recomputed holes plus a new suffix over the pool, then
decode steps. Same tolerance as ``test_model_parity.py``. Slow-ish (the interpreter runs the
kernels in Python), so one Llama and one Qwen2 model only.
"""

from __future__ import annotations

import pytest
import torch

from asymcache.engine.model import allocate_kv_pool, load_model
from asymcache.kernels.metadata import AttentionMetadata
from tests.engine.test_model_parity import (
    BLOCK,
    SMALL,
    assert_close,
    make_hf_model,
    reference_logits,
    scrambled_table,
    step,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["llama3-rope", "qwen2-tied"])
def test_triton_kernels_match_transformers_on_full_holes_and_decode(kind, tmp_path):
    hf = make_hf_model(kind, tmp_path)
    model, info = load_model(tmp_path, "cpu", "float32", attn_backend="triton")
    ids = torch.randint(0, SMALL["vocab_size"], (64,), generator=torch.Generator().manual_seed(2))
    ref = reference_logits(hf, ids)
    pool, table = allocate_kv_pool(info, 11, BLOCK), scrambled_table(4)
    assert_close(step(model, pool, ids, list(range(60)), 60, table), ref[:60])
    pool[table[1]] = float("nan")  # block 1 lost: recompute it with the new tokens 60, 61
    queries = [*range(16, 32), 60, 61]
    assert_close(step(model, pool, ids, queries, 62, table), ref[queries])
    for p in (62, 63):
        meta = AttentionMetadata.for_sequences([[p]], [p + 1], [table], BLOCK)
        assert_close(model(ids[p:p + 1], meta, pool), ref[p:p + 1])

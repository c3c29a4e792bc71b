"""The torch (CPU) path against the float64 dense-mask reference, over the whole grid.

Grid: head dims 64/128/80/96 × block sizes 16/64 × GQA 1/4/8 × eight segment patterns, with
NaN in every slot a sequence does not own and shuffled block tables (see ``cases.py``).
Tolerances: ``cases.TOLERANCE`` (float32 2e-5, bfloat16 3e-2 absolute). The whole grid is
cheap here (about 300 cases in a few seconds), so all of it runs in CI, again with small
query-row chunks so that cutting keys per chunk and chunks at segment starts is exercised.
"""

from __future__ import annotations

import pytest
import torch

from asymcache.kernels.api import msa_decode, msa_prefill
from asymcache.kernels.backends import ENV_VAR
from tests.kernels.cases import (
    LAYER,
    PATTERNS,
    SHAPES,
    Shape,
    assert_matches,
    decode_case,
    make_case,
    reference,
)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_torch_prefill_matches_reference(pattern: str, shape: Shape) -> None:
    case = make_case(pattern, shape)
    ref = reference(case)
    o, lse = msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale, return_lse=True,
                         backend="torch")
    assert_matches(o, lse, ref, torch.float32)
    fast = msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale, backend="torch")
    assert_matches(fast, None, ref, torch.float32)


@pytest.mark.parametrize(("rows", "min_rows"), [(4, 4), (16, 2)])
@pytest.mark.parametrize("shape", SHAPES[:6], ids=str)
@pytest.mark.parametrize("pattern", PATTERNS)
def test_torch_prefill_in_small_row_chunks_matches_reference(
        pattern: str, shape: Shape, rows: int, min_rows: int, monkeypatch) -> None:
    # many chunks, keys cut at each chunk's end, and cut at segment starts
    monkeypatch.setattr("asymcache.kernels.cpu.ROWS", rows)
    monkeypatch.setattr("asymcache.kernels.cpu.MIN_ROWS", min_rows)
    case = make_case(pattern, shape)
    ref = reference(case)
    o, lse = msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale, return_lse=True,
                         backend="torch")
    assert_matches(o, lse, ref, torch.float32)
    fast = msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale, backend="torch")
    assert_matches(fast, None, ref, torch.float32)


@pytest.mark.parametrize("pattern", ["one_segment", "hole_in_middle", "mixed_lengths"])
def test_torch_prefill_bfloat16_matches_reference(pattern: str) -> None:
    case = make_case(pattern, Shape(128, 16, 8, 2), dtype=torch.bfloat16)
    o, lse = msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale, return_lse=True,
                         backend="torch")
    assert o.dtype == torch.bfloat16
    assert_matches(o, lse, reference(case), torch.bfloat16)


@pytest.mark.parametrize("shape", SHAPES[::5], ids=str)
@pytest.mark.parametrize("num_splits", [None, 1, 3])
def test_torch_decode_matches_reference(shape: Shape, num_splits: int | None) -> None:
    case = decode_case([1, 2 * shape.block_size + 3, 5 * shape.block_size], shape)
    ref = reference(case, decode=True)
    o, lse = msa_decode(case.q, case.pool, LAYER, case.meta, case.scale, return_lse=True,
                        num_splits=num_splits, backend="torch")
    assert_matches(o, lse, ref, torch.float32)
    fast = msa_decode(case.q, case.pool, LAYER, case.meta, case.scale, num_splits=num_splits,
                      backend="torch")
    assert_matches(fast, None, ref, torch.float32)


def test_default_backend_on_cpu_is_the_torch_path_and_matches_reference(monkeypatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    case = make_case("many_tiny_segments", Shape(64, 16, 8, 2))
    o = msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale)
    torch.testing.assert_close(o, msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale,
                                              backend="torch"), rtol=0, atol=0)
    assert_matches(o, None, reference(case), torch.float32)


@pytest.mark.parametrize("return_lse", [False, True])
def test_torch_decode_on_a_pool_without_a_row_view_matches_reference(return_lse: bool) -> None:
    case = decode_case([1, 40, 77], Shape(64, 16, 8, 2))
    wide = torch.full((*case.pool.shape[:5], 96), float("nan"), device=case.pool.device)
    wide[..., :64] = case.pool
    strided = wide[..., :64]  # head_dim stride 1, head stride 96: no [rows, Hkv*D] view
    out = msa_decode(case.q, strided, LAYER, case.meta, case.scale, return_lse=return_lse,
                     backend="torch")
    o, lse = out if return_lse else (out, None)
    assert_matches(o, lse, reference(case, decode=True), torch.float32)

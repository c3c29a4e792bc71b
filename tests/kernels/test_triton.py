"""The Triton kernels against the float64 dense-mask reference.

Here they run in interpreter mode (``TRITON_INTERPRET=1``, set by ``tests/conftest.py`` before
any kernel module is imported); with ``ASYMCACHE_TEST_CUDA=1`` on a GPU they run compiled, and
the float16/bfloat16 cases run too. Interpreter cases take about a second each: CI runs a
selection that still covers every segment pattern, head dim, block size and GQA ratio, with the
default tiles and with 16-wide tiles (many query tiles, both KV phases); ``--full`` runs the
whole grid. Tolerances: ``cases.TOLERANCE`` (float32 2e-5, float16 4e-3 absolute).
"""

from __future__ import annotations

import pytest
import torch

from asymcache.kernels.api import msa_decode, msa_prefill
from asymcache.kernels.triton_decode import DecodeConfig, msa_decode_triton
from asymcache.kernels.triton_prefill import PrefillConfig, msa_prefill_triton
from tests.kernels.cases import (
    DEVICE,
    LAYER,
    PATTERNS,
    SHAPES,
    Shape,
    assert_matches,
    decode_case,
    make_case,
    reference,
)

CI_SHAPES = {  # pattern -> the shape it runs with in CI; together they cover every axis
    "one_segment": Shape(64, 16, 8, 2),
    "hole_at_start": Shape(128, 64, 8, 1),
    "hole_in_middle": Shape(80, 16, 2, 2),
    "hole_at_end": Shape(96, 64, 8, 2),
    "many_tiny_segments": Shape(64, 64, 8, 1),
    "crossing_blocks": Shape(128, 16, 2, 2),
    "mixed_lengths": Shape(96, 16, 8, 1),
    "decode_like": Shape(80, 64, 8, 2),
}
SMALL_TILES = PrefillConfig(block_m=16, block_n=16)


def _grid(small_shape: Shape):
    """Every (pattern, shape, tiles); CI keeps the CI shape with default tiles and
    ``small_shape`` with 16-wide tiles, the rest is marked ``full``."""
    for pattern in PATTERNS:
        for shape in SHAPES:
            for tiles in (None, SMALL_TILES):
                ci = shape == (CI_SHAPES[pattern] if tiles is None else small_shape)
                marks = () if ci else (pytest.mark.full,)
                tag = "default" if tiles is None else "tiles16"
                yield pytest.param(pattern, shape, tiles, marks=marks,
                                   id=f"{pattern}-{shape}-{tag}")


@pytest.mark.parametrize(("pattern", "shape", "tiles"), list(_grid(Shape(64, 16, 8, 2))))
def test_triton_prefill_matches_reference(pattern: str, shape: Shape,
                                          tiles: PrefillConfig | None) -> None:
    case = make_case(pattern, shape)
    o, lse = msa_prefill_triton(case.q, case.pool, LAYER, case.meta, case.scale, True, tiles)
    assert_matches(o, lse, reference(case), torch.float32)


def test_triton_prefill_without_lse_through_public_op_matches_reference() -> None:
    case = make_case("hole_in_middle", Shape(64, 16, 8, 2))
    o = msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale, backend="triton")
    assert o.shape == case.q.shape and o.dtype == case.q.dtype
    assert_matches(o, None, reference(case), torch.float32)


HALF = [torch.float16] + ([torch.bfloat16] if DEVICE.type == "cuda" else [])  # see below


@pytest.mark.parametrize("dtype", HALF, ids=str)
def test_triton_half_precision_prefill_and_decode_match_reference(dtype: torch.dtype) -> None:
    # bfloat16 runs only on CUDA: the interpreter multiplies bfloat16 bit patterns in tl.dot
    # (triton-lang/triton#11584, "not supported yet" upstream).
    case = make_case("crossing_blocks", Shape(128, 16, 8, 2), dtype=dtype)
    o, lse = msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale, return_lse=True,
                         backend="triton")
    assert o.dtype == dtype
    assert_matches(o, lse, reference(case), dtype)
    dec = decode_case([3, 70, 130], Shape(128, 16, 8, 2), dtype=dtype)
    o, lse = msa_decode(dec.q, dec.pool, LAYER, dec.meta, dec.scale, return_lse=True,
                        num_splits=3, backend="triton")
    assert_matches(o, lse, reference(dec, decode=True), dtype)


DECODE_SHAPES = [Shape(64, 16, 8, 2), Shape(128, 64, 8, 1), Shape(96, 16, 2, 2)]


@pytest.mark.parametrize("shape", DECODE_SHAPES, ids=str)
@pytest.mark.parametrize("num_splits", [1, 4])
def test_triton_decode_matches_reference(shape: Shape, num_splits: int) -> None:
    case = decode_case([1, shape.block_size + 1, 4 * shape.block_size + 7], shape)
    o, lse = msa_decode_triton(case.q, case.pool, LAYER, case.meta, case.scale, num_splits,
                               True, DecodeConfig(block_n=16))
    assert_matches(o, lse, reference(case, decode=True), torch.float32)


def test_triton_decode_default_splits_through_public_op_matches_reference() -> None:
    case = decode_case([9, 5000], Shape(64, 64, 8, 2))  # > 4096 tokens: two default splits
    o = msa_decode(case.q, case.pool, LAYER, case.meta, case.scale, backend="triton")
    assert_matches(o, None, reference(case, decode=True), torch.float32)

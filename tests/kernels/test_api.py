"""Public ops: backend dispatch (default, environment override, explicit) and input errors."""

from __future__ import annotations

import pytest
import torch

from asymcache.kernels.api import merge_state, msa_decode, msa_prefill, write_kv
from asymcache.kernels.backends import ENV_VAR, resolve_backend
from tests.kernels.cases import DEVICE, LAYER, Shape, decode_case, make_case


def test_default_backend_is_torch_on_cpu_and_triton_on_cuda(monkeypatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert resolve_backend(None, torch.device("cpu")).name == "torch"
    assert resolve_backend(None, torch.device("cuda")).name == "triton"


def test_environment_variable_forces_the_backend_and_an_explicit_name_wins(monkeypatch) -> None:
    monkeypatch.setenv(ENV_VAR, "reference")
    assert resolve_backend(None, torch.device("cpu")).name == "reference"
    assert resolve_backend("torch", torch.device("cpu")).name == "torch"
    monkeypatch.setenv(ENV_VAR, "cuda-magic")
    with pytest.raises(ValueError, match=f"unknown kernel \\${ENV_VAR} 'cuda-magic'"):
        resolve_backend(None, torch.device("cpu"))


def test_unknown_backend_name_is_rejected() -> None:
    case = make_case("one_segment", Shape(64, 16, 2, 2))
    with pytest.raises(ValueError, match="unknown kernel backend 'flash'"):
        msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale, backend="flash")


@pytest.fixture(scope="module")
def case():
    return make_case("hole_in_middle", Shape(64, 16, 8, 2))


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda c: {"q": c.q[:, :, :32]}, r"q must be \[\d+, Hq, 64\]"),
    (lambda c: {"q": c.q[:, :3]}, "Hq a multiple of Hkv=2"),
    (lambda c: {"q": c.q[:-1]}, r"q must be \[\d+, Hq"),
    (lambda c: {"q": c.q.double()}, "must match"),
    (lambda c: {"layer": 2}, r"layer must be an int in \[0, 2\)"),
    (lambda c: {"layer": True}, "layer must be an int"),
    (lambda c: {"scale": 0.0}, "scale must be a positive finite number"),
    (lambda c: {"pool": c.pool[:, :, 0]}, "pool must be"),
    (lambda c: {"pool": c.pool[:2]}, "block id .* is past the pool's 2 blocks"),
    (lambda c: {"pool": c.pool.reshape(-1, 2, 2, 8, 2, 64)}, "do not cover kv_lens"),
])
def test_prefill_rejects_inconsistent_inputs(case, mutate, message: str) -> None:
    args = {"q": case.q, "pool": case.pool, "layer": LAYER, "meta": case.meta,
            "scale": case.scale}
    args.update(mutate(case))
    with pytest.raises(ValueError, match=message):
        msa_prefill(**args)


def test_decode_rejects_prefill_metadata_and_bad_splits(case) -> None:
    with pytest.raises(ValueError, match="one query per sequence"):
        msa_decode(case.q, case.pool, LAYER, case.meta, case.scale)
    dec = decode_case([5, 9], Shape(64, 16, 2, 2))
    with pytest.raises(ValueError, match="num_splits must be a positive int"):
        msa_decode(dec.q, dec.pool, LAYER, dec.meta, dec.scale, num_splits=0)


def test_write_kv_and_merge_state_reject_mismatched_shapes(case) -> None:
    k = torch.zeros((3, 2, 64))
    with pytest.raises(ValueError, match="slot_mapping must be int64"):
        write_kv(case.pool, 0, k, k, torch.zeros(3, dtype=torch.int32))
    with pytest.raises(ValueError, match=r"k must be \[T, 2, 64\]"):
        write_kv(case.pool, 0, k[:, :1], k, torch.zeros(3, dtype=torch.int64))
    o, lse = torch.zeros((2, 4, 8)), torch.zeros((2, 4))
    with pytest.raises(ValueError, match="lse_b must be float32"):
        merge_state(o, lse, o, lse.double())
    with pytest.raises(ValueError, match="o_a and o_b must be"):
        merge_state(o, lse, o[:1], lse[:1])


def test_empty_batches_return_empty_outputs() -> None:
    from asymcache.kernels.metadata import AttentionMetadata

    meta = AttentionMetadata.for_sequences([], [], [], block_size=16)
    pool = torch.zeros((2, 1, 2, 16, 2, 64))
    q = torch.zeros((0, 4, 64))
    o, lse = msa_prefill(q, pool, 0, meta, 0.125, return_lse=True)
    assert o.shape == (0, 4, 64) and lse.shape == (0, 4)
    assert msa_decode(q, pool, 0, meta, 0.125).shape == (0, 4, 64)


@pytest.mark.skipif(DEVICE.type == "cuda", reason="checks the CPU-without-interpreter error")
def test_triton_backend_on_cpu_without_the_interpreter_says_what_to_do(monkeypatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET")
    case = make_case("one_segment", Shape(64, 16, 2, 2))
    with pytest.raises(ValueError, match=r"needs CUDA tensors .* TRITON_INTERPRET=1"):
        msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale, backend="triton")


def test_for_sequences_rejects_lists_of_different_lengths() -> None:
    from asymcache.kernels.metadata import AttentionMetadata

    with pytest.raises(ValueError, match="one entry per sequence, got 2, 1, 2"):
        AttentionMetadata.for_sequences([[0], [0]], [1], [[0], [1]], block_size=16)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_strided_q_gives_the_same_output_as_contiguous_q(backend: str) -> None:
    case = make_case("hole_at_start", Shape(64, 16, 8, 2))
    wide = torch.zeros((case.q.shape[0], 12, 64), device=case.q.device)
    wide[:, 2:10] = case.q
    strided = wide[:, 2:10]  # like q split out of a fused QKV projection
    assert not strided.is_contiguous()
    want = msa_prefill(case.q, case.pool, LAYER, case.meta, case.scale, backend=backend)
    got = msa_prefill(strided, case.pool, LAYER, case.meta, case.scale, backend=backend)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    dec = decode_case([5, 40], Shape(64, 16, 8, 2))
    wide = torch.zeros((2, 12, 64), device=dec.q.device)
    wide[:, 2:10] = dec.q
    want = msa_decode(dec.q, dec.pool, LAYER, dec.meta, dec.scale, backend=backend)
    got = msa_decode(wide[:, 2:10], dec.pool, LAYER, dec.meta, dec.scale, backend=backend)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)

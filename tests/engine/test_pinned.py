"""Pinned CPU tier (engine/pinned.py): what registration does on every device.

On this CPU machine a region registers nothing and says why; the CUDA path runs against a
recording stand-in for torch's ``cudart`` bindings (what is registered, with which flags, that
closing unregisters exactly once, that a refusal is reported and not raised). With a CUDA device
(the GPU check runs this file there) the last test registers a real shared-memory slab and
copies through it.
"""

from __future__ import annotations

import contextlib
import logging
import mmap
import subprocess
import sys

import numpy as np
import pytest
import torch

from asymcache.cacheserver.blocks import KVLayout
from asymcache.engine import pinned
from asymcache.engine.kv_pool import KVPool
from asymcache.engine.pinned import (
    HOST_REGISTER_PORTABLE,
    PinnedRegion,
    buffer_address,
    buffer_span,
    is_cuda_device,
)
from asymcache.tiers.shm import attach, create_slab

LAYOUT = KVLayout(num_layers=2, num_kv_heads=2, head_dim=8, block_size=4, dtype="float32")


class FakeCudart:
    """Records ``cudaHostRegister`` / ``cudaHostUnregister`` calls; returns ``code``."""

    def __init__(self, code: int = 0) -> None:
        self.code = code
        self.registered: list[tuple[int, int, int]] = []
        self.unregistered: list[int] = []

    def cudaHostRegister(self, ptr: int, size: int, flags: int) -> int:
        self.registered.append((ptr, size, flags))
        return self.code

    def cudaHostUnregister(self, ptr: int) -> int:
        self.unregistered.append(ptr)
        return 0

    def cudaGetErrorString(self, err: int) -> str:
        return "host memory already registered" if err == 712 else "unknown"


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> FakeCudart:
    rt = FakeCudart()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device", lambda _d: contextlib.nullcontext())
    monkeypatch.setattr(torch.cuda, "init", lambda: None)
    monkeypatch.setattr(torch.cuda, "cudart", lambda: rt)
    return rt


def test_a_cpu_engine_registers_nothing_and_says_why() -> None:
    buf = bytearray(4096)
    with PinnedRegion(buf, "cpu") as region:
        assert not region.pinned
        assert "not CUDA" in region.status.reason
        assert region.status.nbytes == 4096 and region.status.address == buffer_address(buf)
    region.close()  # idempotent
    assert not PinnedRegion(buf, None).pinned


def test_without_a_cuda_device_a_cuda_engine_keeps_pageable_copies() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    region = PinnedRegion(bytearray(64), "cuda:0")
    assert not region.pinned and "no CUDA device" in region.status.reason


def test_buffer_address_of_a_slice_is_the_base_plus_its_offset() -> None:
    data = bytearray(1000)
    base = buffer_address(data)
    assert base == np.frombuffer(data, np.uint8).ctypes.data
    assert buffer_span(memoryview(data)[100:300]) == (base + 100, 200)
    assert buffer_address(bytes(8)) != 0  # read-only buffers have an address too
    tensor = torch.arange(16, dtype=torch.float32)
    assert buffer_address(tensor.numpy()) == tensor.data_ptr()
    assert buffer_span(memoryview(data)[5:5]) == (0, 0)


def test_a_non_contiguous_buffer_is_refused() -> None:
    strided = memoryview(np.zeros((4, 4))[:, ::2])
    with pytest.raises(ValueError, match="not contiguous"):
        buffer_address(strided)


def test_is_cuda_device_reads_names_and_torch_devices() -> None:
    assert is_cuda_device("cuda") and is_cuda_device("cuda:3")
    assert is_cuda_device(torch.device("cuda", 1))
    assert not is_cuda_device("cpu") and not is_cuda_device(None)
    assert not is_cuda_device(torch.device("cpu"))


def test_importing_the_module_does_not_import_torch() -> None:
    # engine/client_ops.py (torch-free, used by the daemon image) holds a region.
    code = "import sys, asymcache.engine.pinned; print('torch' in sys.modules)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True)
    assert run.stdout.strip() == "False"


def test_cuda_registers_the_whole_range_portably_and_unregisters_once(fake_cuda) -> None:
    data = bytearray(3 * 4096)
    with PinnedRegion(memoryview(data)[4096:], "cuda:0") as region:
        assert region.pinned and region.status.pinned
        assert fake_cuda.registered == [(buffer_address(data) + 4096, 2 * 4096,
                                         HOST_REGISTER_PORTABLE)]
    assert not region.pinned
    region.close()
    assert fake_cuda.unregistered == [buffer_address(data) + 4096]


def test_a_refused_registration_is_reported_not_raised(fake_cuda, monkeypatch) -> None:
    fake_cuda.code = 712
    cleared = []
    monkeypatch.setattr(pinned, "_clear_last_cuda_error", lambda: cleared.append(True))
    region = PinnedRegion(bytearray(4096), "cuda")
    assert not region.pinned
    assert "712" in region.status.reason and "already registered" in region.status.reason
    assert cleared == [True]  # torch's next launch check must not see this error
    region.close()
    assert fake_cuda.unregistered == []


def test_an_empty_buffer_is_never_registered(fake_cuda) -> None:
    region = PinnedRegion(bytearray(), "cuda")
    assert not region.pinned and "empty" in region.status.reason
    assert fake_cuda.registered == []


def test_closing_the_region_then_the_slab_leaves_no_view_behind(fake_cuda, caplog) -> None:
    # The engine's order: region over the attached slab, close the region, then the slab.
    owner = create_slab(LAYOUT.bytes_per_block, 4)
    mapped = attach(owner.name, LAYOUT.bytes_per_block, 4)
    try:
        with caplog.at_level(logging.WARNING, logger="asymcache.tiers.shm"):
            region = PinnedRegion(mapped.buffer, "cuda")
            assert fake_cuda.registered[0][1] == 4 * LAYOUT.bytes_per_block
            region.close()
            mapped.close()
        assert "still has views" not in caplog.text
    finally:
        owner.close()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_registered_slab_is_pinned_for_torch_and_copies_through_the_pool() -> None:
    owner = create_slab(LAYOUT.bytes_per_block, 4)
    mapped = attach(owner.name, LAYOUT.bytes_per_block, 4)
    pool = KVPool(LAYOUT, 4, "cuda")
    try:
        region = PinnedRegion(mapped.buffer, "cuda")
        assert region.pinned, region.status.reason
        src, dst = pool.host_view(mapped.slot(1)), pool.host_view(mapped.slot(2))
        assert src.is_pinned()
        src.copy_(torch.arange(src.numel(), dtype=torch.float32).view_as(src))
        pool.load([3], [src])
        pool.wait_for_copies()
        pool.mark_compute()
        pool.store([3], [dst])
        assert torch.equal(src, dst)
        del src, dst
        region.close()
        assert not pool.host_view(mapped.slot(0)).is_pinned()
    finally:
        mapped.close()
        owner.close()


def test_a_slab_mapping_starts_on_a_page_boundary() -> None:
    # The slab's mapping starts on a page: a region over it covers whole pages from its start.
    owner = create_slab(mmap.PAGESIZE + 1, 1)
    try:
        assert buffer_address(owner.buffer) % mmap.PAGESIZE == 0
    finally:
        owner.close()

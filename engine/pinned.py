"""Page-locked ("pinned") host memory for the CPU tier: registering a mapped buffer with CUDA.

The daemon's CPU tier is a POSIX shared-memory slab that every local engine maps
(``tiers/shm.py``). A copy between the GPU pool and *pageable* host memory goes through a
driver staging buffer: the calling thread waits for it and it cannot overlap compute. Once the
mapping is registered with ``cudaHostRegister`` it is page-locked for the device, and a
``copy_(..., non_blocking=True)`` on the pool's copy stream (``engine/kv_pool.py``) is one DMA
transfer that returns at once.

:class:`PinnedRegion` keeps a buffer registered while it is open. When the device is not CUDA
(or torch sees no CUDA device) it registers nothing and its :attr:`PinnedRegion.status` says
why: the engine runs the same either way, only slower to copy. Importing this module does not
import torch (the torch-free daemon client holds a region); torch is imported only to register
for a CUDA device.

Contract:

* The region holds no reference to the buffer (so ``Slab.close`` can release its view), only its
  address: **close the region before the buffer is unmapped or freed**.
* Registration pins every page of the range (about 0.1-0.3 s per GiB): do it once, when the tier
  is mapped, not per copy.
* A failed registration is not an error: the status says what CUDA returned and copies stay
  pageable. CUDA's per-thread "last error" that the failed call set is cleared (best effort),
  so that torch's next kernel-launch check does not report it as its own.
"""

from __future__ import annotations

import ctypes
import logging
import time
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

HOST_REGISTER_PORTABLE = 1  # cudaHostRegisterPortable: page-locked for every CUDA context


@dataclass(frozen=True)
class PinStatus:
    """Whether a range is registered (``pinned``), why (not), where, and how long it took."""

    pinned: bool
    reason: str
    address: int = 0
    nbytes: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"pinned": self.pinned, "reason": self.reason, "address": self.address,
                "nbytes": self.nbytes, "seconds": self.seconds}


def buffer_address(buffer: Any) -> int:
    """The address of the first byte of a C-contiguous buffer (``memoryview``, ``bytearray``,
    ``mmap``, numpy array; read-only ones too); 0 for an empty one. Holds no reference to it
    afterwards. Raises ``ValueError`` for a buffer that is not contiguous."""
    return buffer_span(buffer)[0]


def buffer_span(buffer: Any) -> tuple[int, int]:
    """``(address, nbytes)`` of a C-contiguous buffer; see :func:`buffer_address`."""
    import numpy as np

    view = memoryview(buffer)
    try:
        if not view.c_contiguous:
            raise ValueError("the buffer is not contiguous: register its contiguous base")
        if view.nbytes == 0:
            return 0, 0
        array = np.frombuffer(view.cast("B"), dtype=np.uint8)
        address = int(array.__array_interface__["data"][0])
        del array
        return address, view.nbytes
    finally:
        view.release()


def is_cuda_device(device: Any) -> bool:
    """Whether ``device`` (a string such as ``"cuda:1"``, a ``torch.device`` or None) names a
    CUDA device. Needs no torch."""
    return device is not None and str(device).split(":", 1)[0] == "cuda"


class PinnedRegion:
    """A host buffer registered with CUDA as page-locked memory until :meth:`close`.

    ``device``: the engine's device; anything but CUDA registers nothing (``status.reason``
    says so). ``flags``: ``cudaHostRegister`` flags (default: portable). Usable as a context
    manager; :meth:`close` is idempotent.
    """

    def __init__(self, buffer: Any, device: Any, *, flags: int = HOST_REGISTER_PORTABLE) -> None:
        self._device = device
        self._registered = False
        self.status = self._register(buffer, flags)
        self._registered = self.status.pinned

    @property
    def pinned(self) -> bool:
        """Whether the range is registered now (False once closed)."""
        return self._registered

    def _register(self, buffer: Any, flags: int) -> PinStatus:
        address, nbytes = buffer_span(buffer)
        if not is_cuda_device(self._device):
            return PinStatus(False, f"device {self._device} is not CUDA: nothing to register",
                             address, nbytes)
        if nbytes == 0:
            return PinStatus(False, "empty buffer: nothing to register")
        import torch

        if not torch.cuda.is_available():
            return PinStatus(False, "torch sees no CUDA device: copies stay pageable",
                             address, nbytes)
        with torch.cuda.device(torch.device(self._device)):
            torch.cuda.init()
            start = time.perf_counter()
            err = torch.cuda.cudart().cudaHostRegister(address, nbytes, flags)
            seconds = time.perf_counter() - start
        if int(err) != 0:
            reason = (f"cudaHostRegister failed: CUDA error {int(err)} "
                      f"({_error_string(err)}); copies stay pageable")
            _clear_last_cuda_error()
            log.warning("CPU tier not pinned: %s", reason)
            return PinStatus(False, reason, address, nbytes, seconds)
        return PinStatus(True, "registered with cudaHostRegister", address, nbytes, seconds)

    def close(self) -> None:
        """Unregister the range (before its buffer is unmapped). Idempotent; a failure is
        logged, not raised (the process may be shutting down)."""
        if not self._registered:
            return
        self._registered = False
        import torch

        err = torch.cuda.cudart().cudaHostUnregister(self.status.address)
        if int(err) != 0:
            _clear_last_cuda_error()
            log.warning("cudaHostUnregister of %d bytes at %#x failed: CUDA error %d (%s)",
                        self.status.nbytes, self.status.address, int(err), _error_string(err))

    def __enter__(self) -> PinnedRegion:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "pinned" if self._registered else f"not pinned ({self.status.reason})"
        return f"PinnedRegion({self.status.nbytes} bytes at {self.status.address:#x}, {state})"


def _error_string(err: Any) -> str:
    import torch

    try:
        return str(torch.cuda.cudart().cudaGetErrorString(err))
    except (AttributeError, TypeError, RuntimeError):
        return "no description"


def _clear_last_cuda_error() -> None:
    """Reset the CUDA runtime's per-thread last error (``cudaGetLastError``) in the libcudart
    this process has loaded; torch's bindings offer no call for it. A no-op when torch links
    the runtime statically (no shared libcudart is mapped)."""
    path = _loaded_library("libcudart.so")
    if path is None:
        return
    try:
        ctypes.CDLL(path).cudaGetLastError()
    except (OSError, AttributeError):
        log.debug("could not clear CUDA's last error through %s", path)


def _loaded_library(stem: str) -> str | None:
    """The path of a shared library whose name starts with ``stem`` mapped into this process."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            for line in maps:
                path = line.rstrip("\n").split(maxsplit=5)[-1]
                if path.rsplit("/", 1)[-1].startswith(stem):
                    return path
    except OSError:
        return None
    return None

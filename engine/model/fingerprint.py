"""Model fingerprint: the identity of a model's KV bytes, independent of where its files live.

Definition (version ``v1``; changing any step changes every namespace, so bump the version):

* hash function: XXH3-128 (``xxhash.xxh3_128``, seed 0), chosen for speed (several GB/s, so a
  multi-GB checkpoint costs well under a second of hashing on top of reading it);
* input, in this order, every part length-prefixed (8-byte little-endian length, then bytes):
  the tag ``asymcache-model-v1``; :meth:`ModelConfig.canonical` (the parsed, sorted config
  fields that change the forward pass, not the raw file); then, for **every** tensor of every
  safetensors shard in sorted tensor-name order: the name, the stored dtype string, the shape as
  text, and all of the tensor's bytes exactly as stored in the file (before any dtype cast).

The loader feeds each tensor while it streams it to the device, so the fingerprint costs no
extra read. No path, file name, shard layout, mtime or sample enters it: moving or re-sharding a
folder keeps the fingerprint; changing one weight element or one config field changes it.
The hex digest (32 characters) is what goes into ``asymcache.cacheserver.blocks.namespace_id``.
"""

from __future__ import annotations

import torch
import xxhash

FINGERPRINT_TAG = b"asymcache-model-v1"


class Fingerprinter:
    """Streaming fingerprint; feed the config once, then every tensor in name order."""

    def __init__(self, canonical_config: str) -> None:
        self._hash = xxhash.xxh3_128(seed=0)
        self._part(FINGERPRINT_TAG)
        self._part(canonical_config.encode("utf-8"))
        self._last_name: str | None = None

    def _part(self, data: bytes | memoryview) -> None:
        self._hash.update(len(data).to_bytes(8, "little"))
        self._hash.update(data)

    def add_tensor(self, name: str, dtype: str, shape: tuple[int, ...],
                   tensor: torch.Tensor) -> None:
        """Hash one stored tensor (CPU, as read from the file); names must come in sorted order."""
        if self._last_name is not None and name <= self._last_name:
            raise ValueError(f"tensors must be fingerprinted in sorted name order ({name!r})")
        self._last_name = name
        self._part(name.encode("utf-8"))
        self._part(dtype.encode("ascii"))
        self._part(",".join(str(d) for d in shape).encode("ascii"))
        raw = tensor.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
        self._part(memoryview(raw))

    def hexdigest(self) -> str:
        """The 32-hex-character fingerprint of everything fed so far."""
        return self._hash.hexdigest()

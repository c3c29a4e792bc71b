"""Block identity: namespaces, KV layouts and chained block keys.

Torch-free and I/O-free; the daemon, the engine and the simulator all import it.

* A **namespace** is a 16-byte digest of (model fingerprint, KV layout, ``cache_salt``). Two
  tenants with different salts, two models, or two tensor-parallel ranks never share a block.
* A **block key** is the chained 128-bit hash ``h_i = H(namespace, h_{i-1}, tokens_i)`` over
  the *full* blocks of a token sequence, with ``h_{-1}`` = 16 zero bytes. ``H`` is BLAKE2b with
  a 16-byte digest and a fixed personalisation string; tokens are hashed as little-endian
  uint32. The result is the same in every process and on every machine (never Python's
  built-in, per-process salted string hashing), and ``tests/cacheserver/test_blocks.py`` pins
  golden digests so that a change of hashing is never silent.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from asymcache.cacheserver.protocol.wire_types import (
    FINGERPRINT_MAX_BYTES,
    KEY_BYTES,
    SALT_MAX_BYTES,
    identifier_problem,
)

ROOT_PARENT = bytes(KEY_BYTES)
_NS_PERSON = b"asymcache-ns-v1"
_BLOCK_PERSON = b"asymcache-bk-v1"
_TENANT_PERSON = b"asymcache-tn-v1"
_SESSION_PERSON = b"asymcache-ss-v1"
TENANT_LABEL_MAX_BYTES = 64  # the name a tenant is counted under (metrics labels, quotas)
PUBLIC_LABEL = "public"  # the tenant of requests without a cache_salt
_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1}


@dataclass(frozen=True)
class KVLayout:
    """Shape of one block in every tier: ``[num_layers, 2, block_size, num_kv_heads, head_dim]``.

    ``num_kv_heads`` is the number of KV heads *on this rank*; ``tp_rank``/``tp_size`` are part of
    the identity because each rank holds a different slice of the heads.
    """

    num_layers: int
    num_kv_heads: int
    head_dim: int
    block_size: int
    dtype: str
    tp_rank: int = 0
    tp_size: int = 1

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_kv_heads", "head_dim", "block_size", "tp_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"KVLayout.{name} must be a positive int, got {value!r}")
        if not isinstance(self.tp_rank, int) or not 0 <= self.tp_rank < self.tp_size:
            raise ValueError(
                f"KVLayout.tp_rank must be in [0, {self.tp_size}), got {self.tp_rank!r}"
            )
        if self.dtype not in _DTYPE_BYTES:
            raise ValueError(
                f"KVLayout.dtype must be one of {sorted(_DTYPE_BYTES)}, got {self.dtype!r}"
            )

    @property
    def dtype_bytes(self) -> int:
        return _DTYPE_BYTES[self.dtype]

    @property
    def block_shape(self) -> tuple[int, int, int, int, int]:
        return (self.num_layers, 2, self.block_size, self.num_kv_heads, self.head_dim)

    @property
    def bytes_per_token(self) -> int:
        return self.num_layers * 2 * self.num_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def bytes_per_block(self) -> int:
        return self.bytes_per_token * self.block_size

    def canonical(self) -> str:
        """The stable text form hashed into the namespace (field order fixed forever)."""
        return (
            f"layers={self.num_layers};kv_heads={self.num_kv_heads};head_dim={self.head_dim};"
            f"block={self.block_size};dtype={self.dtype};tp={self.tp_rank}/{self.tp_size}"
        )

    def to_dict(self) -> dict[str, int | str]:
        return {
            "num_layers": self.num_layers,
            "num_kv_heads": self.num_kv_heads,
            "head_dim": self.head_dim,
            "block_size": self.block_size,
            "dtype": self.dtype,
            "tp_rank": self.tp_rank,
            "tp_size": self.tp_size,
        }

    @classmethod
    def from_dict(cls, d: dict) -> KVLayout:
        try:
            return cls(**{k: d[k] for k in ("num_layers", "num_kv_heads", "head_dim",
                                            "block_size", "dtype")},
                       tp_rank=d.get("tp_rank", 0), tp_size=d.get("tp_size", 1))
        except KeyError as e:
            raise ValueError(f"KV layout is missing field {e.args[0]!r}") from None
        except TypeError as e:
            raise ValueError(f"bad KV layout: {e}") from None


def namespace_id(model_fingerprint: str, layout: KVLayout, cache_salt: str = "") -> bytes:
    """16-byte namespace of (model fingerprint, KV layout, tenant salt). ``ValueError`` names
    ``model_fingerprint`` (empty, or over ``FINGERPRINT_MAX_BYTES``) or ``cache_salt`` (over
    ``SALT_MAX_BYTES`` in UTF-8)."""
    if not model_fingerprint:
        raise ValueError("model_fingerprint must be a non-empty string")
    problem = identifier_problem(model_fingerprint, FINGERPRINT_MAX_BYTES)
    if problem is not None:
        raise ValueError(f"model_fingerprint {problem[1]}")
    if len(cache_salt) > SALT_MAX_BYTES or len(cache_salt.encode("utf-8")) > SALT_MAX_BYTES:
        raise ValueError(f"cache_salt is {len(cache_salt.encode('utf-8'))} bytes in UTF-8, more "
                         f"than {SALT_MAX_BYTES} (its limit)")
    h = hashlib.blake2b(digest_size=KEY_BYTES, person=_NS_PERSON)
    for part in (model_fingerprint, layout.canonical(), cache_salt):
        data = part.encode("utf-8")
        h.update(len(data).to_bytes(8, "little"))  # length-prefixed: no ambiguity between parts
        h.update(data)
    return h.digest()


def tenant_digest(cache_salt: str) -> bytes:
    """16-byte digest naming a tenant to the daemon (``asymcache purge``, the TENANTS message)
    without the salt: BLAKE2b with its own personalisation, so it equals no namespace."""
    h = hashlib.blake2b(digest_size=KEY_BYTES, person=_TENANT_PERSON)
    h.update(cache_salt.encode("utf-8"))
    return h.digest()


def session_digest(cache_salt: str, prompt_cache_key: str) -> bytes:
    """16-byte digest naming a client session (OpenAI's ``prompt_cache_key``) to the daemon:
    BLAKE2b over the tenant's salt and the key with its own personalisation, so two tenants'
    equal keys are different sessions and the key itself never leaves the engine."""
    h = hashlib.blake2b(digest_size=KEY_BYTES, person=_SESSION_PERSON)
    salt = cache_salt.encode("utf-8")
    h.update(len(salt).to_bytes(4, "little"))
    h.update(salt)
    h.update(prompt_cache_key.encode("utf-8"))
    return h.digest()


def tenant_label(cache_salt: str, name: str | None = None) -> str:
    """The name a tenant is counted under: ``name`` (the API keys file's tenant) when known,
    ``public`` for the empty salt, else ``salt-`` and 8 hex digits of :func:`tenant_digest`."""
    if name:
        return name[:TENANT_LABEL_MAX_BYTES]
    if not cache_salt:
        return PUBLIC_LABEL
    return "salt-" + tenant_digest(cache_salt)[:4].hex()


def block_key(
    namespace: bytes, parent: bytes, tokens: Sequence[int] | np.ndarray
) -> bytes:
    """``H(namespace, parent, tokens)``: key of the full block ``tokens`` following ``parent``."""
    if len(namespace) != KEY_BYTES or len(parent) != KEY_BYTES:
        raise ValueError("namespace and parent must be 16-byte digests")
    arr = np.asarray(tokens)
    if arr.size and (arr.min() < 0 or arr.max() >= 2**32):
        raise ValueError("token ids must be in [0, 2**32)")
    h = hashlib.blake2b(digest_size=KEY_BYTES, person=_BLOCK_PERSON)
    h.update(namespace)
    h.update(parent)
    h.update(arr.astype("<u4", copy=False).tobytes())
    return h.digest()


def iter_block_keys(
    namespace: bytes, tokens: Sequence[int] | np.ndarray, block_size: int
) -> Iterator[bytes]:
    """Keys of every *full* block of ``tokens``, in order; a trailing partial block has none."""
    if block_size <= 0:
        raise ValueError("block_size must be positive")
    arr = np.asarray(tokens, dtype=np.int64)
    parent = ROOT_PARENT
    for start in range(0, len(arr) - block_size + 1, block_size):
        parent = block_key(namespace, parent, arr[start:start + block_size])
        yield parent


def block_keys(
    namespace: bytes, tokens: Sequence[int] | np.ndarray, block_size: int
) -> list[bytes]:
    """List form of :func:`iter_block_keys`."""
    return list(iter_block_keys(namespace, tokens, block_size))

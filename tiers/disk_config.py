"""Configuration of the disk tier (``tiers/disk.py``): one frozen, validated dataclass."""

from __future__ import annotations

from dataclasses import dataclass

MiB = 1 << 20


@dataclass(frozen=True)
class DiskTierConfig:
    """Where and how big the disk tier is, and how it writes.

    * ``path``: the LMDB environment directory (created if missing, reopened if present);
    * ``capacity_bytes``: what stored blocks may occupy (``DiskTier.entry_bytes`` each);
    * ``block_bytes``: typical payload size, used only to report ``capacity_blocks``;
    * ``map_bytes``: the LMDB map size (default: ``capacity·5/4``, plus two write batches,
      plus 4 MiB; see :attr:`map_size`);
    * ``writemap``: let LMDB write straight into its map (with the file preallocated) instead of
      ``pwritev`` from its own buffers; off by default (see ``tiers/lmdb_store.py``);
    * ``queue_bytes``: staging memory for queued writes, idle recycled buffers included;
    * ``batch_bytes`` / ``batch_ops``: most bytes / ops committed in one synced transaction.
    """

    path: str
    capacity_bytes: int
    block_bytes: int = 0
    map_bytes: int | None = None
    writemap: bool = False
    queue_bytes: int = 256 * MiB
    batch_bytes: int = 64 * MiB
    batch_ops: int = 4096

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not self.path:
            raise ValueError(f"DiskTierConfig.path must be a non-empty str, got {self.path!r}")
        for field in ("capacity_bytes", "queue_bytes", "batch_bytes", "batch_ops"):
            _positive(field, getattr(self, field))
        _positive("block_bytes", self.block_bytes, allow_zero=True)
        if self.map_bytes is not None:
            _positive("map_bytes", self.map_bytes)

    @property
    def map_size(self) -> int:
        if self.map_bytes is not None:
            return self.map_bytes
        # Pages a transaction frees are reusable two commits later, so up to two batches of
        # writes land on fresh pages while evicted blocks' pages wait: room for both, plus a
        # quarter for free-list fragmentation (overflow pages need contiguous runs).
        lag = 2 * min(self.batch_bytes, self.capacity_bytes)
        return self.capacity_bytes + self.capacity_bytes // 4 + lag + 4 * MiB


def _positive(field: str, value: object, allow_zero: bool = False) -> None:
    low = 0 if allow_zero else 1
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"DiskTierConfig.{field} must be an int >= {low}, got {value!r}")

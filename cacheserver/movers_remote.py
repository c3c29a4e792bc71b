"""The REMOTE tier's movements, a part of :class:`asymcache.cacheserver.movers.Residency`.

The remote tier is a cluster shared by every host's daemon. This daemon *shares* a block there
(write-through) when it enters the CPU tier, and *demotes* a CPU victim there when it is not there
yet (e.g. written while the cluster was down); both only when the remote policy admits it, so a
cost-aware policy weighs the block's recompute cost against the remote tier's load cost. A block
another host stored is *adopted* when this daemon promotes it (tracked, never written again, only
forgotten when evicted). The remote tier evicts by bytes to stay within ``remote_bytes``: a
victim this daemon stored is deleted from the cluster.

Writes are queued (the tier sends them in pipelined rounds from its own thread), so every method
here runs on the event loop without waiting for the network; reads happen in ``remote_io.py``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from asymcache.cacheserver.index import BlockIndex, BlockRecord
from asymcache.cacheserver.metrics import DaemonMetrics
from asymcache.cacheserver.policy import ResidencyPolicy
from asymcache.tiers.base import BlockHeader, Buffer
from asymcache.tiers.cpu import CpuTier

if TYPE_CHECKING:
    from asymcache.tiers.remote import RemoteTier


class RemoteMoves:
    """Mixin: what :class:`Residency` does with its remote tier (``self.remote``, or None)."""

    index: BlockIndex
    cpu: CpuTier
    remote: RemoteTier | None
    remote_write_through: bool
    policies: dict[str, ResidencyPolicy]
    metrics: DaemonMetrics
    clock: Callable[[], float]
    _refresh_gpu_backing: Callable[[BlockRecord], None]

    def remote_admits(self, rec: BlockRecord) -> bool:
        """Whether ``rec`` should be written to the cluster now (reachable, not there yet, and
        admitted by the remote policy)."""
        return (self.remote is not None and not rec.remote and self.remote.ready
                and self.policies["remote"].admit(rec.info(), self.clock()))

    def remote_copy(self, rec: BlockRecord) -> bool:
        """Queue the CPU copy of ``rec`` for the cluster when the remote policy admits it (a
        block entering the CPU tier with ``remote_write_through``, or a CPU victim)."""
        if rec.cpu < 0 or not self.remote_admits(rec):
            return False
        view = self.cpu.get([rec.key])[0]
        if view is None or not self.remote_store(rec, view):
            return False
        self.metrics.moved["cpu_to_remote"].inc(rec.n_bytes)
        return True

    def remote_store(self, rec: BlockRecord, data: Buffer) -> bool:
        """Queue ``data`` for the cluster (evicting by bytes first); ``False`` if refused."""
        remote = self.remote
        if remote is None:
            return False
        if rec.remote:
            return True
        header = header_of(rec)
        if not self._remote_room(rec, remote.entry_bytes(header)):
            return False
        if not remote.put([(rec.key, header, data)])[0]:
            return False
        self._remote_entered(rec)
        return True

    def remote_adopt(self, rec: BlockRecord, header: BlockHeader) -> bool:
        """Track ``rec``, found in the cluster (another host stored it), as held there."""
        remote = self.remote
        if remote is None or rec.remote:
            return rec.remote
        if not self._remote_room(rec, remote.entry_bytes(header)):
            return False
        if not remote.adopt([(rec.key, header)])[0]:
            return False
        self._remote_entered(rec)
        return True

    def _remote_room(self, rec: BlockRecord, need: int) -> bool:
        remote = self.remote
        assert remote is not None
        if need > remote.capacity_bytes:
            return False
        rec.busy += 1  # stays indexed even if making room evicts it elsewhere
        try:
            while remote.used_bytes + need > remote.capacity_bytes:
                victim = self.policies["remote"].evict(self.clock())
                if victim is None:
                    return False
                self.remote_forget(victim, evicted=True)
            return True
        finally:
            rec.busy -= 1

    def _remote_entered(self, rec: BlockRecord) -> None:
        rec.remote = True
        now = self.clock()
        policy = self.policies["remote"]
        policy.insert(rec.info(), now)
        if rec.pin_active(now):
            policy.pin(rec.key, rec.pin_until)
        self.refresh_backing(rec)

    def remote_forget(self, key: bytes, evicted: bool) -> None:
        """Drop ``key`` from the remote tier (a DEL if this daemon stored it), its policy and,
        if nothing else holds it, the index."""
        assert self.remote is not None
        self.remote.delete([key])
        self.policies["remote"].remove(key)
        rec = self.index.get(key)
        if rec is not None and rec.remote:
            rec.remote = False
            self.refresh_backing(rec)
            self.index.discard_if_unheld(rec)
        if evicted:
            self.metrics.evictions["remote"].inc()

    def poll_remote_failures(self) -> list[bytes]:
        """Forget blocks whose queued remote writes failed (or were found corrupt)."""
        if self.remote is None:
            return []
        failed = self.remote.take_failed()
        for key in failed:
            self.remote_forget(key, evicted=False)
        return failed

    def remote_load(self) -> tuple[float, float] | None:
        """``(latency_s, bandwidth_bps)`` of a load from the remote tier (configured, or
        measured once connected); None without a remote tier or before the measurement."""
        return None if self.remote is None else self.remote.load_figures()

    def refresh_backing(self, rec: BlockRecord) -> None:
        """Tell the CPU, disk and GPU policies the next tier below them that holds ``rec``."""
        if rec.cpu >= 0:
            self.policies["cpu"].set_backing(rec.key, rec.next_tier("cpu"))
        if rec.disk and "disk" in self.policies:
            self.policies["disk"].set_backing(rec.key, rec.next_tier("disk"))
        self._refresh_gpu_backing(rec)


def header_of(rec: BlockRecord, checksum: int = 0) -> BlockHeader:
    """The tier header of ``rec`` (checksum 0 = computed by the tier that verifies bytes)."""
    return BlockHeader(rec.namespace, rec.parent_or_root, rec.position, rec.layout, rec.n_bytes,
                       checksum)

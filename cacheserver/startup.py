"""Start-up steps: open the tiers, build the residency policies, rebuild the index from disk.

The remote tier (``remote.nodes``) is opened without waiting for its cluster; its load figures
(configured, or measured once it connects) replace the cost model's generic ``remote`` ones.

Kept apart from ``server.py`` so the lifecycle reads as a list of steps and each step can be
tested (and benchmarked: the index rebuild rate) on its own.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from asymcache.cacheserver.blocks import ROOT_PARENT
from asymcache.cacheserver.config import ServerConfig
from asymcache.cacheserver.handlers import Context
from asymcache.cacheserver.index import BlockRecord
from asymcache.cacheserver.metrics import DaemonMetrics
from asymcache.cacheserver.oracle_file import read_oracle
from asymcache.cacheserver.policy import ResidencyPolicy, create_policy, policy_class
from asymcache.cacheserver.policy.belady import DueTimeOracle
from asymcache.cacheserver.policy.cost import CostModel, TierLink
from asymcache.tiers.base import Tier, create_tier
from asymcache.tiers.cpu import CpuTier

if TYPE_CHECKING:
    from asymcache.tiers.remote import RemoteTier

DISK_DIRNAME = "blocks.lmdb"
SHM_DIR = "/dev/shm"  # where Linux keeps POSIX shared memory (the CPU tier's slab)
_BLOCK_SIZE = re.compile(r"(?:^|;)block=(\d+)(?:;|$)")


class ShmTooSmall(ValueError):
    """The CPU tier does not fit in the free shared memory: a configuration error (exit 2)."""


def check_shm_room(cfg: ServerConfig, shm_dir: str = SHM_DIR) -> None:
    """Raise :class:`ShmTooSmall` (naming ``cpu_bytes``) when the CPU tier's slab is larger
    than the free space of ``shm_dir``: committing its pages would kill the daemon with SIGBUS.
    Nothing to check where ``shm_dir`` does not exist."""
    try:
        st = os.statvfs(shm_dir)
    except OSError:
        return
    need, free = cfg.cpu_num_slots * cfg.cpu_slot_bytes, st.f_bavail * st.f_frsize
    if need > free:
        raise ShmTooSmall(
            f"cpu_bytes: the CPU tier needs {need} bytes ({_gib(need)}) of shared memory but "
            f"{shm_dir} has {free} bytes ({_gib(free)}) free; lower cpu_bytes or give "
            f"{shm_dir} more room (docker: shm_size)")


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.2f} GiB"


def open_tiers(cfg: ServerConfig) -> tuple[CpuTier, Tier | None]:
    """The CPU tier (a new shared-memory slab, after :func:`check_shm_room`) and, unless
    ``disk_bytes`` is 0, the LMDB tier in ``<data_dir>/blocks.lmdb`` (created if missing,
    reopened with its blocks if present)."""
    check_shm_room(cfg)
    cpu = create_tier("cpu", capacity_bytes=cfg.cpu_bytes, slot_bytes=cfg.cpu_slot_bytes,
                      populate=cfg.cpu_populate)
    assert isinstance(cpu, CpuTier)
    if not cfg.disk_bytes:
        return cpu, None
    try:
        disk = create_tier("disk", path=str(Path(cfg.data_dir) / DISK_DIRNAME),
                           capacity_bytes=cfg.disk_bytes, block_bytes=cfg.cpu_slot_bytes,
                           map_bytes=cfg.disk_map_bytes or None,
                           queue_bytes=cfg.disk_queue_bytes)
    except Exception:
        cpu.close()
        raise
    return cpu, disk


def open_remote(cfg: ServerConfig, metrics: DaemonMetrics) -> RemoteTier | None:
    """The remote tier when ``remote.nodes`` is set (else None). It never waits for the
    cluster: it connects in the background and reports ``ready`` once a node answers."""
    if not cfg.remote.nodes:
        return None
    try:
        import redis  # noqa: F401 - the remote tier's client library, an optional dependency
    except ImportError:
        raise ValueError("remote.nodes is set but redis-py is not installed: "
                         "pip install 'asymcache[remote]'") from None
    remote = create_tier("remote", config=cfg.remote_tier_config(), observe=metrics.remote_round)
    return remote  # type: ignore[return-value]


class PolicyFactory:
    """``make(tier, capacity)``: the configured policy of ``tier`` with MSA reuse semantics and
    the configured cost model (if any), whose remote load figures are the configured ones.
    :meth:`use_remote_figures` swaps in measured figures for every policy made so far. With
    ``oracle_file`` (every tier ``belady``), the file is read here, once: every tier's policy,
    each engine's GPU index included, shares the one oracle (a use seen in one tier is seen by
    all); a bad file raises :class:`OracleFileError` naming the field."""

    def __init__(self, cfg: ServerConfig) -> None:
        self.cfg = cfg
        self.oracle: DueTimeOracle | None = read_oracle(cfg.oracle_file) \
            if cfg.oracle_file else None
        self.cost_model: CostModel | None = None
        if cfg.cost_preset:
            self.cost_model = CostModel.preset(cfg.cost_preset)
            if cfg.remote.load_bandwidth_bps > 0:
                self.cost_model = with_remote_link(self.cost_model, cfg.remote.load_latency_s,
                                                   cfg.remote.load_bandwidth_bps)

    def __call__(self, tier: str, capacity: int) -> ResidencyPolicy:
        name = self.cfg.policy_for(tier)
        signals = self.cfg.signals and policy_class(name).signal_aware
        extra = {"oracle": self.oracle} if self.oracle is not None else {}
        return create_policy(name, capacity, semantics="msa", cost_model=self.cost_model,
                             tier=tier, signals=signals, **extra)

    def use_remote_figures(self, figures: tuple[float, float],
                           policies: Iterable[ResidencyPolicy]) -> bool:
        """Price loads from the remote tier at ``(latency_s, bandwidth_bps)`` from now on, in
        ``policies`` and in policies made later; False (nothing changed) without a cost model
        or when the figures are within 10% of those in use."""
        model = self.cost_model
        if model is None:
            return False
        latency, bandwidth = figures
        old = next((link for link in model.load if link.tier == "remote"), None)
        if old is not None and _close(old.bandwidth_bps, bandwidth) and _close(
                old.latency_s, latency):
            return False
        self.cost_model = with_remote_link(model, latency, bandwidth)
        for policy in policies:
            policy.cost_model = self.cost_model
        return True


def with_remote_link(model: CostModel, latency_s: float, bandwidth_bps: float) -> CostModel:
    """``model`` with its ``remote`` load figures replaced (or added)."""
    links = [link for link in model.load if link.tier != "remote"]
    links.append(TierLink("remote", bandwidth_bps, latency_s))
    return dataclasses.replace(model, load=tuple(links))


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= 0.1 * max(abs(a), abs(b))


def block_size_of(layout_text: str) -> int:
    """Tokens per block from a ``KVLayout.canonical()`` text (0 if it does not say)."""
    m = _BLOCK_SIZE.search(layout_text)
    return int(m.group(1)) if m else 0


def rebuild_index(ctx: Context) -> int:
    """Index every block the disk tier holds (what a previous daemon stored durably).

    Bulk path (a million headers take seconds): records are built directly and handed to the
    disk policy as its block infos; values that repeat across blocks (namespace, layout, size,
    position, and each parent: its record's key) are shared, not stored once per block; the
    cyclic garbage collector is paused meanwhile (the records are acyclic; the server freezes
    them once start-up is done)."""
    level = ctx.residency.chain.level("disk")
    if level is None:
        return 0
    disk: Tier = level.store.tier  # type: ignore[attr-defined]
    insert, add, bit = level.policy.insert, ctx.index.add, level.bit
    now = ctx.clock()
    shared: dict = {}  # namespace / layout / size / position -> one object for all blocks
    tokens: dict[str, int] = {}  # layout text -> block size (few distinct layouts)
    n = 0
    collecting = gc.isenabled()
    gc.disable()
    try:
        for key, h in disk.headers():
            n_tokens = tokens.get(h.layout)
            if n_tokens is None:
                n_tokens = tokens[h.layout] = block_size_of(h.layout)
            rec = BlockRecord(key, shared.setdefault(h.namespace, h.namespace),
                              None if h.parent == ROOT_PARENT else h.parent,
                              shared.setdefault(h.position, h.position), n_tokens,
                              shared.setdefault(h.length, h.length),
                              shared.setdefault(h.layout, h.layout), where=bit)
            if add(rec):
                insert(rec.info(), now)
                n += 1
        parent_key = ctx.index.parent_key
        for rec in ctx.index.records():
            if rec.parent is not None:
                rec.parent = parent_key(rec.parent)
    finally:
        if collecting:
            gc.enable()
    return n

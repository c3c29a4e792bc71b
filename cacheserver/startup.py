"""Start-up steps: open the tiers, build the residency policies, rebuild the index from disk.

Kept apart from ``server.py`` so the lifecycle reads as a list of steps and each step can be
tested (and benchmarked: the index rebuild rate) on its own.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from cacheserver.config import ServerConfig
from cacheserver.handlers import Context
from cacheserver.policy import ResidencyPolicy, create_policy
from cacheserver.protocol import BlockRef
from tiers.base import Tier, create_tier
from tiers.cpu import CpuTier

DISK_DIRNAME = "blocks.lmdb"
_BLOCK_SIZE = re.compile(r"(?:^|;)block=(\d+)(?:;|$)")


def open_tiers(cfg: ServerConfig) -> tuple[CpuTier, Tier | None]:
    """The CPU tier (a new shared-memory slab) and, unless ``disk_bytes`` is 0, the LMDB tier
    in ``<data_dir>/blocks.lmdb`` (created if missing, reopened with its blocks if present)."""
    cpu = create_tier("cpu", capacity_bytes=cfg.cpu_bytes, slot_bytes=cfg.cpu_slot_bytes,
                      populate=cfg.cpu_populate)
    assert isinstance(cpu, CpuTier)
    if not cfg.disk_bytes:
        return cpu, None
    try:
        disk = create_tier("disk", path=str(Path(cfg.data_dir) / DISK_DIRNAME),
                           capacity_bytes=cfg.disk_bytes, block_bytes=cfg.cpu_slot_bytes,
                           map_bytes=cfg.disk_map_bytes or None)
    except Exception:
        cpu.close()
        raise
    return cpu, disk


def policy_factory(cfg: ServerConfig) -> Callable[[str, int], ResidencyPolicy]:
    """``make(tier, capacity)``: the configured policy of ``tier`` with MSA reuse semantics and
    the configured cost model (if any)."""
    cost_model = None
    if cfg.cost_preset:
        from cacheserver.policy.cost import CostModel

        cost_model = CostModel.preset(cfg.cost_preset)

    def make(tier: str, capacity: int) -> ResidencyPolicy:
        return create_policy(cfg.policy_for(tier), capacity, semantics="msa",
                             cost_model=cost_model, tier=tier)

    return make


def block_size_of(layout_text: str) -> int:
    """Tokens per block from a ``KVLayout.canonical()`` text (0 if it does not say)."""
    m = _BLOCK_SIZE.search(layout_text)
    return int(m.group(1)) if m else 0


def rebuild_index(ctx: Context) -> int:
    """Index every block the disk tier holds (what a previous daemon stored durably)."""
    disk = ctx.residency.disk
    if disk is None:
        return 0
    policy = ctx.residency.policies["disk"]
    now = ctx.clock()
    n = 0
    tokens: dict[str, int] = {}  # layout text -> block size (few distinct layouts)
    for key, header in disk.headers():
        ref = BlockRef(key, header.namespace, header.parent, header.position)
        n_tokens = tokens.get(header.layout)
        if n_tokens is None:
            n_tokens = tokens[header.layout] = block_size_of(header.layout)
        rec = ctx.index.ensure(ref, n_tokens, header.length, header.layout)
        rec.disk = True
        policy.insert(rec.info(), now)
        n += 1
    return n

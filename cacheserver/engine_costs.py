"""Each engine's own cost model, and which namespaces it prices.

An engine sends its cost profile with HELLO (``asymcache-cost-profile/1``: what ``asymcache
profile`` writes, or what the engine measured at start). The daemon then ranks blocks with the
cost model of the engine whose namespace they belong to: a CPU engine's attention overtakes its
linear cost at ~1,500 positions where an H100's does at ~30,000, and a block's value follows
the machine that would recompute it. The engine's compute figures and its load figures are
kept; the tiers it has no figures for (typically disk and remote) get the daemon's own (the
configured preset's, and the remote link it measured). An engine that sends no profile is
priced with the daemon's ``cost_preset`` (logged once per registration).

The namespace map is bounded (``quotas.max_namespaces``); past it, a new namespace is priced
with the preset. An engine that leaves keeps pricing its namespaces' blocks until another
engine of the same namespace registers.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from asymcache.cacheserver.leases import EngineSession
from asymcache.cacheserver.policy.cost import CostModel

log = logging.getLogger("asymcache.costs")


class EngineCosts:
    """``by_ns``: namespace -> the cost model of the engine that uses it (shared with every
    policy as ``namespace_costs``)."""

    def __init__(self, fallback: CostModel | None, max_namespaces: int) -> None:
        self.fallback = fallback  # the daemon's model (preset + its remote link)
        self.max_namespaces = max_namespaces
        self.by_ns: dict[bytes, CostModel] = {}

    def model_of(self, profile: Mapping[str, Any]) -> CostModel:
        """The model an engine's profile describes, with the daemon's load figures for the
        tiers it lacks; ``ProfileError`` (a ``ValueError``) naming a bad field."""
        return self._completed(CostModel.from_dict(profile))

    def _completed(self, model: CostModel) -> CostModel:
        fallback = self.fallback
        if fallback is None:
            return model
        own = {link.tier for link in model.load}
        extra = tuple(link for link in fallback.load if link.tier not in own)
        remote = next((link for link in fallback.load if link.tier == "remote"), None)
        links = tuple(link for link in model.load if link.tier != "remote" or remote is None)
        if remote is not None:  # the daemon measures its own remote link
            links += (remote,)
            extra = tuple(link for link in extra if link.tier != "remote")
        return dataclasses.replace(model, load=links + extra)

    def note(self, namespace: bytes, session: EngineSession) -> None:
        """Blocks of ``namespace`` come from ``session``'s engine: price them with its model."""
        model = session.cost_model
        if model is None:
            return
        by_ns = self.by_ns
        known = by_ns.get(namespace)
        if known is model or (known is None and len(by_ns) >= self.max_namespaces):
            return
        by_ns[namespace] = model

    def use_fallback(self, fallback: CostModel | None,
                     sessions: Iterable[EngineSession]) -> None:
        """The daemon's model changed (new remote figures): complete every engine's again."""
        self.fallback = fallback
        swapped: dict[int, CostModel] = {}
        for session in sessions:
            if session.raw_cost_model is None or session.cost_model is None:
                continue
            new = self._completed(session.raw_cost_model)
            swapped[id(session.cost_model)] = new
            session.cost_model = new
            session.gpu_policy.cost_model = new
        for ns, model in list(self.by_ns.items()):
            if id(model) in swapped:
                self.by_ns[ns] = swapped[id(model)]


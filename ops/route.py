"""A cache-aware router built on the daemons' KV events: which engine should serve a prompt.

It keeps, per daemon (host), an index of the blocks that host holds (``ops/kv_events.py``), fed
by the daemon's event stream (``engine/kv_events.py``), and answers for each engine how much of a
prompt it would find cached and where: in its own GPU pool, or in its host's CPU, disk or remote
tier. It sends a prompt where the prefill work it leaves, plus the work already queued there,
is least:

    work(engine) = prompt tokens not cached for that engine + ``load(engine)``

``load`` is the caller's estimate of the prefill tokens already waiting on the engine, so a
popular cached prefix does not pile every request onto one engine. With ``mode="prefix"`` only
the leading run of cached blocks counts (what a prefix cache can reuse); with ``"blocks"``
every cached block counts (what MSA reuses). Ties go round robin. Block keys are the engines'
own (``cacheserver/blocks.py``), computed from the engine's namespace (model, KV layout and
``cache_salt``) and the prompt's token ids. With ``shared_remote`` (hosts share one remote
tier), a block another host announced in its remote tier is reachable from every host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from asymcache.cacheserver.blocks import block_keys
from asymcache.engine.kv_events import EventSubscriber
from asymcache.ops.kv_events import HostIndex

TIERS = ("GPU", "CPU", "DISK", "REMOTE")  # best first


@dataclass(frozen=True)
class Backend:
    """An engine as the router sees it: its id (the daemon's ``engine_id``), the host (daemon)
    it is behind, its block size and its namespace for a ``cache_salt``."""

    name: str
    host: str
    block_size: int
    namespace: Callable[[str], bytes]


@dataclass
class Choice:
    backend: Backend
    cached_tokens: int  # the prompt tokens the chosen engine finds cached (by the mode's rule)
    tiers: dict[str, int] = field(default_factory=dict)  # cached blocks by where they are
    work: int = 0


class CacheAwareRouter:
    """See the module docstring. ``hosts`` maps each host to its daemon's
    ``(events_endpoint, replay_endpoint)``."""

    def __init__(self, backends: Sequence[Backend], hosts: dict[str, tuple[str, str]],
                 mode: str = "blocks", shared_remote: bool = True) -> None:
        if mode not in ("blocks", "prefix"):
            raise ValueError(f"mode must be 'blocks' or 'prefix', got {mode!r}")
        missing = {b.host for b in backends} - set(hosts)
        if missing:
            raise ValueError(f"no event endpoints for host(s) {sorted(missing)}")
        self.backends, self.mode, self.shared_remote = list(backends), mode, shared_remote
        self.index = {host: HostIndex() for host in hosts}
        self.subs = {host: EventSubscriber(ev, replay) for host, (ev, replay) in hosts.items()}
        self._turn = 0
        self.events = 0

    def refresh(self) -> None:
        """Apply every event the daemons published since the last call (never blocks long)."""
        for host, sub in self.subs.items():
            index = self.index[host]
            for batch in sub.batches(0.0):
                for event in batch.events:
                    index.apply(event)
                    self.events += 1

    def where(self, backend: Backend, prompt: Sequence[int], cache_salt: str = ""
              ) -> list[str | None]:
        """For each full block of ``prompt``: the best place ``backend`` would find it (a
        tier of ``TIERS``), or None."""
        places = self.index[backend.host].places
        others = [ix.places for host, ix in self.index.items()
                  if host != backend.host and self.shared_remote]
        gpu = f"GPU:{backend.name}"
        out: list[str | None] = []
        for key in block_keys(backend.namespace(cache_salt), prompt, backend.block_size):
            held = places.get(key, ())
            if gpu in held:
                out.append("GPU")
                continue
            best = next((t for t in TIERS[1:] if t in held), None)
            if best is None and any("REMOTE" in o.get(key, ()) for o in others):
                best = "REMOTE"  # another host put it in the remote tier they share
            out.append(best)
        return out

    def cached(self, backend: Backend, prompt: Sequence[int], cache_salt: str = ""
               ) -> tuple[int, dict[str, int]]:
        """``(cached tokens, cached blocks by tier)`` of ``prompt`` on ``backend``."""
        found = self.where(backend, prompt, cache_salt)
        if self.mode == "prefix":
            n = next((i for i, t in enumerate(found) if t is None), len(found))
            found = found[:n]
        tiers = {t: found.count(t) for t in TIERS if t in found}
        return sum(tiers.values()) * backend.block_size, tiers

    def choose(self, prompt: Sequence[int], cache_salt: str = "",
               load: Callable[[Backend], int] = lambda b: 0) -> Choice:
        """The backend with the least prefill work for ``prompt`` (module docstring)."""
        self.refresh()
        best: Choice | None = None
        n = len(self.backends)
        for i in range(n):
            backend = self.backends[(self._turn + i) % n]
            tokens, tiers = self.cached(backend, prompt, cache_salt)
            work = len(prompt) - tokens + load(backend)
            if best is None or work < best.work:
                best = Choice(backend, tokens, tiers, work)
        self._turn = (self._turn + 1) % n
        assert best is not None, "a router has at least one backend"
        return best

    def close(self) -> None:
        for sub in self.subs.values():
            sub.close()

"""What an engine tells its daemon about tenants and their clients' wishes.

A request's ``cache_salt`` picks its namespace; each namespace is told to the daemon once per
registration, with its tenant's digest and label (never the salt), so that the daemon can count
and purge by tenant. At a request's end its client's PIN (a TTL) and SIGNAL (its session's
digest, never the ``prompt_cache_key``, and its retention) go to the daemon, each capped by the
tenant's own limits (the API keys file) or else the engine's; an ended session is told at once.
Every message is one-way advice: without a daemon, or while it is down, nothing is sent and
nothing waits.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from asymcache.cacheserver.blocks import (
    KVLayout,
    namespace_id,
    session_digest,
    tenant_digest,
    tenant_label,
)

if TYPE_CHECKING:
    from asymcache.engine.cache_link import CacheLink
    from asymcache.engine.request import Request

TENANTS_KEPT = 4096  # namespaces whose tenant the engine remembers (oldest forgotten)


class Tenancy:
    """Namespaces and their tenants, and the caps on what a client may ask for.

    ``caps`` are the engine's own :data:`~asymcache.engine.config.TIME_CAPS` (seconds; 0: no
    cap). The HTTP server sets :attr:`tenant_name` (salt -> the API keys' tenant) and
    :attr:`tenant_caps` (salt -> that tenant's own caps) when it serves with API keys.
    """

    def __init__(self, fingerprint: str, layout: KVLayout, caps: Mapping[str, float],
                 link: CacheLink | None) -> None:
        self.fingerprint, self.layout, self.caps, self.link = fingerprint, layout, caps, link
        self.served_model = ""  # the name the HTTP server serves the model under
        self.tenant_name: Callable[[str], str | None] | None = None
        self.tenant_caps: Callable[[str], Mapping[str, float]] | None = None
        self.tenants: dict[bytes, tuple[bytes, str]] = {}  # namespace -> (digest, label)
        self._untold: list[bytes] = []  # namespaces this registration has not heard of
        self._told_generation = -1

    def namespace(self, cache_salt: str) -> bytes:
        """The namespace of ``cache_salt``'s blocks; a new one is told to the daemon at the
        next :meth:`tell_tenants`."""
        ns = namespace_id(self.fingerprint, self.layout, cache_salt)
        if self.link is not None and ns not in self.tenants:
            if len(self.tenants) >= TENANTS_KEPT:
                self.tenants.pop(next(iter(self.tenants)))
            name = self.tenant_name(cache_salt) if self.tenant_name is not None else None
            self.tenants[ns] = (tenant_digest(cache_salt), tenant_label(cache_salt, name))
            self._untold.append(ns)
        return ns

    def capped(self, name: str, seconds: float, cache_salt: str) -> float:
        """``seconds`` within cap ``name`` of ``cache_salt``'s tenant: its own, else this
        engine's; 0 is no cap."""
        own = self.tenant_caps(cache_salt) if self.tenant_caps is not None else {}
        cap = own.get(name, self.caps[name])
        return min(seconds, cap) if cap > 0 else seconds

    def end_session(self, prompt_cache_key: str, cache_salt: str = "") -> bool:
        """Tell the daemon, one-way, that the client ended session ``prompt_cache_key`` (of
        ``cache_salt``'s tenant); whether it was sent."""
        if self.link is None:
            return False
        return self.link.end_session(session_digest(cache_salt, prompt_cache_key))

    def tell_tenants(self) -> None:
        """Send the daemon the namespaces it has not heard of from this registration (all of
        them again after a re-registration: the daemon may have lost its registry)."""
        if self.link is None or not self.link.connected:
            return
        generation = self.link.generation
        if generation != self._told_generation:
            self._untold, self._told_generation = list(self.tenants), generation
        if not self._untold:
            return
        untold, self._untold = self._untold, []
        entries = [(ns, *self.tenants[ns]) for ns in dict.fromkeys(untold) if ns in self.tenants]
        if not self.link.tenants(entries, self.served_model):
            self._untold = untold + self._untold  # told again once the daemon answers

    def tell_finished(self, req: Request) -> None:
        """PIN the blocks of finished ``req`` (TTL) and SIGNAL (one-way) what its client said:
        its session's digest and its retention, both capped per tenant."""
        assert self.link is not None
        params, salt = req.params, req.params.cache_salt
        if params.pin_ttl_s is not None:
            self.link.pin(req.keys, self.capped("max_pin_ttl_s", params.pin_ttl_s, salt))
        retention = self.capped("max_retention_s", params.prompt_cache_retention, salt)
        key = params.prompt_cache_key
        if key is not None or retention > 0:
            session = None if key is None else session_digest(salt, key)
            self.link.signal(req.keys, session, retention)

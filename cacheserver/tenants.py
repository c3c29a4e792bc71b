"""Tenants in the daemon: which namespace belongs to whom, per-tenant counts and quotas, purges.

The daemon sees namespaces (``blocks.namespace_id``), never salts. Engines say which tenant each
namespace belongs to (TENANTS: ``blocks.tenant_digest(cache_salt)``, a label and the served model
name); :class:`TenantBook` keeps that map, bounded by ``quotas.max_namespaces``, in
``<data_dir>/tenants.msgpack`` (written whole, atomically, when it changes), so blocks found on
disk or in the remote tier after a restart are attributed and purgeable again. A namespace no
engine registered is counted under :data:`UNREGISTERED`.

Counts: blocks per (level, namespace), kept by the chain's ``entered``/``left`` events, read by
label (a tenant's namespaces together; registering a namespace moves nothing); metrics show the
``quotas.metrics_top`` largest tenants and ``other``.

Quotas (``[quotas]`` in the configuration, ``QuotaSection``): at most so many blocks of one
tenant in a level (a default for every tenant, and per label in ``quotas.tenants_file``). A
block entering a level whose tenant (all the namespaces it registered; an unregistered namespace
is a tenant of its own) is at its quota first evicts that tenant's own lowest-value block there
(``ResidencyPolicy.cheapest_of``: demoted as any victim), never another tenant's; when all of
them are leased or pinned the block is not placed (the chain's usual "no room").

Purges: the namespaces of a tenant (and model) are found here; the handler drops their blocks
from every level and every engine's GPU index, and records the purge under a sequence number
per engine that held blocks of it: the engine's next heartbeat reply names the namespaces
(:meth:`pending_for`), its pool drops them, and its following heartbeat confirms
(``purged_upto``). Until confirmed, a re-HELLO's held blocks of those namespaces are not indexed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack

if TYPE_CHECKING:
    from asymcache.cacheserver.chain import Level, TierChain
    from asymcache.cacheserver.config import QuotaSection

log = logging.getLogger("asymcache.tenants")
UNREGISTERED = "unregistered"  # the label of blocks whose namespace no engine registered
OTHER = "other"  # metrics: the tenants past the top N together
FILE_NAME = "tenants.msgpack"
_FILE_FORMAT = "asymcache-tenants-v1"
_FILE_MAX_BYTES = 64 << 20  # msgpack limits when reading it back


@dataclass(frozen=True, slots=True)
class Tenant:
    digest: bytes  # blocks.tenant_digest(cache_salt)
    label: str
    model: str  # the served model name the registering engine gave ("" = none)
    fingerprint: str  # that engine's model fingerprint


class TenantBook:
    """Namespace -> :class:`Tenant`, per-level counts, quotas and pending purges."""

    def __init__(self, quotas: QuotaSection, data_dir: str | None) -> None:
        self.quotas = quotas
        self.limits = quotas.limits()  # label -> level -> blocks ("*": every tenant)
        self.time_caps = quotas.time_caps()  # label -> max_retention_s / max_pin_ttl_s
        self.path = Path(data_dir) / FILE_NAME if data_dir else None
        self.by_ns: dict[bytes, Tenant] = {}
        self.counts: Counter[tuple[str, bytes]] = Counter()  # (level, namespace) -> blocks
        self._members: dict[tuple[str, bytes], dict[bytes, None]] = {}  # quota levels only
        self._namespaces_by_digest: dict[bytes, list[bytes]] = {}  # a tenant's namespaces
        self._quota_levels = {level for per in self.limits.values() for level in per}
        self._purges: dict[str, list[tuple[int, bytes]]] = {}  # engine -> (seq, namespace)
        self.aware: set[str] = set()  # engines that sent TENANTS: they understand purges
        self._seq = 0
        self.refused = 0  # registrations refused: max_namespaces reached
        self.quota_evictions: Counter[str] = Counter()  # level -> blocks evicted for a quota
        self.purged_blocks: Counter[str] = Counter()  # tier -> blocks removed by purges
        self._load()

    # ---- registry -------------------------------------------------------------------------
    def label(self, namespace: bytes) -> str:
        tenant = self.by_ns.get(namespace)
        return UNREGISTERED if tenant is None else tenant.label

    def register(self, entries: Iterable[tuple[bytes, bytes, str]], model: str,
                 fingerprint: str) -> int:
        """Record ``(namespace, tenant digest, label)`` entries; how many were new. Past
        ``max_namespaces`` new ones are refused (counted, logged once per call). A namespace
        re-registered under another tenant keeps its first one (namespaces are digests of the
        salt: a different digest for the same namespace is an engine's bug, logged)."""
        new = 0
        refused = 0
        for ns, digest, label in entries:
            known = self.by_ns.get(ns)
            if known is not None:
                if known.digest != digest:
                    log.error("namespace %s registered for another tenant; kept the first",
                              ns.hex())
                continue
            if len(self.by_ns) >= self.quotas.max_namespaces:
                refused += 1
                continue
            self.by_ns[ns] = Tenant(digest, label, model, fingerprint)
            self._namespaces_by_digest.setdefault(digest, []).append(ns)
            new += 1
        if refused:
            self.refused += refused
            log.warning("%d namespaces not registered: %d are known (quotas.max_namespaces)",
                        refused, len(self.by_ns))
        if new:
            self._save()
        return new

    def namespaces_of(self, digest: bytes, model: str = "") -> list[bytes]:
        """The namespaces of tenant ``digest`` (of ``model``, a served name or a fingerprint,
        when given)."""
        return [ns for ns, t in self.by_ns.items() if t.digest == digest
                and (not model or model in (t.model, t.fingerprint))]

    # ---- counts and quotas (the chain's events) ---------------------------------------------
    # Counted per namespace, so that registering a namespace (its blocks move from
    # ``unregistered`` to a label) changes no count; labels are applied when read.
    def entered(self, level: str, block: Any) -> None:
        ns = block.namespace
        self.counts[level, ns] += 1
        if level in self._quota_levels:
            self._members.setdefault((level, ns), {})[block.key] = None

    def left(self, level: str, block: Any) -> None:
        slot = (level, block.namespace)
        n = self.counts[slot] - 1
        if n > 0:
            self.counts[slot] = n
        else:
            del self.counts[slot]
        members = self._members.get(slot)
        if members is not None:
            members.pop(block.key, None)
            if not members:
                del self._members[slot]

    def recount(self, records: Iterable[Any], levels: Iterable[Level]) -> None:
        """Count every indexed block again (after the start-up rebuild, which indexes the
        disk's blocks without the chain's events)."""
        self.counts.clear()
        self._members.clear()
        levels = list(levels)
        for rec in records:
            for level in levels:
                if rec.where & level.bit:
                    self.entered(level.name, rec)

    def time_cap(self, name: str, namespace: bytes) -> float:
        """The longest ``name`` (``max_retention_s`` or ``max_pin_ttl_s``) granted to the
        tenant of ``namespace``: its label's own value, else the ``[quotas]`` one."""
        own = self.time_caps.get(self.label(namespace), {})
        return own.get(name, self.time_caps["*"][name])

    def limit(self, level: str, label: str) -> int:
        own = self.limits.get(label, {})
        return own.get(level, self.limits.get("*", {}).get(level, 0))

    def _tenant_members(self, level: str, namespace: bytes) -> list[dict[bytes, None]]:
        """The member sets in ``level`` of the tenant ``namespace`` belongs to: all its
        registered namespaces (a tenant has one per model and layout); an unregistered
        namespace is a tenant of its own."""
        tenant = self.by_ns.get(namespace)
        if tenant is None:
            spaces: Iterable[bytes] = (namespace,)
        else:
            spaces = self._namespaces_by_digest.get(tenant.digest, (namespace,))
        return [m for ns in spaces if (m := self._members.get((level, ns)))]

    def make_room(self, chain: TierChain, level: Level, block: Any, now: float) -> bool:
        """Evict ``block``'s tenant's own blocks from ``level`` until it is under its quota
        there; ``False`` when it is at its quota and none of its blocks may go."""
        if level.name not in self._quota_levels:
            return True
        limit = self.limit(level.name, self.label(block.namespace))
        if limit <= 0:
            return True
        groups = self._tenant_members(level.name, block.namespace)
        while sum(len(m) for m in groups) >= limit:
            victim = level.policy.cheapest_of(
                [key for members in groups for key in members], now)
            if victim is None:
                return False
            chain.leave(level, victim, now, evicted=True)
            for members in groups:
                members.pop(victim, None)  # also when the store had lost it already
            self.quota_evictions[level.name] += 1
        return True

    def top(self, n: int) -> Iterator[tuple[str, str, int]]:
        """``(level, label, blocks)`` of the ``n`` tenants with most blocks over all levels,
        and the rest under :data:`OTHER`."""
        by_label: Counter[tuple[str, str]] = Counter()
        for (level, ns), count in self.counts.items():
            by_label[level, self.label(ns)] += count
        totals: Counter[str] = Counter()
        for (_, label), count in by_label.items():
            totals[label] += count
        shown = {label for label, _ in totals.most_common(n)}
        rest: Counter[str] = Counter()
        for (level, label), count in by_label.items():
            if label in shown:
                yield level, label, count
            else:
                rest[level] += count
        for level, count in rest.items():
            yield level, OTHER, count

    # ---- purges -----------------------------------------------------------------------------
    def purged(self, namespaces: list[bytes], engines: Iterable[str]) -> None:
        """Remember that ``engines`` must drop ``namespaces`` from their pools (those that
        sent TENANTS: an engine that predates it could not read the heartbeat reply)."""
        for engine in engines:
            if engine not in self.aware:
                continue
            pending = self._purges.setdefault(engine, [])
            for ns in namespaces:
                self._seq += 1
                pending.append((self._seq, ns))

    def pending_for(self, engine: str, upto: int) -> tuple[list[bytes], int]:
        """The namespaces ``engine`` has not confirmed dropping (it confirmed those numbered
        up to ``upto``) and the last number; the confirmed ones are forgotten."""
        pending = self._purges.get(engine)
        if not pending:
            return [], 0
        pending[:] = [(seq, ns) for seq, ns in pending if seq > upto]
        if not pending:
            del self._purges[engine]
            return [], 0
        return [ns for _, ns in pending], pending[-1][0]

    def unconfirmed(self, engine: str) -> set[bytes]:
        """Namespaces ``engine`` has yet to drop: a re-HELLO's held blocks of them are
        skipped."""
        return {ns for _, ns in self._purges.get(engine, ())}

    # ---- the file ---------------------------------------------------------------------------
    def _load(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            raw = self.path.read_bytes()
            doc = msgpack.unpackb(raw, raw=False, strict_map_key=True,
                                  max_bin_len=_FILE_MAX_BYTES, max_str_len=_FILE_MAX_BYTES,
                                  max_array_len=self.quotas.max_namespaces * 5 + 2,
                                  max_map_len=8)
            if not isinstance(doc, dict) or doc.get("format") != _FILE_FORMAT:
                raise ValueError(f"not a {_FILE_FORMAT} file")
            rows = doc["namespaces"]
            for ns, digest, label, model, fingerprint in rows[: self.quotas.max_namespaces]:
                if not (isinstance(ns, bytes) and len(ns) == 16 and isinstance(digest, bytes)
                        and len(digest) == 16 and isinstance(label, str)
                        and isinstance(model, str) and isinstance(fingerprint, str)):
                    raise ValueError("a malformed entry")
                self.by_ns[ns] = Tenant(digest, label, model, fingerprint)
                self._namespaces_by_digest.setdefault(digest, []).append(ns)
        except (OSError, ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            aside = self.path.with_suffix(".damaged")
            log.error("tenant registry %s unreadable (%s); starting with none, the file "
                      "moved to %s", self.path, exc, aside)
            self.by_ns.clear()
            self._namespaces_by_digest.clear()
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            return
        log.info("tenant registry: %d namespaces from %s", len(self.by_ns), self.path)

    def _save(self) -> None:
        if self.path is None:
            return
        rows = [[ns, t.digest, t.label, t.model, t.fingerprint] for ns, t in self.by_ns.items()]
        data = msgpack.packb({"format": _FILE_FORMAT, "namespaces": rows}, use_bin_type=True)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".tenants-")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except OSError as exc:  # the registry then lives in memory until the next write
            log.error("cannot write the tenant registry %s: %s", self.path, exc)

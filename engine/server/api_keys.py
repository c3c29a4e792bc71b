"""API keys of the HTTP server: each key names a tenant (and the ``cache_salt`` its requests
use) or an administrator (``EngineConfig.api_keys_file``; docs/security.md, "API keys and
tenants").

The file is JSON, one entry per key::

    {"sk-tenant-a-...": {"tenant": "a", "cache_salt": "salt-a"},
     "sk-ops-...":      {"admin": true},
     "sk-both-...":     {"tenant": "ops", "cache_salt": "salt-ops", "admin": true},
     "sk-tenant-c-...": {"tenant": "c", "cache_salt": "salt-c", "max_retention_s": 600,
                         "max_pin_ttl_s": 0}}

A tenant's entry may set its own ``max_retention_s`` and ``max_pin_ttl_s`` (seconds, 0: no cap),
in place of the engine's (``EngineConfig``); like its salt, one value per tenant.

Only the SHA-256 digest of each key is kept in memory. A presented key's digest picks its
candidates by the digest's first bytes (a dictionary lookup, whose timing tells nothing about
any key), and each candidate's whole digest is compared with ``hmac.compare_digest``.
:class:`ApiKeys` reads the file again when it changes (polled) or on :meth:`ApiKeys.wake`
(``SIGHUP``); a new version that does not validate is logged and the keys loaded before stay in
force.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asymcache.cacheserver.protocol.wire_types import SALT_MAX_BYTES
from asymcache.engine.config import TIME_CAPS, is_seconds_cap

log = logging.getLogger(__name__)

MIN_KEY_CHARS = 16  # a shorter key can be guessed
MAX_KEY_CHARS = 512
MAX_TENANT_CHARS = 128
SELECTOR_BYTES = 8  # digest prefix that picks the candidates compared in constant time
POLL_S = 1.0  # how often the file's identity (inode, size, mtime) is checked


class KeyFileError(ValueError):
    """The API keys file cannot be used; the message names the file and the entry."""


@dataclass(frozen=True)
class Principal:
    """Who a key belongs to: a tenant (``tenant`` and its ``cache_salt``), an administrator,
    or both."""

    tenant: str | None
    cache_salt: str | None
    admin: bool = False
    max_retention_s: float | None = None  # the tenant's own caps (None: the engine's)
    max_pin_ttl_s: float | None = None

    @property
    def time_caps(self) -> dict[str, float]:
        """The tenant's own caps by name (``EngineConfig`` field names)."""
        return {name: value for name in TIME_CAPS if (value := getattr(self, name)) is not None}


_Index = Mapping[bytes, tuple[tuple[bytes, Principal], ...]]


def key_digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


def parse_key_file(path: str | Path) -> dict[bytes, Principal]:
    """The principals of the file at ``path`` by key digest; raises :class:`KeyFileError`."""
    try:
        text = Path(path).read_text(encoding="utf-8")
        raw = json.loads(text, object_pairs_hook=_no_duplicates)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise KeyFileError(f"api_keys_file {path}: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise KeyFileError(f"api_keys_file {path}: expected a JSON object mapping each API key "
                           f"to {{\"tenant\": NAME, \"cache_salt\": SALT}} or {{\"admin\": "
                           f"true}}, with at least one key")
    principals: dict[bytes, Principal] = {}
    tenants: dict[str, Principal] = {}
    for number, (key, entry) in enumerate(raw.items(), start=1):
        where = f"api_keys_file {path}, entry {number} (key {_redact(key)})"
        principal = _principal(where, key, entry)
        if principal.tenant is not None:
            known = tenants.setdefault(principal.tenant, principal)
            if known.cache_salt != principal.cache_salt:
                raise KeyFileError(f"{where}: tenant {principal.tenant!r} has another cache_salt "
                                   f"in an earlier entry (one salt per tenant)")
            if known.time_caps != principal.time_caps:
                raise KeyFileError(f"{where}: tenant {principal.tenant!r} has other "
                                   f"{' / '.join(TIME_CAPS)} in an earlier entry (one value per "
                                   f"tenant: give each of its keys the same)")
        principals[key_digest(key)] = principal
    return principals


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"the key {_redact(key)} appears twice")
        out[key] = value
    return out


def _redact(key: str) -> str:
    """Enough of a key to find it in the file, not enough to use it."""
    return f"{key[:4]}..." if len(key) >= MIN_KEY_CHARS else "(too short to show)"


def _principal(where: str, key: str, entry: Any) -> Principal:
    if not (MIN_KEY_CHARS <= len(key) <= MAX_KEY_CHARS) or not _header_safe(key):
        raise KeyFileError(f"{where}: a key must be {MIN_KEY_CHARS} to {MAX_KEY_CHARS} printable "
                           f"ASCII characters without spaces (it travels in the Authorization "
                           f"header)")
    if not isinstance(entry, dict) or set(entry) - {"tenant", "cache_salt", "admin", *TIME_CAPS}:
        raise KeyFileError(f"{where}: expected {{\"tenant\": NAME, \"cache_salt\": SALT}} (with "
                           f"{' and '.join(TIME_CAPS)} if wanted) and/or \"admin\": true, got "
                           f"{json.dumps(entry)[:200]}")
    admin = entry.get("admin", False)
    if not isinstance(admin, bool):
        raise KeyFileError(f"{where}: admin must be true or false, got {admin!r}")
    if "tenant" not in entry and "cache_salt" not in entry:
        if not admin:
            raise KeyFileError(f"{where}: an entry needs a tenant and its cache_salt, or "
                               f"\"admin\": true")
        if set(entry) & set(TIME_CAPS):
            raise KeyFileError(f"{where}: {' and '.join(TIME_CAPS)} are a tenant's: this entry "
                               f"has no tenant")
        return Principal(None, None, admin=True)
    tenant, salt = entry.get("tenant"), entry.get("cache_salt")
    if (not isinstance(tenant, str) or not tenant or len(tenant) > MAX_TENANT_CHARS
            or not tenant.isprintable()):
        raise KeyFileError(f"{where}: tenant must be a name of 1 to {MAX_TENANT_CHARS} printable "
                           f"characters, got {tenant!r}")
    if not isinstance(salt, str) or len(salt.encode("utf-8", "surrogatepass")) > SALT_MAX_BYTES:
        raise KeyFileError(f"{where}: cache_salt of tenant {tenant!r} must be a string of at most "
                           f"{SALT_MAX_BYTES} bytes, got {type(salt).__name__}")
    return Principal(tenant, salt, admin, **_time_caps(where, entry))


def _time_caps(where: str, entry: dict) -> dict[str, float]:
    caps = {}
    for name in TIME_CAPS:
        if name in entry:
            if not is_seconds_cap(entry[name]):
                raise KeyFileError(f"{where}: {name} must be a number of seconds >= 0 (0: no "
                                   f"cap), got {entry[name]!r}")
            caps[name] = float(entry[name])
    return caps


def _header_safe(key: str) -> bool:
    return all(33 <= ord(c) <= 126 for c in key)


def _index(principals: dict[bytes, Principal]) -> _Index:
    """Principals by the first :data:`SELECTOR_BYTES` of their key's digest, with the digest."""
    index: dict[bytes, tuple[tuple[bytes, Principal], ...]] = {}
    for digest, principal in principals.items():
        index[digest[:SELECTOR_BYTES]] = (*index.get(digest[:SELECTOR_BYTES], ()),
                                          (digest, principal))
    return index


def _tables(principals: dict[bytes, Principal]) -> tuple[_Index, dict[str, dict[str, float]]]:
    """The lookup index and each tenant's own caps by its salt."""
    caps = {p.cache_salt: p.time_caps for p in principals.values()
            if p.cache_salt is not None and p.time_caps}
    return _index(principals), caps


def _identity(path: Path) -> tuple[int, int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class ApiKeys:
    """The keys in force, read from ``path`` at construction (raises :class:`KeyFileError`) and
    again whenever the file changes, while :meth:`start`-ed."""

    def __init__(self, path: str | Path, poll_s: float = POLL_S) -> None:
        self.path = Path(path)
        self.poll_s = poll_s
        self._seen = _identity(self.path)
        self._keys, self._caps = _tables(parse_key_file(self.path))
        self.loaded_at = time.time()
        self.last_error: str | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        _warn_if_readable_by_others(self.path)

    def lookup(self, key: str) -> Principal | None:
        """The principal of ``key``, or None for a key not in force."""
        digest = key_digest(key)
        keys = self._keys  # one reference: a reload swaps the whole mapping
        found = None
        for stored, principal in keys.get(digest[:SELECTOR_BYTES], ()):
            if hmac.compare_digest(stored, digest):
                found = principal
        return found

    def tenant_of_salt(self, cache_salt: str) -> str | None:
        """The tenant whose salt ``cache_salt`` is (one salt per tenant), or None: the name
        its blocks are counted under in the daemon (``KVManager.namespace``)."""
        for bucket in self._keys.values():
            for _, principal in bucket:
                if principal.tenant is not None and principal.cache_salt == cache_salt:
                    return principal.tenant
        return None

    def time_caps(self, cache_salt: str) -> Mapping[str, float]:
        """The own caps (``max_retention_s``, ``max_pin_ttl_s``) of the tenant whose salt
        ``cache_salt`` is; empty: the engine's apply (``Tenancy.tenant_caps``)."""
        return self._caps.get(cache_salt, {})

    def summary(self) -> dict[str, Any]:
        """What is in force (no keys): tenants, admin key count, when loaded, the last error."""
        principals = [p for bucket in self._keys.values() for _, p in bucket]
        tenants = sorted({p.tenant for p in principals if p.tenant is not None})
        return {"file": str(self.path), "loaded_at": self.loaded_at, "keys": len(principals),
                "tenants": tenants, "admin_keys": sum(p.admin for p in principals),
                "last_error": self.last_error}

    def reload(self) -> bool:
        """Read the file again; on an error log it, keep the keys in force and return False."""
        self._seen = _identity(self.path)
        try:
            keys, caps = _tables(parse_key_file(self.path))
        except KeyFileError as exc:
            if str(exc) != self.last_error:
                log.error("%s; the API keys loaded before stay in force", exc)
            self.last_error = str(exc)
            return False
        self._keys, self._caps, self.loaded_at, self.last_error = keys, caps, time.time(), None
        log.info("API keys reloaded from %s: %d keys", self.path,
                 sum(len(bucket) for bucket in keys.values()))
        return True

    def wake(self) -> None:
        """Reload at once (safe in a signal handler: it only sets an event)."""
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="api-keys", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(5)

    def _watch(self) -> None:
        while not self._stop.is_set():
            woken = self._wake.wait(self.poll_s)
            self._wake.clear()
            if self._stop.is_set():
                return
            if woken or _identity(self.path) != self._seen:
                self.reload()


def _warn_if_readable_by_others(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if mode & 0o077:
        log.warning("api_keys_file %s can be read by other users (mode %o); chmod 600 it",
                    path, mode & 0o777)

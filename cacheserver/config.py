"""The daemon's configuration: frozen dataclasses, read by ``cacheserver/config_loader.py``.

Precedence, lowest first: defaults < a TOML file (``--config FILE``; keys named like the fields,
the remote tier's in a ``[remote]`` table) < ``ASYMCACHE_DAEMON_<FIELD>`` environment variables
(``ASYMCACHE_DAEMON_REMOTE__<FIELD>`` for the remote tier) < command-line flags
(``--cpu-bytes``, ``--remote-nodes``). Sizes (fields ending in ``_bytes``) accept plain integers
or strings with a unit (``512MiB``, ``4GiB``, ``64KiB``, ``1GB``). A bad value fails at start
with a ``ValueError`` naming the field (and where the value came from). The flat ``remote_*``
keys and ``ASYMCACHE_<FIELD>`` variables of earlier versions still work, with a warning.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from asymcache.cacheserver.access import ENDPOINT_FIELDS, exposed_endpoints, unprotected_message
from asymcache.cacheserver.config_loader import Scheme, load, parse_size
from asymcache.cacheserver.policy import policy_names
from asymcache.cacheserver.protocol import Limits
from asymcache.tiers.remote_config import RemoteTierConfig

__all__ = ["SCHEME", "QuotaSection", "RemoteSection", "ServerConfig", "load_config", "parse_size"]
ORACLE_POLICY = "belady"  # the one offline policy a daemon runs, given oracle_file
_IPC_PATH_MAX = 100  # sun_path is 108 bytes on Linux, with room for the terminator


@dataclass(frozen=True)
class RemoteSection:
    """``[remote]``: the remote tier, a Redis/Valkey Cluster shared by hosts (docs/remote.md).

    Fields are named as in ``RemoteTierConfig`` (tiers/remote_config.py), except the daemon's
    own ``timeout_s`` (every connect and socket read), ``write_through`` and ``policy``."""

    nodes: str = ""  # host:port,... startup nodes; "" = no remote tier
    capacity_bytes: int = 16 << 30  # what this daemon may have stored in the cluster
    prefix: str = "asymcache:"  # key prefix, the same on every host that shares blocks
    ttl_s: float = 0.0  # expiry of stored blocks (0 = none: maxmemory-policy evicts)
    username: str = ""  # ACL user ("" = default user)
    password: str = field(default="", repr=False)  # prefer ASYMCACHE_DAEMON_REMOTE__PASSWORD
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_verify: bool = True  # check the server certificate and host name
    timeout_s: float = 0.25  # every connect and socket read; a failed node is skipped
    write_through: bool = True  # share each block entering the CPU tier at once
    policy: str = ""
    load_bandwidth_bps: float = 0.0  # load cost of the cost model; 0 = measured on connect
    load_latency_s: float = 0.0

    def __post_init__(self) -> None:
        _check_fields(self, "remote.")
        _check_policy("remote.policy", self.policy)

    def tier_config(self, block_bytes: int) -> RemoteTierConfig:
        """The tier's configuration; ``ValueError`` names the ``remote.<field>`` that is wrong."""
        if self.timeout_s <= 0:
            raise ValueError(f"remote.timeout_s: must be positive, got {self.timeout_s}")
        own = ("timeout_s", "write_through", "policy")
        same = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in own}
        try:
            return RemoteTierConfig(**same, block_bytes=block_bytes,
                                    socket_timeout_s=self.timeout_s,
                                    connect_timeout_s=self.timeout_s)
        except ValueError as e:  # its fields are ours by the same names
            raise ValueError(str(e).replace("RemoteTierConfig.", "remote.", 1)) from None


_QUOTA_TIERS = ("cpu", "disk", "remote")


@dataclass(frozen=True)
class QuotaSection:
    """``[quotas]``: per-tenant bounds in the shared tiers, tenant metrics, the registry's size
    (``cacheserver/tenants.py``). A tenant is the label its engines register (the API keys
    file's tenant name, ``public`` without a salt, else ``salt-<8 hex>``); 0 = no bound."""

    cpu_blocks: int = 0  # the most CPU-tier blocks of any one tenant
    disk_blocks: int = 0
    remote_blocks: int = 0  # of the blocks this daemon stored in the cluster
    tenants_file: str = ""  # TOML: a table per tenant label with its own *_blocks bounds
    metrics_top: int = 8  # tenants shown by name in metrics; the rest as "other"
    max_namespaces: int = 65536  # namespaces the tenant registry keeps
    # the longest retention (SIGNAL) and pin TTL (PIN, also a pin without TTL) a tenant gets;
    # longer asks are capped (0 = no cap). tenants_file may set either per tenant label
    max_retention_s: float = 86400.0
    max_pin_ttl_s: float = 3600.0

    def __post_init__(self) -> None:
        _check_fields(self, "quotas.")
        for name in ("cpu_blocks", "disk_blocks", "remote_blocks"):
            if getattr(self, name) < 0:
                raise ValueError(f"quotas.{name}: must be >= 0, got {getattr(self, name)}")
        for name in ("metrics_top", "max_namespaces"):
            if getattr(self, name) <= 0:
                raise ValueError(f"quotas.{name}: must be positive, got {getattr(self, name)}")
        for name in _TIME_CAPS:
            value = getattr(self, name)
            if not (isinstance(value, int | float) and 0 <= value < float("inf")):
                raise ValueError(f"quotas.{name}: must be a number of seconds >= 0, got {value!r}")
        self.limits()  # raises naming quotas.tenants_file

    def time_caps(self) -> dict[str, dict[str, float]]:
        """Tenant label (``*``: every tenant) -> ``max_retention_s`` / ``max_pin_ttl_s``."""
        out = {"*": {name: float(getattr(self, name)) for name in _TIME_CAPS}}
        if self.tenants_file:
            for label, per in _tenant_table(self.tenants_file).items():
                caps = {k: float(v) for k, v in per.items() if k in _TIME_CAPS}
                if caps:
                    out[label] = caps
        return out

    def limits(self) -> dict[str, dict[str, int]]:
        """Tenant label (``*``: every tenant) -> tier -> the most blocks (bounds > 0 only)."""
        out = {"*": {t: getattr(self, f"{t}_blocks") for t in _QUOTA_TIERS
                     if getattr(self, f"{t}_blocks") > 0}}
        if self.tenants_file:
            out.update(_tenant_quotas(self.tenants_file))
        return {label: per for label, per in out.items() if per}


_TIME_CAPS = ("max_retention_s", "max_pin_ttl_s")


def _tenant_table(path: str) -> dict[str, dict]:
    import tomllib

    where = f"quotas.tenants_file: {path}"
    try:
        with open(path, "rb") as f:
            doc = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"{where}: {e}") from None
    for label, table in doc.items():
        if not isinstance(table, dict):
            raise ValueError(f"{where}: [{label}] must be a table of *_blocks bounds")
        for key in _TIME_CAPS:
            value = table.get(key, 0.0)
            if isinstance(value, bool) or not isinstance(value, int | float) \
                    or not 0 <= value < float("inf"):
                raise ValueError(f"{where}: [{label}] {key}: must be seconds >= 0, got {value!r}")
    return doc


def _tenant_quotas(path: str) -> dict[str, dict[str, int]]:
    where = f"quotas.tenants_file: {path}"
    out: dict[str, dict[str, int]] = {}
    for label, table in _tenant_table(path).items():
        per = {}
        for key, value in table.items():
            if key in _TIME_CAPS:
                continue
            tier = key.removesuffix("_blocks")
            if tier not in _QUOTA_TIERS or not key.endswith("_blocks"):
                raise ValueError(f"{where}: [{label}] {key}: unknown; known: "
                                 f"{', '.join(t + '_blocks' for t in _QUOTA_TIERS)}")
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}: [{label}] {key}: must be an int >= 0, got {value!r}")
            per[tier] = value
        out[label] = per
    return out


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``asymcache serve`` can be told. Sizes in bytes, times in seconds."""

    endpoint: str = "ipc:///tmp/asymcache.ipc"  # ipc://PATH or tcp://HOST:PORT
    data_dir: str = "asymcache-data"  # LMDB environment and daemon files
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9465  # HTTP /metrics, /healthz, /readyz; 0 = no HTTP server
    cpu_bytes: int = 1 << 30  # shared-memory CPU tier, fixed at start
    cpu_slot_bytes: int = 2 << 20  # one block per slot: engines' blocks must fit
    cpu_populate: bool = True  # commit every page of the CPU tier at start (no first-use faults)
    disk_bytes: int = 16 << 30  # disk tier capacity; 0 = no disk tier
    disk_map_bytes: int = 0  # LMDB map size; 0 = the tier's default (capacity + 25% + 64 MiB)
    disk_write_through: bool = False  # also write every CPU-tier block to disk at once
    disk_queue_bytes: int = 256 << 20  # staging memory of queued disk writes; full = refused
    policy: str = "asym"  # residency policy of every tier unless overridden below
    gpu_policy: str = ""
    cpu_policy: str = ""
    disk_policy: str = ""
    cost_preset: str = "h100-llama3-8b"  # CostModel.preset(name) for cost-aware policies
    # ("" = none: cost-aware policies then price every miss alike)
    signals: bool = True  # rank by clients' session, retention and session-end signals (SIGNAL;
    # policies that support them: docs/policy.md "Client signals")
    oracle_file: str = ""  # the replayed future (cacheserver/oracle_file.py): only with every
    # tier's policy ``belady``, which needs it (the benchmark's belady-bound configuration)
    lease_timeout_s: float = 30.0  # an engine silent this long loses its leases and GPU index
    max_engines: int = 16
    max_gpu_slots: int = 1 << 20  # per engine
    max_inflight: int = 64  # per peer: requests received and not yet answered
    max_keys: int = 4096  # per request
    max_header_bytes: int = 1 << 20
    max_message_bytes: int = 256 << 20  # a request's frames together (the engine sends <= 32
    # blocks per PUT: keep it >= 32 x cpu_slot_bytes)
    curve_secret_key_file: str = ""  # a zmq certificate with the server's secret key
    curve_clients_dir: str = ""  # public certificates (*.key) of the allowed clients, reloaded
    # while the daemon runs; required with curve_secret_key_file and never empty
    insecure_tcp: bool = False  # serve tcp endpoints other hosts can reach without CURVE (warned)
    events_endpoint: str = ""  # ZeroMQ PUB endpoint of the KV events ("" = none; docs/daemon.md)
    events_replay_endpoint: str = ""  # ROUTER answering replay requests ("" = none)
    events_replay_bytes: int = 64 << 20  # event batches kept for replay (oldest dropped)
    log_level: str = "info"
    remote: RemoteSection = field(default_factory=RemoteSection)  # the [remote] table
    quotas: QuotaSection = field(default_factory=QuotaSection)  # the [quotas] table

    def __post_init__(self) -> None:
        _check_fields(self)
        _check_endpoint(self.endpoint)
        self._check_sizes()
        self._check_policies()
        if self.cost_preset:
            from asymcache.cacheserver.policy.cost import preset_names

            if self.cost_preset not in preset_names():
                raise ValueError(f"cost_preset: unknown preset {self.cost_preset!r}; known: "
                                 f"{preset_names()}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"log_level: must be debug/info/warning/error, got {self.log_level!r}")
        self._check_events()
        self._check_access()
        if self.remote.nodes:
            self.remote_tier_config()  # raises naming the remote.<field>

    def _check_policies(self) -> None:
        """Known online policies; ``belady`` (offline) exactly when ``oracle_file`` is given,
        and then in every tier (the file itself is read at start: ``oracle_file.py``)."""
        for name in ("policy", "gpu_policy", "cpu_policy", "disk_policy"):
            _check_policy(name, getattr(self, name), self.oracle_file)
        if not self.policy:
            raise ValueError("policy: must name a policy")
        if not self.oracle_file:
            return
        tiers = ("gpu", "cpu", "disk", "remote") if self.remote.nodes else ("gpu", "cpu", "disk")
        others = {t: self.policy_for(t) for t in tiers if self.policy_for(t) != ORACLE_POLICY}
        if others:
            raise ValueError(f"oracle_file: only for a daemon whose every tier runs "
                             f"{ORACLE_POLICY!r}; these run others: {others}")
        if not Path(self.oracle_file).is_file():
            raise ValueError(f"oracle_file: {self.oracle_file!r} is not a file")

    def _check_sizes(self) -> None:
        positive = ("cpu_slot_bytes", "max_engines", "max_gpu_slots", "max_inflight", "max_keys",
                    "max_header_bytes", "disk_queue_bytes")
        for name in positive:
            if getattr(self, name) <= 0:
                raise ValueError(f"{name}: must be positive, got {getattr(self, name)}")
        one_block = self.cpu_slot_bytes + self.max_header_bytes
        if self.max_message_bytes < one_block:
            raise ValueError(f"max_message_bytes: {self.max_message_bytes} is less than one "
                             f"block's request (cpu_slot_bytes + max_header_bytes = {one_block})")
        if self.cpu_bytes < self.cpu_slot_bytes:
            raise ValueError(f"cpu_bytes: {self.cpu_bytes} holds no slot of "
                             f"cpu_slot_bytes={self.cpu_slot_bytes}")
        for name in ("disk_bytes", "disk_map_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port: must be in [0, 65535], got {self.metrics_port}")
        if self.lease_timeout_s <= 0:
            raise ValueError(f"lease_timeout_s: must be positive, got {self.lease_timeout_s}")

    def _check_events(self) -> None:
        if self.events_replay_endpoint and not self.events_endpoint:
            raise ValueError("events_replay_endpoint: needs events_endpoint as well")
        if self.events_replay_bytes <= 0:
            raise ValueError(f"events_replay_bytes: must be positive, got "
                             f"{self.events_replay_bytes}")
        seen = {self.endpoint: "endpoint"}
        for name in ("events_endpoint", "events_replay_endpoint"):
            value = getattr(self, name)
            if not value:
                continue
            _check_endpoint(value, name)
            if value in seen:
                raise ValueError(f"{name}: {value} is already {seen[value]}")
            seen[value] = name

    def _check_access(self) -> None:
        """CURVE comes with an allow-list; an endpoint other hosts can reach needs CURVE or
        ``insecure_tcp`` (``cacheserver/access.py``; the folder's contents are read at start)."""
        if self.curve_clients_dir and not self.curve_secret_key_file:
            raise ValueError("curve_clients_dir: needs curve_secret_key_file as well")
        if self.curve_secret_key_file and not self.curve_clients_dir:
            raise ValueError("curve_clients_dir: required with curve_secret_key_file: a folder "
                             "of the public certificates of the allowed clients (`asymcache "
                             "keys client NAME DIR`); without it CURVE would admit any client")
        if self.curve_secret_key_file or self.insecure_tcp:
            return
        exposed = exposed_endpoints({name: getattr(self, name) for name in ENDPOINT_FIELDS})
        if exposed:
            raise ValueError(unprotected_message(*exposed[0]))

    # ---- derived values -------------------------------------------------------------------
    @property
    def unprotected_endpoints(self) -> list[tuple[str, str]]:
        """``(field, endpoint)`` served to other hosts without authentication: what
        ``insecure_tcp`` allowed (the daemon warns about each at start)."""
        if self.curve_secret_key_file:
            return []
        return exposed_endpoints({name: getattr(self, name) for name in ENDPOINT_FIELDS})

    @property
    def cpu_num_slots(self) -> int:
        return self.cpu_bytes // self.cpu_slot_bytes

    @property
    def limits(self) -> Limits:
        """Protocol decoding limits: a PUT frame is at most one CPU slot."""
        return Limits(max_header_bytes=self.max_header_bytes, max_frames=self.max_keys,
                      max_frame_bytes=self.cpu_slot_bytes, max_keys=self.max_keys)

    @property
    def recv_hwm(self) -> int:
        """Requests the ROUTER queues unread per peer (ZeroMQ RCVHWM; past it the peer's
        connection is not read: back-pressure, nothing dropped): twice what a peer may have
        in flight (at least 64), so a peer that floods past ``max_inflight`` still gets BUSY
        replies while unread requests stay bounded (peers x this x ``max_message_bytes``)."""
        return max(2 * self.max_inflight, 64)

    @property
    def ipc_path(self) -> str | None:
        return self.endpoint[len("ipc://"):] if self.endpoint.startswith("ipc://") else None

    def policy_for(self, tier: str) -> str:
        """The policy name of ``tier`` (``gpu``, ``cpu``, ``disk`` or ``remote``)."""
        own = self.remote.policy if tier == "remote" else getattr(self, f"{tier}_policy")
        return own or self.policy

    def remote_tier_config(self) -> RemoteTierConfig:
        """The remote tier's configuration (``tiers/remote_config.py``), blocks of one slot."""
        return self.remote.tier_config(self.cpu_slot_bytes)


# Spellings: ``remote_<field>`` (flat keys, ``--remote-bytes``, ``ASYMCACHE_REMOTE_<FIELD>``) of
# earlier versions are ``remote.<field>``; three were renamed to RemoteTierConfig's names.
_RENAMED = {"remote_bytes": "remote.capacity_bytes",
            "remote_bandwidth_bps": "remote.load_bandwidth_bps",
            "remote_latency_s": "remote.load_latency_s"}
SCHEME = Scheme("daemon", ServerConfig, "ASYMCACHE_DAEMON_", legacy_env="ASYMCACHE_", renamed={
    **{f"remote_{f.name}": f"remote.{f.name}" for f in fields(RemoteSection)
       if f"remote.{f.name}" not in _RENAMED.values()}, **_RENAMED})


def load_config(path: str | Path | None = None, overrides: Mapping[str, Any] | None = None,
                environ: Mapping[str, str] | None = None) -> ServerConfig:
    """Defaults < TOML file ``path`` < ``environ`` (``os.environ`` when ``None``) <
    ``overrides`` (CLI flags by key; ``None`` values skipped)."""
    return load(SCHEME, path, environ, overrides).config


def _check_fields(obj: Any, prefix: str = "") -> None:
    for f in fields(obj):
        if f.type in ("str", "int", "float", "bool"):
            _check_type(prefix + f.name, getattr(obj, f.name), f.type)


def _check_policy(name: str, value: str, oracle_file: str = "") -> None:
    """``value`` is an online policy, or ``belady`` given the replayed future."""
    if value == ORACLE_POLICY:
        if oracle_file:
            return
        raise ValueError(f"{name}: {ORACLE_POLICY!r} needs the future: give oracle_file (the "
                         f"benchmark's belady-bound configuration writes one)")
    known = policy_names(include_offline=False)
    if value and value not in known:
        raise ValueError(f"{name}: unknown policy {value!r}; known: {known}")


def _check_type(name: str, value: Any, declared: str) -> None:
    expected = {"str": str, "int": int, "float": (int, float), "bool": bool}[declared]
    if (isinstance(value, bool) and declared != "bool") or not isinstance(value, expected):
        raise ValueError(f"{name}: must be {declared}, got {value!r}")
    if declared == "float" and not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")


def _check_endpoint(endpoint: str, name: str = "endpoint") -> None:
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://"):]
        if not path or len(path.encode()) > _IPC_PATH_MAX:
            raise ValueError(f"{name}: ipc path must be 1..{_IPC_PATH_MAX} bytes, got {path!r}")
    elif not re.fullmatch(r"tcp://[^:/]+:\d{1,5}", endpoint):
        raise ValueError(f"{name}: must be ipc://PATH or tcp://HOST:PORT, got {endpoint!r}")


"""The daemon's configuration: one frozen dataclass and one loader.

Precedence, lowest first: the dataclass defaults < a TOML file (``--config FILE``, flat keys
named like the fields) < command-line flags < ``ASYMCACHE_<FIELD>`` environment variables
(e.g. ``ASYMCACHE_CPU_BYTES=4GiB``). Sizes (fields ending in ``_bytes``) accept plain integers or
strings with a unit (``512MiB``, ``4GiB``, ``64KiB``, ``1GB``). A bad value fails at start with a
``ValueError`` naming the field (and where the value came from).
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from asymcache.cacheserver.policy import policy_names
from asymcache.cacheserver.protocol import Limits
from asymcache.tiers.remote_config import RemoteTierConfig

ENV_PREFIX = "ASYMCACHE_"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40}
_IPC_PATH_MAX = 100  # sun_path is 108 bytes on Linux, with room for the terminator


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
    lease_timeout_s: float = 30.0  # an engine silent this long loses its leases and GPU index
    max_engines: int = 16
    max_gpu_slots: int = 1 << 20  # per engine
    max_inflight: int = 64  # per peer: requests received and not yet answered
    max_keys: int = 4096  # per request
    max_header_bytes: int = 1 << 20
    max_message_bytes: int = 256 << 20  # a request's frames together (the engine sends <= 32
    # blocks per PUT: keep it >= 32 x cpu_slot_bytes)
    curve_secret_key_file: str = ""  # a zmq certificate with the server's secret key
    curve_clients_dir: str = ""  # public certificates of allowed clients ("" = any CURVE client)
    log_level: str = "info"
    # The remote tier (a Redis/Valkey Cluster shared by hosts; see docs/remote.md)
    remote_nodes: str = ""  # host:port,... startup nodes; "" = no remote tier
    remote_bytes: int = 16 << 30  # what this daemon may have stored in the cluster
    remote_prefix: str = "asymcache:"  # key prefix, the same on every host that shares blocks
    remote_ttl_s: float = 0.0  # expiry of stored blocks (0 = none: maxmemory-policy evicts)
    remote_username: str = ""  # ACL user ("" = default user)
    remote_password: str = field(default="", repr=False)  # prefer ASYMCACHE_REMOTE_PASSWORD
    remote_tls: bool = False
    remote_tls_ca_file: str = ""
    remote_tls_cert_file: str = ""
    remote_tls_key_file: str = ""
    remote_tls_verify: bool = True  # check the server certificate and host name
    remote_timeout_s: float = 0.25  # every connect and socket read; a failed node is skipped
    remote_write_through: bool = True  # share each block entering the CPU tier at once
    remote_policy: str = ""
    remote_bandwidth_bps: float = 0.0  # load cost of the cost model; 0 = measured on connect
    remote_latency_s: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), f.type)
        _check_endpoint(self.endpoint)
        self._check_sizes()
        for name in ("policy", "gpu_policy", "cpu_policy", "disk_policy", "remote_policy"):
            value = getattr(self, name)
            known = policy_names(include_offline=False)
            if value and value not in known:
                raise ValueError(f"{name}: unknown policy {value!r}; known: {known}")
        if not self.policy:
            raise ValueError("policy: must name a policy")
        if self.cost_preset:
            from asymcache.cacheserver.policy.cost import preset_names

            if self.cost_preset not in preset_names():
                raise ValueError(f"cost_preset: unknown preset {self.cost_preset!r}; known: "
                                 f"{preset_names()}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ValueError(f"log_level: must be debug/info/warning/error, got {self.log_level!r}")
        if self.curve_clients_dir and not self.curve_secret_key_file:
            raise ValueError("curve_clients_dir: needs curve_secret_key_file as well")
        if self.remote_nodes:
            self.remote_tier_config()  # raises naming the remote_* field

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
        for name in ("disk_bytes", "disk_map_bytes", "remote_bytes"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}: must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.metrics_port <= 65535:
            raise ValueError(f"metrics_port: must be in [0, 65535], got {self.metrics_port}")
        if self.lease_timeout_s <= 0:
            raise ValueError(f"lease_timeout_s: must be positive, got {self.lease_timeout_s}")

    # ---- derived values -------------------------------------------------------------------
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
        return getattr(self, f"{tier}_policy") or self.policy

    def remote_tier_config(self) -> RemoteTierConfig:
        """The remote tier's configuration (``tiers/remote_config.py``) from the ``remote_*``
        fields; ``ValueError`` names the daemon field that is wrong."""
        try:
            return RemoteTierConfig(
                self.remote_nodes, self.remote_bytes, block_bytes=self.cpu_slot_bytes,
                prefix=self.remote_prefix, ttl_s=self.remote_ttl_s,
                username=self.remote_username, password=self.remote_password,
                tls=self.remote_tls, tls_ca_file=self.remote_tls_ca_file,
                tls_cert_file=self.remote_tls_cert_file, tls_key_file=self.remote_tls_key_file,
                tls_verify=self.remote_tls_verify, socket_timeout_s=self.remote_timeout_s,
                connect_timeout_s=self.remote_timeout_s,
                load_bandwidth_bps=self.remote_bandwidth_bps,
                load_latency_s=self.remote_latency_s)
        except ValueError as e:
            raise ValueError(_remote_field_error(str(e))) from None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_REMOTE_FIELDS = {"nodes": "remote_nodes", "capacity_bytes": "remote_bytes",
                  "socket_timeout_s": "remote_timeout_s", "connect_timeout_s": "remote_timeout_s",
                  "load_bandwidth_bps": "remote_bandwidth_bps",
                  "load_latency_s": "remote_latency_s", "tls": "remote_tls"}


def _remote_field_error(message: str) -> str:
    """``RemoteTierConfig.nodes: ...`` -> ``remote_nodes: ...`` (the field a user sets)."""
    m = re.match(r"RemoteTierConfig\.(\w+):? ?(.*)", message, re.DOTALL)
    if m is None:
        return f"remote_*: {message}"
    name = _REMOTE_FIELDS.get(m.group(1), "remote_" + m.group(1))
    return f"{name}: {m.group(2)}"


def _check_type(name: str, value: Any, declared: str) -> None:
    expected = {"str": str, "int": int, "float": (int, float), "bool": bool}[declared]
    if (isinstance(value, bool) and declared != "bool") or not isinstance(value, expected):
        raise ValueError(f"{name}: must be {declared}, got {value!r}")
    if declared == "float" and not math.isfinite(value):
        raise ValueError(f"{name}: must be a finite number, got {value!r}")


def _check_endpoint(endpoint: str) -> None:
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://"):]
        if not path or len(path.encode()) > _IPC_PATH_MAX:
            raise ValueError(f"endpoint: ipc path must be 1..{_IPC_PATH_MAX} bytes, got {path!r}")
    elif not re.fullmatch(r"tcp://[^:/]+:\d{1,5}", endpoint):
        raise ValueError(f"endpoint: must be ipc://PATH or tcp://HOST:PORT, got {endpoint!r}")


def parse_size(text: str) -> int:
    """``"512MiB"`` -> 536870912; plain digits are bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*", text, re.IGNORECASE)
    if m is None:
        raise ValueError(f"not a size: {text!r} (use e.g. 4096, 64KiB, 512MiB, 4GiB)")
    return int(float(m.group(1)) * _UNITS[(m.group(2) or "").upper()])


def _coerce(name: str, raw: Any, declared: str, source: str) -> Any:
    """Turn a TOML/CLI/env value into the field's type, or fail naming field and source."""
    try:
        if declared == "int" and name.endswith("_bytes") and isinstance(raw, str):
            return parse_size(raw)
        if not isinstance(raw, str):
            return raw
        if declared == "int":
            return int(raw)
        if declared == "float":
            return float(raw)
        if declared == "bool":
            lowered = raw.strip().lower()
            if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
                raise ValueError(f"not a bool: {raw!r}")
            return lowered in ("1", "true", "yes", "on")
        return raw
    except ValueError as e:
        raise ValueError(f"{name} (from {source}): {e}") from None


def load_config(
    path: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> ServerConfig:
    """Defaults < TOML file ``path`` < ``overrides`` (CLI flags; ``None`` values skipped) <
    ``ASYMCACHE_*`` variables of ``environ`` (``os.environ`` when ``None``)."""
    types = {f.name: f.type for f in fields(ServerConfig) if f.default is not MISSING}
    values: dict[str, Any] = {}
    if path is not None:
        with open(path, "rb") as fh:
            table = tomllib.load(fh)
        for key, raw in table.items():
            if key not in types:
                raise ValueError(f"{key} (from {path}): not a configuration field; "
                                 f"known: {sorted(types)}")
            values[key] = _coerce(key, raw, types[key], str(path))
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _coerce(key, raw, types[key], "command line")
    env = os.environ if environ is None else environ
    for key, declared in types.items():
        var = ENV_PREFIX + key.upper()
        if var in env:
            values[key] = _coerce(key, env[var], declared, var)
    return ServerConfig(**values)

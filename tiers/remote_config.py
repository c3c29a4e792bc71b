"""Configuration of the remote tier (``tiers/remote.py``): one frozen, validated dataclass.

Times are seconds, sizes bytes. Authentication and TLS options are passed to redis-py as they
are (:meth:`RemoteTierConfig.client_kwargs`); nothing here opens a connection.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

MiB = 1 << 20


def parse_nodes(nodes: str | Sequence[str]) -> tuple[tuple[str, int], ...]:
    """``"h1:7000,h2:7001"`` (or a sequence of ``host:port``; ``[v6]:port`` for IPv6) as
    ``((host, port), ...)``; ``ValueError`` naming the bad entry."""
    items = nodes.split(",") if isinstance(nodes, str) else list(nodes)
    out = []
    for raw in items:
        text = str(raw).strip()
        host, sep, port = text.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"RemoteTierConfig.nodes: {text!r} is not host:port")
        out.append((host, int(port)))
    if not out:
        raise ValueError("RemoteTierConfig.nodes: at least one host:port is needed")
    return tuple(out)


@dataclass(frozen=True)
class RemoteTierConfig:
    """Where the cluster is, how this daemon uses it, and how it talks to it.

    * ``nodes``: startup nodes, ``host:port`` (comma-separated text or a sequence); the rest
      of the cluster is discovered from them;
    * ``capacity_bytes``: what this daemon may have stored in the cluster at once (stored
      values, ``RemoteTier.entry_bytes`` each); the cluster's own ``maxmemory`` bounds the total;
    * ``block_bytes``: typical payload size, used only to report ``capacity_blocks``;
    * ``prefix``: prepended to every key (``<prefix><32 hex digits of the block key>``); no
      ``{``/``}`` (a hash tag would put every block in one slot);
    * ``ttl_s``: expiry of every stored block (0 = none; then ``maxmemory-policy`` evicts);
    * ``username``/``password``: ACL user and password (``AUTH``), empty = none;
    * ``tls`` and ``tls_*``: TLS to every node, CA/cert/key files, ``tls_verify`` = check
      the server certificate and host name;
    * ``socket_timeout_s``/``connect_timeout_s``: bound every read and connect; a node that
      fails is skipped (its keys miss) for ``retry_min_s``, doubling up to ``retry_max_s``;
    * ``queue_bytes``: encoded values waiting to be written (a full queue refuses puts);
      ``batch_bytes``/``batch_ops``: most bytes/commands written in one pipelined round;
    * ``durable_timeout_s``: most time ``put(durable=True)``/``flush`` wait;
    * ``load_bandwidth_bps``/``load_latency_s``: the load cost for the cost model; 0 =
      measured once connected (a PING round trip and a ``probe_bytes`` SET/GET; 0 = no probe).
    """

    nodes: str | Sequence[str]
    capacity_bytes: int
    block_bytes: int = 0
    prefix: str = "asymcache:"
    ttl_s: float = 0.0
    username: str = ""
    password: str = field(default="", repr=False)
    tls: bool = False
    tls_ca_file: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_verify: bool = True
    socket_timeout_s: float = 0.5
    connect_timeout_s: float = 0.5
    retry_min_s: float = 0.2
    retry_max_s: float = 5.0
    queue_bytes: int = 256 * MiB
    batch_bytes: int = 16 * MiB
    batch_ops: int = 512
    durable_timeout_s: float = 10.0
    load_bandwidth_bps: float = 0.0
    load_latency_s: float = 0.0
    probe_bytes: int = 1 * MiB

    def __post_init__(self) -> None:
        object.__setattr__(self, "nodes", tuple(f"{h}:{p}" for h, p in parse_nodes(self.nodes)))
        for name in ("capacity_bytes", "queue_bytes", "batch_bytes", "batch_ops"):
            _int(name, getattr(self, name), 1)
        for name in ("block_bytes", "probe_bytes"):
            _int(name, getattr(self, name), 0)
        for name in ("socket_timeout_s", "connect_timeout_s", "retry_min_s", "retry_max_s",
                     "durable_timeout_s"):
            _number(name, getattr(self, name), positive=True)
        for name in ("ttl_s", "load_bandwidth_bps", "load_latency_s"):
            _number(name, getattr(self, name), positive=False)
        if self.retry_max_s < self.retry_min_s:
            raise ValueError(f"RemoteTierConfig.retry_max_s ({self.retry_max_s}) is below "
                             f"retry_min_s ({self.retry_min_s})")
        if not isinstance(self.prefix, str) or "{" in self.prefix or "}" in self.prefix:
            raise ValueError(f"RemoteTierConfig.prefix must be a str without '{{' or '}}' "
                             f"(a hash tag would put every block in one slot), got "
                             f"{self.prefix!r}")
        for name in ("username", "password", "tls_ca_file", "tls_cert_file", "tls_key_file"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"RemoteTierConfig.{name} must be a str")
        if (self.tls_ca_file or self.tls_cert_file or self.tls_key_file) and not self.tls:
            raise ValueError("RemoteTierConfig.tls: tls_ca_file, tls_cert_file and tls_key_file "
                             "need tls=True")

    @property
    def startup_nodes(self) -> list[tuple[str, int]]:
        return list(parse_nodes(self.nodes))

    @property
    def ttl_ms(self) -> int:
        """``PX`` argument of every SET (0 = no expiry)."""
        return math.ceil(self.ttl_s * 1000) if self.ttl_s > 0 else 0

    @property
    def measured(self) -> bool:
        """Whether the load cost is measured (no configured figures)."""
        return not (self.load_bandwidth_bps > 0)

    def client_kwargs(self) -> dict[str, Any]:
        """Connection keyword arguments for ``redis.cluster.RedisCluster`` (and every node)."""
        kwargs: dict[str, Any] = {"socket_timeout": self.socket_timeout_s,
                                  "socket_connect_timeout": self.connect_timeout_s,
                                  "socket_keepalive": True}
        if self.username:
            kwargs["username"] = self.username
        if self.password:
            kwargs["password"] = self.password
        if self.tls:
            kwargs.update(ssl=True, ssl_cert_reqs="required" if self.tls_verify else "none",
                          ssl_check_hostname=self.tls_verify)
            for ours, theirs in (("tls_ca_file", "ssl_ca_certs"),
                                 ("tls_cert_file", "ssl_certfile"),
                                 ("tls_key_file", "ssl_keyfile")):
                if getattr(self, ours):
                    kwargs[theirs] = getattr(self, ours)
        return kwargs


def _int(name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ValueError(f"RemoteTierConfig.{name} must be an int >= {low}, got {value!r}")


def _number(name: str, value: object, positive: bool) -> None:
    ok = (isinstance(value, int | float) and not isinstance(value, bool)
          and math.isfinite(value) and (value > 0 if positive else value >= 0))
    if not ok:
        what = "> 0" if positive else ">= 0"
        raise ValueError(f"RemoteTierConfig.{name} must be a finite number {what}, "
                         f"got {value!r}")

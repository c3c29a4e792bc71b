"""The remote tier's connection to a Redis (or Valkey) Cluster, through redis-py's cluster client.

:class:`ClusterLink` owns one ``redis.cluster.RedisCluster`` and uses it for what it is good at:
discovering the nodes and the slot map (``nodes_manager``) and keeping a connection pool per node.
Commands do not go through the client's own retrying paths: :meth:`ClusterLink.execute` groups a
batch by the primary that serves each key's slot, writes one pipeline to every node, then reads
every reply, with no retries. A node that fails (refused, reset, timed out) fails only its own
commands, and is then *skipped* (its commands fail at once, no socket touched) until a background
probe finds it answering again: ``retry_min_s`` after the failure, then doubling up to
``retry_max_s``. So a missing node costs one bounded timeout, not one per request.

The background thread (``remote-link``) also connects in the first place: the link starts
without the cluster, reports ``ready = False`` and retries with the same backoff, so a daemon
can start before its cluster. Redirections (MOVED/ASK) and uncovered slots are failures too, and
ask the thread to refresh the slot map.

Results are the raw replies (``bytes``, ``int``, ``None``...) or the exception instance of the
command that failed; ``asymcache.tiers.remote_resp.error_kind`` names its kind for
``error_counts()``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import redis
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import key_slot
from redis.retry import Retry

from asymcache.tiers.remote_config import RemoteTierConfig
from asymcache.tiers.remote_resp import Command, NodeSkipped, NotConnected, pack

log = logging.getLogger(__name__)
@dataclass
class _Backoff:
    until: float
    delay: float


class ClusterLink:
    """A cluster client that never stalls a batch; see the module docstring.

    ``on_idle(link)`` runs there on every maintenance pass (at least every ``retry_max_s``).
    ``on_connect(link)`` runs on the background thread after each successful connect (e.g. to
    measure the link). Thread-safe: ``execute`` may be called from several threads.
    """

    def __init__(self, config: RemoteTierConfig,
                 on_connect: Callable[[ClusterLink], None] | None = None,
                 on_idle: Callable[[ClusterLink], None] | None = None) -> None:
        self.config = config
        self._on_connect = on_connect
        self._on_idle = on_idle
        self._cluster: RedisCluster | None = None
        self._skip: dict[str, _Backoff] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._refresh = False
        self._closed = False
        self.last_error = ""
        self._thread = threading.Thread(target=self._run, name="remote-link", daemon=True)
        self._thread.start()

    # -- state ------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """Whether a cluster client exists (the cluster was reached at least once)."""
        return self._cluster is not None

    @property
    def ready(self) -> bool:
        """Connected, and at least one primary is not being skipped."""
        names = [node.name for node in self.primaries()]
        with self._lock:
            return bool(names) and any(name not in self._skip for name in names)

    def primaries(self) -> list[ClusterNode]:
        """The primaries of the current slot map (empty before the first connect)."""
        cluster = self._cluster
        return [] if cluster is None else cluster.nodes_manager.get_nodes_by_server_type("primary")

    def skipped(self) -> list[str]:
        """``host:port`` of the nodes being skipped now."""
        with self._lock:
            return sorted(self._skip)

    # -- commands ---------------------------------------------------------------------------
    def execute(self, commands: Sequence[Command]) -> list[object]:
        """Run ``commands`` as one pipeline per node; one reply or exception per command."""
        results: list[object] = [None] * len(commands)
        groups = self._route(commands, results)
        sent = []
        for node, idx in groups.values():
            conn = self._send(node, [commands[i][1] for i in idx], idx, results)
            if conn is not None:
                sent.append((node, conn, idx))
        for node, conn, idx in sent:
            self._read(node, conn, idx, results)
        return results

    def _route(self, commands: Sequence[Command],
               results: list[object]) -> dict[str, tuple[ClusterNode, list[int]]]:
        cluster = self._cluster
        groups: dict[str, tuple[ClusterNode, list[int]]] = {}
        if cluster is None:
            results[:] = [NotConnected("the remote cluster has not been reached yet")] * len(
                results)
            return groups
        manager = cluster.nodes_manager
        with self._lock:
            skipping = set(self._skip)
        for i, (key, _) in enumerate(commands):
            try:
                node = manager.get_node_from_slot(key_slot(key))
            except redis.exceptions.SlotNotCoveredError as exc:
                results[i] = exc
                self.request_refresh()
                continue
            if node.name in skipping:
                results[i] = NodeSkipped(f"node {node.name} is down; retried in the background")
                continue
            groups.setdefault(node.name, (node, []))[1].append(i)
        return groups

    def _send(self, node: ClusterNode, args: list, idx: list[int],
              results: list[object]) -> redis.connection.Connection | None:
        pool = node.redis_connection.connection_pool
        conn = None
        try:
            conn = pool.get_connection()
            conn.send_packed_command(pack(conn, args), check_health=False)
            return conn
        except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
            failure = exc if isinstance(exc, redis.RedisError) else redis.ConnectionError(str(exc))
            for i in idx:
                results[i] = failure
            self._node_failed(node.name, failure)
            if conn is not None:
                conn.disconnect()
                pool.release(conn)
            return None

    def _read(self, node: ClusterNode, conn: redis.connection.Connection, idx: list[int],
              results: list[object]) -> None:
        pool = node.redis_connection.connection_pool
        try:
            for n, i in enumerate(idx):
                try:
                    results[i] = conn.read_response()
                except (redis.ConnectionError, redis.TimeoutError) as exc:
                    for j in idx[n:]:
                        results[j] = exc
                    conn.disconnect()  # replies may still be in flight: never reuse it
                    self._node_failed(node.name, exc)
                    return
                except redis.ResponseError as exc:
                    results[i] = exc
                    if isinstance(exc, redis.exceptions.AskError | redis.exceptions.ClusterError):
                        self.request_refresh()
        finally:
            pool.release(conn)

    # -- failures and the background thread -------------------------------------------------
    def _node_failed(self, name: str, exc: BaseException, probing: bool = False) -> None:
        cfg = self.config
        with self._lock:
            prior = self._skip.get(name)
            delay = cfg.retry_min_s if prior is None else min(prior.delay * 2, cfg.retry_max_s)
            self._skip[name] = _Backoff(time.monotonic() + delay, delay)
        self.last_error = f"{name}: {exc}"
        log.log(logging.DEBUG if probing else logging.WARNING,
                "remote tier: node %s failed (%s); skipped for %.1f s", name, exc, delay)
        self.request_refresh()

    def request_refresh(self) -> None:
        """Ask the background thread to reload the slot map soon."""
        self._refresh = True
        self._wake.set()

    def _run(self) -> None:
        try:
            self._loop()
        except Exception:  # pragma: no cover - a bug; the tier then reports not ready
            log.exception("remote tier: the link thread stopped")

    def _loop(self) -> None:
        delay = self.config.retry_min_s
        while not self._closed:
            if self._cluster is None:
                if self._connect():
                    delay = self.config.retry_min_s
                    continue
                self._wake.wait(delay)
                delay = min(delay * 2, self.config.retry_max_s)
                continue
            self._wake.clear()
            self._maintain()
            self._wake.wait(self._next_wait())

    def _connect(self) -> bool:
        cfg = self.config
        try:
            cluster = RedisCluster(
                startup_nodes=[ClusterNode(h, p) for h, p in cfg.startup_nodes],
                require_full_coverage=False, retry=Retry(NoBackoff(), 0),
                **cfg.client_kwargs())
        except Exception as exc:  # redis-py raises more than RedisError on odd topologies
            self.last_error = f"connect: {type(exc).__name__}: {exc}"
            log.info("remote tier: cluster %s not reachable (%s); retrying", cfg.nodes, exc)
            return False
        if self._closed:
            cluster.close()
            return False
        self._cluster = cluster
        log.info("remote tier: connected to %d primaries", len(self.primaries()))
        self._hook(self._on_connect)
        return True

    def _hook(self, fn: Callable[[ClusterLink], None] | None) -> None:
        if fn is not None:
            try:
                fn(self)
            except Exception:  # a failed measurement must not stop the link
                log.exception("remote tier: a link hook failed")

    def _maintain(self) -> None:
        """Reload the slot map if asked, and probe skipped nodes whose backoff is over."""
        cluster = self._cluster
        assert cluster is not None
        if self._refresh:
            self._refresh = False
            try:
                cluster.nodes_manager.initialize()
            except Exception as exc:  # keep the old slot map; retried on the next failure
                self.last_error = f"refresh: {type(exc).__name__}: {exc}"
        now = time.monotonic()
        with self._lock:
            due = [name for name, b in self._skip.items() if b.until <= now]
        for name in due:
            self._probe(name)
        self._hook(self._on_idle)

    def _probe(self, name: str) -> None:
        node = self._cluster.get_node(node_name=name) if self._cluster is not None else None
        try:
            if node is None or node.redis_connection is None:
                raise redis.ConnectionError(f"node {name} left the slot map")
            node.redis_connection.ping()
        except (redis.RedisError, OSError) as exc:
            self._node_failed(name, exc, probing=True)
            return
        with self._lock:
            self._skip.pop(name, None)
        log.info("remote tier: node %s answers again", name)

    def _next_wait(self) -> float:
        with self._lock:
            if not self._skip:
                return self.config.retry_max_s
            return max(0.0, min(b.until for b in self._skip.values()) - time.monotonic())

    def close(self) -> None:
        """Stop the background thread and close every connection. Idempotent."""
        self._closed = True
        self._wake.set()
        self._thread.join(timeout=self.config.connect_timeout_s * 4 + 5)
        cluster, self._cluster = self._cluster, None
        if cluster is not None:
            cluster.close()


"""A throwaway Redis Cluster on loopback, started from ``redis-server``: for tests and benchmarks.

:class:`LocalRedisCluster` picks free loopback ports (client and cluster-bus port per node) when
it is created, so a client can be configured before the cluster runs; :meth:`start` launches one
``redis-server`` per master in its own directory, assigns the 16384 slots in equal ranges
(``CLUSTER ADDSLOTSRANGE``), joins the nodes (``CLUSTER MEET``) and waits until every node reports
``cluster_state:ok`` and knows every other. Nodes are configured the way ``docs/remote.md``
recommends for a cache: no persistence, ``cluster-require-full-coverage no`` (a dead master
takes only its own slots away) and a short ``cluster-node-timeout``.

A node can be stopped and started again (same port, same ``nodes.conf``, so it comes back with
its slots). Every wait is bounded; :meth:`close` kills every process it started.

Side effects: processes, files under ``root`` (created, never deleted here), loopback ports.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import redis

SLOTS = 16384
_POLL_S = 0.05


def free_port(low: int = 20000, high: int = 32000, attempts: int = 200) -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, drawn from ``[low, high)``: below
    Linux's ephemeral range (32768+), so the kernel never hands it to an outgoing connection
    between this check and the server's bind. Falls back to any free port."""
    rng = random.Random(os.urandom(8))
    for _ in range(attempts):
        port = rng.randrange(low, high)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LocalRedisCluster:
    """``masters`` redis-server processes on 127.0.0.1 forming one cluster (no replicas).

    ``password`` sets ``requirepass``/``masterauth``; ``maxmemory`` (bytes, 0 = unlimited) and
    ``policy`` set ``maxmemory``/``maxmemory-policy`` on every node; ``tls`` = ``(ca, cert,
    key)`` files makes every node (and the cluster bus) speak TLS only, without client
    certificates; ``extra`` lines are appended to every node's configuration file.
    """

    def __init__(self, root: str | Path, masters: int = 3, password: str = "",
                 maxmemory: int = 0, policy: str = "allkeys-lru",
                 tls: tuple[str, str, str] | None = None, extra: tuple[str, ...] = (),
                 server: str = "redis-server") -> None:
        exe = shutil.which(server)
        if exe is None:
            raise FileNotFoundError(f"{server!r} is not installed (apt-get install redis-server)")
        if masters < 1:
            raise ValueError(f"a cluster needs at least one master, got masters={masters}")
        self.exe = exe
        self.root = Path(root)
        self.password = password
        self.tls = tls
        self.ports = [free_port() for _ in range(masters)]
        self._bus = [free_port() for _ in range(masters)]
        self._conf = [self._config(i, maxmemory, policy, extra) for i in range(masters)]
        self._procs: list[subprocess.Popen | None] = [None] * masters

    @property
    def bus_ports(self) -> list[int]:
        """Cluster-bus port of every node (``cluster-port``)."""
        return list(self._bus)

    @property
    def nodes(self) -> list[str]:
        """``host:port`` of every master, for a client's startup nodes."""
        return [f"127.0.0.1:{port}" for port in self.ports]

    def _config(self, i: int, maxmemory: int, policy: str, extra: tuple[str, ...]) -> str:
        lines = [f"port {self.ports[i]}" if self.tls is None else "port 0",
                 f"cluster-port {self._bus[i]}", "bind 127.0.0.1",
                 "cluster-enabled yes", "cluster-config-file nodes.conf",
                 "cluster-node-timeout 1000", "cluster-require-full-coverage no",
                 "cluster-allow-reads-when-down yes", 'save ""', "appendonly no",
                 "protected-mode no", "loglevel warning", f"maxmemory {maxmemory}",
                 f"maxmemory-policy {policy}"]
        if self.password:
            lines += [f"requirepass {self.password}", f"masterauth {self.password}"]
        if self.tls is not None:
            ca, cert, key = self.tls
            lines += [f"tls-port {self.ports[i]}", "tls-cluster yes", f"tls-ca-cert-file {ca}",
                      f"tls-cert-file {cert}", f"tls-key-file {key}", "tls-auth-clients no"]
        return "\n".join([*lines, *extra]) + "\n"

    def _client(self, i: int, timeout: float = 1.0) -> redis.Redis:
        tls = {} if self.tls is None else {"ssl": True, "ssl_ca_certs": self.tls[0]}
        return redis.Redis("127.0.0.1", self.ports[i], password=self.password or None,
                           socket_timeout=timeout, socket_connect_timeout=timeout, **tls)

    def command(self, i: int, *args: object) -> object:
        """Run one command on node ``i`` directly (not through the cluster)."""
        with self._client(i) as r:
            return r.execute_command(*args)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, timeout: float = 20.0) -> LocalRedisCluster:
        """Start every node and form the cluster (first start) or wait for it to re-form."""
        fresh = not (self.root / "node0" / "nodes.conf").exists()
        for i in range(len(self.ports)):
            self.start_node(i, wait=False)
        deadline = time.monotonic() + timeout
        for i in range(len(self.ports)):
            self._wait_ping(i, deadline)
        if fresh:
            self._form()
        self.wait_ok(deadline - time.monotonic())
        return self

    def start_node(self, i: int, wait: bool = True, timeout: float = 10.0) -> None:
        """(Re)start node ``i`` on its port; ``wait`` until it answers PING."""
        if self._procs[i] is not None and self._procs[i].poll() is None:
            return
        home = self.root / f"node{i}"
        home.mkdir(parents=True, exist_ok=True)
        (home / "redis.conf").write_text(self._conf[i])
        with open(home / "redis.log", "ab") as log:
            self._procs[i] = subprocess.Popen([self.exe, str(home / "redis.conf")], cwd=home,
                                              stdout=log, stderr=subprocess.STDOUT)
        if wait:
            self._wait_ping(i, time.monotonic() + timeout)

    def signal_node(self, i: int, sig: int) -> None:
        """Send ``sig`` to node ``i`` (``SIGSTOP`` freezes it, ``SIGCONT`` resumes it)."""
        proc = self._procs[i]
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"node {i} is not running")
        proc.send_signal(sig)

    def stop_node(self, i: int) -> None:
        """Kill node ``i`` (SIGKILL: nothing is saved) and reap it."""
        proc = self._procs[i]
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)
        self._procs[i] = None

    def close(self) -> None:
        """Kill every node this object started. Idempotent."""
        for i in range(len(self._procs)):
            self.stop_node(i)

    def __enter__(self) -> LocalRedisCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- cluster formation ------------------------------------------------------------------
    def _wait_ping(self, i: int, deadline: float) -> None:
        while True:
            proc = self._procs[i]
            if proc is not None and proc.poll() is not None:
                log = (self.root / f"node{i}" / "redis.log").read_text(errors="replace")
                raise RuntimeError(f"redis-server node {i} exited ({proc.returncode}):\n{log}")
            with contextlib.suppress(redis.RedisError), self._client(i, 0.5) as r:
                if r.ping():
                    return
            if time.monotonic() > deadline:
                raise TimeoutError(f"redis-server node {i} on port {self.ports[i]} never "
                                   f"answered PING")
            time.sleep(_POLL_S)

    def slot_range(self, i: int) -> tuple[int, int]:
        """First and last hash slot served by node ``i``."""
        n = len(self.ports)
        return i * SLOTS // n, (i + 1) * SLOTS // n - 1

    def _form(self) -> None:
        for i in range(len(self.ports)):
            with self._client(i) as r:
                r.execute_command("CLUSTER", "ADDSLOTSRANGE", *self.slot_range(i))
        with self._client(0) as r:
            for i in range(1, len(self.ports)):
                r.execute_command("CLUSTER", "MEET", "127.0.0.1", self.ports[i], self._bus[i])

    def wait_ok(self, timeout: float = 20.0) -> None:
        """Wait until every running node says ``cluster_state:ok`` and knows all the others."""
        deadline = time.monotonic() + max(timeout, 0.0)
        running = [i for i, p in enumerate(self._procs) if p is not None and p.poll() is None]
        while not all(self._node_ok(i) for i in running):
            if time.monotonic() > deadline:
                raise TimeoutError("the local Redis Cluster did not reach cluster_state:ok")
            time.sleep(_POLL_S)

    def _node_ok(self, i: int) -> bool:
        try:
            with self._client(i) as r:
                info = r.execute_command("CLUSTER", "INFO")
                nodes = r.execute_command("CLUSTER", "NODES")
        except redis.RedisError:
            return False
        text = info.decode() if isinstance(info, bytes) else str(info)
        listing = nodes.decode() if isinstance(nodes, bytes) else str(nodes)
        known = [line for line in listing.splitlines() if line.strip()]
        connected = all("connected" in line and "fail" not in line.split()[2] for line in known)
        return "cluster_state:ok" in text and len(known) == len(self.ports) and connected

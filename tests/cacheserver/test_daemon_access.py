"""Who may reach a real daemon: protected TCP, the insecure flag, the CURVE allow-list and its
rotation while the daemon runs, the metrics server's address, and identifier limits on the wire
(cacheserver/access.py, docs/security.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import zmq

from asymcache.cacheserver.protocol import ErrorReply, Hello, Ping, PingReply, decode_reply
from asymcache.cacheserver.protocol.sockets import ClientCurve, DealerSocket, ping
from asymcache.engine.client import CacheClient, DaemonError, DaemonUnavailable
from asymcache.ops.cli import main as asymcache
from tests.cacheserver.daemon_fixtures import LAYOUT, free_port
from tests.daemons import SMALL


def _serve(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    """``python -m asymcache.cacheserver`` with the tests' small tiers, run to its exit."""
    small = [a for k, v in SMALL.items() for a in (f"--{k.replace('_', '-')}", str(v))]
    return subprocess.run([sys.executable, "-m", "asymcache.cacheserver", "--data-dir",
                           str(tmp_path / "data"), *small, *flags],
                          capture_output=True, text=True, timeout=60)


def _eventually(check: Callable[[], bool], timeout_s: float = 6.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(0.2)
    return False


@pytest.mark.parametrize("flags", [
    ("--endpoint", "tcp://0.0.0.0:{port}"),
    ("--endpoint", "tcp://*:{port}"),
    ("--endpoint", "ipc://{tmp}/d.ipc", "--events-endpoint", "tcp://0.0.0.0:{port}"),
], ids=["any_address", "star", "events_endpoint"])
def test_a_tcp_endpoint_other_hosts_reach_without_curve_is_refused_at_start(
        tmp_path, flags) -> None:
    port = free_port()
    done = _serve(tmp_path, *(f.format(port=port, tmp=tmp_path) for f in flags))
    assert done.returncode == 2, done.stderr
    field = flags[-2].removeprefix("--").replace("-", "_")
    assert f"bad configuration: {field}: " in done.stderr
    for way_out in ("curve_secret_key_file", "curve_clients_dir", "--insecure-tcp"):
        assert way_out in done.stderr
    assert not (tmp_path / "data").exists()  # refused before anything was created


def test_insecure_tcp_serves_and_warns_at_every_start(start_daemon, tmp_path) -> None:
    endpoint = f"tcp://0.0.0.0:{free_port()}"  # stopped at once: never left up
    for _ in range(2):
        d = start_daemon(endpoint=endpoint, insecure_tcp=True, disk_bytes=0)
        assert d.stop() == 0
    log = (tmp_path / "daemon.log").read_text()
    assert log.count(f"insecure_tcp: endpoint {endpoint} is served WITHOUT authentication") == 2


def test_curve_without_an_allowed_client_or_a_secret_key_is_refused_at_start(tmp_path) -> None:
    keys, clients = tmp_path / "keys", tmp_path / "clients"
    assert asymcache(["keys", "server", str(keys)]) == 0
    clients.mkdir()
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    empty = _serve(tmp_path, "--endpoint", endpoint, "--curve-secret-key-file",
                   str(keys / "server.key_secret"), "--curve-clients-dir", str(clients))
    assert empty.returncode == 2
    assert f"curve_clients_dir: {clients} holds no client certificate" in empty.stderr
    public_only = _serve(tmp_path, "--endpoint", endpoint, "--curve-secret-key-file",
                         str(keys / "server.key"), "--curve-clients-dir", str(clients))
    assert public_only.returncode == 2
    assert "curve_secret_key_file: " in public_only.stderr and "no secret key" in \
        public_only.stderr
    no_dir = _serve(tmp_path, "--endpoint", endpoint, "--curve-secret-key-file",
                    str(keys / "server.key_secret"))
    assert no_dir.returncode == 2 and "curve_clients_dir: required" in no_dir.stderr


def test_allowed_clients_are_served_and_the_allow_list_rotates_without_a_restart(
        start_daemon, tmp_path) -> None:
    server, mine, allowed = tmp_path / "server", tmp_path / "mine", tmp_path / "allowed"
    assert asymcache(["keys", "server", str(server)]) == 0
    assert asymcache(["keys", "client", "good", str(mine), "--allow", str(allowed)]) == 0
    assert asymcache(["keys", "client", "other", str(mine)]) == 0
    good = ClientCurve.from_files(str(server / "server.key"), str(mine / "good.key_secret"))
    other = ClientCurve.from_files(str(server / "server.key"), str(mine / "other.key_secret"))
    endpoint, metrics_port = f"tcp://127.0.0.1:{free_port()}", free_port()
    d = start_daemon(endpoint=endpoint, curve=good, disk_bytes=0, metrics_port=metrics_port,
                     curve_secret_key_file=server / "server.key_secret",
                     curve_clients_dir=allowed)
    held = CacheClient(endpoint, timeout_s=1.0, curve=good, heartbeat=False)
    assert held.ping().registered is False  # served
    assert ping(endpoint, timeout_s=0.5, curve=other) is None  # not on the list
    assert ping(endpoint, timeout_s=0.5) is None  # no keys at all

    (allowed / "other.key").write_bytes((mine / "other.key").read_bytes())  # added live
    assert _eventually(lambda: ping(endpoint, timeout_s=0.3, curve=other) is not None)

    (allowed / "good.key").unlink()  # revoked: new connections and the open one alike
    assert _eventually(lambda: ping(endpoint, timeout_s=0.3, curve=good) is None)
    with pytest.raises(DaemonUnavailable, match="no reply"):
        held.ping()
    held.close()

    (allowed / "good.key").write_bytes((mine / "good.key").read_bytes())
    os.kill(d.pid, signal.SIGHUP)  # reload now; SIGHUP never stops the daemon
    assert _eventually(lambda: ping(endpoint, timeout_s=0.3, curve=good) is not None)
    assert d.proc.poll() is None
    assert "refused a message from client key" in (tmp_path / "daemon.log").read_text()
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5)
    refused = [ln for ln in metrics.read().decode().splitlines()
               if ln.startswith("asymcache_rpc_refused_messages_total ")]
    assert refused and float(refused[0].split()[1]) >= 1


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of TCP sockets listening on ``port`` (Linux ``/proc/net/tcp``)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, _, hex_port = local.partition(":")
        if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
            found.add(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
    return found


@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux /proc/net/tcp")
def test_metrics_http_listens_on_loopback_unless_configured(start_daemon) -> None:
    port = free_port()
    start_daemon(metrics_port=port)
    assert _listening_addresses(port) == {"127.0.0.1"}


def _ask(endpoint: str, request: Hello | Ping) -> ErrorReply | PingReply:
    sock = DealerSocket(zmq.Context.instance(), endpoint)
    try:
        sock.send(request.to_wire(1))
        frames = sock.recv(5.0)
        assert frames is not None, "no reply"
        return decode_reply(frames)[1]
    finally:
        sock.close()


def _hello(engine_id: str = "eng", fingerprint: str = "test-model") -> Hello:
    return Hello(engine_id=engine_id, model_fingerprint=fingerprint, layout=LAYOUT.to_dict(),
                 gpu_slots=4)


@pytest.mark.parametrize(("request_", "code", "words"), [
    (_hello(engine_id="e" * 129), "too_large", ("'engine_id'", "128 bytes")),
    (_hello(engine_id="é" * 65), "too_large", ("'engine_id'", "130 bytes in UTF-8")),
    (_hello(engine_id="bad\nid"), "bad_field", ("'engine_id'", "control")),
    (_hello(fingerprint="f" * 257), "too_large", ("'model_fingerprint'", "256 bytes")),
    (Ping(engine_id="e" * 300), "too_large", ("'engine_id'", "routing ids")),
], ids=["engine_id_long", "engine_id_utf8", "engine_id_control", "fingerprint_long",
        "ping_engine_id_long"])
def test_identifiers_over_their_limits_get_error_replies_naming_the_field(
        start_daemon, request_, code, words) -> None:
    d = start_daemon()
    reply = _ask(d.endpoint, request_)
    assert isinstance(reply, ErrorReply) and reply.code == code
    assert all(w in reply.message for w in words), reply.message
    longest = CacheClient(d.endpoint, engine_id="e" * 128, timeout_s=10)  # with its heartbeat
    with longest as c:
        c.hello("test-model", LAYOUT, gpu_slots=4)
        assert c.ping().registered is True


def test_the_client_refuses_an_engine_id_too_long_for_a_routing_id() -> None:
    with pytest.raises(ValueError, match=r"engine_id is 130 bytes in UTF-8, more than 128"):
        CacheClient("ipc:///tmp/asymcache-never.ipc", engine_id="é" * 65)


def test_an_engine_id_belongs_to_the_curve_key_that_registered_it(start_daemon,
                                                                  tmp_path) -> None:
    server, mine, allowed = tmp_path / "server", tmp_path / "mine", tmp_path / "allowed"
    assert asymcache(["keys", "server", str(server)]) == 0
    for name in ("engine", "intruder"):
        assert asymcache(["keys", "client", name, str(mine), "--allow", str(allowed)]) == 0
    curve = {name: ClientCurve.from_files(str(server / "server.key"),
                                          str(mine / f"{name}.key_secret"))
             for name in ("engine", "intruder")}
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    start_daemon(endpoint=endpoint, curve=curve["engine"], disk_bytes=0,
                 curve_secret_key_file=server / "server.key_secret", curve_clients_dir=allowed)

    def hello(who: str) -> CacheClient:
        c = CacheClient(endpoint, engine_id="e1", timeout_s=5, curve=curve[who], heartbeat=False)
        c.hello("test-model", LAYOUT, gpu_slots=4)
        return c

    first = hello("engine")
    with pytest.raises(DaemonError, match="another CURVE client key"):
        hello("intruder")  # another key cannot take over the engine's session
    assert first.ping().registered  # it is still the engine's
    restarted = hello("engine")  # the engine itself (a restart: a new socket, the same key)
    assert restarted.ping().registered
    for c in (first, restarted):
        c.close()

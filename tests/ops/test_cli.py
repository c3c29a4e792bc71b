"""The daemon's commands as scripts use them: serve, ping, stats, keys, demo."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys
from pathlib import Path


def _asymcache(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "asymcache.ops.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_ping_exits_0_when_the_daemon_answers_and_1_when_not(start_daemon, tmp_path) -> None:
    d = start_daemon()
    ok = _asymcache("ping", "--endpoint", d.endpoint)
    assert ok.returncode == 0 and f"pong from {d.endpoint}" in ok.stdout
    down = _asymcache("ping", "--endpoint", f"ipc://{tmp_path}/nobody.ipc", "--timeout", "0.3")
    assert down.returncode == 1 and "no answer" in down.stdout


def test_stats_prints_a_table_and_json_for_scripts(start_daemon) -> None:
    d = start_daemon()
    table = _asymcache("stats", "--endpoint", d.endpoint)
    assert table.returncode == 0
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["tier", "blocks", "capacity", "hits", "misses", "evictions",
                                "demotions", "errors"]
    assert [ln.split()[0] for ln in lines[1:4]] == ["gpu", "cpu", "disk"]
    as_json = _asymcache("stats", "--endpoint", d.endpoint, "--json")
    stats = json.loads(as_json.stdout)
    assert stats["tiers"]["cpu"]["capacity_blocks"] == 32 and stats["engines"] == 0


def test_serve_with_a_bad_value_exits_2_naming_the_field(tmp_path) -> None:
    bad = _asymcache("serve", "--endpoint", f"ipc://{tmp_path}/x.ipc", "--data-dir",
                     str(tmp_path), "--cpu-bytes", "lots")
    assert bad.returncode == 2 and "cpu_bytes (from flag --cpu-bytes)" in bad.stderr


def test_serve_takes_insecure_tcp_as_a_bare_flag() -> None:
    shown = _asymcache("config", "show", "--daemon", "--json", "--endpoint", "tcp://0.0.0.0:9",
                       "--insecure-tcp")
    assert shown.returncode == 0, shown.stderr
    setting = json.loads(shown.stdout)["settings"]["insecure_tcp"]
    assert setting == {"value": True, "source": "flag --insecure-tcp"}


def test_keys_writes_private_secrets_allows_clients_and_never_overwrites(tmp_path) -> None:
    server = _asymcache("keys", "server", str(tmp_path / "srv"))
    assert server.returncode == 0 and "curve_secret_key_file = " in server.stdout
    client = _asymcache("keys", "client", "gpu0", str(tmp_path / "cl"), "--allow",
                        str(tmp_path / "allowed"))
    assert client.returncode == 0 and "allowed: " in client.stdout
    for secret in (tmp_path / "srv" / "server.key_secret", tmp_path / "cl" / "gpu0.key_secret"):
        assert secret.stat().st_mode & 0o777 == 0o600
    public = (tmp_path / "cl" / "gpu0.key").read_bytes()
    assert b"public-key" in public and b"secret-key" not in public
    assert (tmp_path / "allowed" / "gpu0.key").read_bytes() == public
    assert os.listdir(tmp_path / "allowed") == ["gpu0.key"]
    again = _asymcache("keys", "client", "gpu0", str(tmp_path / "cl"))
    assert again.returncode == 2 and "never overwritten" in again.stderr
    assert (tmp_path / "cl" / "gpu0.key").read_bytes() == public
    bad = _asymcache("keys", "client", "../escape", str(tmp_path / "cl"))
    assert bad.returncode == 2 and "NAME must be" in bad.stderr


def test_demo_serves_the_chat_twice_prints_the_table_and_a_png_and_cleans_up(tmp_path) -> None:
    """The README's main command: the installed console script, run from outside the repository,
    beside transformers and Hugging Face's ``kernels`` (the name clash of docs/architecture.md)."""
    import re

    assert importlib.metadata.version("transformers") and importlib.metadata.version("kernels")
    script = Path(sys.executable).parent / "asymcache"
    demo = subprocess.run([str(script), "demo", "--requests", "8", "--out", str(tmp_path / "out")],
                          cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout
    daemons = re.findall(r"daemon pid (\d+) on ipc://(\S+)/daemon.ipc \(policy (\w+), signals on\)",
                         out)
    assert [d[2] for d in daemons] == ["lru", "asym"]
    assert out.count("daemon stopped (exit status 0)") == 2
    rows = [ln.split() for ln in out.splitlines()
            if re.match(r"\s*(prefix-offload|asymcache)\s+[0-9.]+\s", ln)]
    assert [r[0] for r in rows] == ["prefix-offload", "asymcache"] and rows[1][-1] == "yes"
    assert f"plot: {tmp_path / 'out' / 'demo.png'}" in out
    calibrated = re.search(r"-> ([0-9.]+) requests/s", out).group(1)
    assert f"\nat {calibrated} requests/s, mean TTFT" in out  # both runs at the measured rate
    assert (tmp_path / "out" / "demo.png").stat().st_size > 0
    assert not any(os.path.exists(d[1]) or os.path.exists(f"/proc/{d[0]}") for d in daemons)


def test_demo_interrupted_stops_its_daemon_and_removes_its_files(tmp_path) -> None:
    import re
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "asymcache.ops.cli", "demo", "--requests", "64",
                             "--out", str(tmp_path)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    m = None
    for _ in range(50):  # a few set-up lines, then the first daemon's
        m = re.match(r"daemon pid (\d+) on ipc://(\S+)/daemon.ipc", proc.stdout.readline())
        if m:
            break
    assert m, "the demo never started its daemon"
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130)  # interrupted, or it had just finished
    assert "daemon stopped (exit status 0)" in out
    assert not os.path.exists(m.group(2))
    assert not os.path.exists(f"/proc/{m.group(1)}")  # stopped and reaped


def test_ping_and_stats_reach_a_curve_daemon_with_the_keys_keys_made(start_daemon,
                                                                    tmp_path) -> None:
    from asymcache.cacheserver.protocol.sockets import ClientCurve
    from tests.cacheserver.daemon_fixtures import free_port

    assert _asymcache("keys", "server", str(tmp_path / "srv")).returncode == 0
    assert _asymcache("keys", "client", "ops", str(tmp_path / "cl"), "--allow",
                      str(tmp_path / "allowed")).returncode == 0
    server_pub, client_sec = tmp_path / "srv" / "server.key", tmp_path / "cl" / "ops.key_secret"
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    start_daemon(endpoint=endpoint, curve=ClientCurve.from_files(str(server_pub), str(client_sec)),
                 curve_secret_key_file=str(tmp_path / "srv" / "server.key_secret"),
                 curve_clients_dir=str(tmp_path / "allowed"), disk_bytes=0)
    keys = ("--curve-server-key", str(server_pub), "--curve-client-key", str(client_sec))
    ok = _asymcache("ping", "--endpoint", endpoint, *keys)
    assert ok.returncode == 0 and f"pong from {endpoint}" in ok.stdout
    stats = _asymcache("stats", "--endpoint", endpoint, "--json", *keys)
    assert stats.returncode == 0 and json.loads(stats.stdout)["engines"] == 0
    plain = _asymcache("ping", "--endpoint", endpoint, "--timeout", "0.5")
    assert plain.returncode == 1  # no keys: no handshake, no answer
    half = _asymcache("ping", "--endpoint", endpoint, "--curve-server-key", str(server_pub))
    assert half.returncode != 0 and "--curve-client-key is needed" in half.stderr

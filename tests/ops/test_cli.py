"""The daemon's commands as scripts use them: serve, ping, stats, demo."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.cacheserver.daemon_fixtures import start_daemon  # noqa: F401 - fixture


def _asymcache(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ops.cli", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_ping_exits_0_when_the_daemon_answers_and_1_when_not(start_daemon, tmp_path) -> None:  # noqa: F811
    d = start_daemon()
    ok = _asymcache("ping", "--endpoint", d.endpoint)
    assert ok.returncode == 0 and f"pong from {d.endpoint}" in ok.stdout
    down = _asymcache("ping", "--endpoint", f"ipc://{tmp_path}/nobody.ipc", "--timeout", "0.3")
    assert down.returncode == 1 and "no answer" in down.stdout


def test_stats_prints_a_table_and_json_for_scripts(start_daemon) -> None:  # noqa: F811
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
    assert bad.returncode == 2 and "cpu_bytes (from command line)" in bad.stderr


def test_demo_runs_a_round_trip_prints_stats_and_cleans_up() -> None:
    demo = _asymcache("demo", timeout=120)
    assert demo.returncode == 0, demo.stderr
    out = demo.stdout
    assert "b reads CPU slots zero-copy, bytes equal   [True, True, True, True]" in out
    assert "PUT blocks 4-5 (durable)" in out and "durable True" in out
    assert "daemon stats:" in out and "daemon stopped (exit status 0)" in out


def test_demo_interrupted_stops_its_daemon_and_removes_its_files() -> None:
    import os
    import re
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "ops.cli", "demo"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    first = proc.stdout.readline()  # "daemon pid N on ipc:///tmp/asymcache-demo-XXXX/..."
    m = re.match(r"daemon pid (\d+) on ipc://(\S+)/daemon.ipc", first)
    assert m, first
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode in (0, 130)  # interrupted, or it had just finished
    assert "daemon stopped (exit status 0)" in out
    assert not os.path.exists(m.group(2))
    assert not os.path.exists(f"/proc/{m.group(1)}")  # stopped and reaped

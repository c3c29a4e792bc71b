"""``asymcache config show``: the effective daemon or engine configuration, each value with its
source, as text or JSON; secrets masked; a bad setting exits 2 naming it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def _show(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("ASYMCACHE_")}
    return subprocess.run([sys.executable, "-m", "asymcache.ops.cli", "config", "show", *args],
                          capture_output=True, text=True, timeout=60, env={**clean, **(env or {})})


def _settings(done: subprocess.CompletedProcess) -> dict[str, dict]:
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["settings"]


def test_daemon_json_names_the_source_of_every_value_and_masks_the_password(
        tmp_path: Path) -> None:
    toml = tmp_path / "daemon.toml"
    toml.write_text('max_engines = 3\ndisk_bytes = "1GiB"\n[remote]\nprefix = "t:"\n')
    env = {"ASYMCACHE_DAEMON_REMOTE__PASSWORD": "pw-secret", "ASYMCACHE_DAEMON_MAX_ENGINES": "5",
           "ASYMCACHE_CACHE_DIR": "/elsewhere"}
    done = _show("--daemon", "--json", "--config", str(toml), "--max-engines", "7",
                 "--remote-nodes", "h:1", env=env)
    got = _settings(done)
    assert "pw-secret" not in done.stdout + done.stderr
    assert got["remote.password"] == {"value": "***",
                                      "source": "env ASYMCACHE_DAEMON_REMOTE__PASSWORD"}
    assert got["max_engines"] == {"value": 7, "source": "flag --max-engines"}
    assert got["disk_bytes"] == {"value": 1 << 30, "source": f"file {toml}"}
    assert got["remote.prefix"]["source"] == f"file {toml}"
    assert got["remote.nodes"] == {"value": "h:1", "source": "flag --remote-nodes"}
    assert got["endpoint"]["source"] == "default"


def test_engine_text_lists_one_setting_per_line_with_its_source() -> None:
    done = _show("--engine", "--block-size", "32", "--port", "9000",
                 env={"ASYMCACHE_ENGINE_REUSE": "prefix"})
    assert done.returncode == 0, done.stderr
    rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines()
            if not line.startswith("#")}
    assert rows["block_size"] == ["32", "flag", "--block-size"]
    assert rows["reuse"] == ['"prefix"', "env", "ASYMCACHE_ENGINE_REUSE"]
    assert rows["model"] == ['"builtin"', "default"]
    assert _settings(_show("--engine", "--json"))["fetch_tiers"]["value"] == ["cpu", "disk",
                                                                              "remote"]


def test_an_old_spelling_is_shown_with_a_warning_naming_the_new_one() -> None:
    done = _show("--daemon", "--json", "--remote-bytes", "2GiB",
                 env={"ASYMCACHE_CPU_BYTES": "8MiB"})
    got = _settings(done)
    assert got["remote.capacity_bytes"] == {"value": 2 << 30, "source": "flag --remote-bytes"}
    assert got["cpu_bytes"] == {"value": 8 << 20, "source": "env ASYMCACHE_CPU_BYTES"}
    assert "--remote-bytes is renamed --remote-capacity-bytes" in done.stderr
    assert "ASYMCACHE_CPU_BYTES is renamed ASYMCACHE_DAEMON_CPU_BYTES" in done.stderr


def test_a_bad_or_unknown_setting_exits_2_naming_it() -> None:
    bad = _show("--daemon", "--remote-nodes", "h:1", "--remote-prefix", "kv{x}")
    assert bad.returncode == 2 and "remote.prefix" in bad.stderr
    unknown = _show("--engine", env={"ASYMCACHE_ENGINE_BLOK_SIZE": "1"})
    assert unknown.returncode == 2 and "ASYMCACHE_ENGINE_BLOK_SIZE" in unknown.stderr
    neither = _show("--json")
    assert neither.returncode == 2 and "--daemon" in neither.stderr

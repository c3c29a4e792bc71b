"""The `redis` profile: three cluster masters, a one-shot service that forms the cluster, and the
daemon's remote tier pointed at it through ``docker/.env``.

The formation script is run for real: the rendered command of ``redis-cluster-init`` runs under
``sh`` against three unformed ``redis-server`` nodes on loopback, with ``redis-cli`` and
``getent`` wrappers that map the service names to those nodes.
"""

from __future__ import annotations

import itertools
import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from asymcache.cacheserver.config import load_config
from asymcache.ops.bench.redis_cluster import SLOTS, LocalRedisCluster
from tests.docker.compose import dotenv, rendered, run_compose
from tests.docker.services import DOCKER

NODES = ("redis-1", "redis-2", "redis-3")


def _script(service: dict) -> str:
    """The shell text a service runs (``sh -c TEXT``), as the container receives it."""
    assert service["command"][:2] == ["sh", "-c"]
    return service["command"][2].replace("$$", "$")


def test_cluster_nodes_are_cache_configured_masters_of_the_redis_profile() -> None:
    services, env = rendered()["services"], dotenv()
    for name in NODES:
        node = services[name]
        assert node["profiles"] == ["redis"] and node["hostname"] == name
        assert node["image"] == env["REDIS_IMAGE"]
        assert [v.split(":")[:2] for v in node["volumes"]] == [[name, "/data"]]
        text = _script(node)
        for flag in ("--cluster-enabled yes", "--cluster-require-full-coverage no",
                     '--save ""', "--appendonly no", "--maxmemory-policy allkeys-lru",
                     f"--maxmemory {env['REDIS_MAXMEMORY']}", '--cluster-announce-hostname "$('):
            assert flag in text, (name, flag)
    init = services["redis-cluster-init"]
    assert init["profiles"] == ["redis"] and init["restart"] == "no"
    assert {n: c["condition"] for n, c in init["depends_on"].items()} == dict.fromkeys(
        NODES, "service_healthy")


def test_init_assigns_every_slot_once() -> None:
    text = _script(rendered()["services"]["redis-cluster-init"])
    ranges = sorted((int(a), int(b)) for a, b in re.findall(r"addslotsrange (\d+) (\d+)", text))
    assert ranges[0][0] == 0 and ranges[-1][1] == SLOTS - 1 and len(ranges) == len(NODES)
    assert all(b + 1 == c for (_, b), (c, _) in itertools.pairwise(ranges))


def test_daemon_reaches_the_profile_cluster_when_the_env_names_it(tmp_path: Path) -> None:
    env = dotenv()
    assert env["ASYMCACHE_DAEMON_REMOTE__NODES"] == ""  # off unless asked for
    nodes = ",".join(f"{n}:6379" for n in NODES)
    documented = (DOCKER / ".env").read_text()
    assert f"ASYMCACHE_DAEMON_REMOTE__NODES={nodes}" in documented
    on = tmp_path / "on.env"
    on.write_text("".join(f"{k}={nodes if k == 'ASYMCACHE_DAEMON_REMOTE__NODES' else v}\n"
                          for k, v in env.items()))
    done = run_compose("config", env_file=on)
    assert done.returncode == 0, done.stderr
    daemon_env = yaml.safe_load(done.stdout)["services"]["cacheserver"]["environment"]
    cfg = load_config(DOCKER / "daemon.toml", environ=daemon_env)
    assert cfg.remote_tier_config().nodes == tuple(f"{n}:6379" for n in NODES)


def _wrappers(bin_dir: Path, cluster: LocalRedisCluster) -> None:
    """``redis-cli -h redis-N`` -> node N on loopback; ``getent hosts redis-N`` -> 127.0.0.N,
    which a MEET wrapper turns back into node N's port and bus port."""
    ports = " ".join(map(str, cluster.ports))
    buses = " ".join(map(str, cluster.bus_ports))
    cli = f"""#!/bin/sh
pick() {{ i=$1; shift; for v in "$@"; do i=$((i-1)); [ $i -eq 0 ] && echo $v && return; done; }}
host=$2; shift 2
port=$(pick ${{host#redis-}} {ports})
if [ "$1" = cluster ] && [ "$2" = meet ]; then
  n=${{3##*.}}; set -- cluster meet 127.0.0.1 $(pick $n {ports}) $(pick $n {buses})
fi
exec /usr/bin/redis-cli -p $port "$@"
"""
    getent = '#!/bin/sh\necho "127.0.0.${2#redis-} $2"\n'
    for name, text in (("redis-cli", cli), ("getent", getent)):
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_init_script_forms_the_cluster_and_is_a_no_op_after(
        idle_cluster: LocalRedisCluster, tmp_path: Path) -> None:
    if not Path("/usr/bin/redis-cli").exists():
        pytest.skip("redis-cli is not installed")
    for i in range(len(NODES)):
        idle_cluster.start_node(i)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _wrappers(bin_dir, idle_cluster)
    text = _script(rendered()["services"]["redis-cluster-init"])
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    for _ in range(2):  # forms it, then finds it formed
        done = subprocess.run(["sh", "-c", text], env=env, capture_output=True, text=True,
                              timeout=90)
        assert done.returncode == 0, done.stdout + done.stderr
    idle_cluster.wait_ok(10)

"""docker-compose accepts the deployment as checked out, and it is wired the way AsymCache needs:
the CPU tier's shared memory and the daemon's socket reach the engines, LMDB sits on a named
volume, the `gpu` profile reserves a GPU, every setting comes from ``docker/.env``."""

from __future__ import annotations

import subprocess
import tomllib
from pathlib import Path

import pytest
import yaml

from asymcache.cacheserver.config import parse_size
from tests.docker.compose import docker_size, dotenv, rendered, run_compose
from tests.docker.services import DOCKER
from tests.docker.test_images import _admitted

ENGINES = ("engine", "engine-gpu")
REDIS = ("redis-1", "redis-2", "redis-3", "redis-cluster-init")  # the `redis` profile


def _flag(service: dict, name: str) -> str:
    values = [a.split("=", 1)[1] for a in service["command"] if a.startswith(f"--{name}=")]
    assert len(values) == 1, f"--{name}= appears {len(values)} times in {service['command']}"
    return values[0]


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> source (volume name or host path) of a rendered service."""
    return {v.split(":")[1]: v.split(":")[0] for v in service.get("volumes", [])}


def test_docker_compose_config_accepts_the_checkout_as_is() -> None:
    done = run_compose("config", "--quiet")
    assert done.returncode == 0, done.stderr
    assert set(rendered()["services"]) == {"cacheserver", *ENGINES, "prometheus", "grafana",
                                           *REDIS}


def test_every_setting_comes_from_the_env_file_and_a_missing_one_is_named(tmp_path) -> None:
    env = dotenv()
    trimmed = tmp_path / "trimmed.env"
    trimmed.write_text("".join(f"{k}={v}\n" for k, v in env.items()
                               if k != "ASYMCACHE_DAEMON_CPU_BYTES"))
    done = run_compose("config", "--quiet", env_file=trimmed)
    assert done.returncode != 0
    assert "set ASYMCACHE_DAEMON_CPU_BYTES in docker/.env" in done.stderr
    daemon_env = rendered()["services"]["cacheserver"]["environment"]
    assert daemon_env["ASYMCACHE_DAEMON_CPU_BYTES"] == env["ASYMCACHE_DAEMON_CPU_BYTES"]


def test_daemon_shares_its_ipc_namespace_and_shm_holds_the_cpu_tier() -> None:
    services = rendered()["services"]
    daemon = services["cacheserver"]
    assert daemon["ipc"] == "shareable"
    for name in ENGINES:
        assert services[name]["ipc"] == "service:cacheserver", name
    cpu_tier = parse_size(daemon["environment"]["ASYMCACHE_DAEMON_CPU_BYTES"])
    assert docker_size(daemon["shm_size"]) > cpu_tier


def test_engines_connect_to_the_endpoint_the_daemon_binds_through_a_shared_volume() -> None:
    services = rendered()["services"]
    daemon = services["cacheserver"]
    bind = daemon["environment"]["ASYMCACHE_DAEMON_ENDPOINT"]
    for name in ENGINES:
        connect = services[name]["environment"]["ASYMCACHE_ENGINE_CACHE_ENDPOINT"]
        if bind.startswith("ipc://"):
            assert connect == bind, name
            socket_dir = bind.removeprefix("ipc://").rsplit("/", 1)[0]
            volume = _mounts(daemon)[socket_dir]
            assert volume in rendered()["volumes"], f"{socket_dir} is not on a named volume"
            assert _mounts(services[name])[socket_dir] == volume, name
        else:
            assert connect.startswith("tcp://cacheserver:"), name


def test_lmdb_data_dir_is_a_named_volume() -> None:
    image_defaults = tomllib.loads((DOCKER / "daemon.toml").read_text())
    daemon = rendered()["services"]["cacheserver"]
    data_dir = daemon["environment"].get("ASYMCACHE_DAEMON_DATA_DIR",
                                         image_defaults["data_dir"])
    assert _mounts(daemon)[data_dir] in rendered()["volumes"]


def test_gpu_profile_reserves_a_gpu_and_the_default_cpu_profile_runs_on_cpu() -> None:
    services = rendered()["services"]
    assert dotenv()["COMPOSE_PROFILES"] == "cpu"
    cpu, gpu = services["engine"], services["engine-gpu"]
    assert cpu["profiles"] == ["cpu"] and "deploy" not in cpu
    assert cpu["environment"]["ASYMCACHE_ENGINE_DEVICE"] == "cpu"
    assert cpu["build"]["args"]["VARIANT"] == "cpu"
    assert gpu["profiles"] == ["gpu"] and gpu["environment"]["ASYMCACHE_ENGINE_DEVICE"] == "cuda"
    assert gpu["build"]["args"]["VARIANT"] == "cuda"
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["capabilities"] == ["gpu"] and device["device_ids"] == [dotenv()[
        "GPU_DEVICE"]]
    profiles = run_compose("config", "--profiles")
    assert profiles.returncode == 0 and sorted(profiles.stdout.split()) == ["cpu", "gpu",
                                                                            "redis"]


def test_bind_mounts_exist_in_the_checkout() -> None:
    binds = {(name, target): source  # docker-compose config made host paths absolute
             for name, service in rendered()["services"].items()
             for target, source in _mounts(service).items() if source.startswith("/")}
    assert set(binds) == {*((engine, "/models") for engine in ENGINES),
                          *((engine, "/etc/asymcache/keys") for engine in ENGINES),
                          ("cacheserver", "/etc/asymcache/keys"),
                          ("prometheus", "/etc/prometheus/prometheus.yml"),
                          ("grafana", "/etc/grafana/provisioning"),
                          ("grafana", "/etc/grafana/dashboards")}
    for (name, _), source in binds.items():
        assert Path(source).exists(), f"{name}: {source} does not exist"
        assert Path(source).is_relative_to(DOCKER), f"{name}: {source} is outside docker/"


def test_prometheus_targets_match_the_ports_the_services_listen_on() -> None:
    prom = yaml.safe_load((DOCKER / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in prom["scrape_configs"]}
    services = rendered()["services"]
    daemon_port = tomllib.loads((DOCKER / "daemon.toml").read_text())["metrics_port"]
    assert jobs["asymcache-daemon"]["static_configs"][0]["targets"] == [
        f"cacheserver:{daemon_port}"]
    assert any(p.endswith(f":{daemon_port}/tcp") for p in services["cacheserver"]["ports"])
    (dns,) = jobs["asymcache-engine"]["dns_sd_configs"]
    assert dns["names"] == ["engine"]
    for name in ENGINES:
        assert _flag(services[name], "port") == str(dns["port"]), name
    assert "engine" in services["engine-gpu"]["networks"]["default"]["aliases"]


def test_service_settings_are_accepted_by_the_daemon_and_engine_loaders(caplog) -> None:
    from asymcache.cacheserver.config import load_config
    from asymcache.engine.settings import load_settings

    services = rendered()["services"]
    caplog.set_level("WARNING", logger="asymcache.config")
    image_defaults = DOCKER / "daemon.toml"
    daemon = load_config(image_defaults, environ=services["cacheserver"]["environment"])
    assert daemon.metrics_host == "0.0.0.0" and daemon.cpu_num_slots > 0
    assert daemon.endpoint == services["cacheserver"]["environment"]["ASYMCACHE_DAEMON_ENDPOINT"]
    for name in ENGINES:
        engine = load_settings(env=services[name]["environment"])
        assert engine.model == dotenv()["ASYMCACHE_ENGINE_MODEL"], name
        assert engine.cache_endpoint == daemon.endpoint or daemon.endpoint.startswith("tcp://")
    assert not caplog.records, "old spellings in docker/: " + caplog.text


def test_every_asymcache_name_in_the_env_file_is_a_current_daemon_or_engine_setting() -> None:
    from asymcache.cacheserver.config import SCHEME as DAEMON
    from asymcache.cacheserver.config_loader import keys
    from asymcache.engine.settings import SCHEME as ENGINE

    current = {s.env_name(k) for s in (DAEMON, ENGINE) for k in keys(s.root)}
    names = [k for k in dotenv() if k.startswith("ASYMCACHE_")]
    assert names and set(names) <= current, sorted(set(names) - current)


def test_second_gpu_engine_differs_from_the_first_only_in_its_gpu_and_port() -> None:
    services = rendered("docker-compose.second-gpu.yml")["services"]
    first, second = dict(services["engine-gpu"]), dict(services["engine-gpu1"])
    assert first["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"] != \
        second["deploy"]["resources"]["reservations"]["devices"][0]["device_ids"]
    assert first["ports"] != second["ports"]
    for service in (first, second):
        for key in ("deploy", "ports", "build"):
            service.pop(key, None)
        service["volumes"] = sorted(service["volumes"])
    assert first == second


def test_curve_keys_are_mounted_read_only_and_stay_out_of_git_and_images() -> None:
    daemon = rendered()["services"]["cacheserver"]
    (mount,) = [v for v in daemon["volumes"] if v.split(":")[1] == "/etc/asymcache/keys"]
    assert mount.endswith(":ro") and Path(mount.split(":")[0]) == DOCKER / "keys"
    secret = "docker/keys/server.key_secret"
    ignored = subprocess.run(["git", "check-ignore", "-q", secret], cwd=DOCKER.parent)
    assert ignored.returncode == 0, f"git would commit {secret}"
    for ignore_file in ("daemon.Dockerfile.dockerignore", "engine.Dockerfile.dockerignore"):
        assert not _admitted(secret, ignore_file), ignore_file


def test_a_tcp_endpoint_needs_the_curve_settings_or_the_insecure_flag() -> None:
    from asymcache.cacheserver.config import load_config

    env = dict(rendered()["services"]["cacheserver"]["environment"])
    assert env["ASYMCACHE_DAEMON_ENDPOINT"].startswith("ipc://")  # nothing exposed by default
    assert env["ASYMCACHE_DAEMON_INSECURE_TCP"] == "false"
    image_defaults = DOCKER / "daemon.toml"
    env["ASYMCACHE_DAEMON_ENDPOINT"] = "tcp://0.0.0.0:5555"
    with pytest.raises(ValueError, match=r"^endpoint: .*curve_clients_dir.*--insecure-tcp"):
        load_config(image_defaults, environ=env)
    curve = {"ASYMCACHE_DAEMON_CURVE_SECRET_KEY_FILE": "/etc/asymcache/keys/server.key_secret",
             "ASYMCACHE_DAEMON_CURVE_CLIENTS_DIR": "/etc/asymcache/keys/clients"}
    assert load_config(image_defaults, environ={**env, **curve}).unprotected_endpoints == []
    insecure = load_config(image_defaults, environ={**env, "ASYMCACHE_DAEMON_INSECURE_TCP": "true"})
    assert insecure.unprotected_endpoints == [("endpoint", "tcp://0.0.0.0:5555")]

"""ServerConfig: validated per field; defaults < TOML < ASYMCACHE_DAEMON_* environment < flags;
the remote tier is the ``[remote]`` section; old spellings still work, with a warning."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest

from asymcache.cacheserver.config import RemoteSection, ServerConfig, load_config, parse_size
from asymcache.cacheserver.config_loader import keys


def test_precedence_is_toml_then_environment_then_flags(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('cpu_bytes = "8MiB"\nmax_engines = 3\npolicy = "lru_tail"\n'
                    'lease_timeout_s = 5\n[remote]\nprefix = "t:"\n')
    cfg = load_config(toml, {"max_engines": 4, "cpu_bytes": None},
                      {"ASYMCACHE_DAEMON_LEASE_TIMEOUT_S": "7.5",
                       "ASYMCACHE_DAEMON_MAX_ENGINES": "6"})
    assert (cfg.cpu_bytes, cfg.max_engines, cfg.policy, cfg.lease_timeout_s) == (
        8 << 20, 4, "lru_tail", 7.5)
    assert cfg.remote.prefix == "t:" and cfg.remote.capacity_bytes == 16 << 30
    env = load_config(toml, {}, {"ASYMCACHE_DAEMON_MAX_ENGINES": "6"})
    assert env.max_engines == 6


def test_other_asymcache_variables_are_not_daemon_settings() -> None:
    env = {"ASYMCACHE_TORCH": "1", "ASYMCACHE_CACHE_DIR": "/x", "ASYMCACHE_TEST_CUDA": "1",
           "ASYMCACHE_KERNEL_BACKEND": "torch", "ASYMCACHE_ENGINE_MODEL": "builtin",
           "ASYMCACHE_ENGINE_NOPE": "1"}
    assert load_config(None, {}, env) == ServerConfig()


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"endpoint": "http://x"}, "endpoint"), ({"endpoint": "ipc://" + "a" * 120}, "endpoint"),
    ({"cpu_bytes": 10}, "cpu_bytes"), ({"metrics_port": 70000}, "metrics_port"),
    ({"policy": "nope"}, "policy"), ({"cpu_policy": "nope"}, "cpu_policy"),
    ({"max_inflight": 0}, "max_inflight"), ({"lease_timeout_s": 0}, "lease_timeout_s"),
    ({"max_engines": True}, "max_engines"), ({"log_level": "loud"}, "log_level"),
    ({"curve_clients_dir": "/x"}, "curve_clients_dir"), ({"disk_bytes": -1}, "disk_bytes"),
    ({"max_message_bytes": 1 << 20}, "max_message_bytes"),  # < one slot + one header
    ({"disk_queue_bytes": 0}, "disk_queue_bytes"),
    ({"curve_secret_key_file": "/s"}, "curve_clients_dir"),  # CURVE needs an allow-list
    ({"endpoint": "tcp://0.0.0.0:5555"}, "endpoint"),  # other hosts reach it: CURVE or insecure
    ({"endpoint": "tcp://*:5555"}, "endpoint"), ({"endpoint": "tcp://eth0:5555"}, "endpoint"),
    ({"endpoint": "tcp://cache.example:5555"}, "endpoint"),
    ({"events_endpoint": "tcp://10.0.0.2:5556"}, "events_endpoint"),
    ({"events_endpoint": "ipc:///tmp/e", "events_replay_endpoint": "tcp://0.0.0.0:5557"},
     "events_replay_endpoint"),
])
def test_bad_values_fail_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        ServerConfig(**kwargs)


@pytest.mark.parametrize(("flags", "field"), [
    ({"remote.policy": "nope"}, "remote.policy"),
    ({"remote.nodes": "h:1", "remote.ttl_s": -1.0}, "remote.ttl_s"),
    ({"remote.nodes": "h:1", "remote.capacity_bytes": 0}, "remote.capacity_bytes"),
    ({"remote.nodes": "h:1", "remote.timeout_s": 0.0}, "remote.timeout_s"),
    ({"remote.nodes": "h:1", "remote.tls_key_file": "/k"}, "remote.tls"),
    ({"remote.nodes": "h:1", "remote.tls": "maybe"}, "remote.tls"),
])
def test_bad_remote_values_fail_naming_the_remote_field(flags: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^{re.escape(field)}\b"):
        load_config(None, flags, {})


def test_loader_errors_name_field_and_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"max_engines \(from env ASYMCACHE_DAEMON_MAX_ENGINES"):
        load_config(None, {}, {"ASYMCACHE_DAEMON_MAX_ENGINES": "many"})
    with pytest.raises(ValueError, match=r"cpu_bytes: 10 holds no slot.*\(from flag --cpu-bytes"):
        load_config(None, {"cpu_bytes": "10"}, {})
    toml = tmp_path / "c.toml"
    toml.write_text('[remote]\nnodes = "h:1"\nprefix = "kv{x}"\n')
    with pytest.raises(ValueError, match=rf"^remote\.prefix .*\(from file {toml}\)"):
        load_config(toml, {}, {})


@pytest.mark.parametrize(("text", "named", "hint"), [
    ("no_such_field = 1\n", "no_such_field", ""),
    ('[remote]\nnodez = "h:1"\n', r"remote\.nodez", r" \(did you mean remote\.nodes\?\)"),
])
def test_an_unknown_file_key_fails_naming_it(tmp_path: Path, text: str, named: str,
                                             hint: str) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(text)
    with pytest.raises(ValueError, match=rf"^{named} \(in .*\): unknown daemon setting{hint}"):
        load_config(toml, {}, {})


@pytest.mark.parametrize("var", ["ASYMCACHE_DAEMON_NOPE", "ASYMCACHE_DAEMON_REMOTE_NODES",
                                 "ASYMCACHE_DAEMON_REMOTE__NODEZ"])
def test_an_unknown_daemon_variable_fails_naming_it(var: str) -> None:
    with pytest.raises(ValueError, match=f"^{var}: unknown daemon setting"):
        load_config(None, {}, {var: "h:1"})


def test_old_spellings_still_work_and_warn_naming_the_new_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    toml = tmp_path / "old.toml"
    toml.write_text('remote_nodes = "h:1"\nremote_bandwidth_bps = 1e9\n')
    env = {"ASYMCACHE_CPU_BYTES": "8MiB", "ASYMCACHE_REMOTE_PREFIX": "old:",
           "ASYMCACHE_DAEMON_REMOTE__TTL_S": "5", "ASYMCACHE_REMOTE_TTL_S": "9"}
    with caplog.at_level(logging.WARNING, logger="asymcache.config"):
        cfg = load_config(toml, {"remote_bytes": "1GiB"}, env)
    assert (cfg.cpu_bytes, cfg.remote.nodes, cfg.remote.load_bandwidth_bps) == (8 << 20, "h:1",
                                                                                1e9)
    assert (cfg.remote.prefix, cfg.remote.capacity_bytes) == ("old:", 1 << 30)
    assert cfg.remote.ttl_s == 5  # the new spelling wins over the old one
    said = caplog.text
    for old, new in [("remote_nodes", "remote.nodes"),
                     ("remote_bandwidth_bps", "remote.load_bandwidth_bps"),
                     ("ASYMCACHE_CPU_BYTES", "ASYMCACHE_DAEMON_CPU_BYTES"),
                     ("ASYMCACHE_REMOTE_PREFIX", "ASYMCACHE_DAEMON_REMOTE__PREFIX"),
                     ("--remote-bytes", "--remote-capacity-bytes")]:
        assert f"{old} is renamed {new}" in said, old


def test_sizes_accept_units_and_derived_values_follow() -> None:
    assert [parse_size(s) for s in ("4096", "64KiB", "2MiB", "1GB")] == [
        4096, 65536, 2 << 20, 10**9]
    cfg = ServerConfig(cpu_bytes=1 << 20, cpu_slot_bytes=64 << 10, endpoint="ipc:///tmp/a.ipc")
    assert cfg.cpu_num_slots == 16
    assert cfg.limits.max_frame_bytes == 64 << 10
    assert cfg.ipc_path == "/tmp/a.ipc"
    assert cfg.policy_for("disk") == "asym"
    assert ServerConfig(cpu_policy="lru").policy_for("cpu") == "lru"
    assert ServerConfig(remote=RemoteSection(policy="lru")).policy_for("remote") == "lru"


FLOAT_FIELDS = [k for k, t in keys(ServerConfig).items() if t is float]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_a_float_field_that_is_not_finite_fails_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=rf"^{field}: must be a finite number"):
        load_config(None, {field: value}, {})


def test_nan_from_the_environment_fails_naming_the_field() -> None:
    assert "lease_timeout_s" in FLOAT_FIELDS and len(FLOAT_FIELDS) >= 5
    with pytest.raises(ValueError, match=r"^lease_timeout_s: must be a finite number"):
        load_config(None, {}, {"ASYMCACHE_DAEMON_LEASE_TIMEOUT_S": "nan"})


@pytest.mark.parametrize("kwargs", [
    {"endpoint": "tcp://127.0.0.1:5555"}, {"endpoint": "tcp://127.3.2.1:5555"},
    {"endpoint": "tcp://localhost:5555"}, {"endpoint": "ipc:///tmp/a.ipc"},
    {"endpoint": "tcp://0.0.0.0:5555", "insecure_tcp": True},
    {"endpoint": "tcp://0.0.0.0:5555", "curve_secret_key_file": "/s", "curve_clients_dir": "/c"},
])
def test_local_endpoints_curve_or_the_insecure_flag_pass(kwargs: dict) -> None:
    cfg = ServerConfig(**kwargs)
    assert cfg.unprotected_endpoints == ([("endpoint", "tcp://0.0.0.0:5555")]
                                         if kwargs.get("insecure_tcp") else [])


def test_an_exposed_endpoint_names_both_ways_out_and_where_it_came_from() -> None:
    with pytest.raises(ValueError) as info:
        load_config(None, {"endpoint": "tcp://0.0.0.0:5599"}, {})
    message = str(info.value)
    assert message.startswith("endpoint: tcp://0.0.0.0:5599 can be reached from other hosts")
    for words in ("curve_secret_key_file and curve_clients_dir", "asymcache keys",
                  "--insecure-tcp", "(from flag --endpoint)"):
        assert words in message
    assert load_config(None, {"endpoint": "tcp://0.0.0.0:5599"},
                       {"ASYMCACHE_DAEMON_INSECURE_TCP": "true"}).insecure_tcp is True


def test_metrics_http_binds_loopback_by_default() -> None:
    assert ServerConfig().metrics_host == "127.0.0.1"

"""ServerConfig: validated per field; TOML < CLI flags < ASYMCACHE_* environment."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import pytest

from asymcache.cacheserver.config import ServerConfig, load_config, parse_size


def test_precedence_is_toml_then_flags_then_environment(tmp_path: Path) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text('cpu_bytes = "8MiB"\nmax_engines = 3\npolicy = "lru_tail"\n'
                    'lease_timeout_s = 5\n')
    cfg = load_config(toml, {"max_engines": 4, "cpu_bytes": None},
                      {"ASYMCACHE_LEASE_TIMEOUT_S": "7.5", "ASYMCACHE_TORCH": "ignored"})
    assert (cfg.cpu_bytes, cfg.max_engines, cfg.policy, cfg.lease_timeout_s) == (
        8 << 20, 4, "lru_tail", 7.5)
    env = load_config(toml, {"max_engines": 4}, {"ASYMCACHE_MAX_ENGINES": "6"})
    assert env.max_engines == 6


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"endpoint": "http://x"}, "endpoint"), ({"endpoint": "ipc://" + "a" * 120}, "endpoint"),
    ({"cpu_bytes": 10}, "cpu_bytes"), ({"metrics_port": 70000}, "metrics_port"),
    ({"policy": "nope"}, "policy"), ({"cpu_policy": "nope"}, "cpu_policy"),
    ({"max_inflight": 0}, "max_inflight"), ({"lease_timeout_s": 0}, "lease_timeout_s"),
    ({"max_engines": True}, "max_engines"), ({"log_level": "loud"}, "log_level"),
    ({"curve_clients_dir": "/x"}, "curve_clients_dir"), ({"disk_bytes": -1}, "disk_bytes"),
    ({"max_message_bytes": 1 << 20}, "max_message_bytes"),  # < one slot + one header
    ({"disk_queue_bytes": 0}, "disk_queue_bytes"),
])
def test_bad_values_fail_naming_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=f"^{field}"):
        ServerConfig(**kwargs)


def test_loader_errors_name_field_and_source(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"max_engines \(from ASYMCACHE_MAX_ENGINES"):
        load_config(None, {}, {"ASYMCACHE_MAX_ENGINES": "many"})
    toml = tmp_path / "c.toml"
    toml.write_text("no_such_field = 1\n")
    with pytest.raises(ValueError, match="no_such_field"):
        load_config(toml, {}, {})


def test_sizes_accept_units_and_derived_values_follow() -> None:
    assert [parse_size(s) for s in ("4096", "64KiB", "2MiB", "1GB")] == [
        4096, 65536, 2 << 20, 10**9]
    cfg = ServerConfig(cpu_bytes=1 << 20, cpu_slot_bytes=64 << 10, endpoint="ipc:///tmp/a.ipc")
    assert cfg.cpu_num_slots == 16
    assert cfg.limits.max_frame_bytes == 64 << 10
    assert cfg.ipc_path == "/tmp/a.ipc"
    assert cfg.policy_for("disk") == "asym"
    assert ServerConfig(cpu_policy="lru").policy_for("cpu") == "lru"


FLOAT_FIELDS = [f.name for f in fields(ServerConfig) if f.type == "float"]


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("field", FLOAT_FIELDS)
def test_a_float_field_that_is_not_finite_fails_naming_the_field(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"^{field}: must be a finite number"):
        ServerConfig(**{field: value})


def test_nan_from_the_environment_fails_naming_the_field() -> None:
    assert "lease_timeout_s" in FLOAT_FIELDS and len(FLOAT_FIELDS) >= 5
    with pytest.raises(ValueError, match=r"^lease_timeout_s: must be a finite number"):
        load_config(None, {}, {"ASYMCACHE_LEASE_TIMEOUT_S": "nan"})

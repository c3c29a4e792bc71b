"""The one loader of daemon and engine settings: the same precedence, conversion and refusal of
unknown keys for both programs."""

from __future__ import annotations

from pathlib import Path

import pytest

from asymcache.cacheserver import config as daemon
from asymcache.cacheserver.config_loader import DEFAULT, Scheme, load
from asymcache.engine import settings as engine

# (scheme, an int setting, its TOML table)
PROGRAMS = [(daemon.SCHEME, "max_engines", "daemon"), (engine.SCHEME, "block_size", "engine")]


@pytest.mark.parametrize(("scheme", "key", "table"), PROGRAMS)
def test_both_programs_read_defaults_then_file_then_environment_then_flags(
        tmp_path: Path, scheme: Scheme, key: str, table: str) -> None:
    toml = tmp_path / "c.toml"
    toml.write_text(f"[{table}]\n{key} = 3\n")
    var = scheme.env_name(key)
    layers = [(None, {}, {}, DEFAULT), (toml, {}, {}, f"file {toml}"),
              (toml, {var: "5"}, {}, f"env {var}"),
              (toml, {var: "5"}, {key: "7"}, f"flag --{key.replace('_', '-')}")]
    values = []
    for path, env, flags, source in layers:
        loaded = load(scheme, path, env, flags)
        values.append(getattr(loaded.config, key))
        assert dict((k, s) for k, _, s in loaded.rows())[key] == source
    assert values[1:] == [3, 5, 7] and values[0] not in (3, 5, 7)


@pytest.mark.parametrize(("scheme", "key", "table"), PROGRAMS)
def test_both_programs_refuse_unknown_keys_and_bad_values_naming_them(
        tmp_path: Path, scheme: Scheme, key: str, table: str) -> None:
    with pytest.raises(ValueError, match=f"^{scheme.env_prefix}NO_SUCH: unknown {table} setting"):
        load(scheme, None, {f"{scheme.env_prefix}NO_SUCH": "1"})
    toml = tmp_path / "c.toml"
    toml.write_text(f"[{table}]\nno_such = 1\n")
    with pytest.raises(ValueError, match=f"^no_such \\(in {toml}\\): unknown {table} setting"):
        load(scheme, toml, {})
    with pytest.raises(ValueError, match=f"^{key} \\(from file {toml}\\): must be int"):
        toml.write_text(f"[{table}]\n{key} = true\n")
        load(scheme, toml, {})
    with pytest.raises(ValueError, match=f"^{key} \\(from flag --{key.replace('_', '-')}\\)"):
        load(scheme, None, {}, {key: "many"})


def test_the_environment_prefixes_do_not_overlap() -> None:
    a, b = daemon.SCHEME.env_prefix, engine.SCHEME.env_prefix
    assert not a.startswith(b) and not b.startswith(a)
    assert daemon.SCHEME.env_name("remote.nodes") == "ASYMCACHE_DAEMON_REMOTE__NODES"
    both = {"ASYMCACHE_DAEMON_MAX_ENGINES": "2", "ASYMCACHE_ENGINE_BLOCK_SIZE": "32"}
    assert load(daemon.SCHEME, None, both).config.max_engines == 2
    assert load(engine.SCHEME, None, both).config.block_size == 32

"""One place that reads engine settings: a TOML file, ``ASYMCACHE_ENGINE_*`` environment
variables and command-line flags, in that order of precedence (lowest first).

A TOML file holds :class:`EngineConfig` fields at top level or under ``[engine]``; an
environment variable is the field's name in upper case (``ASYMCACHE_ENGINE_BLOCK_SIZE=64``);
flags come as a dict of the fields the user gave. Values are converted to each field's type
and checked by :class:`EngineConfig`; a bad one fails naming the field and where it came from.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from asymcache.engine.config import EngineConfig

ENV_PREFIX = "ASYMCACHE_ENGINE_"
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def load_settings(config_file: str | None = None, env: Mapping[str, str] | None = None,
                  flags: Mapping[str, Any] | None = None) -> EngineConfig:
    """Merge file < environment < flags into an :class:`EngineConfig`."""
    values: dict[str, Any] = {}
    if config_file:
        values.update(_from_file(Path(config_file)))
    values.update(_from_env(os.environ if env is None else env))
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    return EngineConfig.from_kwargs(**values)


def _from_file(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ValueError(f"cannot read engine config {path}: {e}") from None
    section = data.get("engine", data)
    if not isinstance(section, dict):
        raise ValueError(f"{path}: [engine] must be a table")
    return dict(section)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    types = {f.name: f.type for f in fields(EngineConfig)}
    out: dict[str, Any] = {}
    for key, raw in env.items():
        if not key.startswith(ENV_PREFIX):
            continue
        name = key[len(ENV_PREFIX):].lower()
        if name not in types:
            raise ValueError(f"{key}: unknown engine setting; known: {sorted(types)}")
        out[name] = _convert(name, str(types[name]), raw, key)
    return out


def _convert(name: str, kind: str, raw: str, source: str) -> Any:
    if raw == "" and "None" in kind:
        return None
    try:
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
        if kind == "bool":
            low = raw.lower()
            if low not in _TRUE | _FALSE:
                raise ValueError(f"expected true or false, got {raw!r}")
            return low in _TRUE
        if kind.startswith("tuple"):
            return tuple(x.strip() for x in raw.split(",") if x.strip())
    except ValueError as e:
        raise ValueError(f"{source}: bad value for {name}: {e}") from None
    return raw

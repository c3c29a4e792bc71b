"""The engine's settings, read by the loader the daemon uses (``cacheserver/config_loader.py``).

Precedence, lowest first: :class:`EngineConfig` defaults < a TOML file (fields at top level or
under ``[engine]``) < ``ASYMCACHE_ENGINE_<FIELD>`` environment variables
(``ASYMCACHE_ENGINE_BLOCK_SIZE=64``) < command-line flags (``--block-size 64``). Values are
converted to each field's type and checked by :class:`EngineConfig`; a bad one fails naming the
field and where it came from, an unknown one naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from asymcache.cacheserver.config_loader import Scheme, load
from asymcache.engine.config import EngineConfig

SCHEME = Scheme("engine", EngineConfig, "ASYMCACHE_ENGINE_")


def load_settings(config_file: str | None = None, env: Mapping[str, str] | None = None,
                  flags: Mapping[str, Any] | None = None) -> EngineConfig:
    """Merge defaults < file < environment (``os.environ`` when ``None``) < flags."""
    return load(SCHEME, config_file, env, flags).config

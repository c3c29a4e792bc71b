"""Engine settings: TOML < environment < flags, converted and validated by field."""

from __future__ import annotations

import pytest

from asymcache.engine.config import EngineConfig
from asymcache.engine.settings import load_settings


def test_file_then_environment_then_flags(tmp_path) -> None:
    path = tmp_path / "engine.toml"
    path.write_text('[engine]\nblock_size = 32\nreuse = "prefix"\nchunk_tokens = 256\n')
    env = {"ASYMCACHE_ENGINE_BLOCK_SIZE": "64", "ASYMCACHE_ENGINE_FETCH_TIERS": "cpu",
           "ASYMCACHE_ENGINE_WRITE_THROUGH": "off", "ASYMCACHE_ENGINE_TARGET_STEP_S": "0.05",
           "OTHER": "ignored"}
    cfg = load_settings(str(path), env, {"reuse": "msa", "device": None})
    assert (cfg.block_size, cfg.reuse, cfg.chunk_tokens) == (64, "msa", 256)
    assert cfg.fetch_tiers == ("cpu",) and cfg.write_through is False
    assert cfg.target_step_s == 0.05 and cfg.device == "cpu"


@pytest.mark.parametrize(("env", "says"), [
    ({"ASYMCACHE_ENGINE_BLOCK_SIZE": "big"}, "ASYMCACHE_ENGINE_BLOCK_SIZE"),
    ({"ASYMCACHE_ENGINE_NOPE": "1"}, "unknown engine setting"),
    ({"ASYMCACHE_ENGINE_WRITE_THROUGH": "maybe"}, "true or false"),
    ({"ASYMCACHE_ENGINE_REUSE": "sometimes"}, "reuse"),
    ({"ASYMCACHE_ENGINE_CHUNKING": "dynamic"}, "chunking"),
])
def test_bad_values_name_the_setting(env, says) -> None:
    with pytest.raises(ValueError, match=says):
        load_settings(None, env, {})


def test_config_validates_fields() -> None:
    with pytest.raises(ValueError, match="block_size"):
        EngineConfig(block_size=0)
    with pytest.raises(ValueError, match="fetch_tiers"):
        EngineConfig(fetch_tiers=("gpu",))
    with pytest.raises(ValueError, match="unknown engine option"):
        EngineConfig.from_kwargs(blocksize=16)

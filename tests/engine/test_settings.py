"""Engine settings: defaults < TOML < ASYMCACHE_ENGINE_* environment < flags, converted and
validated by field; importing the configuration does not import torch."""

from __future__ import annotations

import subprocess
import sys

import pytest

from asymcache.engine.config import EngineConfig
from asymcache.engine.planner import FETCH_TIERS
from asymcache.engine.settings import load_settings


def test_file_then_environment_then_flags(tmp_path) -> None:
    path = tmp_path / "engine.toml"
    path.write_text('[engine]\nblock_size = 32\nreuse = "prefix"\nchunk_tokens = 256\n')
    env = {"ASYMCACHE_ENGINE_BLOCK_SIZE": "64", "ASYMCACHE_ENGINE_FETCH_TIERS": "cpu",
           "ASYMCACHE_ENGINE_WRITE_THROUGH": "off", "ASYMCACHE_ENGINE_TARGET_STEP_S": "0.05",
           "ASYMCACHE_ENGINE_CACHE_ENDPOINT": "", "ASYMCACHE_CPU_BYTES": "not the engine's",
           "OTHER": "ignored"}
    cfg = load_settings(str(path), env, {"reuse": "msa", "device": None,
                                         "kv_cache_bytes": "64MiB"})
    assert (cfg.block_size, cfg.reuse, cfg.chunk_tokens) == (64, "msa", 256)
    assert cfg.fetch_tiers == ("cpu",) and cfg.write_through is False
    assert cfg.target_step_s == 0.05 and cfg.device == "cpu"
    assert cfg.cache_endpoint is None and cfg.kv_cache_bytes == 64 << 20
    assert load_settings(str(path), env, {"block_size": "128"}).block_size == 128


@pytest.mark.parametrize(("env", "says"), [
    ({"ASYMCACHE_ENGINE_BLOCK_SIZE": "big"}, r"block_size \(from env ASYMCACHE_ENGINE_BLOCK_S"),
    ({"ASYMCACHE_ENGINE_NOPE": "1"}, "^ASYMCACHE_ENGINE_NOPE: unknown engine setting"),
    ({"ASYMCACHE_ENGINE_WRITE_THROUGH": "maybe"}, "true or false"),
    ({"ASYMCACHE_ENGINE_REUSE": "sometimes"}, "reuse"),
    ({"ASYMCACHE_ENGINE_CHUNKING": "dynamic"}, r"chunking.*\(from env ASYMCACHE_ENGINE_CHUNKING"),
    ({"ASYMCACHE_ENGINE_TTFT_SLO_S": "-1"}, r"ttft_slo_s.*>= 0.*\(from env ASYMCACHE_ENGINE_TTFT"),
    ({"ASYMCACHE_ENGINE_VICTIM_STOCK": "-1"}, r"victim_stock.*>= 0.*\(from env ASYMCACHE_ENGINE_V"),
])
def test_bad_values_name_the_setting(env, says) -> None:
    with pytest.raises(ValueError, match=says):
        load_settings(None, env, {})


def test_an_unknown_file_key_fails_naming_it(tmp_path) -> None:
    path = tmp_path / "engine.toml"
    path.write_text("[engine]\nblock_sise = 32\n")
    with pytest.raises(ValueError, match=r"^block_sise \(in .*did you mean block_size"):
        load_settings(str(path), {}, {})


def test_config_validates_fields() -> None:
    with pytest.raises(ValueError, match="block_size"):
        EngineConfig(block_size=0)
    with pytest.raises(ValueError, match="fetch_tiers"):
        EngineConfig(fetch_tiers=("gpu",))
    with pytest.raises(ValueError, match="unknown engine option"):
        EngineConfig.from_kwargs(blocksize=16)
    assert EngineConfig().fetch_tiers == FETCH_TIERS
    with pytest.raises(ValueError, match="victim_stock"):
        EngineConfig(victim_stock=1.5)  # type: ignore[arg-type]
    assert EngineConfig(victim_stock=0).kv_config.victim_stock == 0
    assert EngineConfig().kv_config.victim_stock == 16


def test_the_configuration_and_the_cli_parser_import_no_torch() -> None:
    code = ("import sys; from asymcache.ops.cli import build_parser; build_parser(); "
            "import asymcache.engine.settings; sys.exit('torch' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0

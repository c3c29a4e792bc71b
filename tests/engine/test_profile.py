"""``asymcache profile`` measures this device and writes a profile the cost model reads."""

from __future__ import annotations

import json

from asymcache.cacheserver.policy.cost import CostModel
from asymcache.ops.cli import main


def test_profile_writes_a_valid_cost_profile(tmp_path) -> None:
    out = tmp_path / "profile.json"
    assert main(["profile", "--model", "builtin", "--out", str(out), "--quick"]) == 0
    data = json.loads(out.read_text())
    cost = CostModel.from_profile(out)
    assert data["schema"] == "asymcache-cost-profile/1" and data["model"].startswith("builtin")
    assert {link.tier for link in cost.load} == {"cpu", "disk"}
    assert cost.kv_bytes_per_token == 2048  # 4 layers × 2 × 2 KV heads × 32 × 4 bytes
    assert cost.recompute_cost(0, 64) > 0
    assert not list(tmp_path.glob("asymcache-profile-*"))  # the disk probe file is removed


def test_auto_cost_model_measures_even_a_small_pool() -> None:
    from tests.engine.engine_fixtures import make_llm

    llm = make_llm(cost_model="auto", num_gpu_blocks=10, chunking="adaptive")
    cost = llm.engine.parts.cost
    llm.close()
    assert cost.kv_bytes_per_token == 2048 and cost.has_tier("cpu")
    assert cost.gpu_kv_bytes == 10 * 16 * 2048

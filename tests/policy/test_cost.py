"""The CostModel: hand-computed costs, presets, and the JSON profile round trip."""

from __future__ import annotations

import json

import pytest

from asymcache.cacheserver.policy.cost import (
    CostModel,
    ProfileError,
    TierLink,
    fit_prefill,
    preset_names,
)


def simple_model(**overrides: object) -> CostModel:
    fields: dict[str, object] = dict(
        device="dev", model="m", kv_bytes_per_token=1000, linear_s_per_token=1e-3,
        attn_s_per_token_position=1e-6, pass_s=0.01, segment_s=0.002,
        load=(TierLink("cpu", 1e6, 1e-3), TierLink("disk", 1e5, 5e-3)),
    )
    fields.update(overrides)
    return CostModel(**fields)  # type: ignore[arg-type]


def test_recompute_cost_is_linear_plus_attention_over_the_prefix() -> None:
    m = simple_model()
    # 4 tokens at position 10: 4 * 1e-3 + 4 * (10 + 2) * 1e-6
    assert m.recompute_cost(10, 4) == pytest.approx(0.004 + 48e-6)
    assert m.recompute_cost(0, 0) == 0.0


def test_load_cost_is_latency_plus_bytes_over_bandwidth() -> None:
    m = simple_model()
    assert m.load_cost("cpu", 2000) == pytest.approx(1e-3 + 2e-3)
    assert m.load_cost("disk", 1000) == pytest.approx(5e-3 + 1e-2)
    with pytest.raises(ValueError, match="remote"):
        m.load_cost("remote", 1)


def test_miss_cost_takes_the_cheaper_of_recompute_and_load() -> None:
    m = simple_model()
    # recompute 4 tokens at 0: 0.004008; cpu load of 4000 bytes: 0.005; disk: 0.045
    assert m.miss_cost(0, 4, 4000, "cpu") == pytest.approx(m.recompute_cost(0, 4))
    assert m.miss_cost(10_000, 4, 4000, "cpu") == pytest.approx(0.005)
    assert m.miss_cost(10_000, 4, 4000, None) == pytest.approx(m.recompute_cost(10_000, 4))
    assert m.segment_cost(3) == pytest.approx(0.006)
    assert m.segment_cost(-1) == 0.0


def test_presets_exist_and_follow_the_reference_figures() -> None:
    assert {"h100-llama3-8b", "h20-llama3-8b", "a100-llama2-7b"} <= set(preset_names())
    h100 = CostModel.preset("h100-llama3-8b")
    assert h100.kv_bytes_per_token == 131072  # REFERENCE_NUMBERS: Llama-3-8B, 128 KiB
    assert CostModel.preset("a100-llama2-7b").kv_bytes_per_token == 524288
    # 2 * 6.98e9 non-embedding params / (989e12 * 0.65)
    assert h100.linear_s_per_token == pytest.approx(2 * 6_979_321_856 / (989e12 * 0.65))
    assert h100.attn_s_per_token_position == pytest.approx(4 * 32 * 32 * 128 / (989e12 * 0.5))
    # one H100 holds about 0.5% of the Mooncake conversation trace's 170,899 full blocks
    assert 700 < h100.gpu_blocks(512) < 900
    with pytest.raises(ValueError, match="h100-llama3-8b"):
        CostModel.preset("tpu")


def test_tail_blocks_cost_more_than_leading_blocks() -> None:
    m = CostModel.preset("h100-llama3-8b")
    assert m.recompute_cost(0, 512) < m.recompute_cost(16 * 512, 512)
    # a 64 MiB block reloads from CPU much faster than it recomputes
    assert m.load_cost("cpu", 512 * 131072) < m.recompute_cost(0, 512) / 5


def test_profile_round_trips_through_a_json_file(tmp_path) -> None:
    m = simple_model(gpu_kv_bytes=123, source="unit test")
    path = tmp_path / "profile.json"
    m.to_profile(path)
    data = json.loads(path.read_text())
    assert data["schema"] == "asymcache-cost-profile/1"
    assert data["load"]["disk"] == {"bandwidth_bps": 1e5, "latency_s": 5e-3}
    assert CostModel.from_profile(path) == m
    assert CostModel.resolve(str(path)) == m


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"pass_s": -1.0}, "pass_s"),
        ({"linear_s_per_token": "fast"}, "linear_s_per_token"),
        ({"kv_bytes_per_token": 0}, "kv_bytes_per_token"),
        ({"load": {"cpu": {"bandwidth_bps": 0, "latency_s": 0}}}, "load.cpu.bandwidth_bps"),
        ({"load": {"tape": {"bandwidth_bps": 1, "latency_s": 0}}}, "tape"),
        ({"load": {"cpu": {"bandwidth_bps": 1}}}, "load.cpu"),
        ({"colour": "red"}, "colour"),
        ({"schema": "other/2"}, "schema"),
    ],
)
def test_bad_profiles_are_rejected_naming_the_field(change: dict, field: str) -> None:
    data = simple_model().to_dict()
    data.update(change)
    with pytest.raises(ProfileError, match=field.replace(".", r"\.")):
        CostModel.from_dict(data)


def test_missing_fields_are_named_and_unreadable_files_name_the_path(tmp_path) -> None:
    data = simple_model().to_dict()
    del data["segment_s"]
    with pytest.raises(ProfileError, match="segment_s"):
        CostModel.from_dict(data)
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ProfileError, match=r"bad\.json"):
        CostModel.from_profile(bad)


def test_fit_prefill_recovers_the_coefficients_of_exact_samples() -> None:
    truth = simple_model()
    samples = [(p, n, truth.pass_s + truth.recompute_cost(p, n))
               for p in (0, 512, 4096) for n in (16, 128, 512)]
    fit = fit_prefill(samples)
    assert fit["pass_s"] == pytest.approx(truth.pass_s)
    assert fit["linear_s_per_token"] == pytest.approx(truth.linear_s_per_token)
    assert fit["attn_s_per_token_position"] == pytest.approx(truth.attn_s_per_token_position)
    with pytest.raises(ValueError, match="at least 3"):
        fit_prefill(samples[:2])


def test_fit_prefill_keeps_coefficients_non_negative_by_refitting_not_clamping() -> None:
    # linear cost only, and timing noise that makes an unconstrained fit's attention term
    # negative: clamping it to 0 would keep the linear term the negative one inflated
    samples = [(p, n, 1e-3 + 2e-5 * n) for p in (0, 512, 4096) for n in (16, 128, 512)]
    samples = [(p, n, s * (1.0 - 0.04 * (p == 4096 and n == 512))) for p, n, s in samples]
    fit = fit_prefill(samples)
    assert fit["attn_s_per_token_position"] == 0.0
    assert fit["linear_s_per_token"] == pytest.approx(2e-5, rel=0.05)
    import numpy as np

    a = np.asarray([(1.0, n, n * (p + 0.5 * n)) for p, n, _ in samples])
    y = np.asarray([s for _, _, s in samples])
    clamped = np.clip(np.linalg.lstsq(a, y, rcond=None)[0], 0.0, None)
    ours = np.asarray([fit["pass_s"], fit["linear_s_per_token"],
                       fit["attn_s_per_token_position"]])
    assert np.sum((a @ ours - y) ** 2) < np.sum((a @ clamped - y) ** 2)

"""Config parsing: every supported family and rope type, both config formats, clear refusals."""

from __future__ import annotations

import json

import pytest

from asymcache.engine.model.config import ModelConfig, RopeConfig, load_config, parse_config

LLAMA31 = {  # the shape of Llama-3.1-8B's config.json (classic rope_scaling format)
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "vocab_size": 128256,
    "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 8, "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "bos_token_id": 128000,
    "eos_token_id": [128001, 128008, 128009], "hidden_act": "silu", "tie_word_embeddings": False,
    "rope_scaling": {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                     "original_max_position_embeddings": 8192, "rope_type": "llama3"},
}


def test_llama31_config_parses_all_fields_and_llama3_rope():
    cfg = parse_config(LLAMA31)
    assert (cfg.model_type, cfg.num_layers, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim) == (
        "llama", 32, 32, 8, 128)
    assert cfg.rope == RopeConfig(theta=500000.0, kind="llama3", factor=8.0, low_freq_factor=1.0,
                                  high_freq_factor=4.0, original_max_positions=8192)
    assert cfg.eos_token_ids == (128001, 128008, 128009) and cfg.bos_token_id == 128000
    assert (cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias, cfg.tie_word_embeddings) == (
        False, False, False, False)
    assert cfg.max_positions == 131072


def test_rope_parameters_format_of_transformers_5_gives_the_same_config():
    new = {k: v for k, v in LLAMA31.items() if k not in ("rope_theta", "rope_scaling")}
    new["rope_parameters"] = {**LLAMA31["rope_scaling"], "rope_theta": 500000.0}
    assert parse_config(new) == parse_config(LLAMA31)


def test_legacy_type_key_and_linear_scaling():
    raw = {**LLAMA31, "rope_scaling": {"type": "linear", "factor": 4.0}}
    assert parse_config(raw).rope == RopeConfig(theta=500000.0, kind="linear", factor=4.0)


def test_qwen2_has_qkv_bias_only_and_reads_tied_embeddings():
    raw = {"model_type": "qwen2", "vocab_size": 151936, "hidden_size": 896,
           "intermediate_size": 4864, "num_hidden_layers": 24, "num_attention_heads": 14,
           "num_key_value_heads": 2, "tie_word_embeddings": True, "use_sliding_window": False,
           "sliding_window": 32768, "max_position_embeddings": 32768, "rope_theta": 1e6}
    cfg = parse_config(raw)
    assert (cfg.qkv_bias, cfg.o_bias, cfg.mlp_bias) == (True, False, False)
    assert cfg.tie_word_embeddings and cfg.head_dim == 64 and cfg.max_positions == 32768


def test_mistral_sliding_window_caps_the_served_context():
    raw = {"model_type": "mistral", "vocab_size": 32000, "hidden_size": 4096,
           "intermediate_size": 14336, "num_hidden_layers": 32, "num_attention_heads": 32,
           "num_key_value_heads": 8, "max_position_embeddings": 32768, "sliding_window": 4096}
    cfg = parse_config(raw)
    assert cfg.sliding_window == 4096 and cfg.max_positions == 4096
    assert parse_config({**raw, "sliding_window": None}).max_positions == 32768


def test_explicit_head_dim_wins_over_hidden_over_heads():
    raw = {**LLAMA31, "hidden_size": 5120, "head_dim": 128}
    assert parse_config(raw).head_dim == 128


def test_model_type_falls_back_to_the_architecture_class():
    raw = {k: v for k, v in LLAMA31.items() if k != "model_type"}
    assert parse_config(raw).model_type == "llama"


@pytest.mark.parametrize(("change", "message"), [
    ({"model_type": "gpt2"}, "model_type 'gpt2' is not supported"),
    ({"hidden_act": "gelu"}, "hidden_act 'gelu' is not supported"),
    ({"num_key_value_heads": 5}, "must be a multiple of num_key_value_heads"),
    ({"rope_scaling": {"rope_type": "yarn", "factor": 2.0}}, "rope type 'yarn' is not supported"),
    ({"rope_scaling": {"rope_type": "llama3", "factor": 8.0}}, "missing low_freq_factor"),
    ({"vocab_size": 0}, "vocab_size must be a positive int"),
    ({"partial_rotary_factor": 0.5}, "partial_rotary_factor"),
    ({"hidden_size": "4096"}, "field 'hidden_size' must be a number"),
    ({"num_hidden_layers": 2.5}, "field 'num_hidden_layers' must be an integer"),
    ({"num_attention_heads": 0}, "num_attention_heads must be positive"),
    ({"eos_token_id": ["</s>"]}, "'eos_token_id' must be int"),
    ({"rope_scaling": {"rope_type": "linear", "factor": "x"}}, "field 'factor' must be"),
])
def test_bad_configs_are_refused_with_the_reason(change, message):
    with pytest.raises(ValueError, match=message):
        parse_config({**LLAMA31, **change})


def test_missing_field_is_named():
    raw = {k: v for k, v in LLAMA31.items() if k != "intermediate_size"}
    with pytest.raises(ValueError, match="missing the field 'intermediate_size'"):
        parse_config(raw)


def test_qwen2_sliding_window_is_refused():
    raw = {"model_type": "qwen2", "vocab_size": 10, "hidden_size": 8, "intermediate_size": 8,
           "num_hidden_layers": 1, "num_attention_heads": 2, "use_sliding_window": True}
    with pytest.raises(ValueError, match="use_sliding_window"):
        parse_config(raw)


def test_canonical_form_ignores_token_ids_but_not_shapes():
    base = parse_config(LLAMA31)
    assert base.canonical() == parse_config({**LLAMA31, "eos_token_id": 7}).canonical()
    assert base.canonical() != parse_config({**LLAMA31, "rms_norm_eps": 1e-6}).canonical()
    assert json.loads(base.canonical())["rope"]["kind"] == "llama3"


def test_load_config_reports_missing_and_broken_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no config\.json"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        load_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(LLAMA31))
    assert isinstance(load_config(tmp_path), ModelConfig)

"""Loading HF folders: fingerprint identity, shards, stored dtypes, EOS ids, pool shape, errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import LlamaForCausalLM

from asymcache.engine.model import allocate_kv_pool, load_model
from tests.engine.test_model_parity import (
    BLOCK,
    SMALL,
    assert_close,
    make_hf_model,
    reference_logits,
    step,
)

WEIGHTS = "model.safetensors"


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("llama")
    make_hf_model("llama", path)
    return path


def fingerprint(path: Path) -> str:
    return load_model(path)[1].fingerprint


def copy_of(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    return Path(shutil.copytree(folder, tmp_path / name))


def test_fingerprint_is_the_same_in_another_process_and_after_a_move(folder, tmp_path):
    code = ("import sys; from asymcache.engine.model import load_model; "
            "print(load_model(sys.argv[1])[1].fingerprint)")
    moved = copy_of(folder, tmp_path, "elsewhere")
    other = subprocess.run([sys.executable, "-c", code, str(moved)], capture_output=True,
                           text=True, check=True, cwd=Path(__file__).parents[2],
                           env={"PYTHONHASHSEED": "123", "PATH": ""}).stdout.strip()
    assert other == fingerprint(folder)
    assert len(other) == 32 and int(other, 16) >= 0


def test_fingerprint_changes_when_one_weight_element_changes(folder, tmp_path):
    changed = copy_of(folder, tmp_path)
    tensors = load_file(changed / WEIGHTS)
    tensors["model.layers.1.mlp.down_proj.weight"][3, 5] += 1e-3
    save_file(tensors, changed / WEIGHTS, metadata={"format": "pt"})
    assert fingerprint(changed) != fingerprint(folder)


def test_fingerprint_changes_with_the_config_but_not_with_token_ids(folder, tmp_path):
    changed = copy_of(folder, tmp_path)
    config = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config, "eos_token_id": 5}))
    assert fingerprint(changed) == fingerprint(folder)
    (changed / "config.json").write_text(json.dumps({**config, "rms_norm_eps": 1e-5}))
    assert fingerprint(changed) != fingerprint(folder)


def test_resharded_checkpoint_loads_the_same_model_and_fingerprint(folder, tmp_path):
    tensors = load_file(folder / WEIGHTS)
    names = sorted(tensors)
    sharded = tmp_path / "sharded"
    sharded.mkdir()
    shutil.copy(folder / "config.json", sharded)
    weight_map = {}
    for i, part in enumerate((names[::2], names[1::2])):
        shard = f"model-{i + 1:05d}-of-00002.safetensors"
        save_file({n: tensors[n] for n in part}, sharded / shard, metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(part, shard))
    (sharded / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert fingerprint(sharded) == fingerprint(folder)


def test_bfloat16_checkpoint_loads_into_a_float32_model(tmp_path):
    make_hf_model("llama", tmp_path / "fp32").to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    model, info = load_model(tmp_path / "bf16", "cpu", "float32")
    assert info.dtype == torch.float32
    hf = LlamaForCausalLM.from_pretrained(tmp_path / "bf16", dtype=torch.float32)
    ids = torch.arange(40) % SMALL["vocab_size"]
    ref = reference_logits(hf, ids)
    pool = allocate_kv_pool(info, 3, BLOCK)
    assert_close(step(model, pool, ids, list(range(40)), 40, [2, 0, 1]), ref)


def test_model_info_and_pool_shape(folder):
    _, info = load_model(folder)
    assert (info.num_layers, info.num_kv_heads, info.head_dim, info.vocab_size) == (2, 2, 16, 211)
    assert info.max_positions == 512 and info.dtype == torch.float32
    pool = allocate_kv_pool(info, 5, 8)
    assert pool.shape == (5, 2, 2, 8, 2, 16) and pool.dtype == torch.float32
    layout = info.kv_layout(8)
    assert pool[0].numel() * pool.element_size() == layout.bytes_per_block
    with pytest.raises(ValueError, match="num_blocks"):
        allocate_kv_pool(info, 0)


def test_eos_ids_join_config_and_generation_config(folder, tmp_path):
    changed = copy_of(folder, tmp_path)
    config = json.loads((changed / "config.json").read_text())
    (changed / "config.json").write_text(json.dumps({**config, "eos_token_id": 2}))
    (changed / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 9]}))
    assert load_model(changed)[1].eos_token_ids == (2, 9)


def test_missing_and_unexpected_tensors_are_named(folder, tmp_path):
    broken = copy_of(folder, tmp_path)
    tensors = load_file(broken / WEIGHTS)
    tensors.pop("model.layers.0.self_attn.k_proj.weight")
    tensors["model.layers.0.extra.weight"] = torch.zeros(2)
    save_file(tensors, broken / WEIGHTS, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"model\.layers\.0\.extra\.weight"):
        load_model(broken)
    tensors.pop("model.layers.0.extra.weight")
    save_file(tensors, broken / WEIGHTS, metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"lacks 1 tensors: model\.layers\.0\.self_attn\.k_proj"):
        load_model(broken)


def test_shape_mismatch_and_missing_weights_are_refused(folder, tmp_path):
    broken = copy_of(folder, tmp_path)
    config = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**config, "intermediate_size": 96}))
    with pytest.raises(ValueError, match="has shape"):
        load_model(broken)
    (broken / WEIGHTS).unlink()
    with pytest.raises(FileNotFoundError, match="no safetensors weights"):
        load_model(broken)


def test_unknown_dtype_is_refused(folder):
    with pytest.raises(ValueError, match="dtype 'int8' is not supported"):
        load_model(folder, "cpu", "int8")

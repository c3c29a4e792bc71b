"""Load a Hugging Face model folder (``config.json`` + safetensors) into a :class:`CausalLM`.

Weights stream one tensor at a time (memory-mapped, so peak host memory is one tensor) in sorted
name order: each is fed to the :class:`Fingerprinter` as stored, then cast and copied into its
parameter on the device. Only safetensors are read (never pickle-based ``.bin`` files).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from asymcache.engine.model.config import ModelConfig, load_config
from asymcache.engine.model.fingerprint import Fingerprinter
from asymcache.engine.model.info import ModelInfo, resolve_dtype
from asymcache.engine.model.llama import CausalLM


def safetensors_files(model_dir: Path) -> list[Path]:
    """Shard files: those listed in ``model.safetensors.index.json``, else ``*.safetensors``."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = sorted({model_dir / name for name in weight_map.values()})
    else:
        files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(
            f"no safetensors weights in {str(model_dir)!r} (pickle-based .bin files are not read)")
    for path in files:
        if not path.is_file():
            raise FileNotFoundError(f"shard {path.name!r} listed in the index is missing")
    return files


def _stream_tensors(files: list[Path]) -> Iterator[tuple[str, str, torch.Tensor]]:
    """Yield ``(name, stored dtype, CPU tensor)`` of every tensor of every shard, by name."""
    with ExitStack() as stack:
        owner: dict[str, Any] = {}
        for path in files:
            handle = stack.enter_context(safe_open(str(path), framework="pt", device="cpu"))
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a mapping)
                if name in owner:
                    raise ValueError(f"tensor {name!r} appears in more than one shard")
                owner[name] = handle
        for name in sorted(owner):
            handle = owner[name]
            yield name, handle.get_slice(name).get_dtype(), handle.get_tensor(name)


def _ignorable(name: str, cfg: ModelConfig) -> bool:
    """Stored tensors the model does not use (still fingerprinted)."""
    if name.endswith("rotary_emb.inv_freq"):
        return True
    return cfg.tie_word_embeddings and name == "lm_head.weight"


def load_weights(model: CausalLM, model_dir: Path, fingerprinter: Fingerprinter) -> None:
    """Fill every parameter of ``model`` from the folder's safetensors; feed ``fingerprinter``.

    Raises ``ValueError`` on an unexpected tensor, a shape mismatch or a missing tensor.
    """
    targets = model.checkpoint_targets()
    filled: set[str] = set()
    for name, stored_dtype, tensor in _stream_tensors(safetensors_files(model_dir)):
        fingerprinter.add_tensor(name, stored_dtype, tuple(tensor.shape), tensor)
        dest = targets.get(name)
        if dest is None:
            if _ignorable(name, model.config):
                continue
            raise ValueError(
                f"checkpoint tensor {name!r} is not part of a {model.config.model_type} model")
        if tuple(dest.shape) != tuple(tensor.shape):
            raise ValueError(
                f"checkpoint tensor {name!r} has shape {tuple(tensor.shape)}, "
                f"the config implies {tuple(dest.shape)}")
        dest.copy_(tensor)
        filled.add(name)
    missing = sorted(set(targets) - filled)
    if missing:
        shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ValueError(f"checkpoint in {str(model_dir)!r} lacks {len(missing)} tensors: {shown}")


def _generation_eos(model_dir: Path) -> tuple[int, ...]:
    path = model_dir / "generation_config.json"
    if not path.is_file():
        return ()
    value = json.loads(path.read_text(encoding="utf-8")).get("eos_token_id")
    values = value if isinstance(value, list) else [] if value is None else [value]
    return tuple(int(v) for v in values)


def load_model(model_dir: str | Path, device: torch.device | str = "cpu",
               dtype: str | torch.dtype | None = None,
               attn_backend: str | None = None) -> tuple[CausalLM, ModelInfo]:
    """Build the model of ``model_dir`` on ``device`` and load its weights.

    ``dtype``: None/"auto" (float32 on CPU, bfloat16 on CUDA), a name ("float32", "bfloat16",
    "float16") or a ``torch.dtype``. ``attn_backend`` goes to the kernels (None = automatic).
    Returns ``(model, info)``; the model is in eval mode with gradients off, its GEMM weights
    packed for the CPU where that applies (``CausalLM.pack_weights``).
    """
    model_dir = Path(model_dir)
    cfg = load_config(model_dir)
    device = torch.device(device)
    torch_dtype = resolve_dtype(dtype, device)
    model = CausalLM(cfg, device, torch_dtype, attn_backend)
    fingerprinter = Fingerprinter(cfg.canonical())
    load_weights(model, model_dir, fingerprinter)
    model.pack_weights()
    eos = tuple(dict.fromkeys(cfg.eos_token_ids + _generation_eos(model_dir)))
    info = ModelInfo(
        model_type=cfg.model_type, num_layers=cfg.num_layers, num_heads=cfg.num_heads,
        num_kv_heads=cfg.num_kv_heads, head_dim=cfg.head_dim, hidden_size=cfg.hidden_size,
        vocab_size=cfg.vocab_size, max_positions=cfg.max_positions,
        bos_token_id=cfg.bos_token_id, eos_token_ids=eos, dtype=torch_dtype, device=device,
        fingerprint=fingerprinter.hexdigest(),
    )
    return model.eval(), info

"""Model configuration: a Hugging Face ``config.json`` parsed into one frozen, validated object.

Torch-free. Supported families (``model_type``): ``llama``, ``qwen2`` (q/k/v bias, optional tied
embeddings) and ``mistral``. Each family is an entry of :data:`ARCHITECTURES`; adding one never
edits the parser. Both config formats are read: the classic ``rope_theta`` + ``rope_scaling``
and the newer ``rope_parameters`` that transformers >= 5 writes.

Sliding windows: a Mistral checkpoint that declares ``sliding_window = W`` is served with its
context capped at ``W`` tokens (:attr:`ModelConfig.max_positions`), where the window never takes
effect, so attention stays exact. Qwen2's ``use_sliding_window = true`` is rejected.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

ROPE_TYPES = ("default", "linear", "llama3")
_ROPE_REQUIRED = {
    "default": (),
    "linear": ("factor",),
    "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
}


@dataclass(frozen=True)
class RopeConfig:
    """Rotary embedding parameters; ``kind`` is one of :data:`ROPE_TYPES`."""

    theta: float = 10000.0
    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_positions: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ROPE_TYPES:
            raise ValueError(
                f"rope type {self.kind!r} is not supported; supported: {', '.join(ROPE_TYPES)}"
            )
        if self.theta <= 0 or self.factor <= 0:
            raise ValueError(f"rope_theta and rope factor must be positive, got {self}")
        if self.kind == "llama3" and not self.high_freq_factor > self.low_freq_factor > 0:
            raise ValueError("llama3 rope needs high_freq_factor > low_freq_factor > 0")
        if self.kind == "llama3" and self.original_max_positions <= 0:
            raise ValueError("llama3 rope needs a positive original_max_position_embeddings")


@dataclass(frozen=True)
class ModelConfig:
    """Everything the forward pass needs, in one validated object.

    ``qkv_bias`` / ``o_bias`` / ``mlp_bias`` say which projections carry a bias. ``eos_token_ids``
    is from ``config.json`` only; :func:`asymcache.engine.model.loader.load_model` adds those of
    ``generation_config.json``.
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    max_position_embeddings: int
    rope: RopeConfig
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    sliding_window: int | None = None
    bos_token_id: int | None = None
    eos_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("vocab_size", "hidden_size", "intermediate_size", "num_layers",
                     "num_heads", "num_kv_heads", "head_dim", "max_position_embeddings"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"model config: {name} must be a positive int, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"model config: num_attention_heads ({self.num_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_kv_heads})"
            )
        if self.head_dim % 2:
            raise ValueError(f"model config: head_dim must be even for RoPE, got {self.head_dim}")
        if not self.rms_norm_eps > 0:
            raise ValueError(
                f"model config: rms_norm_eps must be positive, got {self.rms_norm_eps}")
        if self.sliding_window is not None and self.sliding_window <= 0:
            raise ValueError(f"model config: bad sliding_window {self.sliding_window!r}")

    @property
    def max_positions(self) -> int:
        """Longest context served exactly: ``max_position_embeddings``, capped by a window."""
        if self.sliding_window is None:
            return self.max_position_embeddings
        return min(self.max_position_embeddings, self.sliding_window)

    def canonical(self) -> str:
        """Stable text of every field that changes the forward pass (hashed into the fingerprint).

        Token ids (BOS/EOS) are left out: they change no KV byte.
        """
        fields = asdict(self)
        for name in ("bos_token_id", "eos_token_ids"):
            fields.pop(name)
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class ArchRules:
    """How one model family reads its biases and windows from a raw ``config.json``."""

    biases: Callable[[Mapping[str, Any]], tuple[bool, bool, bool]]
    window: Callable[[Mapping[str, Any]], int | None]


def _llama_biases(raw: Mapping[str, Any]) -> tuple[bool, bool, bool]:
    attn = bool(raw.get("attention_bias", False))
    return attn, attn, bool(raw.get("mlp_bias", False))


def _no_window(raw: Mapping[str, Any]) -> int | None:
    return None


def _mistral_window(raw: Mapping[str, Any]) -> int | None:
    return _number(raw, "sliding_window", int, None)


def _qwen2_window(raw: Mapping[str, Any]) -> int | None:
    if raw.get("use_sliding_window", False):
        raise ValueError("Qwen2 with use_sliding_window=true is not supported (full attention)")
    return None


ARCHITECTURES: dict[str, ArchRules] = {
    "llama": ArchRules(biases=_llama_biases, window=_no_window),
    "mistral": ArchRules(biases=_llama_biases, window=_mistral_window),
    "qwen2": ArchRules(biases=lambda raw: (True, False, False), window=_qwen2_window),
}
_CLASS_TO_TYPE = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral",
                  "Qwen2ForCausalLM": "qwen2"}


def _model_type(raw: Mapping[str, Any]) -> str:
    kind = raw.get("model_type")
    if kind is None:
        archs = raw.get("architectures") or []
        kind = _CLASS_TO_TYPE.get(archs[0]) if archs else None
    if kind not in ARCHITECTURES:
        raise ValueError(
            f"model_type {kind!r} is not supported; supported: {', '.join(sorted(ARCHITECTURES))}"
        )
    return kind


_REQUIRED = object()


def _number(raw: Mapping[str, Any], key: str, kind: type, default: Any = _REQUIRED) -> Any:
    """``raw[key]`` as ``kind`` (None or absent → ``default``); errors name the field."""
    value = raw.get(key)
    if value is None:
        if default is _REQUIRED:
            raise ValueError(f"config.json is missing the field {key!r}")
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"config.json field {key!r} must be a number, got {value!r}")
    if kind is int and value != int(value):
        raise ValueError(f"config.json field {key!r} must be an integer, got {value!r}")
    return kind(value)


def parse_rope(raw: Mapping[str, Any]) -> RopeConfig:
    """Read RoPE from ``rope_parameters`` (transformers >= 5) or ``rope_theta``/``rope_scaling``."""
    params = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    kind = params.get("rope_type", params.get("type", "default"))
    if params.get("partial_rotary_factor", raw.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError("partial_rotary_factor != 1 is not supported")
    if kind not in ROPE_TYPES:
        raise ValueError(
            f"rope type {kind!r} is not supported; supported: {', '.join(ROPE_TYPES)}"
        )
    missing = [key for key in _ROPE_REQUIRED[kind] if key not in params]
    if missing:
        raise ValueError(f"rope type {kind!r} is missing {', '.join(missing)}")
    return RopeConfig(
        theta=_number(params, "rope_theta", float, _number(raw, "rope_theta", float, 10000.0)),
        kind=kind,
        factor=_number(params, "factor", float, 1.0),
        low_freq_factor=_number(params, "low_freq_factor", float, 1.0),
        high_freq_factor=_number(params, "high_freq_factor", float, 4.0),
        original_max_positions=_number(params, "original_max_position_embeddings", int, 0),
    )


def _token_ids(value: Any) -> tuple[int, ...]:
    values = [] if value is None else value if isinstance(value, list | tuple) else [value]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"config.json field 'eos_token_id' must be int or list of int: {value!r}")
    return tuple(values)


def parse_config(raw: Mapping[str, Any]) -> ModelConfig:
    """Parse a ``config.json`` mapping; raises ``ValueError`` naming what is missing or wrong."""
    kind = _model_type(raw)
    if raw.get("hidden_act", "silu") != "silu":
        raise ValueError(f"hidden_act {raw.get('hidden_act')!r} is not supported (only 'silu')")
    hidden, heads = _number(raw, "hidden_size", int), _number(raw, "num_attention_heads", int)
    if heads <= 0:
        raise ValueError(f"model config: num_attention_heads must be positive, got {heads}")
    qkv_bias, o_bias, mlp_bias = ARCHITECTURES[kind].biases(raw)
    return ModelConfig(
        model_type=kind, vocab_size=_number(raw, "vocab_size", int), hidden_size=hidden,
        intermediate_size=_number(raw, "intermediate_size", int),
        num_layers=_number(raw, "num_hidden_layers", int), num_heads=heads,
        num_kv_heads=_number(raw, "num_key_value_heads", int, heads),
        head_dim=_number(raw, "head_dim", int, hidden // heads),
        rms_norm_eps=_number(raw, "rms_norm_eps", float, 1e-6),
        max_position_embeddings=_number(raw, "max_position_embeddings", int, 2048),
        rope=parse_rope(raw), qkv_bias=qkv_bias, o_bias=o_bias, mlp_bias=mlp_bias,
        tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
        sliding_window=ARCHITECTURES[kind].window(raw),
        bos_token_id=_number(raw, "bos_token_id", int, None),
        eos_token_ids=_token_ids(raw.get("eos_token_id")),
    )


def load_config(model_dir: str | Path) -> ModelConfig:
    """Read and parse ``<model_dir>/config.json``."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in model folder {str(model_dir)!r}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object")
    return parse_config(raw)

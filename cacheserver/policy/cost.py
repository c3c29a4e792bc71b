"""What a KV block costs to rebuild or to fetch: the ``CostModel`` shared by policies and engine.

Recomputing ``n`` tokens that start at token position ``p`` costs (DESIGN.md section 1)::

    recompute_cost(p, n) = n · linear_s_per_token + n · (p + n/2) · attn_s_per_token_position

and one forward pass adds ``pass_s`` once, plus ``segment_s`` for every query segment beyond
the first (MSA fragmentation). Loading ``b`` bytes from a tier costs
``latency_s + b / bandwidth_bps`` of that tier (``"cpu"``, ``"disk"``, ``"remote"``).

A model comes from a roofline preset (``CostModel.preset(name)``, figures in ``roofline.py``) or
from a calibrated profile, a JSON object written by ``asymcache profile``::

    {
      "schema": "asymcache-cost-profile/1",
      "device": "NVIDIA H100 80GB HBM3",          # free text, required
      "model": "Llama-3-8B",                      # free text, required
      "kv_bytes_per_token": 131072,               # int > 0
      "linear_s_per_token": 2.2e-05,              # float >= 0, seconds per query token
      "attn_s_per_token_position": 1.1e-09,       # float >= 0, per query token per earlier token
      "pass_s": 0.0013,                           # float >= 0, fixed seconds per forward pass
      "segment_s": 3.2e-05,                       # float >= 0, per extra MSA segment per pass
      "gpu_kv_bytes": 52000000000,                # int >= 0, optional: GPU memory left for KV
      "load": {                                   # at least one tier
        "cpu":  {"bandwidth_bps": 5.0e10, "latency_s": 1.0e-05},
        "disk": {"bandwidth_bps": 7.0e09, "latency_s": 1.1e-04}
      },
      "source": "asymcache profile, 2026-05-01"   # free text, optional
    }

Unknown keys and wrong types are rejected with a ``ProfileError`` naming the field.
``fit_prefill`` turns measured pass times into the three compute coefficients.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asymcache.cacheserver.policy.roofline import GPUS, MODELS, PRESET_PAIRS, roofline_fields

SCHEMA = "asymcache-cost-profile/1"
LOAD_TIERS: tuple[str, ...] = ("cpu", "disk", "remote")
_FLOAT_FIELDS = ("linear_s_per_token", "attn_s_per_token_position", "pass_s", "segment_s")
_KNOWN = {
    "schema", "device", "model", "kv_bytes_per_token", "gpu_kv_bytes", "load", "source",
    *_FLOAT_FIELDS,
}


class ProfileError(ValueError):
    """A cost profile is malformed; the message names the offending field."""


@dataclass(frozen=True)
class TierLink:
    """How fast blocks come back from one tier into GPU memory."""

    tier: str
    bandwidth_bps: float
    latency_s: float

    def __post_init__(self) -> None:
        if self.tier not in LOAD_TIERS:
            raise ProfileError(f"load: tier must be one of {LOAD_TIERS}, got {self.tier!r}")
        if not _positive(self.bandwidth_bps):
            raise ProfileError(f"load.{self.tier}.bandwidth_bps must be > 0")
        if not _non_negative(self.latency_s):
            raise ProfileError(f"load.{self.tier}.latency_s must be >= 0")


@dataclass(frozen=True)
class CostModel:
    """Seconds to recompute or load KV on one device for one model (see module docstring)."""

    device: str
    model: str
    kv_bytes_per_token: int
    linear_s_per_token: float
    attn_s_per_token_position: float
    pass_s: float
    segment_s: float
    load: tuple[TierLink, ...]
    gpu_kv_bytes: int | None = None
    source: str = ""

    def __post_init__(self) -> None:
        for name in ("device", "model"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ProfileError(f"{name} must be a non-empty string")
        _check(_is_int(self.kv_bytes_per_token) and self.kv_bytes_per_token > 0,
               "kv_bytes_per_token", "an int > 0", self.kv_bytes_per_token)
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            _check(_non_negative(value), name, "a finite number >= 0", value)
        kv = self.gpu_kv_bytes
        _check(kv is None or (_is_int(kv) and kv >= 0), "gpu_kv_bytes", "an int >= 0", kv)
        tiers = [link.tier for link in self.load]
        if not tiers or len(set(tiers)) != len(tiers):
            raise ProfileError(f"load must name at least one tier, each once; got {tiers}")

    # ---- costs --------------------------------------------------------------------------
    def recompute_cost(self, start_position: int, n_tokens: int) -> float:
        """Seconds to recompute ``n_tokens`` tokens whose first sits at token ``start_position``."""
        return n_tokens * (
            self.linear_s_per_token
            + (start_position + 0.5 * n_tokens) * self.attn_s_per_token_position
        )

    def load_cost(self, tier: str, n_bytes: int) -> float:
        """Seconds to bring ``n_bytes`` from ``tier`` ("cpu", "disk", "remote") into the GPU."""
        for link in self.load:
            if link.tier == tier:
                return link.latency_s + n_bytes / link.bandwidth_bps
        raise ValueError(f"cost model {self.name!r} has no load figures for tier {tier!r}")

    def segment_cost(self, extra_segments: int) -> float:
        """Seconds that ``extra_segments`` more MSA segments add to one forward pass."""
        return max(0, extra_segments) * self.segment_s

    def miss_cost(
        self, start_position: int, n_tokens: int, n_bytes: int, tier: str | None
    ) -> float:
        """The cheaper of recomputing the block and loading it from ``tier`` (``None``: nowhere)."""
        cost = self.recompute_cost(start_position, n_tokens)
        if tier is not None and self.has_tier(tier):
            cost = min(cost, self.load_cost(tier, n_bytes))
        return cost

    def has_tier(self, tier: str) -> bool:
        return any(link.tier == tier for link in self.load)

    def gpu_blocks(self, block_tokens: int) -> int | None:
        """How many blocks of ``block_tokens`` tokens fit in the GPU memory left for KV."""
        if self.gpu_kv_bytes is None:
            return None
        return self.gpu_kv_bytes // (block_tokens * self.kv_bytes_per_token)

    @property
    def name(self) -> str:
        return f"{self.device} / {self.model}"

    # ---- construction and files ---------------------------------------------------------
    @classmethod
    def preset(cls, name: str) -> CostModel:
        """A roofline preset by name (``preset_names()``), figures from ``roofline.py``."""
        if name not in PRESET_PAIRS:
            raise ValueError(f"unknown cost-model preset {name!r}; known: {preset_names()}")
        gpu, model = PRESET_PAIRS[name]
        return cls.from_dict(roofline_fields(GPUS[gpu], MODELS[model]))

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> CostModel:
        """Validate a profile dict (schema in the module docstring) and build the model."""
        if not isinstance(data, Mapping):
            raise ProfileError(f"a cost profile must be a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - _KNOWN)
        if unknown:
            raise ProfileError(f"unknown field(s) {unknown}; known: {sorted(_KNOWN)}")
        if data.get("schema", SCHEMA) != SCHEMA:
            raise ProfileError(f"schema must be {SCHEMA!r}, got {data.get('schema')!r}")
        missing = [f for f in ("device", "model", "kv_bytes_per_token", "load", *_FLOAT_FIELDS)
                   if f not in data]
        if missing:
            raise ProfileError(f"missing field(s) {missing}")
        return cls(
            device=data["device"],  # type: ignore[arg-type]
            model=data["model"],  # type: ignore[arg-type]
            kv_bytes_per_token=data["kv_bytes_per_token"],  # type: ignore[arg-type]
            gpu_kv_bytes=data.get("gpu_kv_bytes"),  # type: ignore[arg-type]
            load=_parse_load(data["load"]),
            source=str(data.get("source", "")),
            **{f: _number(data, f) for f in _FLOAT_FIELDS},
        )

    def to_dict(self) -> dict[str, object]:
        """The profile dict of this model (``from_dict(to_dict())`` gives it back)."""
        out: dict[str, object] = {"schema": SCHEMA, "device": self.device, "model": self.model,
                                  "kv_bytes_per_token": self.kv_bytes_per_token}
        out.update({f: getattr(self, f) for f in _FLOAT_FIELDS})
        if self.gpu_kv_bytes is not None:
            out["gpu_kv_bytes"] = self.gpu_kv_bytes
        out["load"] = {k.tier: {"bandwidth_bps": k.bandwidth_bps, "latency_s": k.latency_s}
                       for k in self.load}
        if self.source:
            out["source"] = self.source
        return out

    @classmethod
    def from_profile(cls, path: str | Path) -> CostModel:
        """Read and validate a JSON profile file; errors name the file and the field."""
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ProfileError(f"cannot read cost profile {path}: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ProfileError as exc:
            raise ProfileError(f"{path}: {exc}") from None

    def to_profile(self, path: str | Path) -> None:
        """Write this model as a JSON profile (side effect: creates or replaces ``path``)."""
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def resolve(cls, name_or_path: str) -> CostModel:
        """A preset name, or else the path of a JSON profile."""
        if name_or_path in PRESET_PAIRS:
            return cls.preset(name_or_path)
        if Path(name_or_path).is_file():
            return cls.from_profile(name_or_path)
        raise ValueError(
            f"{name_or_path!r} is neither a preset {preset_names()} nor a profile file"
        )


def preset_names() -> list[str]:
    """Names accepted by ``CostModel.preset``."""
    return sorted(PRESET_PAIRS)


def fit_prefill(samples: Sequence[tuple[int, int, float]]) -> dict[str, float]:
    """Least-squares fit of ``pass_s``, ``linear_s_per_token``, ``attn_s_per_token_position``.

    ``samples`` are measured forward passes ``(start_position, n_tokens, seconds)``: ``n_tokens``
    new tokens appended after ``start_position`` cached ones. Needs three samples or more with
    different shapes; the fit keeps every coefficient >= 0 (:func:`_non_negative_fit`).
    """
    import numpy as np

    if len(samples) < 3:
        raise ValueError(f"fit_prefill needs at least 3 samples, got {len(samples)}")
    rows = [(1.0, n, n * (p + 0.5 * n)) for p, n, _ in samples]
    a = np.asarray(rows, dtype=np.float64)
    y = np.asarray([s for _, _, s in samples], dtype=np.float64)
    if np.linalg.matrix_rank(a) < 3:
        raise ValueError("fit_prefill samples must vary start_position and n_tokens independently")
    pass_s, lin, attn = _non_negative_fit(a, y)
    return {"pass_s": pass_s, "linear_s_per_token": lin, "attn_s_per_token_position": attn}


def _non_negative_fit(a: Any, y: Any) -> tuple[float, float, float]:
    """Least squares with every coefficient >= 0: the best unconstrained fit on each subset of
    the three columns whose coefficients are all non-negative (the others 0). Clamping an
    unconstrained fit instead can zero the per-token terms when noise (a loaded machine) makes
    the fixed term absorb everything and the rest negative."""
    import itertools

    import numpy as np

    best: tuple[float, list[float]] | None = None
    for size in (3, 2, 1):
        for cols in itertools.combinations(range(3), size):
            sub = np.linalg.lstsq(a[:, cols], y, rcond=None)[0]
            if (sub < 0).any():
                continue
            coef = [0.0, 0.0, 0.0]
            for c, v in zip(cols, sub, strict=True):
                coef[c] = float(v)
            residual = float(np.sum((a @ np.asarray(coef) - y) ** 2))
            if best is None or residual < best[0]:
                best = (residual, coef)
    if best is None:
        return 0.0, 0.0, 0.0
    return best[1][0], best[1][1], best[1][2]


def _parse_load(raw: object) -> tuple[TierLink, ...]:
    if not isinstance(raw, Mapping) or not raw:
        raise ProfileError("load must map tier names to {bandwidth_bps, latency_s}")
    links = []
    for tier, spec in raw.items():
        if not isinstance(spec, Mapping) or set(spec) != {"bandwidth_bps", "latency_s"}:
            raise ProfileError(f"load.{tier} must have exactly bandwidth_bps and latency_s")
        links.append(TierLink(str(tier), _number(spec, "bandwidth_bps", f"load.{tier}."),
                              _number(spec, "latency_s", f"load.{tier}.")))
    return tuple(links)


def _number(data: Mapping[str, object], field: str, prefix: str = "") -> float:
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ProfileError(f"{prefix}{field} must be a number, got {value!r}")
    return float(value)


def _check(ok: bool, field: str, what: str, value: object) -> None:
    if not ok:
        raise ProfileError(f"{field} must be {what}, got {value!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _non_negative(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) \
        and value >= 0


def _positive(value: object) -> bool:
    return _non_negative(value) and value > 0  # type: ignore[operator]


def fetch_or_recompute(tiers: Sequence[str | None], usable: Sequence[bool],
                       cost: CostModel | None, block_tokens: int, block_bytes: int) -> list[bool]:
    """The planner's rule (engine and simulator): which usable blocks to reuse. Block ``i`` is
    found in ``tiers[i]`` (``"gpu"``: resident, always reused); one found lower is fetched only
    when loading it is not dearer than recomputing it at its position, counting the extra MSA
    segment a recompute between reused neighbours adds. Without a cost model, or figures for
    the tier, a fetch is assumed worth it."""
    out = list(usable)
    if cost is None:
        return out
    for i, tier in enumerate(tiers):
        if not usable[i] or tier == "gpu" or tier is None or not cost.has_tier(tier):
            continue
        load = cost.load_cost(tier, block_bytes)
        recompute = cost.recompute_cost(i * block_tokens, block_tokens)
        if 0 < i < len(tiers) - 1 and out[i - 1] and usable[i + 1]:
            recompute += cost.segment_cost(1)  # a hole between reused blocks: one more segment
        out[i] = load <= recompute
    return out


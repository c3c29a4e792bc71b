"""Roofline cost figures for known GPU + model pairs: the numbers behind ``CostModel.preset``.

Every figure comes from ``/work/shared/REFERENCE_NUMBERS.md`` (cited as ``REF <table>: <row>``)
or is a stated assumption (``ASSUMPTION``) that a measured profile (``asymcache profile``)
replaces. Pure arithmetic: no torch, no I/O.

How a preset is derived (``roofline_fields``):

* linear seconds per token = ``2 · non-embedding parameters / (peak · GEMM efficiency)``;
  the LM head runs for the last token only during prefill, so it is left out (REF models note:
  "Forward FLOPs per token ≈ 2 × (non-embedding parameters)");
* attention seconds per token per earlier position = ``4 · layers · heads · head_dim /
  (peak · attention efficiency)`` (REF models note);
* KV bytes per token = ``2 · layers · kv_heads · head_dim · 2`` (bf16; REF models table);
* GPU memory left for KV = ``HBM · 0.9 − weight bytes − activation reserve`` (0.9 is vLLM's
  default ``gpu_memory_utilization``; the reserve is an ASSUMPTION of 4 GB);
* loads: CPU over PCIe, DISK from NVMe pipelined through pinned host memory (the slower link,
  NVMe, sets the bandwidth; both latencies add), REMOTE over a 100 Gb/s network (ASSUMPTION).
"""

from __future__ import annotations

from dataclasses import dataclass

GEMM_EFFICIENCY = 0.65  # REF GPUs note: "Large GEMMs reach about 60–75% of peak" (lower half)
ATTENTION_EFFICIENCY = 0.5  # REF GPUs note: "attention kernels 40–75%" (lower half)
GPU_MEMORY_UTILIZATION = 0.9  # ASSUMPTION: vLLM's default share of HBM the engine may use
ACTIVATION_RESERVE_BYTES = 4e9  # ASSUMPTION: activations and workspace of a prefill chunk
PCIE_LATENCY_S = 10e-6  # ASSUMPTION: per-transfer DMA set-up and launch on the copy stream
NVME_READ_BPS = 7e9  # REF GPUs note: "NVMe SSD (Gen4): ~7 GB/s sequential read per drive"
NVME_LATENCY_S = 0.1e-3  # REF GPUs note: "latency ~0.1 ms"
REMOTE_BPS = 10e9  # ASSUMPTION: 100 Gb/s NIC, ~80% achieved
REMOTE_LATENCY_S = 0.3e-3  # ASSUMPTION: one Redis/Valkey round trip on a data-centre LAN
KERNELS_PER_LAYER = 8  # ASSUMPTION: norm, qkv, rope+write, attention, o, norm, up/gate, down
LAUNCH_S = 5e-6  # ASSUMPTION: launch + tail of one kernel without CUDA graphs
SEGMENT_S_PER_LAYER = 1e-6  # ASSUMPTION: one more MSA segment costs ~1 µs per layer
BF16_BYTES = 2


@dataclass(frozen=True)
class GpuSpec:
    """A GPU's public figures: dense bf16 peak, HBM size, achieved host-link bandwidth."""

    name: str
    bf16_flops: float
    hbm_bytes: float
    pcie_bps: float


@dataclass(frozen=True)
class ModelSpec:
    """A decoder's shape from its ``config.json`` (REF models table)."""

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    ffn: int
    vocab: int
    tied_embeddings: bool = False

    @property
    def non_embedding_params(self) -> int:
        """Weights of the linear layers: q, k, v, o and the gated MLP of every layer."""
        q_o = 2 * self.hidden * self.heads * self.head_dim
        k_v = 2 * self.hidden * self.kv_heads * self.head_dim
        mlp = 3 * self.hidden * self.ffn
        return self.layers * (q_o + k_v + mlp)

    @property
    def weight_bytes(self) -> int:
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return BF16_BYTES * (self.non_embedding_params + embeddings)

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * BF16_BYTES


GPUS: dict[str, GpuSpec] = {
    # REF GPUs: "H100 SXM | 989 | 80 GB | ... | ~50–55 GB/s achieved" (lower end)
    "h100": GpuSpec("H100 SXM", 989e12, 80e9, 50e9),
    # REF GPUs: "H20 | 148 | 96 GB | ... | PCIe Gen5 x16" (same link as H100)
    "h20": GpuSpec("H20", 148e12, 96e9, 50e9),
    # REF GPUs: "A100 SXM 80GB | 312 | 80 GB | ... | ~25 GB/s achieved"
    "a100": GpuSpec("A100 SXM 80GB", 312e12, 80e9, 25e9),
}

MODELS: dict[str, ModelSpec] = {
    # REF models: "Llama-3-8B | 32 | 4096 | 32 / 8 | 128 | 14336 | 128256"
    "llama3-8b": ModelSpec("Llama-3-8B", 32, 4096, 32, 8, 128, 14336, 128256),
    # REF models: "Llama-2-7B | 32 | 4096 | 32 / 32 | 128 | 11008 | 32000"
    "llama2-7b": ModelSpec("Llama-2-7B", 32, 4096, 32, 32, 128, 11008, 32000),
    # REF models: "Qwen2-7B | 28 | 3584 | 28 / 4 | 128 | 18944 | 152064"
    "qwen2-7b": ModelSpec("Qwen2-7B", 28, 3584, 28, 4, 128, 18944, 152064),
}

PRESET_PAIRS: dict[str, tuple[str, str]] = {
    "h100-llama3-8b": ("h100", "llama3-8b"),
    "h20-llama3-8b": ("h20", "llama3-8b"),
    "a100-llama2-7b": ("a100", "llama2-7b"),
    "h20-qwen2-7b": ("h20", "qwen2-7b"),
}


def roofline_fields(gpu: GpuSpec, model: ModelSpec) -> dict[str, object]:
    """The fields of a ``CostModel`` profile dict for ``model`` on ``gpu`` (see module doc)."""
    linear_flops = 2 * model.non_embedding_params
    attn_flops = 4 * model.layers * model.heads * model.head_dim
    kv_room = gpu.hbm_bytes * GPU_MEMORY_UTILIZATION - model.weight_bytes
    return {
        "device": gpu.name,
        "model": model.name,
        "kv_bytes_per_token": model.kv_bytes_per_token,
        "linear_s_per_token": linear_flops / (gpu.bf16_flops * GEMM_EFFICIENCY),
        "attn_s_per_token_position": attn_flops / (gpu.bf16_flops * ATTENTION_EFFICIENCY),
        "pass_s": model.layers * KERNELS_PER_LAYER * LAUNCH_S,
        "segment_s": model.layers * SEGMENT_S_PER_LAYER,
        "gpu_kv_bytes": int(max(0.0, kv_room - ACTIVATION_RESERVE_BYTES)),
        "load": {
            "cpu": {"bandwidth_bps": gpu.pcie_bps, "latency_s": PCIE_LATENCY_S},
            "disk": {
                "bandwidth_bps": min(NVME_READ_BPS, gpu.pcie_bps),
                "latency_s": NVME_LATENCY_S + PCIE_LATENCY_S,
            },
            "remote": {
                "bandwidth_bps": min(REMOTE_BPS, gpu.pcie_bps),
                "latency_s": REMOTE_LATENCY_S + PCIE_LATENCY_S,
            },
        },
        "source": f"roofline preset ({gpu.name}, {model.name}); cacheserver/policy/roofline.py",
    }

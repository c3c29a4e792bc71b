"""MSA attention kernels (Triton on CUDA, torch paths on CPU).

Public API (DESIGN.md section 7; shapes and dtypes in ``kernels.api``)::

    from kernels import AttentionMetadata, msa_prefill, msa_decode, merge_state, write_kv

Modules: ``metadata`` (the per-step ``AttentionMetadata``), ``api`` (validating public ops),
``backends`` (backend interface and registry), ``reference`` (float64 dense-mask oracle),
``cpu`` (gather + SDPA torch path), ``triton_*`` (the Triton kernels and their launchers).
Importing this package never imports Triton; the Triton backend is imported on first use.
"""

from __future__ import annotations

from kernels.api import merge_state, msa_decode, msa_prefill, write_kv
from kernels.backends import BACKENDS, ENV_VAR, resolve_backend
from kernels.metadata import AttentionMetadata

__all__ = [
    "BACKENDS",
    "ENV_VAR",
    "AttentionMetadata",
    "merge_state",
    "msa_decode",
    "msa_prefill",
    "resolve_backend",
    "write_kv",
]

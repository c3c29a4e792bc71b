"""The AsymCache inference engine and the client library any engine links to.

Imports are lazy: ``engine.client`` (torch-free) and ``asymcache ping`` work in the daemon image,
and ``from engine import LLM, SamplingParams`` pulls in torch only when used.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "LLM": "engine.llm",
    "SamplingParams": "engine.sampling",
    "CacheClient": "engine.client",
    "AsyncCacheClient": "engine.client",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'engine' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

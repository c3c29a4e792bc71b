"""An engine HTTP server in this process (uvicorn on a loopback port, in a thread), for tests
that need to reach into the engine while clients talk to it over real HTTP: a step that fails
or stands still on a gate.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from asymcache.engine.async_engine import AsyncEngine
from asymcache.engine.config import EngineConfig
from asymcache.engine.engine import LLMEngine
from asymcache.engine.server.app import ServerContext, create_app
from tests.engine.engine_fixtures import COST

STEP_GATE_S = 60.0  # longest a gated step waits before it runs anyway (bounded tests)


@dataclass
class Served:
    """A running server: its ``url``, the engine behind it and a gate on its steps."""

    url: str
    engine: AsyncEngine
    gate: threading.Event  # steps run only while set (set at start)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve_in_process(step_hook: Callable[[int], None] | None = None,
                     **options: Any) -> Iterator[Served]:
    """Serve the built-in model (test defaults, ``options`` on top) on 127.0.0.1.

    ``step_hook(n)`` runs before the engine's ``n``-th step (from 0) and may raise to make the
    engine fail there. Steps wait while ``Served.gate`` is clear.
    """
    import uvicorn

    defaults = {"num_gpu_blocks": 64, "cost_model": COST, "chunking": "fixed",
                "chunk_tokens": 64}
    config = EngineConfig.from_kwargs(**{**defaults, **options})
    registry = CollectorRegistry()
    llm_engine = LLMEngine(config, registry=registry)
    gate = threading.Event()
    gate.set()
    real_step, steps = llm_engine.step, iter(range(1 << 30))

    def step() -> list:
        gate.wait(STEP_GATE_S)
        n = next(steps)
        if step_hook is not None:
            step_hook(n)
        return real_step()

    llm_engine.step = step  # type: ignore[method-assign]
    engine = AsyncEngine(llm_engine)
    engine.start()
    ctx = ServerContext(engine, llm_engine.tokenizer, "builtin", registry,
                        llm_engine.max_model_len)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host="127.0.0.1", port=port,
                                           log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_up(url)
        yield Served(url, engine, gate)
    finally:
        gate.set()
        server.should_exit = True
        thread.join(30)
        engine.shutdown()


def _wait_up(url: str, limit_s: float = 60.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            httpx.get(f"{url}/v1/models", timeout=1)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(f"the in-process server at {url} did not start")

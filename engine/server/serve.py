"""Run the HTTP server: an engine, its thread, the FastAPI app, uvicorn (until SIGINT/SIGTERM).

Lifecycle: startup (load the model, size the pool, register with the daemon, start the engine
thread) → serve (uvicorn's loop; it handles SIGINT/SIGTERM and drains connections) → shutdown
(stop the engine thread, release leases with the daemon, close the link).
"""

from __future__ import annotations

import logging
from pathlib import Path

from prometheus_client import CollectorRegistry

from asymcache.engine.async_engine import AsyncEngine
from asymcache.engine.config import EngineConfig
from asymcache.engine.engine import LLMEngine
from asymcache.engine.server.app import ServerContext, create_app

log = logging.getLogger(__name__)


def served_name(config: EngineConfig, name: str | None) -> str:
    """The model id clients use: ``name``, else the model folder's name (or ``builtin``)."""
    return name or Path(config.model).name or config.model


def serve(config: EngineConfig, host: str = "127.0.0.1", port: int = 8000,
          model_name: str | None = None, log_level: str = "info") -> int:
    """Serve until interrupted; returns the exit status."""
    import uvicorn

    registry = CollectorRegistry()
    engine = AsyncEngine(LLMEngine(config, registry=registry))
    engine.start()
    ctx = ServerContext(engine, engine.engine.tokenizer, served_name(config, model_name),
                        registry, engine.engine.max_model_len)
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host=host, port=port,
                                           log_level=log_level, access_log=False))
    log.info("serving %s on http://%s:%d", ctx.model_name, host, port)
    try:
        server.run()
    finally:
        engine.shutdown()
    return 0 if engine.error is None else 1

"""Run the HTTP server: an engine, its thread, the FastAPI app, uvicorn (until SIGINT/SIGTERM).

Lifecycle: startup (read the API keys, load the model, size the pool, register with the daemon,
start the engine thread, watch the keys file; ``SIGHUP`` reads it at once) → serve (uvicorn's
loop; it handles SIGINT/SIGTERM and drains connections) → shutdown (stop the engine thread,
release leases with the daemon, close the link).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from prometheus_client import CollectorRegistry

from asymcache.cacheserver.access import is_local
from asymcache.engine.async_engine import AsyncEngine
from asymcache.engine.config import EngineConfig
from asymcache.engine.engine import LLMEngine
from asymcache.engine.server.api_keys import ApiKeys
from asymcache.engine.server.app import ServerContext, create_app

log = logging.getLogger(__name__)


def served_name(config: EngineConfig, name: str | None) -> str:
    """The model id clients use: ``name``, else the model folder's name (or ``builtin``)."""
    return name or Path(config.model).name or config.model


def serve(config: EngineConfig, host: str = "127.0.0.1", port: int = 8000,
          model_name: str | None = None, log_level: str = "info") -> int:
    """Serve until interrupted; returns the exit status. A bad ``api_keys_file`` raises
    :class:`~asymcache.engine.server.api_keys.KeyFileError` before the model is loaded."""
    import uvicorn

    keys = open_keys(config, host)
    registry = CollectorRegistry()
    engine = AsyncEngine(LLMEngine(config, registry=registry))
    engine.start()
    ctx = ServerContext(engine, engine.engine.tokenizer, served_name(config, model_name),
                        registry, engine.engine.max_model_len, keys=keys)
    kv = engine.engine.kv  # the daemon counts tenants by these names (TENANTS)
    kv.served_model = ctx.model_name
    if keys is not None:
        kv.tenant_name = keys.tenant_of_salt
    server = uvicorn.Server(uvicorn.Config(create_app(ctx), host=host, port=port,
                                           log_level=log_level, access_log=False))
    log.info("serving %s on http://%s:%d", ctx.model_name, host, port)
    try:
        server.run()
    finally:
        if keys is not None:
            keys.stop()
        engine.shutdown()
    return 0 if engine.error is None else 1


def open_keys(config: EngineConfig, host: str) -> ApiKeys | None:
    """The API keys, watched for changes (and read again on SIGHUP), or None without a file
    (then a warning when ``host`` can be reached from other hosts)."""
    if config.api_keys_file is None:
        if not is_local(f"tcp://{host}:0"):
            log.warning("the HTTP API on %s can be reached from other hosts and needs no API "
                        "key: any client may send any cache_salt (and so read other tenants' "
                        "cached prefixes); set api_keys_file (docs/security.md)", host)
        return None
    keys = ApiKeys(config.api_keys_file)
    keys.start()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGHUP, lambda *_: keys.wake())
    log.info("API keys required: %d keys from %s", keys.summary()["keys"], keys.path)
    return keys

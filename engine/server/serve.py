"""Run the HTTP server: an engine, its thread, the FastAPI app, uvicorn (until SIGINT/SIGTERM).

Lifecycle: startup (read the API keys, load the model, size the pool, register with the daemon,
start the engine thread, watch the keys file; ``SIGHUP`` reads it at once) → serve (uvicorn's
loop; SIGTERM first drains the engine: its requests' KV written through the daemon, each
ended with a resumable ``engine_draining`` error; then uvicorn closes connections) → shutdown
(stop the engine thread, release leases with the daemon, close the link).
"""

from __future__ import annotations

import asyncio
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
    kv.tenancy.served_model = ctx.model_name
    if keys is not None:  # tenants' names and their own retention / pin TTL caps
        kv.tenancy.tenant_name, kv.tenancy.tenant_caps = keys.tenant_of_salt, keys.time_caps
    server = draining_server_class()(uvicorn.Config(create_app(ctx), host=host, port=port,
                                                    log_level=log_level, access_log=False),
                                     engine, config.drain_timeout_s)
    log.info("serving %s on http://%s:%d", ctx.model_name, host, port)
    try:
        server.run()
    finally:
        if keys is not None:
            keys.stop()
        engine.shutdown()
    return 0 if engine.error is None else 1


def draining_server_class() -> type:
    """``uvicorn.Server`` whose first SIGTERM drains the engine (``AsyncEngine.drain``) before
    the usual graceful exit; a second SIGTERM, or SIGINT, exits at once. Built on first use
    (uvicorn is imported only when serving)."""
    import uvicorn

    class _DrainingServer(uvicorn.Server):
        def __init__(self, config: uvicorn.Config, engine: AsyncEngine, timeout_s: float) -> None:
            super().__init__(config)
            self.engine, self.timeout_s = engine, timeout_s
            self._draining: asyncio.Task | None = None
            self._loop: asyncio.AbstractEventLoop | None = None

        async def startup(self, sockets: list | None = None) -> None:
            self._loop = asyncio.get_running_loop()
            await super().startup(sockets)

        def handle_exit(self, sig: int, frame: object) -> None:
            if sig != signal.SIGTERM or self._draining is not None or self._loop is None:
                super().handle_exit(sig, frame)
                return
            log.info("SIGTERM: draining (at most %.1fs), then exiting", self.timeout_s)
            self._draining = self._loop.create_task(self._drain_then_exit(sig, frame))

        async def _drain_then_exit(self, sig: int, frame: object) -> None:
            try:
                await asyncio.wait_for(self.engine.drain(self.timeout_s), self.timeout_s + 5)
            except Exception:  # the exit must happen even if the drain failed
                log.exception("drain failed; exiting anyway")
            super().handle_exit(sig, frame)

    return _DrainingServer


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

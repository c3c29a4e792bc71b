"""The daemon's HTTP endpoint: ``/metrics``, ``/healthz`` and ``/readyz`` on the event loop.

A deliberately small HTTP/1.1 server on ``asyncio.start_server`` (no web framework in the daemon
image): GET only, one request per connection, bounded request size, answered from the loop
thread so the metrics see a consistent state.

* ``/metrics`` — Prometheus text format of the registry passed in.
* ``/healthz`` — 200 while the process serves at all.
* ``/readyz`` — 200 once the tiers are open and the index is rebuilt, 503 before and during
  shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

log = logging.getLogger(__name__)
_MAX_REQUEST_BYTES = 8192
_READ_TIMEOUT_S = 5.0


class HttpServer:
    """Serves the three endpoints; ``is_ready()`` decides ``/readyz``."""

    def __init__(self, registry: CollectorRegistry, is_ready: Callable[[], bool]) -> None:
        self._registry = registry
        self._is_ready = is_ready
        self._server: asyncio.base_events.Server | None = None

    async def start(self, host: str, port: int) -> int:
        """Listen on ``host:port``; returns the bound port."""
        self._server = await asyncio.start_server(
            self._handle, host, port, limit=_MAX_REQUEST_BYTES
        )
        return self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _route(self, path: str) -> tuple[int, str, bytes]:
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/healthz":
            return 200, "text/plain", b"ok\n"
        if path == "/readyz":
            ready = self._is_ready()
            return (200, "text/plain", b"ready\n") if ready else (503, "text/plain", b"starting\n")
        return 404, "text/plain", b"not found: try /metrics, /healthz or /readyz\n"

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), _READ_TIMEOUT_S)
            parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
            if len(parts) != 3 or parts[0] not in ("GET", "HEAD"):
                status, ctype, body = 405, "text/plain", b"only GET is served\n"
            else:
                status, ctype, body = self._route(parts[1].split("?", 1)[0])
            reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed",
                      503: "Service Unavailable"}[status]
            writer.write(f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\n"
                         f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode())
            if parts and parts[0] != "HEAD":
                writer.write(body)
            await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ConnectionError) as e:
            log.debug("http request dropped: %s", e)
        finally:
            writer.close()

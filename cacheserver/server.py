"""The daemon's lifecycle: ``serve -> startup -> main_loop -> shutdown``.

* **startup** reads the CURVE keys and allow-list (``access.py``; warns about endpoints
  ``insecure_tcp`` leaves open), opens the tiers (CPU shared-memory slab, LMDB disk, and the
  remote tier when configured: it connects in the background, the daemon never waits for its
  cluster), starts HTTP (``/metrics``, ``/healthz``; ``/readyz`` answers 503 until ready),
  rebuilds the block index from the disk's headers in a worker thread (HTTP keeps answering),
  binds the ROUTER and installs SIGTERM/SIGINT handlers (and, with CURVE, SIGHUP: reload the
  allow-list); then the daemon is ready.
* **main_loop** reads requests in batches, admits each against its peer's in-flight bound
  (``max_inflight``; past it a BUSY error), and dispatches to the handlers of ``handlers.py``,
  ``handlers_lookup.py``, ``handlers_data.py`` and the rest. Every request gets exactly one
  reply (one-way ones an ACK). A housekeeping task expires silent engines, forgets blocks
  whose disk or remote writes failed, hands the remote tier's measured load cost to the cost
  model and reloads a changed CURVE allow-list.
* **shutdown** (on a signal, or :meth:`CacheServer.request_stop`) stops reading, lets in-flight
  asynchronous requests finish (bounded), sends queued remote writes (bounded), flushes pending
  disk writes, closes the tiers (the CPU segment is unlinked) and stops HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import time
from pathlib import Path

import zmq
from prometheus_client import CollectorRegistry, Counter

from asymcache.cacheserver import handlers_data
from asymcache.cacheserver.access import ServerCurve
from asymcache.cacheserver.config import ServerConfig
from asymcache.cacheserver.dispatch import Dispatcher
from asymcache.cacheserver.engine_costs import EngineCosts
from asymcache.cacheserver.events import EventLog, EventMetrics
from asymcache.cacheserver.handlers import Context, drop_session
from asymcache.cacheserver.http import HttpServer
from asymcache.cacheserver.index import BlockIndex
from asymcache.cacheserver.leases import SessionTable
from asymcache.cacheserver.levels import daemon_levels
from asymcache.cacheserver.metrics import DaemonMetrics, StateCollector
from asymcache.cacheserver.movers import Residency
from asymcache.cacheserver.protocol import request_ops
from asymcache.cacheserver.protocol.sockets import ping
from asymcache.cacheserver.router import RouterSocket
from asymcache.cacheserver.startup import PolicyFactory, open_remote, open_tiers, rebuild_index
from asymcache.cacheserver.tenants import TenantBook

log = logging.getLogger("asymcache.server")
_BATCH = 256
_DRAIN_TIMEOUT_S = 10.0


class CacheServer:
    """One daemon. ``serve()`` runs it until SIGTERM/SIGINT or :meth:`request_stop`."""

    def __init__(self, config: ServerConfig, registry: CollectorRegistry | None = None) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = DaemonMetrics(self.registry, request_ops())
        self.housekeeping_errors = Counter(
            "asymcache_server_housekeeping_errors_total", "Housekeeping rounds that failed (the "
            "next round runs as usual; the log has the traceback)", registry=self.registry)
        self.event_metrics = EventMetrics(self.registry)
        self.epoch = secrets.randbits(63)
        self.ready = False
        self.http_port: int | None = None
        self.ctx: Context | None = None
        self._stopping = False
        self._stopped: asyncio.Event | None = None
        self._router: RouterSocket | None = None
        self._events: EventLog | None = None
        self._zmq: zmq.Context | None = None
        self._http: HttpServer | None = None
        self._dispatcher: Dispatcher | None = None
        self._housekeeping: asyncio.Task | None = None
        self._tiers: tuple | None = None  # (cpu, disk, remote) once open: shutdown closes them
        self._curve: ServerCurve | None = None  # CURVE keys and the clients' allow-list
        self._policies: PolicyFactory | None = None

    # ---- lifecycle ----------------------------------------------------------------------
    def serve(self) -> None:
        """Run the daemon on uvloop (when installed) until it is stopped."""
        try:
            import uvloop
        except ImportError:  # pragma: no cover - uvloop is a daemon dependency on Linux
            asyncio.run(self.serve_async())
            return
        uvloop.run(self.serve_async())

    async def serve_async(self) -> None:
        try:
            await self.startup()
            await self.main_loop()
        finally:
            await self.shutdown()

    async def startup(self) -> None:
        cfg = self.config
        self._check_access()  # before anything is allocated: a refusal costs nothing
        Path(cfg.data_dir).mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        cpu, disk = open_tiers(cfg)
        self._tiers = (cpu, disk, None)
        remote = open_remote(cfg, self.metrics)
        self._tiers = (cpu, disk, remote)
        self._policies = make_policy = PolicyFactory(cfg)
        levels, capacity, bound = daemon_levels(
            cfg, {"cpu": cpu, "disk": disk, "remote": remote}, make_policy)
        tier_blocks = sum(bound.values())  # the index's bound, not capacity
        index, sessions = BlockIndex(tier_blocks), SessionTable(cfg.max_engines)
        tenants = TenantBook(cfg.quotas, cfg.data_dir)
        costs = EngineCosts(make_policy.cost_model, cfg.quotas.max_namespaces)
        residency = Residency(index, sessions, levels, self.metrics, time.monotonic, capacity,
                              bound, tenants, costs)
        self.ctx = Context(cfg, index, sessions, residency, self.metrics, self.epoch,
                           time.monotonic, lambda n: make_policy("gpu", n), tier_blocks)
        self.registry.register(StateCollector(self._snapshot))
        await self._start_http()  # /healthz answers and /readyz says 503 during the rebuild
        # in a worker thread, so the loop serves HTTP meanwhile; nothing else touches the
        # index and the policies until the socket is bound
        n = await asyncio.get_running_loop().run_in_executor(None, rebuild_index, self.ctx)
        tenants.recount(index.records(), residency.chain.levels)
        log.info("tiers open, %d blocks indexed from disk in %.2fs", n, time.perf_counter() - t0)
        self._bind()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        if self._curve is not None:  # SIGHUP: read curve_clients_dir again now
            loop.add_signal_handler(signal.SIGHUP, self._reload_client_keys, True)
        self._housekeeping = loop.create_task(self._housekeep())
        # The index is millions of long-lived, acyclic objects: keep the cyclic collector off
        # them (freeze what start-up built) and collect young objects less often.
        gc.freeze()
        gc.set_threshold(50_000, 20, 100)
        self.ready = True
        log.info("serving %s (epoch %d, pid %d)", cfg.endpoint, self.epoch, os.getpid())

    def _check_access(self) -> None:
        """Read the CURVE keys and allow-list (``AccessError`` naming the field), and warn
        about each endpoint that ``insecure_tcp`` leaves open to other hosts."""
        cfg = self.config
        if cfg.curve_secret_key_file:
            self._curve = ServerCurve.load(cfg.curve_secret_key_file, cfg.curve_clients_dir)
            log.info("CURVE: %d client keys allowed (curve_clients_dir %s, reloaded when it "
                     "changes or on SIGHUP)", len(self._curve.clients.keys),
                     cfg.curve_clients_dir)
        for name, endpoint in cfg.unprotected_endpoints:
            log.warning("insecure_tcp: %s %s is served WITHOUT authentication: any host that "
                        "reaches it can read and write every tenant's KV blocks; configure "
                        "curve_secret_key_file and curve_clients_dir instead (docs/security.md)",
                        name, endpoint)

    def _reload_client_keys(self, force: bool = False) -> None:
        """Read ``curve_clients_dir`` again if it changed (housekeeping) or now (SIGHUP)."""
        if self._curve is not None:
            self._curve.clients.reload(force)

    async def _start_http(self) -> None:
        if self.config.metrics_port:
            self._http = HttpServer(self.registry, lambda: self.ready)
            self.http_port = await self._http.start(self.config.metrics_host,
                                                    self.config.metrics_port)
            log.info("http on %s:%d", self.config.metrics_host, self.http_port)

    def _check_endpoint_free(self) -> None:
        """Refuse to take over an ipc path another live daemon answers on."""
        path = self.config.ipc_path
        if path and os.path.exists(path) and ping(self.config.endpoint, timeout_s=0.3):
            raise OSError(f"another daemon answers on {self.config.endpoint}; stop it or choose "
                          f"another endpoint")

    def _bind(self) -> None:
        cfg = self.config
        self._check_endpoint_free()
        curve = self._curve
        self._zmq = zmq.Context()
        max_msg = 2 * (cfg.cpu_slot_bytes + cfg.max_header_bytes)
        self._router = RouterSocket(self._zmq, cfg.endpoint, curve=curve,
                                    max_message_bytes=max_msg, rcvhwm=cfg.recv_hwm)
        assert self.ctx is not None
        if cfg.events_endpoint:
            self._start_events(curve)
        self.ctx.client_key = self._router.client_key
        self._dispatcher = Dispatcher(self.ctx, self._router, cfg.max_inflight)
        self._stopped = asyncio.Event()
        if self._stopping:  # a signal arrived during start-up
            self._stopped.set()
        self._router.start(asyncio.get_running_loop(), self._dispatcher.dispatch, _BATCH)

    def _start_events(self, curve: ServerCurve | None) -> None:
        """Bind the KV events sockets (CURVE as the main socket: the router's authenticator
        serves the whole context); publish AllBlocksCleared, then the blocks the disk holds."""
        assert self.ctx is not None and self._zmq is not None
        cfg = self.config
        self._events = events = EventLog(
            self._zmq, cfg.events_endpoint, cfg.events_replay_endpoint, cfg.events_replay_bytes,
            self.event_metrics, self.epoch, secure=curve.secure if curve is not None else None)
        events.start(asyncio.get_running_loop())
        events.cleared()
        residency = self.ctx.residency
        for rec in self.ctx.index.records():
            for level in residency.chain.levels:
                if rec.where & level.bit:
                    events.stored(level.name, rec)
        residency.events = events
        log.info("KV events on %s (replay: %s)", cfg.events_endpoint,
                 cfg.events_replay_endpoint or "none")

    async def main_loop(self) -> None:
        """Serve until :meth:`request_stop`: the router's reader callback dispatches each batch
        of requests as it arrives (``router.py``)."""
        assert self._stopped is not None
        await self._stopped.wait()

    def request_stop(self) -> None:
        """Begin a graceful shutdown (safe to call from a signal handler on the loop)."""
        if not self._stopping:
            log.info("stopping")
        self._stopping = True
        self.ready = False
        if self._router is not None:
            self._router.stop_reading()
        if self._stopped is not None:
            self._stopped.set()

    async def shutdown(self) -> None:
        self.ready = False
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
        if self._dispatcher is not None:
            await self._dispatcher.drain(_DRAIN_TIMEOUT_S)
        if self._events is not None:
            self._events.close()
        if self._router is not None:
            self._router.close()
        if self._zmq is not None:
            self._zmq.term()
        if self._tiers is not None:
            self._close_tiers()
        if self._http is not None:
            await self._http.stop()
        log.info("stopped")

    def _close_tiers(self) -> None:
        assert self._tiers is not None
        cpu, disk, remote = self._tiers
        self._tiers = None
        if remote is not None:
            log.info("sending queued remote writes")
            remote.close()
        if disk is not None:
            log.info("flushing %d pending disk writes", getattr(disk, "pending_ops", 0))
            disk.close()
        cpu.close()

    # ---- background ---------------------------------------------------------------------
    async def _housekeep(self) -> None:
        """Every ``min(1 s, lease_timeout_s / 4)``: expire silent engines, forget blocks whose
        disk or remote writes failed, hand the remote tier's measured figures to the cost
        model, reload the CURVE allow-list if its folder changed. A step that fails is logged
        with its traceback and counted; the other steps and the next round run as usual."""
        ctx = self.ctx
        assert ctx is not None
        period = min(1.0, ctx.config.lease_timeout_s / 4)
        steps = (self._expire_engines, ctx.residency.poll_failures, self._use_remote_figures,
                 self._reload_client_keys)
        while True:
            await asyncio.sleep(period)
            for step in steps:
                try:
                    step()
                except Exception:
                    self.housekeeping_errors.inc()
                    log.exception("housekeeping step %s failed; it runs again in %.2fs",
                                  step.__name__, period)

    def _expire_engines(self) -> None:
        ctx = self.ctx
        assert ctx is not None
        for session in ctx.sessions.expired(ctx.clock(), ctx.config.lease_timeout_s):
            log.warning("engine %s silent for %.1fs: dropping its leases and GPU index",
                        session.engine_id, ctx.clock() - session.last_seen)
            drop_session(ctx, session)
            self.metrics.expired_engines.inc()

    def _use_remote_figures(self) -> None:
        """Once the remote tier has measured its link, cost-aware policies price with it."""
        ctx = self.ctx
        assert ctx is not None and self._policies is not None
        figures = ctx.residency.load_figures("remote")
        if figures is None:
            return
        policies = [*ctx.residency.policies.values(), *(s.gpu_policy for s in ctx.sessions)]
        if self._policies.use_remote_figures(figures, policies):
            ctx.residency.costs.use_fallback(self._policies.cost_model, ctx.sessions)
            log.info("cost model: remote loads at %.3f ms + %.2f GB/s", figures[0] * 1e3,
                     figures[1] / 1e9)

    def _snapshot(self) -> handlers_data.StateSnapshot:
        assert self.ctx is not None
        router = self._router
        if router is None:
            return handlers_data.snapshot(self.ctx, self.ready)
        return handlers_data.snapshot(self.ctx, self.ready, router.dropped, router.refused)

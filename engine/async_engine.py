"""``AsyncEngine``: an :class:`LLMEngine` driven by one background thread, used from asyncio.

The engine thread owns the engine: it takes submitted and aborted requests from a queue, runs
steps while there is work and sleeps on an event when there is none (no busy loop). Each
request's outputs go to the asyncio queue of the coroutine that submitted it, through
``loop.call_soon_threadsafe``. If a step raises, the thread records the error, fails every
pending request with it and stops; :attr:`healthy` then turns false (``/health`` says 503).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from collections.abc import AsyncIterator, Sequence

from asymcache.engine.engine import LLMEngine, RequestOutput
from asymcache.engine.sampling import SamplingParams

log = logging.getLogger(__name__)
_IDLE_WAIT_S = 0.5
_STALLED_WAIT_S = 0.005


class EngineDeadError(RuntimeError):
    """The engine thread stopped after an error; no request can be served."""


class EngineBusyError(RuntimeError):
    """Too many requests wait to start (``EngineConfig.max_waiting_requests``); retry later."""


class AsyncEngine:
    """See the module docstring. Call :meth:`start` once and :meth:`shutdown` at the end."""

    def __init__(self, engine: LLMEngine) -> None:
        self.engine = engine
        self.error: BaseException | None = None
        self._cmds: queue.SimpleQueue = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._streams: dict[str, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self._adds_lock = threading.Lock()
        self._pending_adds = 0  # submitted, not yet taken by the engine thread
        self._thread = threading.Thread(target=self._run, name="asymcache-engine", daemon=True)

    @property
    def healthy(self) -> bool:
        return self.error is None and self._thread.is_alive()

    def start(self) -> None:
        self._thread.start()

    @property
    def num_waiting(self) -> int:
        """Requests submitted and not yet running: queued for the engine thread, or waiting in
        its scheduler (read from another thread: a snapshot)."""
        with self._adds_lock:
            pending = self._pending_adds
        return pending + len(self.engine.scheduler.waiting)

    def check_room(self) -> None:
        """Raise :class:`EngineBusyError` (saying why) while ``max_waiting_requests`` or more
        requests wait to start."""
        limit = self.engine.config.max_waiting_requests
        waiting = self.num_waiting
        if waiting >= limit:
            raise EngineBusyError(f"{waiting} requests are waiting to start "
                                  f"(max_waiting_requests={limit}); retry later")

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop the thread (pending requests are aborted) and close the engine."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s)

    async def generate(self, request_id: str, prompt_ids: Sequence[int],
                       params: SamplingParams) -> AsyncIterator[RequestOutput]:
        """Submit a request and yield its outputs until the finished one. Raises
        ``ValueError`` (bad prompt) before anything runs; leaving early aborts the request."""
        if not self.healthy:
            raise EngineDeadError(f"the engine stopped: {self.error!r}")
        self.engine.check_prompt(prompt_ids, params)
        q: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), q)
        with self._adds_lock:
            self._pending_adds += 1
        self._cmds.put(("add", request_id, list(prompt_ids), params))
        self._wake.set()
        finished = False
        try:
            while not finished:
                item = await q.get()
                if isinstance(item, BaseException):
                    raise item
                finished = item.finished
                yield item
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self._cmds.put(("abort", request_id))
                self._wake.set()

    # ---- the engine thread ----------------------------------------------------------------
    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.clear()
                self._drain()
                if self.engine.has_unfinished:
                    self._deliver(self.engine.step())
                    if not self.engine.last_step.seqs:  # nothing could run: no busy loop
                        self._wake.wait(_STALLED_WAIT_S)
                else:
                    self.engine.tick_daemon()  # join or re-join the daemon while idle
                    self._wake.wait(_IDLE_WAIT_S)
        except BaseException as e:  # reported to every waiting request
            log.exception("engine step failed; the engine stops")
            self.error = e
            for rid in list(self._streams):
                self._send(rid, EngineDeadError(f"the engine stopped: {e!r}"))
        finally:
            for rid in list(self._streams):
                self._send(rid, EngineDeadError("the engine is shutting down"))
            self.engine.close()

    def _drain(self) -> None:
        while True:
            try:
                cmd = self._cmds.get_nowait()
            except queue.Empty:
                return
            if cmd[0] == "add":
                self._add(*cmd[1:])
                with self._adds_lock:
                    self._pending_adds -= 1
            else:
                self.engine.abort(cmd[1])

    def _add(self, request_id: str, ids: list[int], params: SamplingParams) -> None:
        try:
            self.engine.add_request(request_id, ids, params)
        except ValueError as e:
            self._send(request_id, e)

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            self._send(out.request_id, out)

    def _send(self, request_id: str, item: RequestOutput | BaseException) -> None:
        target = self._streams.get(request_id)
        if target is not None:
            loop, q = target
            loop.call_soon_threadsafe(q.put_nowait, item)

"""``AsyncEngine``: an :class:`LLMEngine` driven by one background thread, used from asyncio.

The engine thread owns the engine: it takes submitted and aborted requests from a queue, runs
steps while there is work and sleeps on an event when there is none (no busy loop). Each
request's outputs go to the asyncio queue of the coroutine that submitted it, through
``loop.call_soon_threadsafe``. If a step raises, the thread records the error, fails every
pending request with it and stops; :attr:`healthy` then turns false (``/health`` says 503).
:meth:`AsyncEngine.drain` (a preemption notice) stops admitting and ends every request with
:class:`EngineDrainingError` carrying its tokens, once their KV is written through the daemon.
:meth:`AsyncEngine.end_session` runs :meth:`LLMEngine.end_session` on the engine thread, the one
that owns the daemon client.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import AsyncIterator, Sequence

from asymcache.engine.engine import Drained, LLMEngine, RequestOutput
from asymcache.engine.sampling import SamplingParams, check_session

log = logging.getLogger(__name__)
_IDLE_WAIT_S = 0.5
_STALLED_WAIT_S = 0.005


class EngineDeadError(RuntimeError):
    """The engine thread stopped after an error; no request can be served."""


class EngineBusyError(RuntimeError):
    """Too many requests wait to start (``EngineConfig.max_waiting_requests``); retry later."""


class EngineDrainingError(RuntimeError):
    """The engine is draining (its host goes away): the request was ended, or not started.
    ``token_ids`` are the output ids it had generated (resume with them elsewhere) and ``text``
    their text; ``choices``, those of every prompt of a batch (the HTTP server fills it)."""

    def __init__(self, message: str, token_ids: list[int] | None = None, text: str = "",
                 choices: list[tuple[list[int], str]] | None = None) -> None:
        super().__init__(message)
        self.token_ids = list(token_ids or [])
        self.text = text  # of ``token_ids``, as the engine detokenized them
        self.choices = choices  # (token ids, text) per prompt


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
        self.draining = False  # set by drain(): nothing new is admitted
        self.drained: Drained | None = None  # what the drain did, once done

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
        """Raise :class:`EngineDrainingError` while draining, :class:`EngineBusyError` (saying
        why) while ``max_waiting_requests`` or more requests wait to start."""
        if self.draining:
            raise EngineDrainingError("the engine is draining: send the request to another "
                                      "engine")
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

    async def drain(self, deadline_s: float) -> Drained:
        """Stop admitting, write every request's KV through the daemon within ``deadline_s``
        and end each request with :class:`EngineDrainingError` carrying its tokens
        (:meth:`LLMEngine.drain`). A second call waits for the first drain's result."""
        self.draining = True
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._cmds.put(("drain", deadline_s, done))
        self._wake.set()
        return await asyncio.wrap_future(done)

    async def end_session(self, prompt_cache_key: str, cache_salt: str = "") -> bool:
        """:meth:`LLMEngine.end_session`, run by the engine thread; ``ValueError`` naming a bad
        field (before anything is queued), :class:`EngineDeadError` once the engine stopped."""
        check_session(prompt_cache_key, cache_salt)
        if not self.healthy:
            raise EngineDeadError(f"the engine stopped: {self.error!r}")
        done: concurrent.futures.Future = concurrent.futures.Future()
        self._cmds.put(("end_session", prompt_cache_key, cache_salt, done))
        self._wake.set()
        return await asyncio.wrap_future(done)

    async def generate(self, request_id: str, prompt_ids: Sequence[int],
                       params: SamplingParams, resume: Sequence[int] = ()
                       ) -> AsyncIterator[RequestOutput]:
        """Submit a request and yield its outputs until the finished one (``resume``: see
        :meth:`LLMEngine.add_request`). Raises ``ValueError`` (bad prompt) before anything
        runs; leaving early aborts the request."""
        if not self.healthy:
            raise EngineDeadError(f"the engine stopped: {self.error!r}")
        if self.draining:
            self.check_room()
        self.engine.check_request(prompt_ids, params, resume)
        q: asyncio.Queue = asyncio.Queue()
        self._streams[request_id] = (asyncio.get_running_loop(), q)
        with self._adds_lock:
            self._pending_adds += 1
        self._cmds.put(("add", request_id, list(prompt_ids), params, list(resume)))
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
            self._fail_waiting()
            self.engine.close()

    def _fail_waiting(self) -> None:
        """Fail the commands whose callers wait on a future (drain, end_session): the thread
        that would run them is stopping."""
        while True:
            try:
                cmd = self._cmds.get_nowait()
            except queue.Empty:
                return
            done = cmd[-1]
            if isinstance(done, concurrent.futures.Future) and not done.done():
                done.set_exception(EngineDeadError("the engine is shutting down"))

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
            elif cmd[0] == "drain":
                self._run_drain(*cmd[1:])
            elif cmd[0] == "end_session":
                self._run_end_session(*cmd[1:])
            else:
                self.engine.abort(cmd[1])

    def _add(self, request_id: str, ids: list[int], params: SamplingParams,
             resume: list[int]) -> None:
        if self.draining:  # submitted before the drain was seen: never started here, so
            # no tokens (resend it as it was, its resume_token_ids included)
            self._send(request_id, EngineDrainingError("the engine is draining: send the "
                                                       "request to another engine"))
            return
        try:
            self.engine.add_request(request_id, ids, params, resume)
        except ValueError as e:
            self._send(request_id, e)

    def _run_drain(self, deadline_s: float, done: concurrent.futures.Future) -> None:
        if self.drained is None:
            report = self.engine.drain(deadline_s)
            log.info("drained %d requests in %.2fs: %d bytes written to the CPU tier, lower "
                     "tiers %s", len(report.token_ids), report.seconds, report.bytes_written,
                     "flushed" if report.flushed else "not confirmed in time")
            for rid, tokens in report.token_ids.items():
                self._send(rid, EngineDrainingError("the engine is draining: resume the "
                                                    "request elsewhere with its tokens", tokens,
                                                    report.texts.get(rid, "")))
            self.drained = report
        done.set_result(self.drained)

    def _run_end_session(self, prompt_cache_key: str, cache_salt: str,
                         done: concurrent.futures.Future) -> None:
        try:
            done.set_result(self.engine.end_session(prompt_cache_key, cache_salt))
        except BaseException as e:  # the caller hears of it; anything but a bad field is the
            done.set_exception(e)  # engine failing, as a failed step
            if not isinstance(e, ValueError):
                raise

    def _deliver(self, outputs: list[RequestOutput]) -> None:
        for out in outputs:
            self._send(out.request_id, out)

    def _send(self, request_id: str, item: RequestOutput | BaseException) -> None:
        target = self._streams.get(request_id)
        if target is not None:
            loop, q = target
            loop.call_soon_threadsafe(q.put_nowait, item)

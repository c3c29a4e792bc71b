"""``LLMEngine``: the step loop that ties scheduler, KV manager, runner and sampler together.

One :meth:`step` = (admit) → schedule → forward → (on CUDA: admit here, so the new requests'
fetch copies overlap the forward) → sample → advance, commit finished blocks, detokenize,
stop → tell the daemon what was committed. Not thread-safe: one thread drives an engine
(``asymcache.engine.async_engine`` does that for the HTTP server).
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from asymcache.engine.assembly import EngineParts, build_parts
from asymcache.engine.config import EngineConfig
from asymcache.engine.detokenizer import Detokenizer, finish_reason
from asymcache.engine.metrics import EngineMetrics, EngineState, EngineStateCollector
from asymcache.engine.request import Request, RequestStats, Status
from asymcache.engine.sampling import (
    Sampler,
    SamplingParams,
    advance_generator,
    check_session,
    make_generator,
)
from asymcache.engine.scheduler import ScheduledSeq, Scheduler

if TYPE_CHECKING:
    import torch


_SETTLE_S = 0.05  # going idle, wait this long at most for the last ACKs
_CLOSE_SETTLE_S = 1.0  # closing, as long (nothing waits when every ACK is in)

@dataclass(frozen=True)
class RequestOutput:
    """What a request has produced so far (``finished`` once it is done).

    ``text`` is the text safe to show (while running, a possible stop-string prefix is held
    back); ``token_ids`` are the output ids (a final stop token or EOS included); ``stats``
    has prompt tokens by source, bytes moved and times.
    """

    request_id: str
    prompt_token_ids: list[int]
    token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str | None
    stats: RequestStats
    logprobs: list[list[tuple[int, float]]] | None = None

    @property
    def cached_tokens(self) -> int:
        return self.stats.cached_tokens


@dataclass(frozen=True)
class Drained:
    """What a drain did (:meth:`LLMEngine.drain`): the requests it ended, each with the output
    ids generated so far (a resumed request's earlier ones first: resume with all of them) and
    their text,
    the bytes written to the CPU tier for them, and whether the daemon confirmed that its
    lower tiers (disk, remote) have them before the deadline."""

    token_ids: dict[str, list[int]]
    texts: dict[str, str]  # the text of those tokens as this engine detokenized them
    bytes_written: int
    flushed: bool
    seconds: float


@dataclass(frozen=True)
class StepInfo:
    """The shape of one step: decodes, prefill tokens, sequences, wall time."""

    decodes: int
    prefill_tokens: int
    seqs: int
    seconds: float


class _Laps:
    """Splits one step's wall time (``time.perf_counter``, whatever the engine's clock) into
    phases: each call charges the time since the previous one to ``phase``."""

    __slots__ = ("mark", "metrics")

    def __init__(self, metrics: EngineMetrics) -> None:
        self.metrics = metrics
        self.mark = time.perf_counter()

    def __call__(self, phase: str) -> None:
        now = time.perf_counter()
        self.metrics.on_phase(phase, now - self.mark)
        self.mark = now


class LLMEngine:
    """One engine over one model and one KV pool; see the module docstring."""

    def __init__(self, config: EngineConfig, registry: CollectorRegistry | None = None,
                 clock: Callable[[], float] = time.monotonic, parts: EngineParts | None = None
                 ) -> None:
        self.config = config
        self.clock = clock
        self.parts = parts or build_parts(config)
        p = self.parts
        self.tokenizer, self.info, self.kv, self.runner = p.tokenizer, p.info, p.kv, p.runner
        self.max_model_len = p.max_model_len
        self.metrics = EngineMetrics(registry or CollectorRegistry())
        self.metrics.registry.register(EngineStateCollector(self.state, {
            "model": str(config.model), "fingerprint": self.info.fingerprint,
            "reuse": config.reuse, "chunking": config.chunking, "device": config.device,
            "block_size": str(config.block_size), "blocks": str(self.kv.blocks.num_slots)}))
        self.scheduler = Scheduler(self.kv, p.chunker, config.max_num_seqs,
                                   on_preempt=lambda _: self.metrics.preemptions.inc())
        self.sampler = Sampler()
        self._requests: dict[str, Request] = {}
        self._detok: dict[str, Detokenizer] = {}
        self._resumed: dict[str, list[int]] = {}  # output ids of an interrupted run, by request
        self._seq = itertools.count()
        self._overlap = self.runner.device.type == "cuda"
        self.last_step = StepInfo(0, 0, 0, 0.0)
        self.tick_daemon()  # register now: the daemon sees this engine before traffic

    # ---- requests -------------------------------------------------------------------------
    def add_request(self, request_id: str, prompt: str | Sequence[int],
                    params: SamplingParams, resume: Sequence[int] = ()) -> Request:
        """Queue a request. ``prompt`` is text (tokenized with the model's BOS) or token ids.
        ``resume``: the output ids an interrupted run of the same request produced (a drained
        engine's ``engine_draining`` error); they join the context, ``params.max_tokens``
        counts them, and outputs continue after them exactly as the interrupted run would
        have (greedy; seeded sampling too: the generator is advanced past them, see
        :func:`~asymcache.engine.sampling.advance_generator`). Raises ``ValueError`` for an
        empty or over-long prompt, bad ids, nothing left to generate, or a taken id."""
        if request_id in self._requests:
            raise ValueError(f"request id {request_id!r} is already in use")
        ids = self.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)
        resume = list(resume)
        run = self.check_request(ids, params, resume)
        seq = next(self._seq)
        gen = make_generator(params, self.config.seed + seq)
        if gen is not None and resume:
            advance_generator(gen, len(resume), self.info.vocab_size)
        req = Request(request_id, ids + resume, run, self.kv.namespace(params.cache_salt),
                      self.clock(), seq, gen)
        detok = Detokenizer(self.tokenizer, run)
        if resume:
            detok.prime(resume)
            self._resumed[request_id] = resume
        self._requests[request_id] = req
        self._detok[request_id] = detok
        self.scheduler.add(req)
        return req

    def check_request(self, ids: Sequence[int], params: SamplingParams,
                      resume: Sequence[int] = ()) -> SamplingParams:
        """The parameters a request runs with (a resumed one: ``max_tokens`` less what it
        generated before); ``ValueError`` saying why it cannot run (as :meth:`check_prompt`,
        or nothing left to generate)."""
        run = params
        if resume:
            if len(resume) >= params.max_tokens:
                raise ValueError(f"resume_token_ids holds {len(resume)} tokens: max_tokens "
                                 f"({params.max_tokens}) leaves nothing to generate")
            run = replace(params, max_tokens=params.max_tokens - len(resume))
        self.check_prompt([*ids, *resume], run)
        return run

    def check_prompt(self, ids: Sequence[int], params: SamplingParams) -> None:
        """Raise ``ValueError`` saying why ``ids`` cannot run with ``params`` (and count it)."""
        why = self._why_bad(ids, params)
        if why is not None:
            self.metrics.rejected.inc()
            raise ValueError(why)

    def _why_bad(self, ids: Sequence[int], params: SamplingParams) -> str | None:
        if not ids:
            return "the prompt is empty"
        vocab = self.info.vocab_size
        if any(not isinstance(t, int) or isinstance(t, bool) or not 0 <= t < vocab for t in ids):
            return f"prompt token ids must be ints in [0, {vocab})"
        total = len(ids) + params.max_tokens
        if total > self.max_model_len:
            return (f"prompt ({len(ids)} tokens) + max_tokens ({params.max_tokens}) = {total} "
                    f"exceeds the maximum context length {self.max_model_len}")
        return None

    def abort(self, request_id: str) -> RequestOutput | None:
        """Stop a request now (its finished output has reason ``abort``); ``None`` if unknown."""
        req = self._requests.get(request_id)
        if req is None:
            return None
        req.finish_reason = "abort"
        out = self._finish(req, self.clock())
        self.kv.flush_commits()  # outside a step: its leases go now
        return out

    def end_session(self, prompt_cache_key: str, cache_salt: str = "") -> bool:
        """The client ended its session ``prompt_cache_key`` (of ``cache_salt``'s tenant):
        tell the daemon (SIGNAL ``end``, one-way), whose policy then lets the session's blocks
        that no other session used go first. Whether it was sent (not without a daemon, or
        while it is down: advice either way). ``ValueError`` naming a bad field."""
        check_session(prompt_cache_key, cache_salt)
        return self.kv.end_session(prompt_cache_key, cache_salt)

    def drain(self, deadline_s: float) -> Drained:
        """The host is going away: write the KV of every request (the blocks its prompt and
        its output so far filled) through the daemon to the lower tiers within
        ``deadline_s``, then end every request (running or waiting) with reason ``drain``.
        A client resumes each elsewhere with its prompt and :attr:`Drained.token_ids`
        (``add_request(resume=...)``); another engine sharing the remote tier finds the
        blocks. Blocks not written in time are recomputed there."""
        start = self.clock()
        for req in self.scheduler.running:
            self.kv.commit_ready(req)
        written, flushed = self.kv.drain(start + deadline_s, self.clock)
        tokens, texts = {}, {}
        for req in list(self._requests.values()):
            rid = req.request_id
            tokens[rid] = self._resumed.get(rid, []) + list(req.output_token_ids)
            # incremental text: a character split at the end is held back, as the engine
            # that resumes holds it back after priming (so the two texts join exactly)
            texts[rid] = self._detok[rid].text
            req.finish_reason = "drain"
            self._finish(req, self.clock())
        self.kv.flush_commits(force=True)  # their leases go now
        return Drained(tokens, texts, written, flushed, self.clock() - start)

    @property
    def has_unfinished(self) -> bool:
        return self.scheduler.has_work

    # ---- the step -------------------------------------------------------------------------
    def tick_daemon(self) -> None:
        """Register with the daemon if it answers and does not know this engine, give back
        unfilled CPU reservations (see ``CacheLink.tick``), drop purged tenants' blocks and
        tell the daemon whose new namespaces are (``KVManager.tell_tenants``). Called at
        construction, by every step, and by a driver with no work (``AsyncEngine``). Side
        effects: HELLO, CANCEL or TENANTS requests; nothing without a daemon endpoint."""
        if self.kv.link is not None:
            self.kv.link.tick(self.kv.held)
            self.kv.drop_purged()
            self.kv.tell_tenants()
            if not self.scheduler.has_work:
                self.kv.service()

    def step(self) -> list[RequestOutput]:
        """Run one step; returns an output for every request that got a token or finished.
        Its wall time is split into ``metrics.STEP_PHASES`` as it goes."""
        start = self.clock()
        lap = _Laps(self.metrics)
        self.tick_daemon()
        lap("daemon")
        if not (self._overlap and self.scheduler.running):
            self._admit(start)
            lap("admit")
        batch = self.scheduler.schedule(start)
        lap("schedule")
        outputs: list[RequestOutput] = []
        if batch:
            logits = self.runner.launch(batch)
            if self._overlap:  # admission runs while the device computes
                lap("model")
                self._admit(start)
                lap("admit")
            sampled = [s.request for s in batch if s.sample]
            tokens = self.sampler.sample(logits, [r.params for r in sampled],
                                         [r.generator for r in sampled])
            self._keep_logprobs(logits, sampled)
            lap("model")
            outputs = self._postprocess(batch, dict(zip(map(id, sampled), tokens, strict=True)))
            self.metrics.step_tokens.observe(sum(len(s.positions) for s in batch))
        elif self.scheduler.running or self.scheduler.waiting:
            self._admit(start)
            lap("admit")
        self.kv.flush_commits()
        lap("commit")
        if batch:  # what the chunker planned took this long (the idle settle below is not it)
            self.scheduler.chunker.observe(self.clock() - start)
        if not self.scheduler.has_work:  # going idle: write the last blocks through now
            self.kv.service(wait_s=_SETTLE_S)
            lap("settle")
        self._record(batch, self.clock() - start)
        return outputs

    def _record(self, batch: list[ScheduledSeq], seconds: float) -> None:
        decodes = sum(1 for s in batch if s.decode)
        tokens = sum(len(s.positions) for s in batch)
        self.last_step = StepInfo(decodes, tokens - decodes, len(batch), seconds)
        self.metrics.step.observe(seconds)

    def _keep_logprobs(self, logits: torch.Tensor, sampled: list[Request]) -> None:
        for row, req in enumerate(sampled):
            k = req.params.logprobs
            if k is not None:
                req.logprobs.append(self.sampler.top_logprobs(logits[row:row + 1], k)[0])

    def _admit(self, now: float) -> None:
        for req in self.scheduler.admit(now):
            if req.stats.first_scheduled == now and req.stats.preemptions == 0:
                self.metrics.on_admitted(req)

    def _postprocess(self, batch: list[ScheduledSeq], tokens: dict[int, int]
                     ) -> list[RequestOutput]:
        now = self.clock()
        outputs = []
        for s in batch:
            req = s.request
            req.advance(len(s.positions))
            self.kv.commit_ready(req)
            if not s.sample:
                continue
            outputs.append(self._append_token(req, tokens[id(req)], now))
        return outputs

    def _append_token(self, req: Request, token: int, now: float) -> RequestOutput:
        req.output_token_ids.append(token)
        req.stats.token_times.append(now)
        if req.stats.first_token is None:
            req.stats.first_token = now
        self.metrics.on_token(req)
        resumed = self._resumed.get(req.request_id)
        stopped = self._detok[req.request_id].add(
            req.output_token_ids if resumed is None else resumed + req.output_token_ids)
        reason = "stop" if stopped else finish_reason(
            token, len(req.output_token_ids), req.num_tokens, req.params,
            self.info.eos_token_ids, self.max_model_len)
        if reason is not None:
            req.finish_reason = reason
            return self._finish(req, now)
        return self._output(req)

    def _finish(self, req: Request, now: float) -> RequestOutput:
        if req.status is Status.RUNNING:
            self.kv.finish(req, now)
        self.scheduler.remove(req)
        req.status = Status.FINISHED
        req.stats.finished = now
        self.metrics.on_finished(req)
        out = self._output(req)
        del self._requests[req.request_id]
        del self._detok[req.request_id]
        self._resumed.pop(req.request_id, None)
        return out

    def _output(self, req: Request) -> RequestOutput:
        finished = req.status is Status.FINISHED
        text = self._detok[req.request_id].visible(finished)
        return RequestOutput(req.request_id, req.prompt_token_ids, list(req.output_token_ids),
                             text, finished, req.finish_reason, req.stats,
                             list(req.logprobs) if req.params.logprobs is not None else None)

    # ---- state ----------------------------------------------------------------------------
    def state(self) -> EngineState:
        """Levels for ``/metrics`` (read from another thread: a snapshot of plain ints)."""
        b = self.kv.blocks
        link = self.kv.link
        return EngineState(
            running=len(self.scheduler.running), waiting=len(self.scheduler.waiting),
            blocks_used=b.num_used, blocks_idle=b.num_idle, blocks_empty=b.num_empty,
            daemon_connected=None if link is None else link.connected,
            daemon_reconnects=0 if link is None else link.reconnects,
            daemon_errors=0 if link is None else link.errors,
            lookups_skipped=0 if link is None else link.lookups_skipped,
            overdue_steps=self.scheduler.chunker.overdue_steps)

    def close(self) -> None:
        """Release everything held with the daemon and close the link; the last blocks'
        write-through slots are filled first (waiting up to ``_CLOSE_SETTLE_S`` for the
        daemon's ACKs), so a closing engine leaves them in the CPU tier even on a busy host."""
        for req in list(self._requests.values()):
            self.abort(req.request_id)
        if self.kv.link is not None:
            self.kv.service(wait_s=_CLOSE_SETTLE_S)
            self.kv.link.close()

"""Replay a workload against an engine's step loop in this process, on the wall clock.

Open loop, with one causal rule: request ``i`` is due at ``t0 + arrival_s``, whatever the engine
is doing, except that a request of a session is never sent before the answer to the session's
previous request is complete (a client sends its next turn, or an agent its tool result, only
once it has the answer): it is then due at ``max(t0 + arrival_s, previous answer's last
token)``. Between two steps every due request is added, so a request that falls due during a
step waits for that step to end, as it would at a real server. Times are taken against the
*due* time, never against the moment the driver got to it, so TTFT includes all of it: the step
in flight, the queue in front of admission, and every prefill step it takes:

* ``ttft`` = first token − due time; ``tpot`` = (last token − first token) / (tokens − 1);
* the breakdown of TTFT: ``lag`` (due → added, the step in flight), ``queue`` (added → first
  admitted), ``prefill`` (admitted → first token);
* engine busy time = the summed wall time of steps that ran something;
* pool held = after each such step, the share of the GPU pool's slots that running requests
  hold (leased: neither idle nor empty), which no residency policy can give to others;
* a session's job latency = its last request's last token − its first request's due time.

The engine is driven greedy with EOS ignored, so every configuration generates the same number
of tokens per request and outputs can be compared token by token.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from asymcache.ops.e2e.workload import E2ERequest, Workload

if TYPE_CHECKING:
    from asymcache.engine.engine import LLMEngine, RequestOutput
    from asymcache.engine.request import Request

IDLE_SLEEP_S = 0.002
LEAD_S = 0.05  # the first request is due this long after the replay starts


@dataclass
class Outcome:
    """What one request saw (absolute times on the engine's monotonic clock)."""

    request_id: str
    due: float
    added: float
    token_ids: list[int]
    token_times: list[float]
    first_scheduled: float
    sources: dict[str, int]
    moved: dict[str, int]
    min_margin: float | None = None

    @property
    def ttft(self) -> float:
        return self.token_times[0] - self.due

    @property
    def tpot(self) -> float | None:
        n = len(self.token_times)
        return (self.token_times[-1] - self.token_times[0]) / (n - 1) if n > 1 else None


@dataclass
class Replay:
    """A whole replay: outcomes in workload order, per-step shapes, wall and busy seconds."""

    outcomes: list[Outcome]
    steps: list[tuple[int, int, float]] = field(default_factory=list)  # decodes, prefill, s
    wall_s: float = 0.0
    overdue_steps: int = 0  # steps whose split the TTFT deadline changed (ttft_slo_s)
    held: list[float] = field(default_factory=list)  # pool share held by requests, per step
    phase_s: dict[str, float] = field(default_factory=dict)  # step time by phase (STEP_PHASES)

    @property
    def busy_s(self) -> float:
        return sum(s for d, p, s in self.steps if d or p)

    @property
    def busy_share(self) -> float:
        return self.busy_s / self.wall_s if self.wall_s > 0 else 0.0


def replay(engine: LLMEngine, workload: Workload, *, margins: bool = False,
           on_done: Callable[[Outcome], None] | None = None,
           stall_s: float = 300.0, signals: bool = True, t0: float | None = None) -> Replay:
    """Run every request of ``workload`` through ``engine`` (see the module doc).

    ``margins`` asks for top-2 log-probabilities and keeps each request's smallest top-1 margin.
    ``signals``: send each request's client signals (its session's ``prompt_cache_key``,
    retention) and end a session after its last answer, as an API client would.
    ``t0``: the replay's start on the engine's clock, fixed beforehand (the oracle of the
    ``belady-bound`` configuration was written for it; ``RuntimeError`` if it has passed);
    default: ``LEAD_S`` from now.
    Raises ``TimeoutError`` if no request finishes for ``stall_s`` seconds while some are in
    the engine (counted from the last finish, or from the arrival that ended an idle spell).
    """
    clock = engine.clock
    if t0 is None:
        t0 = clock() + LEAD_S
    elif clock() > t0:
        raise RuntimeError(f"the replay was due to start at t0 {clock() - t0:.1f} s ago (the "
                           f"daemon and engine took longer to start than ops/e2e/oracle.py's "
                           f"LEAD_S allows)")
    after = previous_in_session(workload)  # request id -> its session's previous request id
    pending = [(t0 + r.arrival_s, i, r) for i, r in enumerate(workload.requests)]  # a heap
    waiting: dict[str, tuple[int, E2ERequest]] = {}  # previous request id -> its successor
    live: dict[str, tuple[E2ERequest, Request, float]] = {}
    done: dict[str, Outcome] = {}
    steps: list[tuple[int, int, float]] = []
    held: list[float] = []
    pool = engine.kv.blocks
    overdue_before = engine.state().overdue_steps
    phases_before = dict(engine.metrics.phase_seconds)
    last_progress = t0
    while pending or live or waiting:
        now = clock()
        while pending and pending[0][0] <= now:
            due, i, r = heapq.heappop(pending)
            prev = after.get(r.request_id)
            if prev is not None and prev not in done:  # its answer is not complete yet
                waiting[prev] = (i, r)
                continue
            live[r.request_id] = (r, engine.add_request(
                r.request_id, list(r.prompt),
                _params(r, margins, workload.name if signals else None)), due)
            last_progress = max(last_progress, now) if len(live) == 1 else last_progress
        if not live:
            if pending:
                time.sleep(min(1.0, max(0.0, pending[0][0] - clock())))
                continue
            raise RuntimeError(f"{len(waiting)} requests wait for answers that never came")
        outputs = engine.step()
        info = engine.last_step
        if info.seqs:
            steps.append((info.decodes, info.prefill_tokens, info.seconds))
            held.append(pool.num_used / pool.num_slots)
        for out in outputs:
            if out.finished:
                r, _, due = live.pop(out.request_id)
                done[r.request_id] = _outcome(out, due)
                nxt = waiting.pop(r.request_id, None)
                if nxt is not None:  # the session's next request may go now (or when due)
                    i, s = nxt
                    heapq.heappush(pending, (max(t0 + s.arrival_s, out.stats.token_times[-1]),
                                             i, s))
                key = r.cache_key(workload.name) if signals else None
                if r.session_end and key is not None:  # the client ends it after the answer
                    engine.end_session(key)
                last_progress = clock()
                if on_done is not None:
                    on_done(done[r.request_id])
        if not info.seqs:
            time.sleep(IDLE_SLEEP_S)
        if clock() - last_progress > stall_s:
            raise TimeoutError(f"no request finished for {stall_s:.0f} s; "
                               f"{len(live)} in the engine, {len(pending)} not yet due")
    wall = max(o.token_times[-1] for o in done.values()) - t0
    phases = {k: v - phases_before[k] for k, v in engine.metrics.phase_seconds.items()}
    return Replay([done[r.request_id] for r in workload.requests], steps, wall,
                  engine.state().overdue_steps - overdue_before, held, phases)


def previous_in_session(workload: Workload) -> dict[str, str]:
    """Request id -> the id of the previous request of its session (workload order)."""
    last: dict[int, str] = {}
    out: dict[str, str] = {}
    for r in workload.requests:
        if r.session >= 0:
            if r.session in last:
                out[r.request_id] = last[r.session]
            last[r.session] = r.request_id
    return out


def _params(r: E2ERequest, margins: bool, workload: str | None):  # -> SamplingParams
    """Greedy, fixed length, its TTL pin, and (``workload`` given: signals on) the client
    signals the request carries (its session's ``prompt_cache_key``, retention), as a client
    of the API would send them."""
    from asymcache.engine.sampling import SamplingParams

    return SamplingParams(temperature=0.0, max_tokens=r.max_tokens, ignore_eos=True,
                          pin_ttl_s=r.pin_ttl_s if r.pin_ttl_s > 0 else None,
                          logprobs=2 if margins else None,
                          prompt_cache_key=r.cache_key(workload) if workload else None,
                          prompt_cache_retention=r.retention_s if workload else 0.0)


def _outcome(out: RequestOutput, due: float) -> Outcome:
    st = out.stats
    sources = {"resident": st.resident_tokens, "fetched": st.fetched_tokens,
               "recomputed": st.recomputed_tokens, "new": st.new_tokens,
               "preempted_recompute": st.preempted_recompute_tokens}
    moved = {"fetched": st.bytes_fetched, "demoted": st.bytes_demoted,
             "offloaded": st.bytes_offloaded}
    margin = None
    if out.logprobs:
        margin = min(top[0][1] - top[1][1] for top in out.logprobs)
    return Outcome(out.request_id, due, st.arrival, list(out.token_ids), list(st.token_times),
                   st.first_scheduled if st.first_scheduled is not None else st.first_token,
                   sources, moved, margin)

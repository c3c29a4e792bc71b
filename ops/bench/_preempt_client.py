"""The client of ``asymcache bench preempt``: one streamed completion per request of the
workload, resent to another host in service when its host drains, every part timed.

What it does is what a router would do (docs/preemption.md): a part that ends with an
``engine_draining`` error (HTTP 503, or the SSE error event of a stream) is resent, the same
body with ``resume_token_ids`` = the error's ``token_ids``, to a host in service other than the
drained one; a 503 without tokens (the request reached a host that was already draining) is
resent as it was; a 429 is retried after a short wait; a connection that breaks (a host taken
back) is resent from the last drain's tokens, its partial text discarded. The final text is the
last drain's ``text`` followed by what the last part streamed. It follows the same protocol as
``asymcache.engine.resume.ResumingClient`` but keeps each part's timing and usage.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asymcache.engine.resume import DRAINING, EventStream
from asymcache.ops.bench._preempt_hosts import Fleet, Host
from asymcache.ops.e2e.workload import E2ERequest

MAX_PARTS = 20
BUSY_WAIT_S = 0.2
STREAM_TIMEOUT_S = 120.0

Clock = Callable[[], float]


class ClientError(RuntimeError):
    """A host answered with an error nothing can resume, or a request moved too often."""


@dataclass
class Part:
    """One attempt of a request at one host (times on the client's monotonic clock).

    ``outcome``: ``done``, ``drained`` (``token_ids``/``drain_text``: every token so far),
    ``busy`` (429), or ``lost`` (the connection broke)."""

    host: str
    sent: float
    resume_tokens: int
    moved: bool = False  # an earlier part drained or broke: the request moved to this one
    outcome: str = "lost"
    first: float | None = None
    end: float = 0.0
    text: str = ""
    token_ids: list[int] = field(default_factory=list)
    drain_text: str = ""
    usage: dict[str, Any] | None = None

    @property
    def recomputed_tokens(self) -> int | None:
        """Prompt tokens (prompt and resumed tokens) not served from a cache."""
        if self.usage is None:
            return None
        return self.usage["prompt_tokens"] - self.usage["prompt_tokens_details"]["cached_tokens"]


@dataclass
class Record:
    """A whole request: every part, the final text and the output tokens over all parts."""

    request_id: str
    due: float
    parts: list[Part]
    text: str
    completion_tokens: int

    @property
    def ttft(self) -> float:
        firsts = [p.first for p in self.parts if p.first is not None]
        return (min(firsts) if firsts else self.parts[-1].end) - self.due

    @property
    def latency(self) -> float:
        return self.parts[-1].end - self.due

    @property
    def resumed(self) -> Part | None:
        """The part that finished a request which had moved (after a drain, with or without
        tokens, or a lost connection), or None if it never moved."""
        last = self.parts[-1]
        return last if last.moved and last.outcome == "done" else None

    @property
    def hosts(self) -> list[str]:
        return [p.host for p in self.parts]


def body(req: E2ERequest, resume: list[int]) -> dict[str, Any]:
    """The request's body: greedy, EOS ignored, streamed with usage; ``resume``: tokens so far."""
    out: dict[str, Any] = {"prompt": list(req.prompt), "max_tokens": req.max_tokens,
                           "temperature": 0.0, "ignore_eos": True, "stream": True,
                           "stream_options": {"include_usage": True}}
    if resume:
        out["resume_token_ids"] = list(resume)
    return out


def complete(req: E2ERequest, due: float, fleet: Fleet, clock: Clock = time.monotonic) -> Record:
    """Run ``req`` to the end on the fleet, resending it as the module doc says."""
    tokens: list[int] = []
    before = ""  # the text of ``tokens``
    parts: list[Part] = []
    avoid: str | None = None
    for _ in range(MAX_PARTS):
        host = fleet.pick(avoid)
        try:
            part = stream_part(host, body(req, tokens), len(tokens), clock)
        finally:
            fleet.release(host)
        part.moved = any(p.outcome in ("drained", "lost") for p in parts)
        parts.append(part)
        if part.outcome == "done":
            done = len(tokens) + (part.usage or {}).get("completion_tokens", 0)
            return Record(req.request_id, due, parts, before + part.text, done)
        if part.outcome == "busy":
            time.sleep(BUSY_WAIT_S)
            continue
        if part.outcome == "drained" and part.token_ids:
            tokens, before = part.token_ids, part.drain_text
        avoid = host.name
    raise ClientError(f"{req.request_id} moved {MAX_PARTS} times without finishing")


def stream_part(host: Host, payload: dict[str, Any], resume_tokens: int, clock: Clock) -> Part:
    """One streamed attempt at ``host`` (see :class:`Part`)."""
    part = Part(host.name, clock(), resume_tokens)
    conn = http.client.HTTPConnection("127.0.0.1", host.port, timeout=STREAM_TIMEOUT_S)
    try:
        conn.request("POST", "/v1/completions", json.dumps(payload).encode(),
                     {"Content-Type": "application/json"})
        resp = conn.getresponse()
        if resp.status != 200:
            _refused(part, resp.status, _json(resp.read()))
            return part
        events = EventStream(resp)
        for event in events:
            _event(part, event, clock)
        if events.done and part.outcome == "lost":
            part.outcome = "done"
    except (OSError, http.client.HTTPException):
        part.outcome = "lost"
    finally:
        conn.close()
        part.end = clock()
    return part


def _event(part: Part, event: dict[str, Any], clock: Clock) -> None:
    error = event.get("error")
    if error is not None:
        if error.get("type") != DRAINING:
            raise ClientError(f"{part.host}: the stream failed: {error}")
        _drained(part, error)
        return
    for choice in event.get("choices", []):
        if part.first is None:
            part.first = clock()
        part.text += choice.get("text") or ""
    if event.get("usage"):
        part.usage = event["usage"]


def _refused(part: Part, status: int, reply: dict[str, Any]) -> None:
    error = reply.get("error", {})
    if status == 429:
        part.outcome = "busy"
    elif status == 503 and error.get("type") == DRAINING:
        _drained(part, error)
    else:
        raise ClientError(f"{part.host} answered {status}: {reply}")


def _drained(part: Part, error: dict[str, Any]) -> None:
    part.outcome = "drained"
    part.token_ids = list(error.get("token_ids") or [])
    part.drain_text = error.get("text") or ""


def _json(raw: bytes) -> dict[str, Any]:
    try:
        out = json.loads(raw)
    except ValueError:
        return {"error": {"type": "unreadable", "message": raw[:300].decode("utf-8", "replace")}}
    return out if isinstance(out, dict) else {"error": {"type": "unreadable", "message": out}}

"""OpenAI response bodies built from engine outputs (plain dicts, ready for JSON)."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from asymcache.engine.engine import RequestOutput


def usage(outs: Sequence[RequestOutput]) -> dict[str, Any]:
    """Token counts of a whole reply; ``cached_tokens`` = prompt tokens reused from a cache."""
    prompt = sum(len(o.prompt_token_ids) for o in outs)
    completion = sum(len(o.token_ids) for o in outs)
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": sum(o.cached_tokens for o in outs)}}


def completion_logprobs(out: RequestOutput, decode: Any) -> dict[str, Any] | None:
    """The legacy completions ``logprobs`` object (chosen token's log-probability first)."""
    if out.logprobs is None:
        return None
    tokens = [decode([t]) for t in out.token_ids]
    chosen = [dict(top).get(t) for t, top in zip(out.token_ids, out.logprobs, strict=False)]
    tops = [{decode([i]): lp for i, lp in top} for top in out.logprobs]
    offsets, at = [], 0
    for tok in tokens:
        offsets.append(at)
        at += len(tok)
    return {"tokens": tokens, "token_logprobs": chosen, "top_logprobs": tops,
            "text_offset": offsets}


def chat_logprobs(out: RequestOutput, decode: Any) -> dict[str, Any] | None:
    """The chat ``logprobs`` object: per output token its log-probability and top tokens."""
    if out.logprobs is None:
        return None
    content = []
    for tok, top in zip(out.token_ids, out.logprobs, strict=False):
        text = decode([tok])
        content.append({
            "token": text, "logprob": dict(top).get(tok), "bytes": list(text.encode()),
            "top_logprobs": [{"token": decode([i]), "logprob": lp,
                              "bytes": list(decode([i]).encode())} for i, lp in top]})
    return {"content": content}


def completion_body(rid: str, model: str, outs: Sequence[RequestOutput], decode: Any
                    ) -> dict[str, Any]:
    choices = [{"index": i, "text": o.text, "logprobs": completion_logprobs(o, decode),
                "finish_reason": o.finish_reason} for i, o in enumerate(outs)]
    return {"id": rid, "object": "text_completion", "created": int(time.time()), "model": model,
            "choices": choices, "usage": usage(outs)}


def chat_body(rid: str, model: str, out: RequestOutput, decode: Any) -> dict[str, Any]:
    choice = {"index": 0, "message": {"role": "assistant", "content": out.text},
              "logprobs": chat_logprobs(out, decode), "finish_reason": out.finish_reason}
    return {"id": rid, "object": "chat.completion", "created": int(time.time()),
            "model": model, "choices": [choice], "usage": usage([out])}


def chunk(rid: str, model: str, chat: bool, choices: list[dict[str, Any]],
          usage_: dict[str, Any] | None = None) -> str:
    """One server-sent event carrying a streaming chunk."""
    body: dict[str, Any] = {
        "id": rid, "object": "chat.completion.chunk" if chat else "text_completion",
        "created": int(time.time()), "model": model, "choices": choices}
    if usage_ is not None:
        body["usage"] = usage_
    return f"data: {json.dumps(body)}\n\n"


def delta_choice(index: int, text: str, finish: str | None, chat: bool, first: bool
                 ) -> dict[str, Any]:
    if not chat:
        return {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
    delta: dict[str, Any] = {"role": "assistant"} if first else {}
    if text or first:
        delta["content"] = text
    return {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}


def error_body(message: str, kind: str = "invalid_request_error", param: str | None = None,
               code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


def error_event(message: str, kind: str = "server_error") -> str:
    """One server-sent event carrying an OpenAI-style error body (a stream that fails midway)."""
    return f"data: {json.dumps(error_body(message, kind))}\n\n"


def draining_body(message: str, choices: Sequence[tuple[Sequence[int], str]]
                  ) -> dict[str, Any]:
    """The body of an ``engine_draining`` error (HTTP 503, or an SSE error event): each
    choice's output ids from the start of the request (an earlier run's too) and their text as
    the engine detokenized them (a character split at the end held back, as the engine that
    resumes holds it), to resend as ``resume_token_ids`` to another engine (``token_ids`` /
    ``text``: choice 0's; ``choices``: all of them)."""
    rows = [{"index": i, "token_ids": list(t), "text": text}
            for i, (t, text) in enumerate(choices)]
    body = error_body(message, "engine_draining", code="engine_draining")
    first = rows[0] if rows else {"token_ids": [], "text": ""}
    body["error"].update(token_ids=first["token_ids"], text=first["text"], choices=rows)
    return body


def draining_event(message: str, choices: Sequence[tuple[Sequence[int], str]]) -> str:
    return f"data: {json.dumps(draining_body(message, choices))}\n\n"


DONE = "data: [DONE]\n\n"

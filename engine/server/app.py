"""The OpenAI-compatible HTTP API (FastAPI): ``/v1/completions``, ``/v1/chat/completions``
(streaming by server-sent events), ``/v1/models``, ``/v1/prompt_cache/end``, ``/health`` and
``/metrics``.

A completion's ``prompt_cache_key`` and ``prompt_cache_retention`` go to the cache daemon (a
SIGNAL) when it finishes; ``POST /v1/prompt_cache/end`` tells it that the session of a
``prompt_cache_key`` is over (``AsyncEngine.end_session``; the body's ``cache_salt`` follows the
completions' rules).

A bad request (malformed JSON, a wrong or unknown field, an over-long prompt, more than
``openai_schema.MAX_PROMPTS`` prompts, an unsupported option, an unknown model) gets a 4xx with an
OpenAI-style error body saying what was wrong, and the server keeps serving. While
``EngineConfig.max_waiting_requests`` requests wait to start, a new one gets 429 (with
``Retry-After: 1``) and the reason. A client that disconnects while streaming aborts its
request. If the engine fails while a reply streams, the stream ends with an error event
(``{"error": ...}``, type ``server_error``) and ``[DONE]``; the server then answers 503.

With API keys (``ServerContext.keys``), every ``/v1`` request needs a key in force (401), a
generation runs with its key's ``cache_salt`` (another one in the body is 403), and the admin
routes (``GET /v1/admin/keys``) need an admin key (403): ``engine/server/auth.py``.

Drain (``POST /v1/admin/drain``, or SIGTERM to ``asymcache engine``): new requests get 503
(``engine_draining``, ``Retry-After``) and ``/health`` says ``draining``; every running request
ends, once its KV is written through the daemon, with a 503 (or, streaming, an SSE error event
and ``[DONE]``) whose body carries ``type: engine_draining`` and the token ids it generated;
resending the request with ``resume_token_ids`` (to another engine) continues it exactly
(docs/engine.md, "Drain and resume"). Without API keys the drain route answers local clients
only; with keys it needs an admin key.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from asymcache.engine.async_engine import (
    AsyncEngine,
    EngineBusyError,
    EngineDeadError,
    EngineDrainingError,
)
from asymcache.engine.engine import RequestOutput
from asymcache.engine.sampling import SamplingParams
from asymcache.engine.server import responses as R
from asymcache.engine.server.api_keys import ApiKeys
from asymcache.engine.server.auth import (
    Refused,
    RequireApiKey,
    cache_salt,
    require_admin,
    require_admin_or_local,
)
from asymcache.engine.server.openai_schema import (
    ChatCompletionRequest,
    CompletionRequest,
    DrainRequest,
    EndSessionRequest,
)


@dataclass(frozen=True)
class ServerContext:
    """What the routes need: the engine, its tokenizer, names, the metrics registry and the
    API keys (None: no key needed)."""

    engine: AsyncEngine
    tokenizer: Any
    model_name: str
    registry: CollectorRegistry
    max_model_len: int
    default_max_tokens: int = 256
    keys: ApiKeys | None = None


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.param = message, status, param


def create_app(ctx: ServerContext) -> FastAPI:
    """The FastAPI application over ``ctx`` (the caller starts and stops the engine)."""
    app = FastAPI(title="AsymCache engine", docs_url=None, redoc_url=None)
    app.state.keys = ctx.keys
    _add_error_handlers(app)
    if ctx.keys is not None:
        app.add_middleware(RequireApiKey, keys=ctx.keys)
        _add_admin_routes(app, ctx.keys)

    @app.get("/health")
    async def health() -> Response:
        if ctx.engine.draining:  # not ready: a router sends new requests elsewhere
            return JSONResponse({"status": "draining"}, 503, headers={"Retry-After": "1"})
        ok = ctx.engine.healthy
        return JSONResponse({"status": "ok" if ok else "engine stopped"}, 200 if ok else 503)

    @app.post("/v1/admin/drain", dependencies=[Depends(require_admin_or_local)])
    async def drain(body: DrainRequest) -> dict[str, Any]:
        report = await ctx.engine.drain(body.deadline_s)
        return {"drained_requests": len(report.token_ids),
                "bytes_written": report.bytes_written, "flushed": report.flushed,
                "seconds": round(report.seconds, 3)}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(ctx.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": ctx.model_name, "object": "model",
                                            "created": 0, "owned_by": "asymcache",
                                            "max_model_len": ctx.max_model_len}]}

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Response:
        _check(ctx, body)
        salt = cache_salt(request, body)
        prompts = [_encode(ctx, p) for p in _prompts(body)]
        params = replace(_params(body, body.max_tokens, body.logprobs), cache_salt=salt)
        if body.resume_token_ids and len(prompts) > 1:
            raise BadRequest("resume_token_ids resumes one prompt; this request has "
                             f"{len(prompts)}", param="resume_token_ids")
        return await _respond(ctx, request, "cmpl", prompts, params, body, chat=False)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        _check(ctx, body)
        salt = cache_salt(request, body)
        try:
            text = ctx.tokenizer.apply_chat_template(body.chat(), add_generation_prompt=True)
        except ValueError as e:
            raise BadRequest(str(e), param="messages") from None
        ids = ctx.tokenizer.encode(text, add_special_tokens=False)
        room = max(1, min(ctx.default_max_tokens, ctx.max_model_len - len(ids)))
        params = replace(_params(body, body.max_new_tokens(room), body.logprob_count()),
                         cache_salt=salt)
        return await _respond(ctx, request, "chatcmpl", [ids], params, body, chat=True)

    @app.post("/v1/prompt_cache/end")
    async def end_prompt_cache(body: EndSessionRequest, request: Request) -> dict[str, Any]:
        salt = cache_salt(request, body)
        try:
            await ctx.engine.end_session(body.prompt_cache_key, salt)
        except ValueError as e:
            raise BadRequest(str(e)) from None
        return {"prompt_cache_key": body.prompt_cache_key, "ended": True}

    return app


def _add_admin_routes(app: FastAPI, keys: ApiKeys) -> None:
    """Routes for administrators only (``require_admin``: an admin key, else 403)."""

    @app.get("/v1/admin/keys", dependencies=[Depends(require_admin)])
    async def key_summary() -> dict:
        return keys.summary()  # tenants and counts, never keys or salts


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refused)
    async def refused(_: Request, exc: Refused) -> JSONResponse:
        return exc.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts, param = [], None
        for err in exc.errors()[:5]:
            loc = [str(x) for x in err.get("loc", ()) if x != "body"]
            if err.get("type") == "json_invalid":
                parts.append(f"malformed JSON at character {''.join(loc) or '?'}: "
                             f"{err.get('ctx', {}).get('error', err.get('msg'))}")
            else:
                parts.append(f"{'.'.join(loc) or 'body'}: {err.get('msg')}")
                param = param or (loc[0] if loc else None)
        return JSONResponse(R.error_body("; ".join(parts) or "invalid request", param=param), 400)

    @app.exception_handler(BadRequest)
    async def bad(_: Request, exc: BadRequest) -> JSONResponse:
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        return JSONResponse(R.error_body(exc.message, kind, exc.param), exc.status)

    @app.exception_handler(EngineBusyError)
    async def busy(_: Request, exc: EngineBusyError) -> JSONResponse:
        return JSONResponse(R.error_body(str(exc), "rate_limit_error", code="queue_full"), 429,
                            headers={"Retry-After": "1"})

    @app.exception_handler(EngineDrainingError)
    async def draining(_: Request, exc: EngineDrainingError) -> JSONResponse:
        choices = exc.choices or [(exc.token_ids, exc.text)]
        return JSONResponse(R.draining_body(str(exc), choices), 503,
                            headers={"Retry-After": "1"})

    @app.exception_handler(EngineDeadError)
    async def dead(_: Request, exc: EngineDeadError) -> JSONResponse:
        return JSONResponse(R.error_body(str(exc), "server_error"), 503)


def _check(ctx: ServerContext, body: CompletionRequest | ChatCompletionRequest) -> None:
    if body.model is not None and body.model != ctx.model_name:
        raise BadRequest(f"model {body.model!r} does not exist; this server serves "
                         f"{ctx.model_name!r}", 404, "model")
    why = body.unsupported()
    if why is not None:
        raise BadRequest(why)


def _prompts(body: CompletionRequest) -> list[str | list[int]]:
    try:
        return body.prompts()
    except ValueError as e:
        raise BadRequest(str(e), param="prompt") from None


def _encode(ctx: ServerContext, prompt: str | list[int]) -> list[int]:
    return ctx.tokenizer.encode(prompt) if isinstance(prompt, str) else list(prompt)


def _params(body: Any, max_tokens: int, logprobs: int | None) -> SamplingParams:
    try:
        return body.sampling(max_tokens, logprobs)
    except ValueError as e:
        raise BadRequest(str(e)) from None


async def _respond(ctx: ServerContext, request: Request, prefix: str, prompts: list[list[int]],
                   params: SamplingParams, body: Any, chat: bool) -> Response:
    resume = list(body.resume_token_ids or [])
    for ids in prompts:  # every prompt is checked before any runs
        try:
            ctx.engine.engine.check_request(ids, params, resume)
        except ValueError as e:
            raise BadRequest(str(e), param="resume_token_ids" if "resume" in str(e)
                             else "prompt") from None
    ctx.engine.check_room()  # 429 while too many requests wait to start, 503 while draining
    rid = f"{prefix}-{uuid.uuid4().hex}"
    streams = [ctx.engine.generate(f"{rid}-{i}", ids, params, resume)
               for i, ids in enumerate(prompts)]
    try:
        firsts = list(await asyncio.gather(*(_first(s) for s in streams)))
    except BaseException:
        for s in streams:  # abort the prompts that did start
            await s.aclose()
        raise
    if body.stream:
        gen = _sse(ctx, rid, streams, firsts, chat, body.include_usage)
        return StreamingResponse(gen, media_type="text/event-stream")
    finals = await _finals(streams, firsts)
    decode = ctx.tokenizer.decode
    if chat:
        return JSONResponse(R.chat_body(rid, ctx.model_name, finals[0], decode))
    return JSONResponse(R.completion_body(rid, ctx.model_name, finals, decode))


async def _first(stream: AsyncIterator[RequestOutput]) -> RequestOutput:
    try:
        return await stream.__anext__()
    except ValueError as e:
        raise BadRequest(str(e), param="prompt") from None


async def _last(stream: AsyncIterator[RequestOutput], out: RequestOutput) -> RequestOutput:
    async for out in stream:  # noqa: B007 - the last one is the finished output
        pass
    return out


async def _finals(streams: list[AsyncIterator[RequestOutput]], firsts: list[RequestOutput]
                  ) -> list[RequestOutput]:
    """The finished output of every prompt; if a drain ended any of them, one
    :class:`EngineDrainingError` with every choice's tokens (finished ones whole)."""
    finals: list[RequestOutput | EngineDrainingError] = []
    for stream, first in zip(streams, firsts, strict=True):
        try:
            finals.append(await _last(stream, first))
        except EngineDrainingError as e:
            finals.append(e)
    drained = [f for f in finals if isinstance(f, EngineDrainingError)]
    if drained:
        raise EngineDrainingError(str(drained[0]), drained[0].token_ids, drained[0].text,
                                  choices=[(list(f.token_ids), f.text) for f in finals])
    return finals  # type: ignore[return-value]


async def _sse(ctx: ServerContext, rid: str, streams: list[AsyncIterator[RequestOutput]],
               firsts: list[RequestOutput], chat: bool, include_usage: bool) -> AsyncIterator[str]:
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i: int, stream: AsyncIterator[RequestOutput]) -> None:
        try:
            async for out in stream:
                await queue.put((i, out))
        except Exception as e:  # the engine died (EngineDeadError) or the request failed
            await queue.put((i, e))

    for i, out in enumerate(firsts):
        queue.put_nowait((i, out))
    tasks = [asyncio.create_task(pump(i, s))
             for i, s in enumerate(streams) if not firsts[i].finished]
    sent, finals = [0] * len(streams), {}
    drained: dict[int, tuple[list[int], str]] = {}  # choices a drain ended: tokens, text
    try:
        while len(finals) + len(drained) < len(streams):
            i, out = await queue.get()
            if isinstance(out, EngineDrainingError):  # the others end at once too
                drained[i] = (out.token_ids, out.text)
                continue
            if isinstance(out, Exception):  # end the stream: an error event, then [DONE]
                yield R.error_event(f"generation failed: {out}")
                yield R.DONE
                return
            delta, sent[i] = out.text[sent[i]:], len(out.text)
            choice = R.delta_choice(i, delta, out.finish_reason if out.finished else None,
                                    chat, first=len(out.token_ids) <= 1)
            yield R.chunk(rid, ctx.model_name, chat, [choice])
            if out.finished:
                finals[i] = out
        if drained:  # resumable: every choice's tokens (a finished one's whole)
            choices = [(finals[j].token_ids, finals[j].text) if j in finals else drained[j]
                       for j in range(len(streams))]
            yield R.draining_event("the engine is draining: resume the request elsewhere "
                                   "with its tokens", choices)
            yield R.DONE
            return
        if include_usage:
            yield R.chunk(rid, ctx.model_name, chat, [], R.usage(list(finals.values())))
        yield R.DONE
    finally:
        for task in tasks:
            task.cancel()

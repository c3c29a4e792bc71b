"""OpenAI-compatible request bodies (pydantic) and their translation to ``SamplingParams``.

Fields follow the OpenAI API, plus the extensions vLLM users know (``top_k``, ``ignore_eos``,
``stop_token_ids``, ``cache_salt``), ``pin_ttl_s`` (keep the request's blocks cached that
long after it ends: agents between tool calls), OpenAI's ``prompt_cache_key`` (the client's
session) and ``prompt_cache_retention`` (``"in_memory"``, ``"24h"`` or seconds: how long to
keep the prefix), both told to the cache daemon when the request ends, and
``resume_token_ids`` (the tokens an interrupted run generated: the ``token_ids`` of an
``engine_draining`` error; the reply then holds only what follows them). Unknown fields are
refused (400), and so are OpenAI fields this engine cannot honour with a non-default value
(``n > 1``, penalties, ``logit_bias``, ``echo``, tools, JSON response formats): silently
ignoring them would change what the caller asked for.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from asymcache.engine.sampling import (
    SamplingParams,
    cache_salt_problem,
    prompt_cache_key_problem,
    retention_seconds,
)

MAX_PROMPTS = 64  # prompts in one /v1/completions request (a larger batch gets 400)


def _prompt_cache_key(key: str) -> str:
    problem = prompt_cache_key_problem(key)
    if problem is not None:
        raise ValueError(f"prompt_cache_key {problem}")
    return key


def _cache_salt(salt: str) -> str:
    problem = cache_salt_problem(salt)
    if problem is not None:
        raise ValueError(f"cache_salt {problem}")
    return salt


def _retention(value: Any) -> float:
    return 0.0 if value is None else retention_seconds(value)


PromptCacheKey = Annotated[str, AfterValidator(_prompt_cache_key)]
Retention = Annotated[float, BeforeValidator(_retention)]  # seconds once validated
CacheSalt = Annotated[str, AfterValidator(_cache_salt)]


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    include_usage: bool = False


class _Common(BaseModel):
    """Fields shared by both endpoints."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    temperature: float = Field(1.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0)
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    logit_bias: dict[str, float] | None = None
    user: str | None = None
    top_k: int = 0
    ignore_eos: bool = False
    stop_token_ids: list[int] = Field(default_factory=list)
    cache_salt: str = ""
    pin_ttl_s: float | None = Field(None, gt=0.0)
    prompt_cache_key: PromptCacheKey | None = None
    prompt_cache_retention: Retention = 0.0
    resume_token_ids: list[int] | None = None  # an interrupted run's output (engine_draining)

    def unsupported(self) -> str | None:
        """Why this request cannot be honoured, or ``None``."""
        if self.n != 1:
            return "only n=1 is supported"
        if self.presence_penalty or self.frequency_penalty or self.logit_bias:
            return "presence_penalty, frequency_penalty and logit_bias are not supported"
        return None

    def sampling(self, max_tokens: int, logprobs: int | None) -> SamplingParams:
        """The engine's parameters (raises ``ValueError`` naming a bad field)."""
        return SamplingParams(
            max_tokens=max_tokens, temperature=self.temperature, top_p=self.top_p,
            top_k=self.top_k, seed=self.seed, stop=tuple(_as_list(self.stop)),
            stop_token_ids=tuple(self.stop_token_ids), ignore_eos=self.ignore_eos,
            cache_salt=self.cache_salt, pin_ttl_s=self.pin_ttl_s, logprobs=logprobs,
            prompt_cache_key=self.prompt_cache_key,
            prompt_cache_retention=self.prompt_cache_retention)

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage


class CompletionRequest(_Common):
    """``POST /v1/completions``: a prompt is text or token ids; a list of them is a batch."""

    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int = Field(16, ge=1)
    logprobs: int | None = Field(None, ge=0, le=20)
    echo: bool = False
    suffix: str | None = None
    best_of: int | None = None

    def unsupported(self) -> str | None:
        if self.echo or self.suffix or (self.best_of not in (None, 1)):
            return "echo, suffix and best_of are not supported"
        return super().unsupported()

    def prompts(self) -> list[str | list[int]]:
        """The batch of prompts (at least one, at most :data:`MAX_PROMPTS`)."""
        p = self.prompt
        if isinstance(p, str):
            return [p]
        if not p:
            raise ValueError("prompt must not be empty")
        if all(isinstance(x, int) for x in p):
            return [list(p)]  # type: ignore[arg-type]
        if len(p) > MAX_PROMPTS:
            raise ValueError(f"prompt holds {len(p)} prompts; at most {MAX_PROMPTS} per request")
        return list(p)  # type: ignore[arg-type]


class DrainRequest(BaseModel):
    """``POST /v1/admin/drain``: write every request's KV through the daemon within
    ``deadline_s``, then end each with an ``engine_draining`` error carrying its tokens."""

    model_config = ConfigDict(extra="forbid")
    deadline_s: float = Field(25.0, gt=0.0, le=600.0)


class EndSessionRequest(BaseModel):
    """``POST /v1/prompt_cache/end``: the client's session ``prompt_cache_key`` is over (its
    cached blocks that no other session used may go first); ``cache_salt`` as on completions."""

    model_config = ConfigDict(extra="forbid")
    prompt_cache_key: PromptCacheKey
    cache_salt: CacheSalt = ""


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text for part in self.content)


class ChatCompletionRequest(_Common):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None

    def unsupported(self) -> str | None:
        if self.tools or self.tool_choice not in (None, "none"):
            return "tools are not supported"
        if self.response_format not in (None, {"type": "text"}):
            return "response_format other than text is not supported"
        return super().unsupported()

    def max_new_tokens(self, default: int) -> int:
        return self.max_completion_tokens or self.max_tokens or default

    def logprob_count(self) -> int | None:
        return (self.top_logprobs or 1) if self.logprobs else None

    def chat(self) -> list[dict[str, str]]:
        return [{"role": m.role, "content": m.text()} for m in self.messages]


def _as_list(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)

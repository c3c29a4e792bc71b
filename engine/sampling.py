"""Sampling parameters and the sampler that turns one step's logits into next tokens.

``SamplingParams`` is what a user passes per request (vLLM-style names). ``Sampler`` takes the
logits rows of one step and each row's parameters and generator, and returns one token id per
row: greedy rows use ``argmax`` on the device; the others apply temperature, top-k and top-p and
draw from a per-request ``torch.Generator`` (so a seed gives the same tokens whatever the batch).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from asymcache.cacheserver.protocol.wire_types import SALT_MAX_BYTES

PROMPT_CACHE_KEY_MAX_BYTES = 256  # OpenAI's prompt_cache_key: a session or affinity key
# prompt_cache_retention by name, in seconds; "in-memory" is what one client release sent
RETENTION_NAMES = {"in_memory": 0.0, "in-memory": 0.0, "24h": 86400.0}


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one request's output and when to stop.

    ``temperature == 0`` is greedy. ``top_k <= 0`` and ``top_p == 1`` disable those filters.
    ``stop`` strings end the output (the stop string is cut unless
    ``include_stop_str_in_output``); ``stop_token_ids`` and the model's EOS (unless
    ``ignore_eos``) end it too. ``cache_salt`` separates tenants' cached blocks;
    ``pin_ttl_s`` keeps the request's blocks cached that many seconds after it finishes (agent
    sessions between tool calls). ``prompt_cache_key`` names the client's session (1 to
    :data:`PROMPT_CACHE_KEY_MAX_BYTES` bytes of UTF-8) and ``prompt_cache_retention`` asks the
    daemon to keep the request's blocks that many seconds (0: no extra retention; the OpenAI
    names of :data:`RETENTION_NAMES` are accepted and stored as seconds): both go to the daemon
    as a SIGNAL when the request finishes (``KVManager``). ``logprobs = k`` returns, for
    every output token, the ``k`` most likely tokens with their log-probabilities (before
    temperature and filters).
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    cache_salt: str = ""
    pin_ttl_s: float | None = None
    logprobs: int | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: float = 0.0  # seconds ("in_memory" / "24h" accepted)

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        _check_int("max_tokens", self.max_tokens, 1)
        _check_int("top_k", self.top_k, None)
        if not isinstance(self.temperature, int | float) or not 0.0 <= self.temperature <= 100.0:
            raise ValueError(f"SamplingParams.temperature must be in [0, 100], got "
                             f"{self.temperature!r}")
        if not isinstance(self.top_p, int | float) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"SamplingParams.top_p must be in (0, 1], got {self.top_p!r}")
        if self.seed is not None:
            _check_int("seed", self.seed, 0)
        if self.logprobs is not None:
            _check_int("logprobs", self.logprobs, 0)
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise ValueError(f"SamplingParams.stop must hold non-empty strings, got {self.stop!r}")
        if any(t < 0 for t in self.stop_token_ids):
            raise ValueError("SamplingParams.stop_token_ids must be non-negative token ids")
        problem = cache_salt_problem(self.cache_salt)
        if problem is not None:
            raise ValueError(f"SamplingParams.cache_salt {problem}")
        if self.pin_ttl_s is not None and not (
            isinstance(self.pin_ttl_s, int | float) and self.pin_ttl_s > 0
        ):
            raise ValueError(f"SamplingParams.pin_ttl_s must be a positive number of seconds, "
                             f"got {self.pin_ttl_s!r}")
        self._check_prompt_cache()

    def _check_prompt_cache(self) -> None:
        if self.prompt_cache_key is not None:
            problem = prompt_cache_key_problem(self.prompt_cache_key)
            if problem is not None:
                raise ValueError(f"SamplingParams.prompt_cache_key {problem}")
        retention = self.prompt_cache_retention
        if isinstance(retention, int | float) and not isinstance(retention, bool) \
                and retention == 0:
            object.__setattr__(self, "prompt_cache_retention", 0.0)
            return
        try:
            object.__setattr__(self, "prompt_cache_retention", retention_seconds(retention))
        except ValueError as e:
            raise ValueError(f"SamplingParams.{e}") from None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


def prompt_cache_key_problem(key: object) -> str | None:
    """What is wrong with ``key`` as a ``prompt_cache_key`` (1 to
    :data:`PROMPT_CACHE_KEY_MAX_BYTES` bytes of UTF-8), or None."""
    return _text_problem(key, 1, PROMPT_CACHE_KEY_MAX_BYTES)


def cache_salt_problem(salt: object) -> str | None:
    """What is wrong with ``salt`` as a ``cache_salt`` (at most ``SALT_MAX_BYTES`` of UTF-8),
    or None."""
    return _text_problem(salt, 0, SALT_MAX_BYTES)


def _text_problem(value: object, min_bytes: int, max_bytes: int) -> str | None:
    if not isinstance(value, str):
        return f"must be a string, got {type(value).__name__}"
    try:
        size = len(value.encode("utf-8"))
    except UnicodeEncodeError:
        return "must be valid Unicode text (it holds a lone surrogate)"
    if not min_bytes <= size <= max_bytes:
        span = f"at most {max_bytes}" if min_bytes == 0 else f"{min_bytes} to {max_bytes}"
        return f"must be {span} bytes in UTF-8, got {size}"
    return None


def check_session(prompt_cache_key: object, cache_salt: object = "") -> None:
    """``ValueError`` naming the field when ``prompt_cache_key`` or ``cache_salt`` cannot
    name a client session (``LLMEngine.end_session``)."""
    for name, problem in (("prompt_cache_key", prompt_cache_key_problem(prompt_cache_key)),
                          ("cache_salt", cache_salt_problem(cache_salt))):
        if problem is not None:
            raise ValueError(f"{name} {problem}")


def retention_seconds(value: object) -> float:
    """Seconds of a ``prompt_cache_retention``: a name of :data:`RETENTION_NAMES` or a finite
    number of seconds > 0; ``ValueError`` naming the field otherwise."""
    if isinstance(value, str) and value in RETENTION_NAMES:
        return RETENTION_NAMES[value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:
            seconds = math.inf
        if 0 < seconds < math.inf:
            return seconds
    try:
        shown = repr(value)[:80]
    except ValueError:  # an int too long to print
        shown = type(value).__name__
    raise ValueError(f'prompt_cache_retention must be "in_memory", "24h" or a finite number of '
                     f"seconds > 0, got {shown}")


def _check_int(name: str, value: object, minimum: int | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"SamplingParams.{name} must be an int, got {value!r}")
    if minimum is not None and value < minimum:
        raise ValueError(f"SamplingParams.{name} must be >= {minimum}, got {value}")


def make_generator(params: SamplingParams, fallback_seed: int) -> torch.Generator | None:
    """A CPU generator for a non-greedy request (seeded by ``params.seed`` or the fallback)."""
    if params.greedy:
        return None
    gen = torch.Generator(device="cpu")
    gen.manual_seed(params.seed if params.seed is not None else fallback_seed)
    return gen


def advance_generator(gen: torch.Generator, draws: int, vocab_size: int) -> None:
    """Advance ``gen`` past ``draws`` sampled tokens, as :meth:`Sampler.sample` would have:
    each draw is one ``torch.multinomial`` of one sample over the vocabulary, whose use of the
    generator depends on the vocabulary's size only, not on the probabilities
    (``tests/engine/test_sampling.py`` checks it on the installed torch). A resumed request
    (``LLMEngine.add_request(resume=...)``) thus samples what the interrupted run would have."""
    uniform = torch.full((vocab_size,), 1.0 / vocab_size)
    for _ in range(draws):
        torch.multinomial(uniform, 1, generator=gen)


class Sampler:
    """Picks one token per logits row; see the module docstring."""

    def sample(
        self,
        logits: torch.Tensor,
        params: Sequence[SamplingParams],
        generators: Sequence[torch.Generator | None],
    ) -> list[int]:
        """``logits [N, V]`` (any float dtype, any device) → ``N`` token ids.

        ``generators[i]`` must be set for every non-greedy row; it advances by one draw.
        """
        if logits.dim() != 2 or not logits.shape[0] == len(params) == len(generators):
            raise ValueError(f"logits {tuple(logits.shape)} do not match {len(params)} params")
        out = logits.argmax(dim=-1).tolist()
        random_rows = [i for i, p in enumerate(params) if not p.greedy]
        if random_rows:
            probs = self._probs(logits[random_rows].float().cpu(), [params[i] for i in random_rows])
            for j, i in enumerate(random_rows):
                gen = generators[i]
                if gen is None:
                    raise ValueError(f"row {i} samples with temperature but has no generator")
                out[i] = int(torch.multinomial(probs[j], 1, generator=gen).item())
        return out

    @staticmethod
    def top_logprobs(logits: torch.Tensor, k: int) -> list[list[tuple[int, float]]]:
        """The ``k`` most likely tokens of each row ``[N, V]`` with their log-probabilities
        (of the raw logits), most likely first."""
        logp = torch.log_softmax(logits.float(), dim=-1)
        values, ids = torch.topk(logp, min(k, logp.shape[-1]), dim=-1)
        return [list(zip(i, v, strict=True)) for i, v in zip(ids.tolist(), values.tolist(),
                                                              strict=True)]

    @staticmethod
    def _probs(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
        """Filtered probabilities ``[n, V]`` float32 after temperature, top-k and top-p."""
        temps = torch.tensor([p.temperature for p in params], dtype=torch.float32)
        logits = logits / temps.unsqueeze(1)
        vocab = logits.shape[1]
        for row, p in enumerate(params):
            if 0 < p.top_k < vocab:
                kth = torch.topk(logits[row], p.top_k).values[-1]
                logits[row][logits[row] < kth] = float("-inf")
            if p.top_p < 1.0:
                logits[row] = _top_p_filter(logits[row], p.top_p)
        return torch.softmax(logits, dim=-1)


def _top_p_filter(row: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of tokens whose probability reaches ``top_p`` (at least one)."""
    sorted_logits, order = torch.sort(row, descending=True)
    cum = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    drop = cum - torch.softmax(sorted_logits, dim=-1) >= top_p
    drop[0] = False
    out = row.clone()
    out[order[drop]] = float("-inf")
    return out

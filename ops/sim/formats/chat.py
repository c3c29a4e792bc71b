"""Generated multi-turn chat: sessions with a shared system prompt and growing history.

Sessions start as a Poisson process (``session_rate`` per second). Each picks one of
``prompts`` shared system prompts (Zipf ``zipf_a``), then runs a geometric number of turns (mean
``turns_mean``). A turn's prompt is the whole history plus a new user message (lognormal,
median ``user_tokens``); the reply (median ``output_tokens``) joins the history. Between turns
the user reads and types for an exponential time (mean ``think_s``) after the reply, which takes
``output_tokens · decode_s_per_token``. A session ends early when its context would pass
``max_context``. Every reply ends its turn (``stop="end_turn"``); the last turn of a session
carries ``session_end``; ``retention_s`` > 0 makes every request ask for that retention (a
client that asks its provider to keep its prefix). All parameters are ASSUMPTIONS of a
plausible chat service, fixed before any policy was tuned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from asymcache.ops.sim.formats.options import apply_options
from asymcache.ops.sim.formats.synth import (
    BlockIds,
    Session,
    SharedPrompts,
    end_session,
    lognormal_int,
)
from asymcache.ops.sim.trace import Request, Trace, register_format


@dataclass(frozen=True)
class ChatWorkload:
    """Parameters of the chat generator (see module doc)."""

    seed: int = 0
    sessions: int = 1000
    session_rate: float = 1.0
    block_tokens: int = 128
    prompts: int = 20
    zipf_a: float = 1.0
    prompt_min_tokens: int = 500
    prompt_max_tokens: int = 4000
    turns_mean: float = 6.0
    user_tokens: float = 150.0
    user_sigma: float = 1.0
    output_tokens: float = 300.0
    output_sigma: float = 0.7
    think_s: float = 60.0
    decode_s_per_token: float = 0.02
    max_context: int = 32768
    retention_s: float = 0.0


@register_format("chat")
def generate_chat(source: str, opts: dict[str, str]) -> Trace:
    """Generate a chat trace; ``opts`` override ``ChatWorkload`` fields by name."""
    p = apply_options(ChatWorkload(), opts)
    rng = np.random.default_rng(p.seed)
    ids = BlockIds()
    prompts = SharedPrompts(rng, ids, p.block_tokens, p.prompts, p.zipf_a,
                            p.prompt_min_tokens, p.prompt_max_tokens)
    requests: list[Request] = []
    start = 0.0
    for sid in range(p.sessions):
        start += float(rng.exponential(1.0 / p.session_rate))
        requests.extend(_session(rng, ids, prompts, sid, start, p))
    requests.sort(key=lambda r: (r.arrival_s, r.session))
    return Trace("chat", p.block_tokens, requests, description="generated multi-turn chat",
                 params=asdict(p))


def _session(rng: np.random.Generator, ids: BlockIds, prompts: SharedPrompts, sid: int,
             start: float, p: ChatWorkload) -> list[Request]:
    prompt = prompts.pick(rng)
    session = Session(sid, prompts.tokens[prompt], list(prompts.blocks(prompt)))
    turns = int(rng.geometric(1.0 / p.turns_mean))
    out, now = [], start
    for _ in range(turns):
        n_in = session.tokens + lognormal_int(rng, p.user_tokens, p.user_sigma)
        n_out = lognormal_int(rng, p.output_tokens, p.output_sigma)
        if n_in + n_out > p.max_context:
            break
        blocks = session.request_blocks(ids, n_in, p.block_tokens)
        out.append(Request(now, tuple(blocks), n_in, n_out, session=sid,
                           retention_s=p.retention_s, stop="end_turn"))
        session.advance(ids, blocks, n_in + n_out, p.block_tokens)
        now += n_out * p.decode_s_per_token + float(rng.exponential(p.think_s))
    return end_session(out)

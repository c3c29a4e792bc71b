"""The benchmark's three workloads, built from the simulator's generators and the Mooncake trace.

Every length is scaled down from the simulator's defaults so that one run fits this machine
(contexts of a few thousand tokens on the built-in model); the parameters below are fixed
ASSUMPTIONS, chosen before any configuration was measured:

* ``chat`` — ``asymcache.ops.sim.formats.chat``: sessions start as a Poisson process, share
  Zipf-popular
  system prompts, grow their history turn by turn and think between turns (lengths ÷ 4).
* ``mooncake`` — the Mooncake FAST'25 conversation trace. Whole conversations are sampled
  (requests grouped by their first two 512-token hash ids, groups drawn with a seeded generator
  until ``requests`` are reached), which keeps the trace's share of repeated blocks (about a
  third) where a time window would not; each 512-token block becomes 32 tokens, outputs ÷ 16,
  and arrivals are redrawn as a Poisson process in the trace's order.
* ``agent`` — ``asymcache.ops.sim.formats.agent``: long shared templates, many steps, tool-call
  pauses
  (lengths ÷ 8). TTL pins between steps are off unless ``agent_pin_ttl_s`` > 0: at this scale
  the GPU pool holds about two contexts, so the pins of three sessions paused at once would
  make every cached configuration wait for them to lapse (see docs/benchmarks.md).

``quick`` builds a small chat workload for ``--quick`` and the demo.

``longctx`` (not in the default run; ``--workloads longctx``) is offered beside them as a
workload where reuse dominates: the chat generator with few, long shared contexts (8 of
1536-3072 tokens, a document or a long system prompt), 40-token user turns and 32-token replies.
At the same tier fractions most of a prompt was seen before, so what a cache keeps decides the
TTFT. Its parameters were fixed before it was run with any configuration.

``agentlong`` (not in the default run; ``--workloads agentlong``) is shaped like coding agents:
sessions whose context grows by tool results (median 160 tokens) up to the longest context
the built-in model serves here (``max_context``), short tool pauses between steps (median 2 s,
at most 10 s), and long human pauses between a session's tasks (3 tasks, median 60 s, at most
300 s); a session starts every 15 s on average, so about ten are interleaved and the GPU pool
holds a few of them. Its parameters were fixed (2026-12-07) before it was run with any
configuration.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from asymcache.ops.e2e.workload import Mapping, Workload, from_trace
from asymcache.ops.sim.trace import Trace, load_trace

TRACES = Path(__file__).resolve().parents[3] / "shared" / "traces"
MOONCAKE = TRACES / "mooncake_fast25" / "conversation_trace.jsonl"
WORKLOADS = ("chat", "mooncake", "agent")
EXTRA_WORKLOADS = ("longctx", "agentlong")


@dataclass(frozen=True)
class SourceSpec:
    """What to build: how many requests, from which seed, for which engine."""

    requests: int = 160
    seed: int = 0
    block_size: int = 16
    max_context: int = 3584
    vocab_size: int = 2048
    mooncake_path: str = str(MOONCAKE)
    agent_pin_ttl_s: float = 0.0  # seconds of the generator's timeline; 0 = no pins


def build(name: str, spec: SourceSpec) -> Workload:
    """The workload ``name`` (``chat``, ``mooncake``, ``agent``, ``longctx``, ``agentlong`` or
    ``quick``) at rate 1/s."""
    builders: dict[str, Callable[[SourceSpec], Workload]] = {
        "chat": chat, "mooncake": mooncake, "agent": agent, "longctx": longctx,
        "agentlong": agentlong, "quick": quick}
    if name not in builders:
        raise ValueError(f"unknown workload {name!r}; known: {sorted(builders)}")
    return builders[name](spec)


def _mapping(spec: SourceSpec, tokens_per_block: int, output_scale: float,
             max_output: int) -> Mapping:
    return Mapping(tokens_per_block, output_scale, max_output, spec.max_context,
                   spec.vocab_size, spec.seed)


def _first(trace: Trace, n: int) -> Trace:
    return Trace(trace.name, trace.block_tokens, trace.requests[:n], trace.description,
                 trace.params)


def _chat(spec: SourceSpec, name: str, description: str, min_sessions: int, max_output: int,
          **params: object) -> Workload:
    """A workload of the simulator's chat generator: ``requests // 2`` sessions (at least
    ``min_sessions``) with ``params``; the first ``requests`` turns by arrival. Its tokens are
    seeded by the name ``chat`` whatever ``name`` the workload carries."""
    opts = (f"chat:seed={spec.seed},sessions={max(min_sessions, spec.requests // 2)},"
            f"session_rate=1,block_tokens={spec.block_size},"
            + ",".join(f"{k}={v}" for k, v in params.items()))
    trace = _first(load_trace(opts), spec.requests)
    workload = from_trace("chat", trace, _mapping(spec, spec.block_size, 1.0, max_output),
                          spec.block_size, description)
    return workload if name == "chat" else replace(workload, name=name)


def chat(spec: SourceSpec) -> Workload:
    """Multi-turn chat: ``requests // 2`` sessions over 20 system prompts; the first
    ``requests`` turns by arrival."""
    return _chat(spec, "chat", "multi-turn chat (ops.sim chat generator, lengths / 4)", 8, 96,
                 prompts=20, prompt_min_tokens=128, prompt_max_tokens=1024, user_tokens=40,
                 output_tokens=64, think_s=60, max_context=spec.max_context)


def longctx(spec: SourceSpec) -> Workload:
    """Chat over 8 long shared contexts (1536-3072 tokens): reuse dominates (module doc)."""
    return _chat(spec, "longctx", "chat over 8 long shared contexts (1.5k-3k tokens), reuse "
                 "dominates", 8, 48, prompts=8, prompt_min_tokens=1536, prompt_max_tokens=3072,
                 user_tokens=40, output_tokens=32, think_s=60, max_context=spec.max_context)


def quick(spec: SourceSpec) -> Workload:
    """A small chat workload: short prompts and replies, a few turns per session."""
    return _chat(spec, "chat-quick", "short multi-turn chat (--quick, demo)", 4, 24,
                 prompts=4, prompt_min_tokens=64, prompt_max_tokens=256, user_tokens=24,
                 output_tokens=16, turns_mean=3, think_s=20, max_context=768)


def agent(spec: SourceSpec) -> Workload:
    """Agent sessions: six templates, 3-8 steps, tool pauses (optional TTL pins); sessions
    start every 20 s on average, so few are active at once."""
    opts = (f"agent:seed={spec.seed},sessions={max(6, spec.requests // 4)},session_rate=0.05,"
            f"block_tokens={spec.block_size},templates=6,template_min_tokens=512,"
            f"template_max_tokens=1536,task_tokens=40,steps_min=3,steps_max=8,"
            f"action_tokens=16,tool_tokens=80,tool_s=4,tool_max_s=30,pin_ttl_s={spec.agent_pin_ttl_s},"
            f"max_context={spec.max_context}")
    trace = _first(load_trace(opts), spec.requests)
    return from_trace("agent", trace, _mapping(spec, spec.block_size, 1.0, 32), spec.block_size,
                      "agent sessions with tool-call pauses (ops.sim agent generator, / 8)")


def agentlong(spec: SourceSpec) -> Workload:
    """Coding-agent sessions: contexts grow by tool results to ``max_context`` over 3 tasks
    with long human pauses between them, about ten sessions interleaved (module doc)."""
    opts = (f"agent:seed={spec.seed},sessions={max(6, spec.requests // 8)},"
            f"session_rate={1 / 15},block_tokens={spec.block_size},templates=4,"
            f"template_min_tokens=768,template_max_tokens=1536,task_tokens=60,steps_min=3,"
            f"steps_max=6,action_tokens=24,tool_tokens=160,tool_s=2,tool_max_s=10,"
            f"tasks=3,human_s=60,human_max_s=300,pin_ttl_s={spec.agent_pin_ttl_s},"
            f"max_context={spec.max_context}")
    trace = _first(load_trace(opts), spec.requests)
    return from_trace("agentlong", trace, _mapping(spec, spec.block_size, 1.0, 32),
                      spec.block_size, "coding-agent sessions: contexts grow by tool results to "
                      "the longest context, tool pauses of seconds, human pauses of a minute")


def mooncake(spec: SourceSpec) -> Workload:
    """Conversations sampled from the Mooncake trace (see the module doc)."""
    full = load_trace(spec.mooncake_path, "mooncake")
    picked = sample_conversations(full, spec.requests, spec.seed)
    rng = np.random.default_rng(spec.seed)
    arrivals = np.cumsum(rng.exponential(1.0, size=len(picked)))
    reqs = [replace(r, arrival_s=float(t)) for r, t in zip(picked, arrivals, strict=True)]
    trace = Trace(full.name, full.block_tokens, reqs, full.description)
    return from_trace("mooncake", trace, _mapping(spec, 2 * spec.block_size, 1 / 16, 64),
                      spec.block_size, f"Mooncake conversation trace, {len(reqs)} requests of "
                      "sampled conversations, 512-token blocks -> 32 tokens, Poisson arrivals")


def sample_conversations(trace: Trace, n: int, seed: int) -> list:
    """Requests of whole conversations (same first two block ids), drawn until ``n`` are
    reached, in the trace's order."""
    groups: dict[tuple, list[int]] = {}
    for i, req in enumerate(trace.requests):
        key = tuple(req.blocks[:2]) if len(req.blocks) >= 2 else ("single", i)
        groups.setdefault(key, []).append(i)
    keys = list(groups)
    order = np.random.default_rng(seed).permutation(len(keys))
    chosen: list[int] = []
    for k in order:
        if len(chosen) >= n:
            break
        chosen.extend(groups[keys[k]])
    return [trace.requests[i] for i in sorted(chosen)[:n]]

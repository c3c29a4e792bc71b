"""Generated agent sessions: a long shared template, many steps, tool calls in between.

Sessions start as a Poisson process (``session_rate`` per second). Each uses one of
``templates`` agent templates (system prompt and tool definitions, Zipf ``zipf_a``, each
``template_min_tokens`` to ``template_max_tokens`` long) and a task (median ``task_tokens``),
then runs ``steps_min`` to ``steps_max`` steps. A step's prompt is the whole context; its output
is a tool call (median ``action_tokens``), the tool runs for a lognormal time (median
``tool_s``, at most ``tool_max_s``) and its result (median ``tool_tokens``) joins the context.
Every step but the last ends in a tool call (``stop="tool_use"``) and asks to pin its blocks for
``pin_ttl_s`` (the agent framework's PIN with TTL between tool calls). The last step emitted
(also when the context would pass ``max_context``) ends the session: ``session_end``,
``stop="end_turn"``, no pin. ``retention_s`` > 0 makes every step ask for that retention.
With ``tasks`` > 1 a session runs several tasks in one growing context: a task's last step
answers the human (``stop="end_turn"``, no pin), who comes back after a lognormal pause (median
``human_s``, at most ``human_max_s``) with the next task message (median ``task_tokens``).
Parameters are ASSUMPTIONS, fixed before any policy was tuned.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

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
class AgentWorkload:
    """Parameters of the agent generator (see module doc)."""

    seed: int = 0
    sessions: int = 150
    session_rate: float = 0.2
    block_tokens: int = 128
    templates: int = 8
    zipf_a: float = 1.0
    template_min_tokens: int = 4000
    template_max_tokens: int = 12000
    task_tokens: float = 300.0
    steps_min: int = 4
    steps_max: int = 24
    action_tokens: float = 120.0
    tool_tokens: float = 600.0
    tool_sigma: float = 1.0
    tool_s: float = 4.0
    tool_max_s: float = 120.0
    pin_ttl_s: float = 30.0
    decode_s_per_token: float = 0.02
    max_context: int = 65536
    retention_s: float = 0.0
    tasks: int = 1  # tasks per session: each runs steps_min..steps_max steps, then the agent
    # answers its human (stop "end_turn"), who comes back after a lognormal pause (median
    # human_s, at most human_max_s) with the next task in the same, growing context
    human_s: float = 120.0
    human_max_s: float = 3600.0


@register_format("agent")
def generate_agent(source: str, opts: dict[str, str]) -> Trace:
    """Generate an agent trace; ``opts`` override ``AgentWorkload`` fields by name."""
    p = apply_options(AgentWorkload(), opts)
    rng = np.random.default_rng(p.seed)
    ids = BlockIds()
    templates = SharedPrompts(rng, ids, p.block_tokens, p.templates, p.zipf_a,
                              p.template_min_tokens, p.template_max_tokens)
    requests: list[Request] = []
    start = 0.0
    for sid in range(p.sessions):
        start += float(rng.exponential(1.0 / p.session_rate))
        requests.extend(_session(rng, ids, templates, sid, start, p))
    requests.sort(key=lambda r: (r.arrival_s, r.session))
    return Trace("agent", p.block_tokens, requests, description="generated agent sessions",
                 params=asdict(p))


def _session(rng: np.random.Generator, ids: BlockIds, templates: SharedPrompts, sid: int,
             start: float, p: AgentWorkload) -> list[Request]:
    template = templates.pick(rng)
    session = Session(sid, templates.tokens[template], list(templates.blocks(template)))
    n_in = session.tokens + lognormal_int(rng, p.task_tokens, 0.7)
    out: list[Request] = []
    now, task_ends = start, []
    for task in range(p.tasks):
        if task:  # the human reads the answer, then sends the next task
            now += min(p.human_max_s, float(rng.lognormal(np.log(p.human_s), 1.0)))
            n_in = session.tokens + lognormal_int(rng, p.task_tokens, 0.7)
        steps = int(rng.integers(p.steps_min, p.steps_max + 1))
        full = False
        for _ in range(steps):
            n_out = lognormal_int(rng, p.action_tokens, 0.5)
            if n_in + n_out > p.max_context:
                full = True
                break
            blocks = session.request_blocks(ids, n_in, p.block_tokens)
            out.append(Request(now, tuple(blocks), n_in, n_out, p.pin_ttl_s, sid,
                               retention_s=p.retention_s, stop="tool_use"))
            tool_out = lognormal_int(rng, p.tool_tokens, p.tool_sigma)
            session.advance(ids, blocks, n_in + n_out + tool_out, p.block_tokens)
            tool_s = min(p.tool_max_s, float(rng.lognormal(np.log(p.tool_s), 1.0)))
            now += n_out * p.decode_s_per_token + tool_s
            n_in = session.tokens
        if out and (not task_ends or task_ends[-1] != len(out) - 1):
            task_ends.append(len(out) - 1)
        if full:
            break
    for i in task_ends[:-1]:  # a task's last step answers the human: no pin over the pause
        out[i] = replace(out[i], pin_ttl_s=0.0, stop="end_turn")
    return end_session(out)

"""Azure LLM inference traces (2023, Splitwise): ``TIMESTAMP,ContextTokens,GeneratedTokens``.

The trace has lengths only, so sessions and shared prefixes are synthesised by a seeded model
whose parameters (``AzureSynthesis``) were fixed before any policy was tuned and are the same
for the code and the conversation trace. For each request, in arrival order:

1. With probability ``p_followup`` it continues an open session: one of the ``candidates``
   most recently active sessions whose context (previous prompt + output) is no longer than
   this request's context, chosen uniformly. Its prompt then starts with that whole context.
   A session idle for more than ``session_idle_s`` is closed.
2. Otherwise (or when no session fits) it opens a session whose prompt starts with one of
   ``prompts`` shared system prompts (Zipf ``zipf_a`` popularity, each ``prompt_min_tokens`` to
   ``prompt_max_tokens`` long), cut to the request's length.
3. The rest of the recorded ``ContextTokens`` is new text; ``GeneratedTokens`` extends the
   session's context for its next turn.
"""

from __future__ import annotations

import csv
from collections import OrderedDict
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from asymcache.ops.sim.formats.options import apply_options
from asymcache.ops.sim.formats.synth import BlockIds, Session, SharedPrompts
from asymcache.ops.sim.trace import Request, Trace, register_format


@dataclass(frozen=True)
class AzureSynthesis:
    """Parameters of the session model (ASSUMPTIONS, fixed before tuning; see module doc)."""

    seed: int = 0
    block_tokens: int = 128
    prompts: int = 100
    zipf_a: float = 1.0
    prompt_min_tokens: int = 256
    prompt_max_tokens: int = 2048
    p_followup: float = 0.5
    session_idle_s: float = 600.0
    candidates: int = 32


@register_format("azure")
def load_azure(source: str, opts: dict[str, str]) -> Trace:
    """Read an Azure CSV and synthesise block ids with ``AzureSynthesis`` (options override)."""
    params = apply_options(AzureSynthesis(), opts)
    rows = _read_rows(Path(source))
    return Trace(Path(source).stem, params.block_tokens, synthesise(rows, params),
                 description=f"Azure trace {Path(source).name}, sessions synthesised",
                 params=asdict(params))


def synthesise(rows: list[tuple[float, int, int]], p: AzureSynthesis) -> list[Request]:
    """Requests for ``(arrival_s, context_tokens, generated_tokens)`` rows (see module doc)."""
    rng = np.random.default_rng(p.seed)
    ids = BlockIds()
    prompts = SharedPrompts(rng, ids, p.block_tokens, p.prompts, p.zipf_a,
                            p.prompt_min_tokens, p.prompt_max_tokens)
    open_sessions: OrderedDict[int, Session] = OrderedDict()
    out = []
    for arrival, n_in, n_out in rows:
        _close_idle(open_sessions, arrival - p.session_idle_s)
        session = _pick_followup(rng, open_sessions, n_in, p) if rng.random() < p.p_followup \
            else None
        if session is None:
            session = Session(len(out), 0)
            base = prompts.blocks(prompts.pick(rng))
            session.tokens, session.blocks = len(base) * p.block_tokens, list(base)
        blocks = session.request_blocks(ids, n_in, p.block_tokens)
        session.advance(ids, blocks, n_in + n_out, p.block_tokens)
        session.last_s = arrival
        open_sessions[session.sid] = session
        open_sessions.move_to_end(session.sid)
        out.append(Request(arrival, tuple(blocks), n_in, n_out, session=session.sid))
    return out


def _pick_followup(rng: np.random.Generator, sessions: OrderedDict[int, Session], n_in: int,
                   p: AzureSynthesis) -> Session | None:
    recent = []
    for sid in reversed(sessions):
        if len(recent) >= p.candidates:
            break
        recent.append(sessions[sid])
    fits = [s for s in recent if s.tokens <= n_in]
    return fits[int(rng.integers(len(fits)))] if fits else None


def _close_idle(sessions: OrderedDict[int, Session], before_s: float) -> None:
    while sessions:
        sid = next(iter(sessions))
        if sessions[sid].last_s >= before_s:
            break
        del sessions[sid]


def _read_rows(path: Path) -> list[tuple[float, int, int]]:
    rows = []
    with path.open(newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header != ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]:
            raise ValueError(f"{path}: expected the Azure header, got {header}")
        start = None
        for lineno, row in enumerate(reader, 2):
            try:
                when = datetime.fromisoformat(row[0]).timestamp()
                n_in, n_out = int(row[1]), int(row[2])
            except (ValueError, IndexError) as exc:
                raise ValueError(f"{path}:{lineno}: bad Azure row {row} ({exc})") from None
            start = when if start is None else start
            rows.append((when - start, max(1, n_in), n_out))
    return rows

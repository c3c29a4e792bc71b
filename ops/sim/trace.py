"""The trace model the simulator replays, and the registry of trace formats.

A ``Trace`` is a list of ``Request`` in arrival order. A request's prompt is ``input_tokens``
long; its *full* blocks (``block_tokens`` tokens each) are named by ``blocks``, block ids that
follow the prefix rule of chained keys: two requests share block ``i`` only if they share
blocks ``0..i`` too. The tokens past the last full block (the partial block, at least one token)
are always computed and never cached, as only full blocks are shared (DESIGN.md section 3).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Request:
    """One prompt: arrival time (seconds from the trace start) and its full-block ids.

    ``pin_ttl_s`` > 0 asks to pin the request's blocks for that long after it ends (an agent
    waiting on a tool call); ``session`` groups the turns of one conversation (-1: unknown).
    ``session_end`` marks the request after whose response the client ends its session;
    ``retention_s`` > 0 is how long the client asked its prefix to be kept; ``stop`` is how
    the response ended (``tool_use``, ``end_turn``, ...; for analysis only, "" = unknown).
    """

    arrival_s: float
    blocks: tuple[int, ...]
    input_tokens: int
    output_tokens: int = 0
    pin_ttl_s: float = 0.0
    session: int = -1
    session_end: bool = False
    retention_s: float = 0.0
    stop: str = ""


@dataclass
class Trace:
    """Requests in arrival order, the block size their block ids refer to, and where from."""

    name: str
    block_tokens: int
    requests: list[Request]
    description: str = ""
    params: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.block_tokens <= 0:
            raise ValueError(f"block_tokens must be > 0, got {self.block_tokens}")
        last = float("-inf")
        for i, req in enumerate(self.requests):
            if req.arrival_s < last:
                raise ValueError(f"{self.name}: request {i} arrives before request {i - 1}")
            if len(req.blocks) * self.block_tokens > req.input_tokens:
                raise ValueError(f"{self.name}: request {i} has more full blocks than tokens")
            last = req.arrival_s

    def __len__(self) -> int:
        return len(self.requests)

    def __iter__(self) -> Iterator[Request]:
        return iter(self.requests)

    @property
    def block_refs(self) -> int:
        return sum(len(r.blocks) for r in self.requests)

    @property
    def unique_blocks(self) -> int:
        return len({b for r in self.requests for b in r.blocks})

    def scaled(self, time_scale: float) -> Trace:
        """The same requests with every arrival time and duration (pin TTL, retention)
        multiplied by ``time_scale``."""
        if time_scale <= 0:
            raise ValueError(f"time_scale must be > 0, got {time_scale}")
        reqs = [replace(r, arrival_s=r.arrival_s * time_scale, pin_ttl_s=r.pin_ttl_s * time_scale,
                        retention_s=r.retention_s * time_scale) for r in self.requests]
        return Trace(self.name, self.block_tokens, reqs, self.description,
                     {**self.params, "time_scale": time_scale})


Loader = Callable[[str, dict[str, str]], Trace]
_FORMATS: dict[str, Loader] = {}
_SUFFIX_FORMATS = {".jsonl": "mooncake", ".csv": "azure"}


def register_format(name: str) -> Callable[[Loader], Loader]:
    """Decorator: ``load_trace(source, fmt=name)`` calls the decorated ``loader(source, opts)``."""

    def deco(fn: Loader) -> Loader:
        if name in _FORMATS:
            raise ValueError(f"trace format {name!r} registered twice")
        _FORMATS[name] = fn
        return fn

    return deco


def trace_formats() -> list[str]:
    return sorted(_FORMATS)


def load_trace(source: str, fmt: str | None = None, options: str = "") -> Trace:
    """Load a trace file or run a generator.

    ``source`` is a file (format from ``fmt``, else ``.jsonl`` = mooncake, ``.csv`` = azure) or a
    generator spec ``NAME[:key=value,...]`` such as ``chat:sessions=2000,seed=3``. ``options``
    (``key=value,...``) go to the format's loader as well (e.g. Azure synthesis parameters).
    """
    import asymcache.ops.sim.formats  # noqa: F401 - registers the built-in formats

    opts = parse_options(options)
    if _is_file(source):
        fmt = fmt or _SUFFIX_FORMATS.get(Path(source).suffix)
        if fmt is None:
            raise ValueError(f"cannot tell the format of {source!r}; pass one of {trace_formats()}")
    else:
        name, _, rest = source.partition(":")
        if name not in _FORMATS or fmt not in (None, name):
            raise ValueError(f"{source!r} is neither a file nor a generator spec "
                             f"NAME[:key=value,...] with NAME in {trace_formats()}")
        fmt = name
        opts = {**parse_options(rest), **opts}
    if fmt not in _FORMATS:
        raise ValueError(f"unknown trace format {fmt!r}; known: {trace_formats()}")
    return _FORMATS[fmt](source, opts)


def _is_file(source: str) -> bool:
    """Whether ``source`` names an existing file (a generator spec longer than a file name may
    be is not one)."""
    try:
        return Path(source).exists()
    except OSError:
        return False


def parse_options(text: str) -> dict[str, str]:
    """``"a=1,b=x"`` -> ``{"a": "1", "b": "x"}``; errors name the malformed item."""
    out: dict[str, str] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"bad trace option {item!r}: expected key=value")
        out[key.strip()] = value.strip()
    return out

"""Time an engine's requests to the cache daemon, for the benchmark's time breakdown.

:class:`RpcTimer` stands in for the ``asymcache.engine.client.CacheClient`` of one engine's link
(only the
benchmark's own engine): every request method is forwarded unchanged and its wall time added
to a per-operation total. The shared-memory views of the CPU tier (``cpu_slot``) are forwarded
untimed: copying through them is the engine's work, not a round trip.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

TIMED = frozenset({"hello", "lookup", "allocate", "reserve_cpu", "commit", "release", "pin",
                   "unpin", "promote", "put", "get", "flush", "stats", "ping", "cancel",
                   "poll_acks", "check_acks", "notify"})
ONE_WAY = " (one-way)"  # suffix of the ops sent with ``notify``: no round trip, no wait


def round_trips(totals: dict[str, dict[str, float]]) -> int:
    """Calls of :meth:`RpcTimer.totals` that waited for a reply (one-way sends and reading
    ACKs excluded)."""
    return int(sum(v["calls"] for op, v in totals.items()
                   if not op.endswith(ONE_WAY) and op not in ("poll_acks", "check_acks", "notify")))


class RpcTimer:
    """A timing proxy of a daemon client (see the module doc). Not thread-safe: the engine's
    thread is the only caller of its link's client."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.seconds: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in TIMED or not callable(attr):
            return attr
        return self._timed(name, attr)

    def _timed(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            op = name + ONE_WAY if kwargs.get("notify") else name
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[op] += time.perf_counter() - start
                self.calls[op] += 1

        return call

    def totals(self) -> dict[str, dict[str, float]]:
        """``{op: {"calls": n, "seconds": s}}`` so far."""
        return {op: {"calls": self.calls[op], "seconds": round(self.seconds[op], 6)}
                for op in sorted(self.calls)}


def install(engine: Any) -> RpcTimer | None:
    """Put a timer in front of ``engine``'s daemon client (``None`` without a daemon link)."""
    link = engine.kv.link
    if link is None:
        return None
    timer = RpcTimer(link.client)
    link.client = timer
    return timer

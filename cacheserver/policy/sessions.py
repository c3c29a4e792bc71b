"""Client signals for residency: which sessions the clients ended, shared by a chain's policies.

Clients say three things a policy can use (docs/policy.md, "Client signals"), all known when
they are sent: a request belongs to a session (OpenAI's ``prompt_cache_key``), its prefix should
be kept for a while (``prompt_cache_retention``), and a session is over (the engine's
end-of-session endpoint, sent after the last response). The first two travel on the blocks
(``BlockInfo.session``, ``shared``, ``retain_until``); the third is this book's. A policy built
with ``signals=True`` ranks its blocks in three bands, lowest evicted first:

* band 0: blocks of an ended session that no other session used (nobody is expected back);
* band 1: every other block (ranked by the policy itself);
* band 2: blocks under retention, until it lapses.

Without signals every block is in band 1: the policy ranks exactly as without this module.

Memory: at most ``max_ended`` ended sessions are remembered, the oldest forgotten first (a
forgotten session's blocks rank in band 1 again when next re-ranked: a cost, never a loss).
"""

from __future__ import annotations

import heapq
import itertools
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Mapping

DEAD, NORMAL, RETAINED = 0, 1, 2
MAX_ENDED_SESSIONS = 65536


class SessionBook:
    """The sessions clients ended, most recent last (bounded)."""

    def __init__(self, max_ended: int = MAX_ENDED_SESSIONS) -> None:
        if max_ended < 1:
            raise ValueError(f"max_ended must be >= 1, got {max_ended}")
        self.max_ended = max_ended
        self._ended: OrderedDict[Hashable, None] = OrderedDict()

    def end(self, session: Hashable) -> None:
        self._ended[session] = None
        self._ended.move_to_end(session)
        if len(self._ended) > self.max_ended:
            self._ended.popitem(last=False)

    def revive(self, session: Hashable) -> bool:
        """A request of an ended session came after all (the client reused its key): it is
        live again. Whether it had ended."""
        return self._ended.pop(session, 0) is None

    def is_ended(self, session: Hashable) -> bool:
        return session in self._ended

    def __len__(self) -> int:
        return len(self._ended)


def band(info: object, book: SessionBook | None, now: float) -> int:
    """The band of a block (module docstring) from its signals and ``book``."""
    session = info.session  # type: ignore[attr-defined]
    if session is not None and book is not None and not info.shared \
            and book.is_ended(session):  # type: ignore[attr-defined]
        return DEAD
    if info.retain_until > now:  # type: ignore[attr-defined]
        return RETAINED
    return NORMAL


class SignalIndex:
    """One policy's resident blocks by their signals: under each session the blocks only that
    session used (re-ranked when it ends), and a heap of when retentions lapse (re-ranked then).

    Memory: one entry per resident block with a session, and at most ``4 x blocks + 1024``
    heap entries (stale ones of re-signalled blocks are dropped when the heap grows past it).
    """

    def __init__(self) -> None:
        self._by_session: dict[Hashable, set[Hashable]] = {}
        self._session_of: dict[Hashable, Hashable] = {}
        self.heap: list[tuple[float, int, Hashable]] = []  # (retain_until, seq, key)
        self._seq = itertools.count()

    def index(self, info: object, now: float, blocks: Mapping[Hashable, object]) -> None:
        """Keep ``info`` under its session (unless shared) and, while its retention lasts
        (past ``now``), on the heap; ``blocks`` (the policy's resident infos) rebuild it."""
        key, session, shared = info.key, info.session, info.shared  # type: ignore[attr-defined]
        if self._session_of.get(key) != session or shared:
            self.unindex(key)
            if session is not None and not shared:
                self._session_of[key] = session
                self._by_session.setdefault(session, set()).add(key)
        until = info.retain_until  # type: ignore[attr-defined]
        if until > now:
            heap = self.heap
            heapq.heappush(heap, (until, next(self._seq), key))
            if len(heap) > 4 * len(blocks) + 1024:  # stale entries of re-signalled keys
                live = {k: i.retain_until for k, i in blocks.items()  # type: ignore[attr-defined]
                        if i.retain_until > now}  # type: ignore[attr-defined]
                heap[:] = [(u, next(self._seq), k) for k, u in live.items()]
                heapq.heapify(heap)

    def unindex(self, key: Hashable) -> None:
        """Forget ``key``'s session (it left the tier, or became shared)."""
        old = self._session_of.pop(key, None)
        if old is not None:
            keys = self._by_session[old]
            keys.discard(key)
            if not keys:
                del self._by_session[old]

    def keys_of(self, session: Hashable) -> list[Hashable]:
        """The resident blocks that only ``session`` used (a copy: the caller may re-rank)."""
        return list(self._by_session.get(session, ()))

    def lapsed(self, now: float) -> Iterator[tuple[Hashable, float]]:
        """Take ``(key, retain_until)`` off the heap for every retention due by ``now``; an
        entry may be stale (the caller compares ``retain_until`` with the block's own)."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            until, _, key = heapq.heappop(heap)
            yield key, until

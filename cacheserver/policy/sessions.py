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

from collections import OrderedDict
from collections.abc import Hashable

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

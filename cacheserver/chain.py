"""The tier chain: the ordered levels below the engines' GPU pools and every rule of movement
between them, shared by the daemon (``movers.py`` over ``levels.py``) and the simulator
(``ops/sim/replay.py``).

A :class:`Level` is a place for bytes (its store: the CPU slab, LMDB, the remote
cluster, or the simulator's block counter) run by a residency policy. A block's ``where`` is one
bit per level of the chain. The rules, the same for every level:

* **place**: a block enters a level when the store can ever fit it, the policy admits it (only
  for copies the chain chooses to make: demotions and write-through; a copy a client asks for
  is not questioned) and room is made by evicting the policy's victims.
* **evict**: a victim leaves its level; a level that ``demotes`` first copies it into the
  level below (``"next"``) or into every level below (``"all"``) that does not hold it yet and
  admits it. Lower levels keep their copies: the chain is inclusive.
* **write-through**: a block entering the top level is copied into each ``write_through`` level.
* **backing**: every level holding a block is told (``set_backing``) the next level below that
  still holds it; ``spill`` tells each demoting policy where its victims go.
* **quotas** (optional): a tenant at its bound in a level makes room by evicting its own blocks
  there first (:class:`Quota`).
* **pins**: a block's pin lives on its record; the chain pins it in every level that holds it
  and again in each level it enters while the pin lasts.
* **client signals** (``policy/sessions.py``): a block's session and retention live on its
  record too (``session``, ``shared``, ``retain_until``), so they travel with it into every
  level; :meth:`TierChain.signal` updates them and re-ranks the holders, and
  :meth:`TierChain.end_session` records an ended session in the chain's :class:`SessionBook`,
  which every level's policy reads.

A block is any object with ``key``, ``where``, ``pinned``, ``pin_until``, ``busy``, ``info()``
and ``pin_active(now)`` (the daemon's ``BlockRecord``, the simulator's ``SimBlock``). A store
has ``fits(block)`` (could ever hold it), ``full(block)`` (no room now), ``put(block, data)``
(``data=None``: already there, e.g. stored by another host: account for it), ``read(block)``,
``drop(key, block or None)`` and ``take_failed()``. No I/O here beyond the stores' own calls.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from asymcache.cacheserver.policy import ResidencyPolicy
from asymcache.cacheserver.policy.sessions import SessionBook

Demote = Literal["none", "next", "all"]


class ChainEvents:
    """What the chain tells its owner (metrics, statistics, the levels above it)."""

    def evicted(self, level: Level, block: Any) -> None: ...

    def demoted(self, level: Level, block: Any) -> None: ...

    def copied(self, src: Level, dst: Level, block: Any) -> None: ...

    def entered(self, level: Level, block: Any) -> None: ...

    def left(self, level: Level, block: Any) -> None: ...  # evicted, dropped or failed

    def backing(self, block: Any, top: str | None) -> None: ...  # the highest holder

    def pinned(self, block: Any, until: float | None, now: float, on: bool) -> None: ...

    def signalled(self, block: Any, now: float) -> None: ...  # its signals changed

    def session_ended(self, session: Any, now: float) -> None: ...


class Quota(Protocol):
    """Per-tenant bounds in levels (the daemon's ``tenants.TenantBook``): before the usual
    eviction, ``make_room`` evicts ``block``'s tenant's own blocks while it is at its bound
    (through :meth:`TierChain.leave`); ``False`` when none of them may go."""

    def make_room(self, chain: TierChain, level: Level, block: Any, now: float) -> bool: ...


@dataclass(eq=False)
class Level:
    name: str
    store: Any
    policy: ResidencyPolicy
    demote: Demote = "none"
    write_through: bool = False
    code: int = 0  # the owner's name for "found here" (the daemon's LOOKUP ``Where``)
    shared: bool = False  # other hosts' blocks too (the remote cluster): read asynchronously
    bit: int = 0  # set by the chain


class TierChain:
    """Ordered levels (highest first) and the movement rules above."""

    def __init__(self, levels: list[Level], records: Callable[[Any], Any],
                 discard: Callable[[Any], object], events: ChainEvents,
                 quota: Quota | None = None) -> None:
        self.levels = levels
        self.by_name = {level.name: level for level in levels}
        self.records, self.discard, self.events = records, discard, events
        self.quota = quota
        # While set (the daemon sets it around a request's handler to run work after the
        # reply): demotions read their bytes at once but are placed below later (``leave``).
        self.defer: Callable[[Callable[[], None]], None] | None = None
        self.sessions = SessionBook()
        for i, level in enumerate(levels):
            level.policy.set_sessions(self.sessions)
            level.bit = 1 << i
            spill = levels[i + 1].name if level.demote != "none" and i + 1 < len(levels) else None
            level.policy.set_spill_tier(spill)

    def level(self, name: str) -> Level | None:
        return self.by_name.get(name)

    def holds(self, block: Any, name: str) -> bool:
        level = self.by_name.get(name)
        return level is not None and bool(block.where & level.bit)

    def top(self, block: Any) -> Level | None:
        """The highest level holding ``block``."""
        where = block.where
        return self.levels[(where & -where).bit_length() - 1] if where else None

    def place(self, level: Level, block: Any, data: Any, now: float, admit: bool) -> bool:
        """Put ``block`` into ``level`` (see the module docstring); whether it is there now."""
        if block.where & level.bit:
            return True
        if not level.store.fits(block):
            return False
        if admit and not level.policy.admit(block.info(), now):
            return False
        if not self.make_room(level, block, now) or not level.store.put(block, data):
            return False
        self.entered(level, block, now)
        return True

    def entered(self, level: Level, block: Any, now: float) -> None:
        """``block``'s bytes are now readable in ``level``: index, pin, back and copy it."""
        block.where |= level.bit
        level.policy.insert(block.info(), now)
        if block.pin_active(now):
            level.policy.pin(block.key, block.pin_until)
        self.events.entered(level, block)
        self.refresh_backing(block)
        if level is self.levels[0]:
            for lower in self.levels[1:]:
                if lower.write_through:
                    self.copy(level, lower, block, now)

    def copy(self, src: Level, dst: Level, block: Any, now: float) -> bool:
        """Copy ``block`` from ``src`` into ``dst`` if ``dst`` lacks it and admits it."""
        if block.where & dst.bit:
            return False
        return self._copy_bytes(src, dst, block, src.store.read(block), now)

    def _copy_bytes(self, src: Level, dst: Level, block: Any, data: Any, now: float) -> bool:
        if (block.where & dst.bit or data is None
                or not self.place(dst, block, data, now, admit=True)):
            return False
        self.events.copied(src, dst, block)
        return True

    def make_room(self, level: Level, block: Any, now: float) -> bool:
        """Evict ``level``'s victims until ``block`` fits; ``block`` stays indexed meanwhile.
        With a ``quota``, its tenant's own blocks go first while it is at its quota there."""
        block.busy += 1
        try:
            if self.quota is not None and not self.quota.make_room(self, level, block, now):
                return False
            while level.store.full(block):
                victim = level.policy.evict(now)
                if victim is None:
                    return False
                self.leave(level, victim, now, evicted=True)
            return True
        finally:
            block.busy -= 1

    def leave(self, level: Level, key: Any, now: float, evicted: bool) -> None:
        """``key`` leaves ``level``: demoted first when evicted from a demoting level."""
        block = self.records(key)
        held = block is not None and bool(block.where & level.bit)
        if held and evicted and level.demote != "none":
            i = self.levels.index(level)
            lower = self.levels[i + 1:i + 2] if level.demote == "next" else self.levels[i + 1:]
            if self.defer is not None:
                self._demote_later(level, lower, block, now)
            elif [dst for dst in lower if self.copy(level, dst, block, now)]:
                self.events.demoted(level, block)
        level.store.drop(key, block if held else None)
        level.policy.remove(key, now)
        if evicted:
            self.events.evicted(level, block)
        if held:
            block.where &= ~level.bit
            self.events.left(level, block)
            self.refresh_backing(block)
            self.discard(block)

    def _demote_later(self, level: Level, lower: list[Level], block: Any, now: float) -> None:
        """Read ``block``'s bytes from ``level`` now (its slot may be refilled as soon as it
        leaves) and place them into ``lower`` through :attr:`defer`: the levels below, their
        admission and their own evictions wait until the reply that evicted it is sent. The
        record stays indexed meanwhile (``busy``)."""
        targets = [dst for dst in lower if not block.where & dst.bit]
        data = level.store.read(block) if targets else None
        if data is None or self.defer is None:
            return
        block.busy += 1

        def place_below() -> None:
            try:
                if [dst for dst in targets if self._copy_bytes(level, dst, block, data, now)]:
                    self.events.demoted(level, block)
            finally:
                block.busy -= 1
                self.discard(block)

        self.defer(place_below)

    def refresh_backing(self, block: Any) -> None:
        """Tell each holder the next level below it that holds ``block``."""
        below = None
        for level in reversed(self.levels):
            if block.where & level.bit:
                level.policy.set_backing(block.key, below)
                below = level.name
        self.events.backing(block, below)

    def pin(self, block: Any, until: float | None, now: float, on: bool = True) -> None:
        """Pin ``block`` (until ``until``; None: until unpinned) or, ``on=False``, unpin it, in
        every level that holds it and, through the events, above the chain."""
        block.pinned, block.pin_until = on, until if on else None
        for level in self.levels:
            if block.where & level.bit:
                if on:
                    level.policy.pin(block.key, until)
                else:
                    level.policy.unpin(block.key, now)
        self.events.pinned(block, until, now, on)

    def signal(self, block: Any, session: Any, retain_until: float, now: float) -> None:
        """A request of ``session`` (``None``: none said) used ``block``, whose client asked to
        keep it until ``retain_until`` (0: not asked): update its record and, if that changed
        it, re-rank it in every level that holds it and, through the events, above the chain."""
        changed = False
        if session is not None:
            if block.session != session:
                block.shared = block.shared or block.session is not None
                block.session, changed = session, True
            changed = self.sessions.revive(session) or changed
        if retain_until > block.retain_until:
            block.retain_until, changed = retain_until, True
        if not changed:  # the same session again, no longer retention: the ranks stand
            return
        for level in self.levels:
            if block.where & level.bit:
                level.policy.resignal(block.key, now)
        self.events.signalled(block, now)

    def end_session(self, session: Any, now: float) -> None:
        """A client ended ``session``: its blocks that no other session used go first in every
        level (and, through the events, above the chain)."""
        self.sessions.end(session)
        for level in self.levels:
            level.policy.session_ended(session, now)
        self.events.session_ended(session, now)

    def forget_failed(self, now: float) -> list:
        """Forget blocks whose writes failed (or were found corrupt) in any level; their keys."""
        out = []
        for level in self.levels:
            for key in level.store.take_failed():
                self.leave(level, key, now, evicted=False)
                out.append(key)
        return out

"""Streams of small batches through the daemon's shared CPU tier, the round trips overlapped
with the copies. No torch.

Moving one batch by itself costs two messages: a request whose reply the copy needs (ALLOCATE
``cpu`` to write, LOOKUP to read) and a notification after it (COMMIT, RELEASE). Done one batch
after the other, a 1 MiB batch waits for its round trips longer than it copies. A stream sends
one request per batch and keeps the next ``depth`` batches' requests in flight while it copies
the current one, so the daemon answers them meanwhile: the COMMIT of a written batch carries the
reservation of the batch ``depth`` places later (``reserve_next``), the LOOKUP of a batch to read
carries the RELEASE of the batch ``depth`` places earlier (``release``). Nothing is waited for
unless the daemon is slower than the copies.

Typical use (a writer that offloads batches of blocks, a reader that brings them back)::

    stream = CpuTierStream(client)
    stream.write(ref_batches, lambda i, slots: copy_batch_into(i, slots))
    stream.read(key_batches, lambda i, slots: copy_batch_out_of(i, slots))

``fill(i, slots)`` copies batch ``i`` into the CPU slots it was given (``slots[j] < 0``: block
``j`` is not to be written: -1 no room, -2 already in the tier); ``drain(i, slots)`` copies
batch ``i`` out (``slots[j]`` is None for a block the CPU tier does not hold). Both run on the
caller's thread with the client's ``cpu_tier_view`` or ``cpu_slot`` views, and the stream gives
the slots and leases back if they raise. Slots are valid only in the registration they were
given in: a batch whose reply comes from an earlier one (the daemon restarted) is skipped, its
blocks counted as not moved.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from asymcache.cacheserver import protocol as p
from asymcache.engine.client import CacheClient, DaemonError, DaemonUnavailable

Fill = Callable[[int, list[int]], None]
Drain = Callable[[int, list[int | None]], None]
MAX_BATCH = 1024  # blocks per batch: well under the daemon's per-request key limit (4096)


@dataclass
class StreamStats:
    """What a stream did: ``batches``, ``blocks`` asked for, ``moved`` (filled and committed, or
    found and read), ``skipped`` (no room / already there, or not in the CPU tier), ``refused``
    (written blocks whose COMMIT the daemon refused; one-way ones count in the client's
    ``notify_errors`` instead)."""

    batches: int = 0
    blocks: int = 0
    moved: int = 0
    skipped: int = 0
    refused: int = 0


@dataclass
class _Sent:
    index: int
    batch: Sequence
    rid: int
    generation: int


class CpuTierStream:
    """Pipelined writes and reads of block batches through the CPU tier (module docstring).

    ``depth``: batches whose request is in flight ahead of the one being copied (CPU slots
    reserved or blocks leased ahead of their copy are bounded by ``depth`` batches). A batch
    holds at most ``MAX_BATCH`` blocks."""

    def __init__(self, client: CacheClient, depth: int = 2) -> None:
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.client, self.depth = client, depth

    def write(self, batches: Iterable[Sequence[p.BlockRef]], fill: Fill) -> StreamStats:
        """Reserve, ``fill`` and commit each batch; returns once every block is committed (the
        last batch's COMMIT is one-way: this waits for its ACK)."""
        stats, ahead, source = StreamStats(), deque[_Sent](), self._numbered(batches)
        try:
            for _ in range(self.depth):
                self._send(ahead, source, lambda refs: p.Allocate(tier="cpu", blocks=list(refs)))
            while ahead:
                sent = ahead.popleft()
                reply = self._result(sent)
                slots = None
                if isinstance(reply, p.CommitReply):
                    stats.refused += reply.accepted.count(False)
                    slots = reply.reserved
                elif reply is not None:
                    slots = reply.slots
                kept = self._fill(sent, slots, fill, stats)
                refs, at = [r for r, _ in kept], [s for _, s in kept]
                if not self._send(ahead, source, lambda nxt, refs=refs, at=at: p.Commit(
                        tier="cpu", blocks=refs, slots=at, reserve_next=list(nxt),
                        checksums=self.client.cpu_checksums(at))) and kept:
                    self.client.commit(refs, at, tier="cpu", notify=True)
        finally:
            self._abandon(ahead)
        self.settle()
        return stats

    def read(self, batches: Iterable[Sequence[bytes]], drain: Drain) -> StreamStats:
        """Look up (leasing what is found), ``drain`` and release each batch of keys."""
        stats, ahead, source = StreamStats(), deque[_Sent](), self._numbered(batches)
        try:
            for _ in range(self.depth):
                self._send(ahead, source, lambda keys: p.Lookup(keys=list(keys)))
            while ahead:
                sent = ahead.popleft()
                reply = self._result(sent)
                stats.batches, stats.blocks = stats.batches + 1, stats.blocks + len(sent.batch)
                hit, leased = 0, []
                if reply is not None:
                    leased = _leased(sent.batch, reply)
                    cpu = [s if w == p.Where.CPU else None
                           for w, s in zip(reply.where, reply.slots, strict=True)]
                    try:
                        drain(sent.index, cpu)
                    except BaseException:
                        self._give_back(leased=leased)
                        raise
                    hit = len(cpu) - cpu.count(None)
                stats.moved += hit
                stats.skipped += len(sent.batch) - hit
                if not self._send(ahead, source, lambda nxt, leased=leased: p.Lookup(
                        keys=list(nxt), release=leased)) and leased:
                    self.client.release(leased, notify=True)
        finally:
            self._abandon(ahead)
        self.settle()
        return stats

    def _fill(self, sent: _Sent, slots: list[int] | None, fill: Fill,
              stats: StreamStats) -> list[tuple[p.BlockRef, int]]:
        """``fill`` one batch; the (block, slot) pairs to commit."""
        stats.batches, stats.blocks = stats.batches + 1, stats.blocks + len(sent.batch)
        if slots is None:
            stats.skipped += len(sent.batch)
            return []
        kept = [(ref, s) for ref, s in zip(sent.batch, slots, strict=True) if s >= 0]
        try:
            fill(sent.index, slots)
        except BaseException:
            self._give_back(reserved=[r.key for r, _ in kept])
            raise
        stats.moved += len(kept)
        stats.skipped += len(sent.batch) - len(kept)
        return kept

    @staticmethod
    def _numbered(batches: Iterable[Sequence]) -> Iterator[tuple[int, Sequence]]:
        for i, batch in enumerate(batches):
            if len(batch) > MAX_BATCH:
                raise ValueError(f"batch {i} has {len(batch)} blocks, more than {MAX_BATCH}")
            yield i, batch

    def _send(self, ahead: deque[_Sent], source: Iterator[tuple[int, Sequence]],
              request: Callable[[Sequence], p.Message]) -> bool:
        """Submit the next batch's request (False: there is none)."""
        nxt = next(source, None)
        if nxt is None:
            return False
        generation = self.client.generation
        ahead.append(_Sent(nxt[0], nxt[1], self.client.submit(request(nxt[1])), generation))
        return True

    def _result(self, sent: _Sent) -> Any:
        """The reply to ``sent``, or None when it belongs to an earlier registration than the
        current one (its slots and leases went with it)."""
        before = self.client.generation
        reply = self.client.result(sent.rid)
        # current: sent in this registration, or retried by result() after a new HELLO
        return reply if sent.generation == before or self.client.generation != before else None

    def _abandon(self, ahead: deque[_Sent]) -> None:
        """Collect the replies of requests sent ahead of a stream that stopped early and give
        back what they reserved or leased."""
        for sent in ahead:
            try:
                reply = self._result(sent)
            except DaemonUnavailable:
                return  # the connection went: so did its reservations and leases
            except DaemonError:
                continue
            if isinstance(reply, p.AllocateReply | p.CommitReply):
                slots = reply.slots if isinstance(reply, p.AllocateReply) else reply.reserved
                self._give_back(reserved=[r.key for r, s in zip(sent.batch, slots, strict=True)
                                          if s >= 0])
            elif reply is not None:
                self._give_back(leased=_leased(sent.batch, reply))

    def _give_back(self, reserved: Sequence[bytes] = (), leased: Sequence[bytes] = ()) -> None:
        if reserved:
            self.client.cancel(reserved, notify=True)
        if leased:
            self.client.release(leased, notify=True)

    def settle(self) -> None:
        """Wait until every notification this client sent is acknowledged; raises
        :class:`DaemonUnavailable` if one waits longer than the client's ``timeout_s``."""
        if self.client.settle(self.client.timeout_s):
            self.client.check_acks()


def _leased(keys: Sequence[bytes], reply: p.LookupReply) -> list[bytes]:
    return [k for k, w in zip(keys, reply.where, strict=True) if w != p.Where.MISS]

"""Which prompt a tenant sends next, and what it may legitimately find cached.

:class:`Ledger` counts, per tenant, the requests whose sequence had each block-aligned prefix
(a BLAKE2b digest of the token ids); a sequence is the prompt followed by its reference output,
since engines commit the blocks that decoding fills too. A request is counted when it is sent,
and judged when its reply arrives: the longest prefix of its prompt that ANOTHER request of the
same tenant sent before that moment also had, in whole blocks, is what the tenant's own
requests can have cached for it (in flight included, and also requests sent after it but
computed first: an engine may well finish a later request's prefill before an earlier one is
scheduled). ``cached_tokens`` above that came from another tenant's blocks: a cross-tenant hit.
The same figure for the other tenant tells whether a leak would have been visible at all (a
*leak opportunity*): twin prompts are built for that.

:class:`Mix` picks prompts per tenant: a twin the other tenant sent first (a leak opportunity),
a prompt the tenant never sent, or one of its recent prompts again (cache hits, mostly fetched
from the tiers, since each engine's pool holds only a few prompts).
"""

from __future__ import annotations

import hashlib
import random
import threading
from collections import Counter, deque
from collections.abc import Sequence

import numpy as np

from asymcache.ops.soak.prompts import Prompt

TWIN_SHARE, FRESH_SHARE = 0.1, 0.15  # of picks (the rest repeat a recent prompt)
RECENT = 24  # prompts a repeat is drawn from


def prefix_digests(tokens: Sequence[int], block_size: int) -> list[bytes]:
    """Digest of each block-aligned prefix: ``[d(tokens[:B]), d(tokens[:2B]), ...]``."""
    arr = np.asarray(tokens, dtype="<u4")
    h = hashlib.blake2b(digest_size=16)
    out = []
    for k in range(len(arr) // block_size):
        h.update(arr[k * block_size:(k + 1) * block_size].tobytes())
        out.append(h.copy().digest())
    return out


class Ledger:
    """Per tenant, how many requests sent each block-aligned prefix (see the module
    docstring). Thread-safe."""

    def __init__(self, tenants: int, block_size: int) -> None:
        self.block_size = block_size
        self._counts: list[Counter[bytes]] = [Counter() for _ in range(tenants)]
        self._digests: dict[int, tuple[list[bytes], list[bytes]]] = {}
        self._lock = threading.Lock()

    def _of(self, p: Prompt) -> tuple[list[bytes], list[bytes]]:
        got = self._digests.get(p.pid)
        if got is None:
            got = (prefix_digests(p.tokens, self.block_size),
                   prefix_digests(p.tokens + p.ref_ids, self.block_size))
            self._digests[p.pid] = got
        return got

    def _longest(self, tenant: int, digests: list[bytes], at_least: int) -> int:
        n = 0
        for d in digests:
            if self._counts[tenant][d] < at_least:
                break
            n += 1
        return n * self.block_size

    def sent(self, tenant: int, p: Prompt) -> None:
        """``tenant`` sends ``p`` now."""
        with self._lock:
            self._counts[tenant].update(self._of(p)[1])

    def judge(self, tenant: int, p: Prompt) -> tuple[int, int]:
        """For a request of ``tenant`` with prompt ``p`` (counted by :meth:`sent`) whose reply
        arrives now: the tokens of ``p`` the tenant's other requests may have cached for it,
        and the most any other tenant's may have."""
        with self._lock:
            prompt_d = self._of(p)[0]
            own = self._longest(tenant, prompt_d, 2)  # 1 is this request itself
            other = max((self._longest(t, prompt_d, 1) for t in range(len(self._counts))
                         if t != tenant), default=0)
        return own, other


class Mix:
    """Per tenant: which prompts it may still send fresh (added by the feeder as their
    references are ready), which it sent, which twins the other tenant sent first.
    Thread-safe."""

    def __init__(self, tenants: int, seed: int) -> None:
        self._rng = random.Random(seed)
        self.by_pid: dict[int, Prompt] = {}
        self._fresh: list[deque[int]] = [deque() for _ in range(tenants)]
        self._sent: list[set[int]] = [set() for _ in range(tenants)]
        self._recent: list[deque[int]] = [deque(maxlen=RECENT) for _ in range(tenants)]
        self._twins: list[deque[int]] = [deque() for _ in range(tenants)]
        self._lock = threading.Lock()
        self.starved: dict[int, int] = {}  # tenant -> fresh picks that found none ready

    def add(self, prompts: Sequence[Prompt]) -> None:
        """More prompts, with their references, that the tenants may send fresh."""
        with self._lock:
            for t, fresh in enumerate(self._fresh):
                mine = [p.pid for p in prompts if t in p.tenants]
                self._rng.shuffle(mine)
                fresh.extend(mine)
            self.by_pid.update((p.pid, p) for p in prompts)

    def fresh_left(self) -> int:
        """The fewest fresh prompts any tenant has left."""
        with self._lock:
            return min(len(f) for f in self._fresh)

    def pick(self, tenant: int, rng: random.Random) -> Prompt | None:
        """The next prompt ``tenant`` sends (recorded as sent), or None if none is ready."""
        with self._lock:
            r = rng.random()
            pid = None
            if r < TWIN_SHARE:
                pid = self._pop_unsent(self._twins[tenant], tenant)
            if pid is None and (r < TWIN_SHARE + FRESH_SHARE or not self._recent[tenant]):
                pid = self._pop_unsent(self._fresh[tenant], tenant)
                if pid is None:
                    self.starved[tenant] = self.starved.get(tenant, 0) + 1
            if pid is None:
                if not self._recent[tenant]:
                    return None
                pid = rng.choice(list(self._recent[tenant]))
            self._sent_by(tenant, pid)
            return self.by_pid[pid]

    def _pop_unsent(self, queue: deque[int], tenant: int) -> int | None:
        while queue:
            pid = queue.popleft()
            if pid not in self._sent[tenant]:
                return pid
        return None

    def _sent_by(self, tenant: int, pid: int) -> None:
        if pid not in self._sent[tenant]:
            self._sent[tenant].add(pid)
            for other, twins in enumerate(self._twins):
                if other != tenant and other in self.by_pid[pid].tenants \
                        and pid not in self._sent[other]:
                    twins.append(pid)
        if pid not in self._recent[tenant]:
            self._recent[tenant].append(pid)

    def recent(self, tenant: int) -> list[Prompt]:
        """The tenant's recent prompts, newest last."""
        with self._lock:
            return [self.by_pid[pid] for pid in self._recent[tenant]]

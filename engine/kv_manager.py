"""The KV manager: a request's path from block keys to a ready block table (DESIGN.md §6).

Admission: :class:`~engine.kv_lookup.KVLookup` keys the context's full blocks, finds them (own
pool first, then the daemon) and plans what to fetch; then the manager gets slots (free list,
then the daemon's victims with their demotions, then local LRU) and copies the fetched blocks
in; the positions to compute go to ``req.todo``. After each step :meth:`commit_ready` records
every block that became complete, and :meth:`flush_commits` tells the daemon (and writes the
blocks through to the CPU tier when configured), a few round trips per step for all its
sequences. At the end :meth:`finish` pins (TTL) and gives back slots, tail first; the PIN, the
client's SIGNAL (its session ``prompt_cache_key`` and ``prompt_cache_retention``, both capped
per tenant by :class:`~engine.kv_tenancy.Tenancy`, which also names each request's namespace)
and the leases go with the next flush, after its COMMIT. The daemon is optional: without it,
or while it is down, the own pool and local LRU serve.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from asymcache.cacheserver.protocol import BlockRef
from asymcache.engine.block_manager import BlockManager
from asymcache.engine.config import TIME_CAPS, is_seconds_cap
from asymcache.engine.kv_lookup import KVLookup
from asymcache.engine.kv_pool import KVPool
from asymcache.engine.kv_tenancy import Tenancy
from asymcache.engine.planner import FETCH_TIERS, PlanInputs, Reuse, todo_ranges
from asymcache.engine.request import Action, Request, Status
from asymcache.engine.transfers import Transfers
from asymcache.engine.victim_stock import VictimStock

if TYPE_CHECKING:
    from asymcache.cacheserver.policy.cost import CostModel
    from asymcache.engine.cache_link import CacheLink


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KVConfig:
    """How the engine reuses KV: semantics, tiers it fetches from (``remote``: the daemon's
    remote tier, asked only when the daemon has one), write-through to CPU, and the longest
    retention and pin TTL a request gets (:data:`TIME_CAPS`, seconds; 0: no cap)."""

    reuse: Reuse = "msa"
    fetch_tiers: tuple[str, ...] = FETCH_TIERS
    write_through: bool = True
    announce_within_steps: int = 8  # blocks completed by decodes wait at most this many steps
    victim_stock: int = 16  # victims asked of the daemon ahead of need (0: only when needed)
    max_retention_s: float = 86400.0
    max_pin_ttl_s: float = 3600.0

    def __post_init__(self) -> None:
        for name in TIME_CAPS:
            if not is_seconds_cap(getattr(self, name)):
                raise ValueError(f"KVConfig.{name} must be seconds >= 0 (0: no cap), got "
                                 f"{getattr(self, name)!r}")
        if self.victim_stock < 0:
            raise ValueError(f"KVConfig.victim_stock must be >= 0, got {self.victim_stock}")
        if self.announce_within_steps < 1:
            raise ValueError("KVConfig.announce_within_steps must be >= 1, got "
                             f"{self.announce_within_steps}")
        if self.reuse not in ("none", "prefix", "msa"):
            raise ValueError(f"KVConfig.reuse must be none, prefix or msa, got {self.reuse!r}")
        bad = set(self.fetch_tiers) - set(FETCH_TIERS)
        if bad:
            raise ValueError(f"KVConfig.fetch_tiers may hold {', '.join(FETCH_TIERS)}, "
                             f"got {sorted(bad)}")


class KVManager:
    """Admission, slot allocation, copies and commits of one engine's pool."""

    def __init__(self, pool: KVPool, cfg: KVConfig, fingerprint: str,
                 cost: CostModel | None, link: CacheLink | None) -> None:
        self.pool, self.cfg, self.fingerprint, self.cost = pool, cfg, fingerprint, cost
        self.link = link if cfg.reuse != "none" else None
        self.blocks = BlockManager(pool.num_blocks)
        self.block_size = pool.layout.block_size
        self.plan_inputs = PlanInputs(cfg.reuse, self.block_size, pool.bytes_per_block,
                                      cfg.fetch_tiers)
        self.transfers = Transfers(pool, self.link)
        self.lookup = KVLookup(self.blocks, self.link, self.transfers, self.plan_inputs, cost)
        self._refs: dict[bytes, BlockRef] = {}  # committed keys held in the pool
        self._to_commit: list[tuple[BlockRef, int, Request]] = []
        self._finished: list[Request] = []  # finished since the last flush: leases to release
        self._waited = 0  # steps the oldest block in _to_commit has waited
        self._holding: dict[int, Request] = {}  # admitted requests holding slots, by id()
        # owners of the blocks committed with ``reserve`` by the last few flushes
        self._offload_owner: deque[dict[bytes, Request]] = deque(maxlen=_OWNER_FLUSHES)
        # namespaces, tenants, and the caps on a client's PIN and retention
        self.tenancy = Tenancy(fingerprint, pool.layout,
                               {name: getattr(cfg, name) for name in TIME_CAPS}, self.link)
        self.namespace = self.tenancy.namespace
        self.end_session = self.tenancy.end_session
        self.tell_tenants = self.tenancy.tell_tenants
        self.stock = (VictimStock(cfg.victim_stock, self.blocks, self._refs, self.transfers,
                                  self.link) if self.link is not None else None)

    @property
    def caching(self) -> bool:
        return self.cfg.reuse != "none"

    def drop_purged(self) -> int:
        """Drop the pool's blocks of namespaces the daemon purged (its heartbeat reply names
        them): idle slots become empty, slots in use private to their requests. How many."""
        if self.link is None:
            return 0
        purged = set(self.link.take_purged())
        if not purged:
            return 0
        dropped = 0
        for key, ref in list(self._refs.items()):
            if ref.namespace in purged:
                slot = self.blocks.lookup(key)
                if slot is not None:
                    self.blocks.uncache(slot)
                del self._refs[key]
                dropped += 1
        log.info("dropped %d blocks of %d purged namespaces from the pool", dropped, len(purged))
        return dropped

    def held(self) -> list[tuple[BlockRef, int]]:
        """Committed blocks and their slots (what HELLO re-announces)."""
        return [(self._refs[key], slot) for key, slot in self.blocks.held()]

    # ---- admission ------------------------------------------------------------------------
    def admit(self, req: Request, now: float) -> bool:
        """Plan ``req`` and give it a full block table; ``False`` (holding nothing) if the
        pool cannot place it now."""
        self.lookup.extend_keys(req)
        if not self._may_fit(req, now):
            return False
        actions, views = self.lookup.plan(req)
        if not self._reserve(req, actions, now):
            self._release_leases(req)
            return False
        fetched = [i for i, a in enumerate(actions) if a.fetched]
        self.transfers.fetch([req.slots[i] for i in fetched], [views[i] for i in fetched])
        req.stats.bytes_fetched += len(fetched) * self.pool.bytes_per_block
        for i in fetched:
            self._commit_block(req, i)
        req.actions, req.num_committed = actions, 0
        req.todo = deque(todo_ranges(actions, req.num_tokens, self.block_size))
        _count_sources(req, actions, self.block_size)
        if req.stats.first_scheduled is None:
            req.stats.first_scheduled = now
        self._holding[id(req)] = req
        return True

    def append_slot(self, req: Request, now: float) -> bool:
        """Make sure the block table covers the last token (decode growth). When the slots must
        come from the daemon, the same ALLOCATE also brings the growth of this step's later
        decoding requests (the scheduler grows them in ``seq`` order), if all of it can be had:
        one round trip, the same slots as one ALLOCATE each."""
        need = self._growth(req)
        if need <= 0:
            return True
        group = [req]
        if self.link is not None and need > self.blocks.num_empty:
            group += self._growing_after(req)
        total = sum(self._growth(r) for r in group)
        if len(group) > 1 and not self.blocks.can_allocate(total, now):
            group, total = [req], need
        slots = self._allocate(total, now, req)
        if slots is None:
            return False
        for r in group:
            n = self._growth(r)
            r.slots.extend(slots[:n])
            slots = slots[n:]
        return True

    def _growth(self, req: Request) -> int:
        return req.blocks_needed(self.block_size) - len(req.slots)

    def _growing_after(self, req: Request) -> list[Request]:
        """Running decoding requests after ``req`` (by ``seq``) whose last token needs a slot."""
        later = [r for r in self._holding.values() if r.seq > req.seq and not r.in_prefill
                 and r.status is Status.RUNNING and self._growth(r) > 0]
        return sorted(later, key=lambda r: r.seq)

    # ---- after a step, at the end ---------------------------------------------------------
    def commit_ready(self, req: Request) -> None:
        """Record every block of ``req`` completed so far (own map now, daemon at flush)."""
        if not self.caching:
            return
        self.lookup.extend_keys(req)
        done = min(req.frontier // self.block_size, len(req.keys))
        for i in range(req.num_committed, done):
            if i >= len(req.actions) or req.actions[i].computed:
                self._commit_block(req, i)
        req.num_committed = max(req.num_committed, done)

    def flush_commits(self, force: bool = False) -> None:
        """Tell the daemon what happened since the last flush, in as few round trips as the
        protocol allows (called once per step). Blocks of running requests may wait (up to
        ``announce_within_steps`` steps, so the steps' commits share round trips) unless
        ``force``, a request finished or was preempted, or CPU copies await confirmation;
        they are this engine's at once in any case. Then it sends the blocks (one GPU
        COMMIT, leased: the daemon never names them victims until their request's RELEASE),
        then one RELEASE of the leases of every request finished meanwhile, then the
        write-through of the blocks to the CPU tier (when configured), then one CPU COMMIT of
        every CPU copy of the step (write-through and demotions). Blocks of a request that
        already released its leases (preempted meanwhile) are committed without a lease."""
        if self.stock is not None:
            self.stock.restock()
        if self.link is not None:  # write-through slots of earlier steps
            self._fill_reserved()
        self._waited = self._waited + 1 if self._to_commit else 0
        if self._to_commit and not force and not self._due():
            return
        self._waited = 0
        batch, self._to_commit = self._to_commit, []
        finished, self._finished = self._finished, []
        batch = [c for c in batch if self.blocks.key_of(c[1]) == c[0].key]  # still there
        if self.link is None:
            return
        reserve = self.cfg.write_through and self.link.mapped
        self._commit_gpu(batch, {id(r) for r in finished}, reserve)
        for req in finished:  # after the COMMIT of their last blocks: the daemon knows them
            self.tenancy.tell_finished(req)
        keys = [key for req in finished for key in req.leased]
        if keys:
            self.link.release(keys)
        for req in finished:
            req.leased = {}
        if reserve:  # whose bytes the write-through of the next steps counts
            self._offload_owner.append({ref.key: req for ref, _, req in batch})
        elif self.cfg.write_through and batch:
            written = self.transfers.write_through([(ref, slot) for ref, slot, _ in batch])
            for (_, _, req), ok in zip(batch, written, strict=True):
                req.stats.bytes_offloaded += self.pool.bytes_per_block if ok else 0
        self.transfers.confirm()

    def _due(self) -> bool:
        return (self._waited >= self.cfg.announce_within_steps or bool(self._finished)
                or self.transfers.unconfirmed > 0
                or any(r.status is not Status.RUNNING for _, _, r in self._to_commit))

    def _commit_gpu(self, batch: list[tuple[BlockRef, int, Request]], finished: set[int],
                    reserve: bool) -> None:
        """COMMIT ``batch`` in the GPU tier: leased for a running request or one of
        ``finished`` (ids of requests whose RELEASE is still to come), unleased otherwise;
        with ``reserve``, CPU slots to write them through to come in the ACK."""
        leased = [c for c in batch if _in_use(*c) or id(c[2]) in finished]
        unleased = [c for c in batch if not (_in_use(*c) or id(c[2]) in finished)]
        for part, lease in ((leased, True), (unleased, False)):
            if part:
                self.link.commit("gpu", [r for r, _, _ in part], [s for _, s, _ in part], lease,
                                 reserve=reserve)
        for ref, _, req in leased:
            req.leased[ref.key] = None  # one RELEASE drops every tier's lease of a key

    def finish(self, req: Request, now: float) -> None:
        """Pin (TTL, capped) the blocks of a finished request and give back its slots (tail
        first); its PIN, SIGNAL and leases go to the daemon with the next :meth:`flush_commits`
        (one RELEASE for all requests finished in a step, after the COMMIT of their last
        blocks)."""
        ttl = req.params.pin_ttl_s
        if ttl is not None and self.caching:
            ttl = self.tenancy.capped("max_pin_ttl_s", ttl, req.params.cache_salt)
            self.blocks.pin([s for s in req.slots if self.blocks.key_of(s) is not None], now + ttl)
        self._finished.append(req)
        self._free(req)

    def preempt(self, req: Request) -> None:
        """Give up everything ``req`` holds; it will be planned again on re-admission (its
        blocks still waiting for the daemon are sent first, while they are surely there)."""
        if any(r is req for _, _, r in self._to_commit):
            self.flush_commits(force=True)
        self._release_leases(req)
        self._free(req)

    # ---- internals ------------------------------------------------------------------------
    def _free(self, req: Request) -> None:
        self._holding.pop(id(req), None)
        self.blocks.release(list(reversed(req.slots)))
        req.slots, req.num_committed = [], 0
        req.todo.clear()

    def _commit_block(self, req: Request, i: int) -> None:
        ref = BlockRef(req.keys[i], req.namespace, req.keys[i - 1] if i else None, i)
        if self.blocks.commit(req.slots[i], ref.key):
            self._refs[ref.key] = ref
            self._to_commit.append((ref, req.slots[i], req))

    def _may_fit(self, req: Request, now: float) -> bool:
        """A cheap check before any daemon request: ``False`` when the pool surely cannot take
        ``req`` now, even reusing every block of it that is resident (the daemon cannot add
        resident blocks), so a waiting request costs no LOOKUP per step."""
        resident = [s for k in req.keys if (s := self.blocks.lookup(k)) is not None]
        idle = sum(1 for s in resident if self.blocks.is_idle(s))
        need = req.blocks_needed(self.block_size) - len(resident)
        return self.blocks.can_allocate(need + idle, now)

    def _reserve(self, req: Request, actions: list[Action], now: float) -> bool:
        resident = [i for i, a in enumerate(actions) if a is Action.RESIDENT]
        table = [-1] * req.blocks_needed(self.block_size)
        for i in resident:
            table[i] = self.blocks.lookup(req.keys[i])
            self.blocks.acquire(table[i])
        fresh = self._allocate(len(table) - len(resident), now, req)
        if fresh is None:
            self.blocks.release([table[i] for i in resident])
            return False
        it = iter(fresh)
        req.slots = [s if s >= 0 else next(it) for s in table]
        return True

    def _allocate(self, n: int, now: float, req: Request) -> list[int] | None:
        """``n`` referenced slots: free list, daemon victims (demoted first), local LRU."""
        if not self.blocks.can_allocate(n, now):
            return None
        slots = self.blocks.take_empty(n)
        if len(slots) < n and self.stock is not None:
            slots += self.stock.take(n - len(slots), now)
        if len(slots) < n and self.link is not None:
            victims = self.link.victims(n - len(slots))
            taken, demoted = self.transfers.give_up(victims, self.blocks, self._refs)
            req.stats.bytes_demoted += demoted
            slots += taken
        if len(slots) < n:
            evicted = self.blocks.evict_lru(n - len(slots), now)
            for _, key in evicted:
                self._refs.pop(key, None)
            slots += [slot for slot, _ in evicted]
        return slots

    def service(self, wait_s: float = 0.0) -> None:
        """Work the daemon's ACKs ask for outside a step (an idle engine): fill the
        write-through slots reserved by the last COMMIT (waiting up to ``wait_s`` for its
        ACK) and confirm the copies, so an engine that goes idle leaves its last blocks in the
        CPU tier too."""
        if self.link is None:
            return
        self.link.wait_acks(wait_s)
        self._fill_reserved()
        self.transfers.confirm()

    def drain(self, deadline: float, clock: Callable[[], float]) -> tuple[int, bool]:
        """Write every committed block through the daemon to its lower tiers before
        ``deadline`` (a drain: the host is going away). Commits what waits, fills the CPU
        slots the daemon reserves for them (write-through, waiting for its ACKs while time is
        left), then asks the daemon to FLUSH (its disk and remote writes are sent). Returns
        (bytes copied to the CPU tier, whether the daemon confirmed the flush in time). What
        does not make it is recomputed by whoever resumes: never a wrong output."""
        if self.link is None:
            return 0, False
        self.flush_commits(force=True)
        copied = 0
        while clock() < deadline:
            self.link.wait_acks(min(0.05, max(0.0, deadline - clock())))
            filled = self.transfers.fill_reserved(self.blocks, self._refs)
            copied += len(filled) * self.pool.bytes_per_block
            self.transfers.confirm()
            if not filled and not self.link.client.has_unacked:
                break
        left = deadline - clock()
        return copied, left > 0 and self.link.flush(left)

    def _fill_reserved(self) -> None:
        assert self.link is not None
        for key in self.transfers.fill_reserved(self.blocks, self._refs):
            for owners in self._offload_owner:
                owner = owners.pop(key, None)
                if owner is not None:
                    owner.stats.bytes_offloaded += self.pool.bytes_per_block
                    break

    def _release_leases(self, req: Request) -> None:
        if req.leased and self.link is not None:
            self.link.release(list(req.leased))
        req.leased = {}


_OWNER_FLUSHES = 4  # an ACK comes within a step or two; older owners are not kept


def _in_use(ref: BlockRef, slot: int, req: Request) -> bool:
    """Whether running ``req`` still holds block ``ref`` in ``slot`` of its table."""
    i = ref.position
    return req.status is Status.RUNNING and i < len(req.slots) and req.slots[i] == slot


def _count_sources(req: Request, actions: list[Action], block_size: int) -> None:
    """Prompt tokens by source on first admission; after a preemption, what is computed again."""
    if req.stats.first_scheduled is not None:
        req.stats.preempted_recompute_tokens += req.num_todo
        return
    per = dict.fromkeys(Action, 0)
    for a in actions:
        per[a] += block_size
    req.stats.resident_tokens = per[Action.RESIDENT]
    req.stats.fetched_tokens = sum(per[a] for a in Action if a.fetched)
    req.stats.recomputed_tokens = per[Action.RECOMPUTE]
    req.stats.new_tokens = per[Action.NEW] + req.num_tokens - len(actions) * block_size

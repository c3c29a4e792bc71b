"""The sockets of ``asymcache bench wire``: hostile senders that check every answer against
the catalogue (``_hostile.py``), and well-formed clients that check every reply and byte.

A hostile sender sends a window of messages (under ``max_inflight``, so no BUSY), then reads
until each has its answer or the window's deadline passes: a reply under its request id, a
reply under id 0 for a message whose id the daemon cannot trust (matched in order: ZeroMQ keeps
a connection's order and the daemon answers such refusals at once), or an ACK covering a
one-way request. Whatever does not match the catalogue is counted as unexpected, with the
first few kept as examples.
"""

from __future__ import annotations

import hashlib
import queue
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field

import zmq

from asymcache.cacheserver import protocol as p
from asymcache.cacheserver.protocol.sockets import DealerSocket
from asymcache.engine.client import CacheClient
from asymcache.ops.bench._hostile import LAYOUT, MODEL, Expect, Hostile, chain_refs

WINDOW = 32  # messages in flight per hostile socket (max_inflight is 64)
REPLY_WAIT_S = 10.0  # per window
SILENCE_WAIT_S = 0.02  # how long a "no reply" message is watched for one
EXAMPLES = 20


@dataclass
class Tally:
    """Outcomes per category (``replies[category][outcome]``) and the unexpected ones."""

    replies: dict[str, Counter] = field(default_factory=dict)
    unexpected: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, msg: Hostile, outcome: str, ok: bool) -> None:
        with self.lock:
            self.replies.setdefault(msg.category, Counter())[outcome] += 1
            self.done += 1
            if not ok:
                self.unexpected[msg.category] += 1
                if len(self.examples) < EXAMPLES:
                    self.examples.append(f"{msg.category}: expected {msg.expect.describe()}, "
                                         f"got {outcome}")

    def stray(self, what: str) -> None:
        with self.lock:
            self.unexpected["(stray reply)"] += 1
            if len(self.examples) < EXAMPLES:
                self.examples.append(f"stray: {what}")


def judge(expect: Expect, reply: p.Reply | None, ack_code: str | None = None,
          acked: bool = False) -> tuple[str, bool]:
    """``(outcome, as expected)`` for a direct reply, an ACK (``acked``) or silence."""
    if acked:
        outcome = f"ack:{ack_code}" if ack_code else "ack"
        ok = (expect.kind == "ack_error" and ack_code in expect.codes) or (
            expect.kind == "ack_ok" and ack_code is None)
        return outcome, ok
    if reply is None:
        return "none", expect.kind == "none"
    if isinstance(reply, p.ErrorReply):
        return reply.code, expect.kind == "error" and reply.code in expect.codes
    if expect.kind == "exposed":
        return "ok:exposed", True
    return "ok", expect.kind == "ok" and expect.check is not None and expect.check(reply)


class HostileSender(threading.Thread):
    """Sends the messages of one socket role from ``inbox`` (``None`` ends it), window by
    window; ``routing_id`` makes it speak as a registered engine."""

    def __init__(self, endpoint: str, inbox: queue.Queue, tally: Tally, deadline: float,
                 routing_id: bytes | None = None) -> None:
        super().__init__(daemon=True, name=f"hostile-{routing_id!r}")
        self.endpoint, self.inbox, self.tally, self.deadline = endpoint, inbox, tally, deadline
        self.routing_id = routing_id

    def run(self) -> None:
        sock = DealerSocket(zmq.Context.instance(), self.endpoint, self.routing_id)
        try:
            finished = False
            while not finished:
                window: list[Hostile] = []
                while len(window) < WINDOW:
                    msg = self.inbox.get()
                    if msg is None:
                        finished = True
                        break
                    window.append(msg)
                if window:
                    self._window(sock, window)
        finally:
            sock.close()

    def _window(self, sock: DealerSocket, window: list[Hostile]) -> None:
        by_rid: dict[int, Hostile] = {}
        by_zero: deque[Hostile] = deque()
        for msg in window:
            sock.send(msg.frames)
            if msg.reply_rid:
                by_rid[msg.reply_rid] = msg
            else:
                by_zero.append(msg)
        end = min(time.monotonic() + REPLY_WAIT_S, self.deadline)
        while (by_rid or by_zero) and (frames := sock.recv(end - time.monotonic())) is not None:
            try:
                rid, reply = p.decode_reply(frames)
            except p.ProtocolError as e:
                self.tally.stray(f"an undecodable reply: {e}")
                continue
            self._match(rid, reply, by_rid, by_zero)
        for msg in [*by_rid.values(), *by_zero]:
            self.tally.record(msg, "no reply", msg.expect.kind == "none")

    def _match(self, rid: int, reply: p.Reply, by_rid: dict[int, Hostile],
               by_zero: deque[Hostile]) -> None:
        if isinstance(reply, p.Ack):
            errors = dict(zip(reply.error_ids, reply.error_codes, strict=True))
            for covered in sorted(r for r in by_rid if r <= reply.upto):
                msg = by_rid[covered]
                if msg.expect.kind.startswith("ack"):
                    del by_rid[covered]
                    self.tally.record(msg, *judge(msg.expect, None, errors.get(covered), True))
            return
        msg = by_rid.pop(rid, None) if rid else None
        if msg is None and rid == 0 and by_zero:
            msg = by_zero.popleft()
        if msg is None:
            self.tally.stray(f"{reply!r:.200}")
            return
        self.tally.record(msg, *judge(msg.expect, reply))


class FreshSender(threading.Thread):
    """Sends each message on a socket of its own and watches it for a reply (there must be
    none: the daemon's socket drops a connection that sends an oversized frame)."""

    def __init__(self, endpoint: str, inbox: queue.Queue, tally: Tally) -> None:
        super().__init__(daemon=True, name="hostile-fresh")
        self.endpoint, self.inbox, self.tally = endpoint, inbox, tally

    def run(self) -> None:
        while (msg := self.inbox.get()) is not None:
            sock = DealerSocket(zmq.Context.instance(), self.endpoint)
            try:
                sock.send(msg.frames)
                frames = sock.recv(SILENCE_WAIT_S)
                reply = p.decode_reply(frames)[1] if frames is not None else None
                self.tally.record(msg, *judge(msg.expect, reply))
            finally:
                sock.close()


def block_bytes(ref: p.BlockRef) -> bytes:
    """Deterministic bytes of one block (different per key)."""
    seed = hashlib.blake2b(ref.key, digest_size=32).digest()
    n = LAYOUT.bytes_per_block
    return (seed * (n // len(seed) + 1))[:n]


class GoodClient(threading.Thread):
    """A well-formed engine of its own tenant: COMMIT gpu, LOOKUP, RELEASE, PUT, GET of its
    own blocks in a loop, checking every reply and byte, until ``stop`` (or ``max_rounds``)."""

    SEQUENCES, BLOCKS, GPU_SLOTS = 8, 4, 16

    def __init__(self, endpoint: str, name: str, stop: threading.Event, deadline: float,
                 max_rounds: int = 1_000_000) -> None:
        super().__init__(daemon=True, name=name)
        self.endpoint, self.stop, self.deadline, self.max_rounds = endpoint, stop, deadline, \
            max_rounds
        self.seqs = [chain_refs(name, self.BLOCKS, start=1000 * i) for i in range(self.SEQUENCES)]
        self.requests = self.failures = 0
        self.stored: set[bytes] = set()  # keys this client has put
        self.errors: list[str] = []
        self.client = CacheClient(endpoint, engine_id=name, timeout_s=10, heartbeat=True)
        self.client.hello(MODEL, LAYOUT, gpu_slots=self.GPU_SLOTS)

    def run(self) -> None:
        rounds = 0
        while not self.stop.is_set() and rounds < self.max_rounds and \
                time.monotonic() < self.deadline:
            try:
                self._round(rounds)
            except Exception as e:  # a failed request is counted, the loop goes on
                self._fail(f"round {rounds}: {type(e).__name__}: {e}")
            rounds += 1

    def _fail(self, what: str) -> None:
        self.failures += 1
        if len(self.errors) < EXAMPLES:
            self.errors.append(what)

    def _round(self, i: int) -> None:
        c, refs = self.client, self.seqs[i % self.SEQUENCES]
        keys = [r.key for r in refs]
        slots = [(i * self.BLOCKS + j) % self.GPU_SLOTS for j in range(self.BLOCKS)]
        self._check("commit", c.commit(refs, slots), [True] * self.BLOCKS)
        found = c.lookup(keys, lease=True)
        self._check("lookup", (list(found.where), found.slots), ([p.Where.GPU] * self.BLOCKS,
                                                                 slots))
        self._check("release", c.release(keys), self.BLOCKS)
        payloads = [block_bytes(r) for r in refs]
        self._check("put", c.put(refs, payloads).stored, [True] * self.BLOCKS)
        self.stored.update(keys)
        got = c.get(keys)
        self._check("get", [bytes(g) if g is not None else None for g in got], payloads)

    def _check(self, op: str, got: object, want: object) -> None:
        self.requests += 1
        if got != want:
            self._fail(f"{op}: got {got!r:.120}, expected {want!r:.120}")

    def close(self) -> None:
        self.client.close()

"""The remote tier's commands and failures, as the link sends and reports them.

* :class:`RawCommand` — a command already encoded in RESP, sent as pieces: :func:`set_command`
  makes the SET of a block from its header and its payload (never copied); :func:`pack` encodes
  a batch of such and ordinary argument tuples the way redis-py's ``Connection.pack_commands``
  would.
* :class:`NotConnected`, :class:`NodeSkipped` — failures the link reports without touching a
  socket; :func:`error_kind` names any failed command's kind for ``error_counts()``.
* :class:`PipelineSink` — the remote tier's write-behind sink (``tiers/write_behind.py``): a
  batch of writes as SETs and DELs in one pipelined round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import redis

from asymcache.tiers.write_behind import WriteOp

_COALESCE = 6000  # pieces below this are joined before sending (redis-py's buffer cutoff)


@dataclass(frozen=True, slots=True)
class RawCommand:
    """A command already in RESP, as pieces sent in order (large ones without a copy)."""

    pieces: tuple[bytes | bytearray | memoryview, ...]


Command = tuple[bytes, "tuple | RawCommand"]  # (routing key, arguments or a RawCommand)
BatchObserver = Callable[[str, float, int], None]  # (op name, seconds, bytes)


class NotConnected(redis.ConnectionError):
    """No cluster client yet (the cluster was never reached)."""


class NodeSkipped(redis.ConnectionError):
    """The node serving the key failed recently and is skipped until a probe finds it back."""


def set_command(rkey: bytes, head: bytes, payload: bytes | bytearray, ttl_ms: int) -> RawCommand:
    """``SET rkey <head + payload> [PX ttl_ms]`` in RESP, the value in two pieces (no copy)."""
    length = len(head) + len(payload)
    count = 5 if ttl_ms > 0 else 3
    start = b"*%d\r\n$3\r\nSET\r\n$%d\r\n%b\r\n$%d\r\n" % (count, len(rkey), rkey, length)
    end = b"\r\n"
    if ttl_ms > 0:
        ttl = b"%d" % ttl_ms
        end += b"$2\r\nPX\r\n$%d\r\n%b\r\n" % (len(ttl), ttl)
    return RawCommand((start, head, payload, end))


def error_kind(exc: BaseException) -> str:
    """The ``error_counts()`` key of a failed command."""
    kinds = ((NotConnected, "unavailable"), (NodeSkipped, "unavailable"),
             (redis.TimeoutError, "timeout"), (redis.AuthenticationError, "auth"),
             (redis.ConnectionError, "connection"), (redis.exceptions.AskError, "moved"),
             (redis.exceptions.SlotNotCoveredError, "slot"),
             (redis.exceptions.ClusterDownError, "cluster_down"),
             (redis.exceptions.TryAgainError, "cluster_down"),
             (redis.exceptions.OutOfMemoryError, "oom"),
             (redis.exceptions.NoPermissionError, "auth"))
    for cls, kind in kinds:
        if isinstance(exc, cls):
            return kind
    return "response"


def pack(conn: redis.connection.Connection, commands: list) -> list:
    """RESP pieces of ``commands`` (argument tuples or :class:`RawCommand`): small pieces joined,
    large ones passed through, as ``Connection.pack_commands`` does."""
    out: list = []
    small: list = []
    size = 0
    for args in commands:
        pieces = args.pieces if isinstance(args, RawCommand) else conn.pack_command(*args)
        for piece in pieces:
            n = len(piece)
            if n > _COALESCE:
                if small:
                    out.append(b"".join(small))
                    small, size = [], 0
                out.append(piece)
                continue
            small.append(piece)
            size += n
            if size > _COALESCE:
                out.append(b"".join(small))
                small, size = [], 0
    if small:
        out.append(b"".join(small))
    return out


@dataclass(frozen=True)
class PipelineSink:
    """Writes a batch of :class:`WriteOp` (``head`` = the encoded header, ``value`` = the payload)
    as one ``execute`` round, SETs with ``ttl_ms`` and DELs, skipping cancelled ops; a failed
    command sets its op's ``failed``. ``observe("write", seconds, bytes)`` follows each round."""

    execute: Callable[[list[Command]], list]
    redis_key: Callable[[bytes], bytes]
    ttl_ms: int
    observe: BatchObserver | None = None

    def __call__(self, batch: list[WriteOp]) -> None:
        live = [op for op in batch if not op.cancelled]
        commands: list[Command] = []
        for op in live:
            rkey = self.redis_key(op.key)
            if op.value is None:
                commands.append((rkey, ("DEL", rkey)))
            else:
                commands.append((rkey, set_command(rkey, op.head, op.value, self.ttl_ms)))
        start = time.perf_counter()
        replies = self.execute(commands)
        seconds = time.perf_counter() - start
        for op, reply in zip(live, replies, strict=True):
            if isinstance(reply, Exception):
                op.failed = error_kind(reply)
        if self.observe is not None and live:
            self.observe("write", seconds, sum(op.nbytes for op in live))

"""Framing: the msgpack header frame and the payload frames after it.

A message is a list of ZeroMQ frames: one msgpack **header** ``[version, op, request_id, fields]``
followed by optional raw **payload** frames carrying block bytes (PUT requests, GET replies).
This module packs and unpacks the header and checks the frames against :class:`Limits`; it is
the only code of the project that imports msgpack (no pickle, no msgpack extension types).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgpack

from asymcache.cacheserver.protocol.wire_types import ErrorCode, Limits, ProtocolError

PROTOCOL_VERSION = 3  # 2: one-way COMMIT/RELEASE/CANCEL (``notify``) acknowledged by ACK;
# 3: SIGNAL (clients' session, retention and session-end signals to the residency policy)
Buffer = bytes | bytearray | memoryview


def pack_header(op: str, request_id: int, fields: dict[str, Any]) -> bytes:
    """The header frame ``[PROTOCOL_VERSION, op, request_id, fields]`` (bin type for bytes)."""
    return msgpack.packb([PROTOCOL_VERSION, op, request_id, fields], use_bin_type=True)


def unpack_header(frames: Sequence[Buffer], lim: Limits) -> tuple[int, str, int, dict]:
    """``(version, op, request_id, fields)`` of ``frames[0]``; raises :class:`ProtocolError`
    (with the request id and op once they are known: a bad version or a fields non-map)."""
    if not frames:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "empty message")
    head = frames[0]
    if len(head) > lim.max_header_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"header over {lim.max_header_bytes} bytes")
    obj = _unpack(head, lim)
    if type(obj) is not list or len(obj) != 4:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header must be [version, op, id, fields]")
    version, op, given_rid, raw = obj
    rid_ok = type(given_rid) is int and 0 <= given_rid < 2**63
    rid = given_rid if rid_ok else 0  # an error about it goes back under id 0
    op = op if type(op) is str and len(op) <= 32 else ""
    if version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.BAD_VERSION, f"protocol version {version!r} is not "
                            f"{PROTOCOL_VERSION}, the one this side speaks: upgrade the older "
                            f"of daemon and engine (daemons first)", rid, op)
    if type(raw) is not dict:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header fields must be a map", rid, op)
    if not rid_ok:  # never run a request whose reply the sender could not match
        raise ProtocolError(ErrorCode.BAD_FIELD, f"request_id must be an integer in "
                            f"[0, 2**63), got {given_rid!r}", 0, op)
    return version, op, rid, raw


def _unpack(head: Buffer, lim: Limits) -> Any:
    """msgpack-decode a header within ``lim``; every failure becomes a :class:`ProtocolError`."""
    try:
        return msgpack.unpackb(
            head, raw=False, strict_map_key=True, max_bin_len=lim.max_header_bytes,
            max_str_len=lim.max_header_bytes, max_array_len=lim.max_keys + 16,
            max_map_len=1024, max_ext_len=0,
        )
    except Exception as e:  # msgpack raises several unrelated types for bad input
        if "max_ext_len" in str(e):
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "msgpack extension types are not "
                                "allowed") from None
        if "exceeds max" in str(e):  # a msgpack size limit: too many keys, too long a string
            raise ProtocolError(ErrorCode.TOO_LARGE, f"header over a size limit: {e}") from None
        raise ProtocolError(ErrorCode.BAD_MESSAGE, f"header is not valid msgpack: {e}") from None


def check_payload(frames: Sequence[Buffer], lim: Limits, rid: int, op: str) -> list[Buffer]:
    """The payload frames (``frames[1:]``) after checking their count and sizes."""
    payload = list(frames[1:])
    if len(payload) > lim.max_frames:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{len(payload)} frames, more than "
                            f"{lim.max_frames}", rid, op)
    for f in payload:
        if len(f) > lim.max_frame_bytes:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"a frame of {len(f)} bytes is over "
                                f"{lim.max_frame_bytes}", rid, op)
    return payload

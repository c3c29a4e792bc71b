"""Wire types: what a message field may hold, its decoder, and the one ``ProtocolError``.

Message fields are declared with a small set of wire types (``int``, ``float``, ``bool``,
``str``, ``Key`` = 16 bytes, ``EngineId`` and ``Fingerprint`` = strings of bounded UTF-8 length,
``list[...]``, ``BlockRef``, ``dict``); :data:`DECODERS` maps each declared type to a function
``decode(value, field_name, limits)`` that returns the checked value or raises
:class:`ProtocolError` naming the field and what was wrong. Pure Python, no msgpack.

Identifier limits (docs/security.md) are in UTF-8 bytes. An engine's ZeroMQ routing id is
``ROUTING_ID_PREFIX + engine_id + "#" + nonce`` (a random nonce per client, so that no other
peer can take over the connection replies go to) and its heartbeat socket's that +
``HEARTBEAT_SUFFIX`` (``sockets.py``); ZeroMQ routing ids are at most 255 bytes, so
``ENGINE_ID_MAX_BYTES`` leaves room for all of it. A ``cache_salt`` never travels to the daemon
(it is hashed into the namespace by ``blocks.namespace_id``, which checks ``SALT_MAX_BYTES``);
keys and namespaces are exactly ``KEY_BYTES``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

KEY_BYTES = 16
Key = bytes  # a 16-byte digest on the wire (wire type "Key")
EngineId = str  # wire type "EngineId": at most ENGINE_ID_MAX_BYTES, no control characters
Fingerprint = str  # wire type "Fingerprint": at most FINGERPRINT_MAX_BYTES, no control characters

ROUTING_ID_MAX_BYTES = 255  # ZeroMQ's limit on a socket's routing id
ROUTING_ID_PREFIX = b"asymcache:"  # an engine's routing id is this + its engine_id
HEARTBEAT_SUFFIX = b"/heartbeat"  # + this: the routing id of its heartbeat socket
ENGINE_ID_MAX_BYTES = 128
FINGERPRINT_MAX_BYTES = 256  # engines send 32 hex characters (engine/model/fingerprint.py)
SALT_MAX_BYTES = 256  # a tenant's cache_salt
ROUTING_ID_NONCE_BYTES = 16  # + "#" and this many random hex digits: not guessable by others
assert (len(ROUTING_ID_PREFIX) + ENGINE_ID_MAX_BYTES + 1 + ROUTING_ID_NONCE_BYTES
        + len(HEARTBEAT_SUFFIX) <= ROUTING_ID_MAX_BYTES)


class ErrorCode(StrEnum):
    """The ``code`` of an error reply."""

    BAD_MESSAGE = "bad_message"  # not msgpack, or not a [version, op, id, fields] header
    BAD_VERSION = "bad_version"
    UNKNOWN_OP = "unknown_op"
    BAD_FIELD = "bad_field"  # a missing, unknown or mistyped field
    TOO_LARGE = "too_large"  # over a size limit (header, frames, keys, strings)
    BUSY = "busy"  # this peer has too many requests in flight
    NOT_REGISTERED = "not_registered"  # the op needs a HELLO first (or the daemon restarted)
    BAD_LAYOUT = "bad_layout"  # HELLO's block does not fit the CPU tier's slot
    CAPACITY = "capacity"  # too many engines or GPU slots for the configured bounds
    UNAVAILABLE = "unavailable"  # a tier is closed or shutting down
    INTERNAL = "internal"


class ProtocolError(Exception):
    """A message that cannot be accepted; ``code`` says why, ``message`` says what to fix."""

    def __init__(self, code: ErrorCode, message: str, request_id: int = 0, op: str = "") -> None:
        super().__init__(f"{code}: {message}")
        self.code = ErrorCode(code)
        self.message = message
        self.request_id = request_id
        self.op = op


class Where(IntEnum):
    """Where LOOKUP found a block (one code per key)."""

    MISS = 0
    GPU = 1  # in the asking engine's GPU pool; ``slot`` is its GPU slot
    CPU = 2  # in the shared CPU tier; ``slot`` is the CPU slot
    DISK = 3  # on disk only; PROMOTE brings it to a CPU slot
    REMOTE = 4  # in the remote tier (shared cluster) only; PROMOTE brings it to a CPU slot.
    # Reported only to a LOOKUP that sets ``remote`` (older clients get MISS instead)


@dataclass(frozen=True)
class Limits:
    """Size limits enforced while decoding (the daemon passes its configured ones)."""

    max_header_bytes: int = 1 << 20
    max_frames: int = 4096
    max_frame_bytes: int = 64 << 20
    max_keys: int = 4096
    max_str: int = 4096


DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A block's identity and place: ``key`` and ``namespace`` are 16-byte digests, ``parent``
    the previous block's key (``None`` for the first), ``position`` its index in the sequence."""

    key: bytes
    namespace: bytes
    parent: bytes | None
    position: int


Decoder = Callable[[Any, str, Limits], Any]


def field_error(name: str, what: str, code: ErrorCode = ErrorCode.BAD_FIELD) -> ProtocolError:
    """The error for field ``name`` (``what``: the rest of the sentence, e.g. "is required")."""
    return ProtocolError(code, f"field {name!r} {what}")


def _not_a(name: str, kind: str, v: Any) -> ProtocolError:
    return field_error(name, f"must be {kind}, got {type(v).__name__}")


def _int(v: Any, name: str, lim: Limits) -> int:
    if type(v) is not int:
        raise _not_a(name, "an int", v)
    return v


def _float(v: Any, name: str, lim: Limits) -> float:
    if type(v) not in (int, float) or not math.isfinite(v):
        raise field_error(name, f"must be a finite number, got {v!r:.40}")
    return float(v)


def _bool(v: Any, name: str, lim: Limits) -> bool:
    if type(v) is not bool:
        raise _not_a(name, "a bool", v)
    return v


def _str(v: Any, name: str, lim: Limits) -> str:
    if type(v) is not str:
        raise _not_a(name, "a str", v)
    if len(v) > lim.max_str:
        raise field_error(name, f"is longer than {lim.max_str} characters", ErrorCode.TOO_LARGE)
    return v


def _key(v: Any, name: str, lim: Limits) -> bytes:
    if type(v) is not bytes or len(v) != KEY_BYTES:
        raise field_error(name, f"must be {KEY_BYTES} bytes (KEY_BYTES), got {v!r:.40}")
    return v


def identifier_problem(value: str, max_bytes: int) -> tuple[ErrorCode, str] | None:
    """What is wrong with ``value`` as an identifier of at most ``max_bytes`` UTF-8 bytes and
    no control characters (identifiers end up in logs, metrics and events): the error code and
    the rest of a sentence naming it, or ``None``."""
    if len(value) > max_bytes:  # each character is at least one byte
        return ErrorCode.TOO_LARGE, f"is longer than {max_bytes} bytes (its limit)"
    try:
        size = len(value.encode())
    except UnicodeEncodeError:
        return ErrorCode.BAD_FIELD, "is not valid UTF-8 text"
    if size > max_bytes:
        return ErrorCode.TOO_LARGE, f"is {size} bytes in UTF-8, more than {max_bytes} (its limit)"
    if not value.isprintable():
        return ErrorCode.BAD_FIELD, "holds control or unprintable characters"
    return None


def _identifier(max_bytes: int, what: str) -> Decoder:
    def decode(v: Any, name: str, lim: Limits) -> str:
        if type(v) is not str:
            raise _not_a(name, "a str", v)
        problem = identifier_problem(v, max_bytes)
        if problem is not None:
            raise field_error(name, f"{problem[1]}; {what}", problem[0])
        return v

    return decode


def _opt_key(v: Any, name: str, lim: Limits) -> bytes | None:
    return None if v is None else _key(v, name, lim)


def _opt_float(v: Any, name: str, lim: Limits) -> float | None:
    return None if v is None else _float(v, name, lim)


def _dict(v: Any, name: str, lim: Limits) -> dict:
    if type(v) is not dict:
        raise _not_a(name, "a map", v)
    return v


def _blockref(v: Any, name: str, lim: Limits) -> BlockRef:
    if type(v) is not list or len(v) != 4:
        raise field_error(name, "must be [key, namespace, parent|nil, position]")
    key, ns, parent, pos = v
    if not (type(key) is bytes and len(key) == KEY_BYTES and type(ns) is bytes
            and len(ns) == KEY_BYTES and type(pos) is int and pos >= 0
            and (parent is None or (type(parent) is bytes and len(parent) == KEY_BYTES))):
        _key(key, name + ".key", lim)  # each raises with a message naming the part
        _key(ns, name + ".namespace", lim)
        _opt_key(parent, name + ".parent", lim)
        raise field_error(name + ".position", f"must be an int >= 0, got {pos!r:.40}")
    return BlockRef(key, ns, parent, pos)


def _check_list(v: Any, name: str, lim: Limits) -> None:
    """Raise unless ``v`` is a list of at most ``lim.max_keys`` items."""
    if type(v) is not list:
        raise _not_a(name, "a list", v)
    if len(v) > lim.max_keys:
        raise field_error(name, f"has {len(v)} items, more than {lim.max_keys}",
                          ErrorCode.TOO_LARGE)


def _list_of(item: Decoder) -> Callable[[Any, str, Limits], list]:
    def decode(v: Any, name: str, lim: Limits) -> list:
        _check_list(v, name, lim)
        return [item(x, name, lim) for x in v]

    return decode


def _key_list(v: Any, name: str, lim: Limits) -> list[bytes]:
    """``list[Key]`` with one pass of cheap checks (the hot path: LOOKUP, RELEASE, GET)."""
    _check_list(v, name, lim)
    for x in v:
        if type(x) is not bytes or len(x) != KEY_BYTES:
            _key(x, name, lim)  # raises with the message
    return v


# declared field type (as written in the message dataclass) -> its decoder
DECODERS: dict[str, Decoder] = {
    "int": _int, "float": _float, "bool": _bool, "str": _str, "Key": _key, "dict": _dict,
    "float | None": _opt_float, "Key | None": _opt_key, "list[Key]": _key_list,
    "list[int]": _list_of(_int),
    "list[bool]": _list_of(_bool), "list[BlockRef]": _list_of(_blockref),
    "list[str]": _list_of(_str),
    "EngineId": _identifier(ENGINE_ID_MAX_BYTES, "an engine id is at most "
                            f"{ENGINE_ID_MAX_BYTES} bytes: ZeroMQ routing ids are at most "
                            f"{ROUTING_ID_MAX_BYTES} bytes and the client adds "
                            f"{ROUTING_ID_PREFIX.decode()!r} and {HEARTBEAT_SUFFIX.decode()!r}"),
    "Fingerprint": _identifier(FINGERPRINT_MAX_BYTES, "a model fingerprint is at most "
                               f"{FINGERPRINT_MAX_BYTES} bytes"),
}


def encode_value(v: Any) -> Any:
    """A field value as msgpack gets it: a ``list[BlockRef]`` as lists of its four parts."""
    if isinstance(v, list) and v and isinstance(v[0], BlockRef):
        return [[b.key, b.namespace, b.parent, b.position] for b in v]
    return v

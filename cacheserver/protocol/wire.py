"""Wire encoding: the header format, wire types, size limits and the one ``ProtocolError``.

A message is a list of ZeroMQ frames: one msgpack **header** ``[version, op, request_id, fields]``
followed by optional raw **payload** frames carrying block bytes (PUT requests, GET replies).
Replies repeat the op and request id; their ``fields`` hold ``ok: true`` and the op's results, or
``{ok: false, code, message}`` (:class:`ErrorReply`).

Message fields are declared with a small set of wire types (``int``, ``float``, ``bool``,
``str``, ``Key`` = 16 bytes, ``list[...]``, ``BlockRef``, ``dict``). Decoding checks types,
sizes and the protocol version and raises exactly one exception type, :class:`ProtocolError`,
carrying an error ``code`` from :class:`ErrorCode`. No pickle, no msgpack extension types.
This package is the only code that imports msgpack.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from enum import IntEnum, StrEnum
from typing import Any, ClassVar

import msgpack

PROTOCOL_VERSION = 1
KEY_BYTES = 16
Buffer = bytes | bytearray | memoryview
Key = bytes  # a 16-byte digest on the wire (wire type "Key")


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


_DEFAULT_LIMITS = Limits()


@dataclass(frozen=True, slots=True)
class BlockRef:
    """A block's identity and place: ``key`` and ``namespace`` are 16-byte digests, ``parent``
    the previous block's key (``None`` for the first), ``position`` its index in the sequence."""

    key: bytes
    namespace: bytes
    parent: bytes | None
    position: int


# ---- wire types ---------------------------------------------------------------------------
def _fail(name: str, what: str, code: ErrorCode = ErrorCode.BAD_FIELD) -> ProtocolError:
    return ProtocolError(code, f"field {name!r} {what}")


def _int(v: Any, name: str, lim: Limits) -> int:
    if type(v) is not int:
        raise _fail(name, f"must be an int, got {type(v).__name__}")
    return v


def _float(v: Any, name: str, lim: Limits) -> float:
    if type(v) not in (int, float) or not math.isfinite(v):
        raise _fail(name, f"must be a finite number, got {v!r:.40}")
    return float(v)


def _bool(v: Any, name: str, lim: Limits) -> bool:
    if type(v) is not bool:
        raise _fail(name, f"must be a bool, got {type(v).__name__}")
    return v


def _str(v: Any, name: str, lim: Limits) -> str:
    if type(v) is not str:
        raise _fail(name, f"must be a str, got {type(v).__name__}")
    if len(v) > lim.max_str:
        raise _fail(name, f"is longer than {lim.max_str} characters", ErrorCode.TOO_LARGE)
    return v


def _key(v: Any, name: str, lim: Limits) -> bytes:
    if type(v) is not bytes or len(v) != KEY_BYTES:
        raise _fail(name, f"must be {KEY_BYTES} bytes, got {v!r:.40}")
    return v


def _opt_key(v: Any, name: str, lim: Limits) -> bytes | None:
    return None if v is None else _key(v, name, lim)


def _opt_float(v: Any, name: str, lim: Limits) -> float | None:
    return None if v is None else _float(v, name, lim)


def _dict(v: Any, name: str, lim: Limits) -> dict:
    if type(v) is not dict:
        raise _fail(name, f"must be a map, got {type(v).__name__}")
    return v


def _blockref(v: Any, name: str, lim: Limits) -> BlockRef:
    if type(v) is not list or len(v) != 4:
        raise _fail(name, "must be [key, namespace, parent|nil, position]")
    key, ns, parent, pos = v
    if not (type(key) is bytes and len(key) == KEY_BYTES and type(ns) is bytes
            and len(ns) == KEY_BYTES and type(pos) is int and pos >= 0
            and (parent is None or (type(parent) is bytes and len(parent) == KEY_BYTES))):
        _key(key, name + ".key", lim)  # each raises with a message naming the part
        _key(ns, name + ".namespace", lim)
        _opt_key(parent, name + ".parent", lim)
        raise _fail(name + ".position", f"must be an int >= 0, got {pos!r:.40}")
    return BlockRef(key, ns, parent, pos)


def _list_of(item: Callable[[Any, str, Limits], Any]) -> Callable[[Any, str, Limits], list]:
    def decode(v: Any, name: str, lim: Limits) -> list:
        if type(v) is not list:
            raise _fail(name, f"must be a list, got {type(v).__name__}")
        if len(v) > lim.max_keys:
            raise _fail(name, f"has {len(v)} items, more than {lim.max_keys}", ErrorCode.TOO_LARGE)
        return [item(x, name, lim) for x in v]

    return decode


def _key_list(v: Any, name: str, lim: Limits) -> list[bytes]:
    """``list[Key]`` with one pass of cheap checks (the hot path: LOOKUP, RELEASE, GET)."""
    if type(v) is not list:
        raise _fail(name, f"must be a list, got {type(v).__name__}")
    if len(v) > lim.max_keys:
        raise _fail(name, f"has {len(v)} items, more than {lim.max_keys}", ErrorCode.TOO_LARGE)
    for x in v:
        if type(x) is not bytes or len(x) != KEY_BYTES:
            _key(x, name, lim)  # raises with the message
    return v


_DECODERS: dict[str, Callable[[Any, str, Limits], Any]] = {
    "int": _int, "float": _float, "bool": _bool, "str": _str, "Key": _key, "dict": _dict,
    "float | None": _opt_float, "list[Key]": _key_list, "list[int]": _list_of(_int),
    "list[bool]": _list_of(_bool), "list[BlockRef]": _list_of(_blockref),
}


def _encode_value(v: Any) -> Any:
    if isinstance(v, list) and v and isinstance(v[0], BlockRef):
        return [[b.key, b.namespace, b.parent, b.position] for b in v]
    return v


# ---- message base -------------------------------------------------------------------------
_ABSENT = object()  # a field not in the received header
_REQUIRED = object()  # the default of a field without one
# Field metadata: a field added after version 1 is sent only when it differs from its default,
# so a peer that predates it still decodes every message that does not use it.
OMIT_DEFAULT = "omit_default"

_REQUESTS: dict[str, type[Message]] = {}
_REPLIES: dict[str, type[Message]] = {}


class Message:
    """Base of every request and reply dataclass.

    ``OP`` names the op; a field named ``frames`` (if any) travels as raw payload frames after
    the header instead of inside it. ``to_wire(request_id)`` returns the frames to send;
    ``from_wire`` is :func:`decode_request` / :func:`decode_reply`.
    """

    OP: ClassVar[str] = ""
    IS_REPLY: ClassVar[bool] = False
    _schema: ClassVar[tuple[tuple[str, Callable, bool], ...]] = ()
    _names: ClassVar[frozenset[str]] = frozenset()  # header field names ("ok" too on replies)
    _has_frames: ClassVar[bool] = False
    _omit: ClassVar[dict[str, Any]] = {}  # field -> default: not sent while at its default
    _plain: ClassVar[bool] = False  # no frames, BlockRefs or omitted defaults: send __dict__
    _decoding: ClassVar[tuple[tuple[str, Callable, Any], ...]] = ()  # (name, decode, default)
    _checks: ClassVar[bool] = False  # has a __post_init__: decoding must run __init__

    def header_fields(self) -> dict[str, Any]:
        if self._plain:  # every field is sent as it is, in declaration order
            out = self.__dict__.copy()
        else:
            out = {name: _encode_value(getattr(self, name)) for name, _, _ in self._schema
                   if name not in self._omit or getattr(self, name) != self._omit[name]}
        if self.IS_REPLY:
            out["ok"] = True
        return out

    def to_wire(self, request_id: int) -> list[Buffer]:
        """``[header, *payload]`` frames; payload buffers are sent as they are (zero-copy)."""
        header = msgpack.packb(
            [PROTOCOL_VERSION, self.OP, request_id, self.header_fields()], use_bin_type=True
        )
        if self._has_frames:
            return [header, *self.frames]  # type: ignore[attr-defined]
        return [header]

    @classmethod
    def from_fields(cls, raw: dict, payload: list[Buffer], lim: Limits) -> Message:
        values: dict[str, Any] = {}
        n = 0
        for name, decode, default in cls._decoding:
            v = raw.get(name, _ABSENT)
            if v is not _ABSENT:
                values[name] = decode(v, name, lim)
                n += 1
            elif default is _REQUIRED:
                raise _fail(name, f"is required for {cls.OP.upper()}")
            else:
                values[name] = default() if callable(default) else default
        if n != len(raw) - (cls.IS_REPLY and "ok" in raw):
            extra = sorted(set(raw) - cls._names)
            raise _fail(extra[0], f"is not a field of {cls.OP.upper()}")
        if cls._has_frames:
            values["frames"] = payload
        elif payload:
            raise ProtocolError(ErrorCode.BAD_FIELD, f"{cls.OP.upper()} carries no payload frames")
        if cls._checks:
            return cls(**values)
        msg = object.__new__(cls)
        msg.__dict__.update(values)  # what the frozen dataclass's __init__ would set, in order
        return msg


def message(op: str, reply: bool = False) -> Callable[[type], type]:
    """Class decorator: freeze a message dataclass, derive its schema, register it by op."""

    def deco(cls: type) -> type:
        cls = dataclass(frozen=True)(cls)
        schema, decoding = [], []
        for f in fields(cls):
            if f.name == "frames":
                continue
            if f.type not in _DECODERS:
                raise TypeError(f"{cls.__name__}.{f.name}: unsupported wire type {f.type!r}")
            required = f.default is MISSING and f.default_factory is MISSING
            schema.append((f.name, _DECODERS[f.type], required))
            default = (_REQUIRED if required else f.default if f.default is not MISSING
                       else f.default_factory)
            if callable(default) and f.default_factory is MISSING:
                raise TypeError(f"{cls.__name__}.{f.name}: a callable default is not a wire value")
            decoding.append((f.name, _DECODERS[f.type], default))
        cls.OP, cls.IS_REPLY, cls._schema = op, reply, tuple(schema)
        cls._decoding = tuple(decoding)
        cls._checks = hasattr(cls, "__post_init__")
        cls._names = frozenset([n for n, _, _ in schema] + (["ok"] if reply else []))
        cls._has_frames = any(f.name == "frames" for f in fields(cls))
        cls._omit = {f.name: f.default for f in fields(cls) if f.metadata.get(OMIT_DEFAULT)}
        cls._plain = not cls._has_frames and not cls._omit and all(
            "BlockRef" not in str(f.type) for f in fields(cls))
        (_REPLIES if reply else _REQUESTS)[op] = cls
        return cls

    return deco


@dataclass(frozen=True)
class ErrorReply:
    """``{ok: false, code, message}``: the request was refused; the daemon keeps serving."""

    op: str
    code: str
    message: str

    def to_wire(self, request_id: int) -> list[Buffer]:
        fields_ = {"ok": False, "code": str(self.code), "message": self.message}
        return [msgpack.packb([PROTOCOL_VERSION, self.op, request_id, fields_])]


Reply = Message | ErrorReply


# ---- decoding -----------------------------------------------------------------------------
def _unpack_header(frames: Sequence[Buffer], lim: Limits) -> tuple[int, str, int, dict]:
    if not frames:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "empty message")
    head = frames[0]
    if len(head) > lim.max_header_bytes:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"header over {lim.max_header_bytes} bytes")
    try:
        obj = msgpack.unpackb(
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
    if type(obj) is not list or len(obj) != 4:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header must be [version, op, id, fields]")
    version, op, rid, raw = obj
    rid = rid if type(rid) is int and 0 <= rid < 2**63 else 0
    op = op if type(op) is str and len(op) <= 32 else ""
    if version != PROTOCOL_VERSION:
        raise ProtocolError(ErrorCode.BAD_VERSION, f"protocol version {version!r} is not "
                            f"{PROTOCOL_VERSION}", rid, op)
    if type(raw) is not dict:
        raise ProtocolError(ErrorCode.BAD_MESSAGE, "header fields must be a map", rid, op)
    return version, op, rid, raw


def _check_payload(frames: Sequence[Buffer], lim: Limits, rid: int, op: str) -> list[Buffer]:
    payload = list(frames[1:])
    if len(payload) > lim.max_frames:
        raise ProtocolError(ErrorCode.TOO_LARGE, f"{len(payload)} frames, more than "
                            f"{lim.max_frames}", rid, op)
    for f in payload:
        if len(f) > lim.max_frame_bytes:
            raise ProtocolError(ErrorCode.TOO_LARGE, f"a frame of {len(f)} bytes is over "
                                f"{lim.max_frame_bytes}", rid, op)
    return payload


def _decode(frames: Sequence[Buffer], lim: Limits, table: dict) -> tuple[int, Any]:
    _, op, rid, raw = _unpack_header(frames, lim)
    payload = _check_payload(frames, lim, rid, op)
    cls = table.get(op)
    if cls is None:
        raise ProtocolError(ErrorCode.UNKNOWN_OP, f"unknown op {op!r}; known: {sorted(table)}",
                            rid, op)
    try:
        return rid, cls.from_fields(raw, payload, lim)
    except ProtocolError as e:
        e.request_id, e.op = rid, op
        raise


def decode_request(frames: Sequence[Buffer], limits: Limits | None = None) -> tuple[int, Message]:
    """``(request_id, request)`` from received frames; raises :class:`ProtocolError`."""
    return _decode(frames, limits or _DEFAULT_LIMITS, _REQUESTS)


def decode_reply(frames: Sequence[Buffer], limits: Limits | None = None) -> tuple[int, Reply]:
    """``(request_id, reply)``; an error reply decodes to :class:`ErrorReply` (not raised)."""
    lim = limits or _DEFAULT_LIMITS
    _, op, rid, raw = _unpack_header(frames, lim)
    if raw.get("ok") is False:
        code, msg = raw.get("code"), raw.get("message")
        if type(code) is not str or type(msg) is not str:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "error reply without code/message", rid)
        return rid, ErrorReply(op, code, msg)
    return _decode(frames, lim, _REPLIES)


def request_ops() -> list[str]:
    return sorted(_REQUESTS)

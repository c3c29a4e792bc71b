"""Messages on the wire: the :class:`Message` base, its ``@message`` decorator and decoding.

A message is a list of ZeroMQ frames: one msgpack **header** ``[version, op, request_id, fields]``
followed by optional raw **payload** frames carrying block bytes (PUT requests, GET replies).
Replies repeat the op and request id; their ``fields`` hold ``ok: true`` and the op's results, or
``{ok: false, code, message}`` (:class:`ErrorReply`).

The wire types, limits and :class:`ProtocolError` live in ``wire_types.py``, the header frame in
``framing.py``; this module re-exports their public names, so
``asymcache.cacheserver.protocol.wire``
remains the one place to import them from. Decoding checks types, sizes and the protocol version
and raises exactly one exception type, :class:`ProtocolError`, carrying an error ``code`` from
:class:`ErrorCode`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

from asymcache.cacheserver.protocol.framing import (
    PROTOCOL_VERSION,
    Buffer,
    check_payload,
    pack_header,
    unpack_header,
)
from asymcache.cacheserver.protocol.wire_types import (
    DECODERS,
    DEFAULT_LIMITS,
    KEY_BYTES,
    BlockRef,
    ErrorCode,
    Key,
    Limits,
    ProtocolError,
    Where,
    encode_value,
    field_error,
)

__all__ = [
    "KEY_BYTES", "OMIT_DEFAULT", "PROTOCOL_VERSION", "BlockRef", "Buffer", "ErrorCode",
    "ErrorReply", "Key", "Limits", "Message", "ProtocolError", "Reply", "Where", "decode_reply",
    "decode_request", "message", "request_ops",
]

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
            out = {name: encode_value(getattr(self, name)) for name, _, _ in self._schema
                   if name not in self._omit or getattr(self, name) != self._omit[name]}
        if self.IS_REPLY:
            out["ok"] = True
        return out

    def to_wire(self, request_id: int) -> list[Buffer]:
        """``[header, *payload]`` frames; payload buffers are sent as they are (zero-copy)."""
        header = pack_header(self.OP, request_id, self.header_fields())
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
                raise field_error(name, f"is required for {cls.OP.upper()}")
            else:
                values[name] = default() if callable(default) else default
        if n != len(raw) - (cls.IS_REPLY and "ok" in raw):
            extra = sorted(set(raw) - cls._names)
            raise field_error(extra[0], f"is not a field of {cls.OP.upper()}")
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
            if f.type not in DECODERS:
                raise TypeError(f"{cls.__name__}.{f.name}: unsupported wire type {f.type!r}")
            required = f.default is MISSING and f.default_factory is MISSING
            schema.append((f.name, DECODERS[f.type], required))
            default = (_REQUIRED if required else f.default if f.default is not MISSING
                       else f.default_factory)
            if callable(default) and f.default_factory is MISSING:
                raise TypeError(f"{cls.__name__}.{f.name}: a callable default is not a wire value")
            decoding.append((f.name, DECODERS[f.type], default))
        cls.OP, cls.IS_REPLY, cls._schema = op, reply, tuple(schema)
        cls._decoding = tuple(decoding)
        cls._checks = hasattr(cls, "__post_init__")
        cls._names = frozenset([n for n, _, _ in schema] + (["ok"] if reply else []))
        cls._has_frames = any(f.name == "frames" for f in fields(cls))
        cls._omit = {f.name: f.default if f.default is not MISSING else f.default_factory()
                     for f in fields(cls) if f.metadata.get(OMIT_DEFAULT)}
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
        return [pack_header(self.op, request_id, fields_)]


Reply = Message | ErrorReply


# ---- decoding -----------------------------------------------------------------------------
def _decode(frames: Sequence[Buffer], lim: Limits, table: dict,
            header: tuple[int, str, int, dict] | None = None) -> tuple[int, Any]:
    _, op, rid, raw = header or unpack_header(frames, lim)
    payload = check_payload(frames, lim, rid, op)
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
    return _decode(frames, limits or DEFAULT_LIMITS, _REQUESTS)


def decode_reply(frames: Sequence[Buffer], limits: Limits | None = None) -> tuple[int, Reply]:
    """``(request_id, reply)``; an error reply decodes to :class:`ErrorReply` (not raised)."""
    lim = limits or DEFAULT_LIMITS
    header = unpack_header(frames, lim)
    _, op, rid, raw = header
    if raw.get("ok") is False:
        code, msg = raw.get("code"), raw.get("message")
        if type(code) is not str or type(msg) is not str:
            raise ProtocolError(ErrorCode.BAD_MESSAGE, "error reply without code/message", rid)
        return rid, ErrorReply(op, code, msg)
    return _decode(frames, lim, _REPLIES, header)  # the header is unpacked once


def request_ops() -> list[str]:
    """The op names that have a request message, sorted."""
    return sorted(_REQUESTS)

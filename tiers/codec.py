"""The stored form of a block, header + payload bytes, shared by the DISK and REMOTE tiers.

A fixed, versioned, little-endian binary layout (no pickle, no msgpack), format version 2:

====== ====== ===============================================================
offset bytes  field
====== ====== ===============================================================
0      4      magic ``b"AKVB"``
4      2      format version (``FORMAT_VERSION``)
6      2      ``L`` = length of the layout text in bytes (UTF-8)
8      16     block key (the key the value is stored under)
24     16     namespace
40     16     parent block key
56     8      position (block index in its sequence)
64     8      payload length in bytes
72     8      payload checksum, xxh3-64
80     P      layout text, zero-padded to ``P`` = ``L`` rounded up to a multiple of 8
80+P   8      header digest: xxh3-64 of bytes ``[0, 80+P)``
88+P   n      payload (starts 8-byte aligned)
====== ====== ===============================================================

The header digest makes a flipped bit in the key, namespace, parent, position or layout
detectable (the payload checksum covers only the payload). Readers that know which key they
asked for pass it (``key=``): a value stored under another key (a misdirected write, a
copy-and-paste in the store) is then :class:`CorruptValue` ``key``, never another block's
bytes. Format version 1 (no key) is not read: such a value is :class:`CorruptValue`
``version``, which the tiers count, drop and treat as a miss. Every decoding error raises
:class:`CorruptValue` whose ``kind`` is the ``error_counts()`` key a tier charges it to.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import fields
from types import MemberDescriptorType

import xxhash

from asymcache.tiers.base import KEY_BYTES, BlockHeader, Buffer, checksum

MAGIC = b"AKVB"
FORMAT_VERSION = 2
MAX_LAYOUT_BYTES = 4096
_FIXED = struct.Struct("<4sHH16s16s16sQQQ")
_DIGEST = struct.Struct("<Q")
_U64 = 1 << 64
_xxh3 = xxhash.xxh3_64_intdigest  # == tiers.base.checksum, bound once for the rebuild loop


def _header_factory() -> Callable[[bytes, bytes, int, str, int, int], BlockHeader]:
    """``BlockHeader(...)`` without the frozen dataclass ``__init__`` (one ``object.__setattr__``
    per field, three times slower): the index rebuild decodes a header per stored block, a
    million at a daemon's start. The same object results; if ``BlockHeader`` ever changes its
    fields, drops ``__slots__`` or validates in ``__post_init__``, the class itself is used."""
    names = tuple(f.name for f in fields(BlockHeader))
    slots = [BlockHeader.__dict__.get(name) for name in names]
    if (names != ("namespace", "parent", "position", "layout", "length", "checksum")
            or hasattr(BlockHeader, "__post_init__")
            or not all(isinstance(s, MemberDescriptorType) for s in slots)):
        return BlockHeader
    new = object.__new__
    s0, s1, s2, s3, s4, s5 = (s.__set__ for s in slots)

    def make(ns: bytes, parent: bytes, position: int, layout: str, length: int,
             payload_sum: int) -> BlockHeader:
        header = new(BlockHeader)
        s0(header, ns)
        s1(header, parent)
        s2(header, position)
        s3(header, layout)
        s4(header, length)
        s5(header, payload_sum)
        return header

    return make


_make_header = _header_factory()


class CorruptValue(ValueError):
    """A stored value that is not a valid encoding; ``kind`` is one of ``magic``, ``version``,
    ``header`` (digest mismatch or bad layout text), ``key`` (stored under another key),
    ``short``, ``length``, ``checksum``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind


def _padded(n: int) -> int:
    return (n + 7) & ~7


def header_bytes(layout_len: int) -> int:
    """Size of an encoded header whose layout text is ``layout_len`` UTF-8 bytes."""
    return _FIXED.size + _padded(layout_len) + _DIGEST.size


def value_bytes(header: BlockHeader) -> int:
    """Size of the encoded value (header + payload) of a block with this header."""
    return header_bytes(len(header.layout.encode("utf-8"))) + header.length


def _check(header: BlockHeader, key: bytes) -> bytes:
    if not isinstance(key, bytes) or len(key) != KEY_BYTES:
        raise ValueError(f"block key must be {KEY_BYTES} bytes, got {key!r}")
    if not isinstance(header, BlockHeader):
        raise ValueError(f"expected a BlockHeader, got {type(header).__name__}")
    for field in ("namespace", "parent"):
        value = getattr(header, field)
        if not isinstance(value, bytes) or len(value) != KEY_BYTES:
            raise ValueError(f"BlockHeader.{field} must be {KEY_BYTES} bytes, got {value!r}")
    for field in ("position", "length", "checksum"):
        value = getattr(header, field)
        if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < _U64:
            raise ValueError(f"BlockHeader.{field} must be an int in [0, 2**64), got {value!r}")
    if not isinstance(header.layout, str):
        raise ValueError(f"BlockHeader.layout must be a str, got {type(header.layout).__name__}")
    layout = header.layout.encode("utf-8")
    if len(layout) > MAX_LAYOUT_BYTES:
        raise ValueError(f"BlockHeader.layout is {len(layout)} bytes; at most {MAX_LAYOUT_BYTES}")
    return layout


def encode_header(header: BlockHeader, key: bytes) -> bytes:
    """The encoded header of block ``key`` with ``header`` (validated; ``ValueError`` names a
    bad field)."""
    layout = _check(header, key)
    head = _FIXED.pack(MAGIC, FORMAT_VERSION, len(layout), key, header.namespace, header.parent,
                       header.position, header.length, header.checksum)
    body = head + layout.ljust(_padded(len(layout)), b"\0")
    return body + _DIGEST.pack(checksum(body))


def encode_value(header: BlockHeader, payload: Buffer, out: bytearray | None = None, *,
                 key: bytes) -> bytearray:
    """Header (of block ``key``) + a copy of ``payload`` in one buffer: ``out`` (exactly
    :func:`value_bytes` long, e.g. a recycled staging buffer) or a new one. The payload copy is
    the only copy made."""
    view = memoryview(payload).cast("B")
    if view.nbytes != header.length:
        raise ValueError(f"payload is {view.nbytes} bytes but header.length is {header.length}")
    head = encode_header(header, key)
    if out is None:
        out = bytearray(head)
        out += view  # one memcpy (bytearray slice assignment from a memoryview is far slower)
        return out
    if len(out) != len(head) + view.nbytes:
        raise ValueError(f"output buffer is {len(out)} bytes; the value is "
                         f"{len(head) + view.nbytes}")
    with memoryview(out) as dest:
        dest[: len(head)] = head
        dest[len(head):] = view
    return out


def stage_value(header: BlockHeader, payload: Buffer, out: bytearray, key: bytes) -> BlockHeader:
    """Encode block ``key``'s header + payload into ``out`` (exactly :func:`value_bytes` long),
    checksumming the copy rather than the source: the stored bytes are the ones checked, and
    hashing 256 KiB that the copy just brought into the CPU cache is about twice as fast as
    hashing the source.

    Returns ``header`` with its checksum set. ``CorruptValue("checksum")`` if ``header.checksum``
    is non-zero and differs from the payload's (``out`` then holds garbage); ``ValueError`` for
    a malformed header or a payload or ``out`` of the wrong length."""
    view = memoryview(payload).cast("B")
    if view.nbytes != header.length:
        raise ValueError(f"payload is {view.nbytes} bytes but header.length is {header.length}")
    layout = _check(header, key)
    end = _FIXED.size + _padded(len(layout))
    if len(out) != end + _DIGEST.size + view.nbytes:
        raise ValueError(f"output buffer is {len(out)} bytes; the value is "
                         f"{end + _DIGEST.size + view.nbytes}")
    with memoryview(out) as dest:
        dest[end + _DIGEST.size:] = view
        digest = _xxh3(dest[end + _DIGEST.size:])
        if header.checksum not in (0, digest):
            raise CorruptValue("checksum", "payload does not match header.checksum")
        _FIXED.pack_into(dest, 0, MAGIC, FORMAT_VERSION, len(layout), key, header.namespace,
                         header.parent, header.position, header.length, digest)
        dest[_FIXED.size:end] = layout.ljust(end - _FIXED.size, b"\0")
        _DIGEST.pack_into(dest, end, _xxh3(dest[:end]))
    if header.checksum == digest:
        return header
    return _make_header(header.namespace, header.parent, header.position, header.layout,
                        header.length, digest)


def decode_header(buf: Buffer, layouts: dict[bytes, str] | None = None,
                  key: bytes | None = None) -> tuple[BlockHeader, int]:
    """The header at the start of ``buf`` and the payload's offset; :class:`CorruptValue` if
    the header is not intact, or (``key`` given) was written for another block. ``layouts``
    (optional) interns layout texts across calls."""
    data = buf if isinstance(buf, bytes) else memoryview(buf).cast("B")
    size = len(data)
    if size < _FIXED.size:
        raise CorruptValue("short", f"value of {size} bytes has no complete header")
    magic, version, n_layout, stored_key, ns, parent, position, length, payload_sum = (
        _FIXED.unpack_from(data))
    if magic != MAGIC or version != FORMAT_VERSION:
        raise (CorruptValue("magic", f"bad magic {magic!r}, expected {MAGIC!r}") if magic != MAGIC
               else CorruptValue("version", f"format version {version}; this build reads "
                                            f"{FORMAT_VERSION}"))
    end = _FIXED.size + _padded(n_layout)
    if size < end + _DIGEST.size:
        raise CorruptValue("short", f"value of {size} bytes ends inside its header")
    if _DIGEST.unpack_from(data, end)[0] != _xxh3(data[:end]):
        raise CorruptValue("header", "header digest mismatch")
    if key is not None and stored_key != key:
        raise CorruptValue("key", f"value of block {stored_key.hex()} found under {key.hex()}")
    raw = data[_FIXED.size:_FIXED.size + n_layout]
    raw = raw if isinstance(raw, bytes) else bytes(raw)
    layout = layouts.get(raw) if layouts is not None else None
    if layout is None:
        layout = _layout_text(raw)
        if layouts is not None:
            layouts[raw] = layout
    return _make_header(ns, parent, position, layout, length, payload_sum), end + _DIGEST.size


def _layout_text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise CorruptValue("header", "layout text is not UTF-8") from None


def decode_value(buf: Buffer, verify: bool = True,
                 key: bytes | None = None) -> tuple[BlockHeader, memoryview]:
    """Header and a zero-copy view of the payload of an encoded value.

    Checks magic, version, header digest, (``key`` given) the block key, the payload length and
    (``verify``) the payload checksum; raises :class:`CorruptValue` on any mismatch, so a
    returned payload is intact. The view shares ``buf``'s memory and is valid only as long as
    ``buf`` is.
    """
    header, offset = decode_header(buf, key=key)
    view = memoryview(buf).cast("B")
    have = view.nbytes - offset
    if have < header.length:
        raise CorruptValue("short", f"payload is {have} bytes, header says {header.length}")
    if have > header.length:
        raise CorruptValue("length", f"payload is {have} bytes, header says {header.length}")
    payload = view[offset:]
    if verify and checksum(payload) != header.checksum:
        raise CorruptValue("checksum", "payload checksum mismatch")
    return header, payload

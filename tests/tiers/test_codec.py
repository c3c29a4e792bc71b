"""The stored value format: exact bytes, round trips and every kind of corruption."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from tiers.base import BlockHeader, checksum
from tiers.codec import (
    FORMAT_VERSION,
    CorruptValue,
    decode_header,
    decode_value,
    encode_header,
    encode_value,
    header_bytes,
    stage_value,
    value_bytes,
)

HEADER = BlockHeader(bytes(range(16)), bytes(range(16, 32)), 7, "layers=2;block=16", 4096,
                     0x0123456789ABCDEF)
GOLDEN = (
    "414b564201001100000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "07000000000000000010000000000000efcdab89674523016c61796572733d323b626c6f636b3d31"
    "36000000000000008b372b93c3111697"
)


def _value(nbytes: int = 1000) -> tuple[BlockHeader, bytes, bytearray]:
    payload = bytes(i % 251 for i in range(nbytes))
    header = BlockHeader.describe(HEADER.namespace, HEADER.parent, 3, HEADER.layout, payload)
    return header, payload, encode_value(header, payload)


def test_header_encoding_is_pinned_byte_for_byte() -> None:
    encoded = encode_header(HEADER)
    assert encoded.hex() == GOLDEN
    assert len(encoded) == header_bytes(len(HEADER.layout)) == 96
    assert decode_header(encoded) == (HEADER, 96)


def test_value_round_trip_returns_same_header_and_bytes_with_aligned_payload() -> None:
    header, payload, value = _value()
    assert len(value) == value_bytes(header) == 96 + 1000
    decoded, view = decode_value(value)
    assert decoded == header
    assert bytes(view) == payload
    assert (len(value) - view.nbytes) % 8 == 0


def test_decode_value_view_shares_memory_with_the_value() -> None:
    _, _, value = _value()
    _, view = decode_value(value)
    value[-1] ^= 0xFF
    assert view[-1] == value[-1]


def test_layout_texts_are_interned_across_calls() -> None:
    layouts: dict[bytes, str] = {}
    first, _ = decode_header(encode_header(HEADER), layouts)
    second, _ = decode_header(encode_header(HEADER), layouts)
    assert first.layout is second.layout


@pytest.mark.parametrize(
    ("offset", "kind"),
    [(0, "magic"), (4, "version"), (30, "header"), (44, "header"), (66, "header"),
     (96, "checksum"), (96 + 999, "checksum")],
)
def test_a_flipped_byte_is_reported_by_kind(offset: int, kind: str) -> None:
    _, _, value = _value()
    value[offset] ^= 0x01
    with pytest.raises(CorruptValue) as err:
        decode_value(value)
    assert err.value.kind == kind


def test_a_newer_format_version_is_refused_even_with_a_valid_digest() -> None:
    encoded = bytearray(encode_header(HEADER))
    struct.pack_into("<H", encoded, 4, FORMAT_VERSION + 1)
    struct.pack_into("<Q", encoded, 88, checksum(encoded[:88]))
    with pytest.raises(CorruptValue) as err:
        decode_header(encoded)
    assert err.value.kind == "version"


@pytest.mark.parametrize(("keep", "kind"), [(10, "short"), (80, "short"), (96 + 999, "short")])
def test_a_truncated_value_is_short(keep: int, kind: str) -> None:
    _, _, value = _value()
    with pytest.raises(CorruptValue) as err:
        decode_value(value[:keep])
    assert err.value.kind == kind


def test_a_value_with_trailing_bytes_is_a_length_error() -> None:
    _, _, value = _value()
    with pytest.raises(CorruptValue) as err:
        decode_value(value + b"\0")
    assert err.value.kind == "length"


def test_verify_false_skips_only_the_payload_checksum() -> None:
    _, _, value = _value()
    value[-1] ^= 0x01
    header, view = decode_value(value, verify=False)
    assert header.length == view.nbytes == 1000


@pytest.mark.parametrize(
    ("change", "field"),
    [({"namespace": b"short"}, "namespace"), ({"parent": "x" * 16}, "parent"),
     ({"position": -1}, "position"), ({"length": 1 << 64}, "length"),
     ({"checksum": 1.5}, "checksum"), ({"layout": "x" * 5000}, "layout")],
)
def test_bad_header_fields_raise_value_error_naming_the_field(change: dict, field: str) -> None:
    values = {f: getattr(HEADER, f) for f in HEADER.__slots__} | change
    with pytest.raises(ValueError, match=field):
        encode_header(BlockHeader(**values))


def test_encode_value_refuses_a_payload_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match=r"header\.length"):
        encode_value(HEADER, b"x" * 10)


def test_stage_value_writes_the_same_bytes_as_encode_value_and_sets_the_checksum() -> None:
    header, payload, value = _value()
    out = bytearray(b"\xaa" * len(value))  # a recycled buffer: arbitrary old contents
    staged = stage_value(replace(header, checksum=0), payload, out)
    assert staged == header and staged.checksum == checksum(payload)
    assert out == value
    assert stage_value(header, memoryview(payload), out) == header and out == value


def test_stage_value_refuses_a_payload_that_does_not_match_its_checksum() -> None:
    header, payload, value = _value()
    with pytest.raises(CorruptValue, match="checksum") as err:
        stage_value(header, payload[:-1] + b"\x00", bytearray(len(value)))
    assert err.value.kind == "checksum"
    with pytest.raises(ValueError, match="output buffer is 10 bytes"):
        stage_value(header, payload, bytearray(10))


def test_decoded_headers_are_ordinary_block_headers() -> None:
    decoded, _ = decode_header(encode_header(HEADER))
    assert type(decoded) is BlockHeader and decoded == HEADER and hash(decoded) == hash(HEADER)
    with pytest.raises(AttributeError):
        decoded.position = 1  # type: ignore[misc]

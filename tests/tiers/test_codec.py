"""The stored value format: exact bytes, round trips and every kind of corruption."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from asymcache.tiers.base import BlockHeader, checksum
from asymcache.tiers.codec import (
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
KEY = bytes(range(32, 48))
GOLDEN = (  # format version 2: magic, version, layout length, key, namespace, parent, ...
    "414b564202001100202122232425262728292a2b2c2d2e2f000102030405060708090a0b0c0d0e0f"
    "101112131415161718191a1b1c1d1e1f07000000000000000010000000000000efcdab8967452301"
    "6c61796572733d323b626c6f636b3d313600000000000000df96fc6a9ee79ef2"
)
# the same header in format version 1 (no key): written by earlier builds, no longer read
GOLDEN_V1 = (
    "414b564201001100000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
    "07000000000000000010000000000000efcdab89674523016c61796572733d323b626c6f636b3d31"
    "36000000000000008b372b93c3111697"
)


def _value(nbytes: int = 1000) -> tuple[BlockHeader, bytes, bytearray]:
    payload = bytes(i % 251 for i in range(nbytes))
    header = BlockHeader.describe(HEADER.namespace, HEADER.parent, 3, HEADER.layout, payload)
    return header, payload, encode_value(header, payload, key=KEY)


def test_header_encoding_is_pinned_byte_for_byte() -> None:
    encoded = encode_header(HEADER, KEY)
    assert FORMAT_VERSION == 2
    assert encoded.hex() == GOLDEN
    assert len(encoded) == header_bytes(len(HEADER.layout)) == 112
    assert decode_header(encoded) == (HEADER, 112)
    assert decode_header(encoded, key=KEY) == (HEADER, 112)


def test_a_value_read_under_another_key_is_a_key_error() -> None:
    _, _, value = _value()
    with pytest.raises(CorruptValue, match=KEY.hex()) as err:
        decode_value(value, key=bytes(16))
    assert err.value.kind == "key"
    with pytest.raises(CorruptValue) as err:
        decode_header(value, key=HEADER.parent)
    assert err.value.kind == "key"


def test_a_format_version_1_value_is_a_version_error() -> None:
    v1 = bytes.fromhex(GOLDEN_V1) + bytes(4096)
    for decode in (decode_header, decode_value):
        with pytest.raises(CorruptValue, match="format version 1") as err:
            decode(v1)
        assert err.value.kind == "version"


def test_value_round_trip_returns_same_header_and_bytes_with_aligned_payload() -> None:
    header, payload, value = _value()
    assert len(value) == value_bytes(header) == 112 + 1000
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
    first, _ = decode_header(encode_header(HEADER, KEY), layouts)
    second, _ = decode_header(encode_header(HEADER, KEY), layouts)
    assert first.layout is second.layout


@pytest.mark.parametrize(
    ("offset", "kind"),
    [(0, "magic"), (4, "version"), (10, "header"), (30, "header"), (44, "header"),
     (66, "header"), (82, "header"), (112, "checksum"), (112 + 999, "checksum")],
)
def test_a_flipped_byte_is_reported_by_kind(offset: int, kind: str) -> None:
    _, _, value = _value()
    value[offset] ^= 0x01
    with pytest.raises(CorruptValue) as err:
        decode_value(value)
    assert err.value.kind == kind


def test_a_newer_format_version_is_refused_even_with_a_valid_digest() -> None:
    encoded = bytearray(encode_header(HEADER, KEY))
    struct.pack_into("<H", encoded, 4, FORMAT_VERSION + 1)
    struct.pack_into("<Q", encoded, 104, checksum(encoded[:104]))
    with pytest.raises(CorruptValue) as err:
        decode_header(encoded)
    assert err.value.kind == "version"


@pytest.mark.parametrize(("keep", "kind"), [(10, "short"), (96, "short"), (112 + 999, "short")])
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
        encode_header(BlockHeader(**values), KEY)


def test_a_key_that_is_not_16_bytes_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="block key must be 16 bytes"):
        encode_header(HEADER, b"short")


def test_encode_value_refuses_a_payload_of_the_wrong_length() -> None:
    with pytest.raises(ValueError, match=r"header\.length"):
        encode_value(HEADER, b"x" * 10, key=KEY)


def test_stage_value_writes_the_same_bytes_as_encode_value_and_sets_the_checksum() -> None:
    header, payload, value = _value()
    out = bytearray(b"\xaa" * len(value))  # a recycled buffer: arbitrary old contents
    staged = stage_value(replace(header, checksum=0), payload, out, KEY)
    assert staged == header and staged.checksum == checksum(payload)
    assert out == value
    assert stage_value(header, memoryview(payload), out, KEY) == header and out == value


def test_stage_value_refuses_a_payload_that_does_not_match_its_checksum() -> None:
    header, payload, value = _value()
    with pytest.raises(CorruptValue, match="checksum") as err:
        stage_value(header, payload[:-1] + b"\x00", bytearray(len(value)), KEY)
    assert err.value.kind == "checksum"
    with pytest.raises(ValueError, match="output buffer is 10 bytes"):
        stage_value(header, payload, bytearray(10), KEY)


def test_decoded_headers_are_ordinary_block_headers() -> None:
    decoded, _ = decode_header(encode_header(HEADER, KEY))
    assert type(decoded) is BlockHeader and decoded == HEADER and hash(decoded) == hash(HEADER)
    with pytest.raises(AttributeError):
        decoded.position = 1  # type: ignore[misc]

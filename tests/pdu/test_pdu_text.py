"""Key=value text codec and numeric/binary value parsing (RFC 7143 §6)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamover.pdu import (
    TextFormatError,
    decode_text,
    encode_text,
    format_base64,
    format_hex,
    parse_binary,
    parse_numeric,
)


def test_decode_items_in_order_with_trailing_nul_and_padding() -> None:
    data = b"InitiatorName=iqn.2024-01.org.example:host\0SessionType=Normal\0\0\0"
    assert decode_text(data) == [("InitiatorName", "iqn.2024-01.org.example:host"), ("SessionType", "Normal")]
    assert decode_text(b"A=1") == [("A", "1")]  # last terminator missing: tolerated
    assert decode_text(b"") == []
    assert decode_text(memoryview(b"\0\0\0\0")) == []


def test_value_may_hold_equals_and_be_empty() -> None:
    assert decode_text(b"TargetAddress=10.0.0.1:3260,1\0X-a=b=c\0Empty=\0") == [
        ("TargetAddress", "10.0.0.1:3260,1"),
        ("X-a", "b=c"),
        ("Empty", ""),
    ]


@pytest.mark.parametrize(
    "data",
    [
        b"NoEqualsSign\0",
        b"A=1\0junk\0",
        b"A=1\0\0B=2\0",  # an empty item between two others
        b"=value\0",
        b"K" * 64 + b"=1\0",
        b"Key=\xff\xfe\0",
    ],
    ids=["missing-equals", "junk-item", "empty-item", "empty-key", "key-64-bytes", "bad-utf8"],
)
def test_decode_errors(data: bytes) -> None:
    with pytest.raises(TextFormatError):
        decode_text(data)


def test_key_of_63_bytes_is_fine() -> None:
    assert decode_text(b"K" * 63 + b"=1\0") == [("K" * 63, "1")]


def test_encode_text() -> None:
    assert encode_text([("HeaderDigest", "CRC32C,None"), ("MaxBurstLength", "262144")]) == (
        b"HeaderDigest=CRC32C,None\0MaxBurstLength=262144\0"
    )
    assert encode_text({"A": "1"}) == b"A=1\0"
    for bad in [("", "x"), ("a=b", "x"), ("k\0", "x"), ("K" * 64, "x"), ("k", "v\0")]:
        with pytest.raises(TextFormatError):
            encode_text([bad])


keys = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="="), min_size=1, max_size=63)
values = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0"), max_size=80)


@settings(max_examples=80, deadline=None)
@given(pairs=st.lists(st.tuples(keys, values), max_size=8), pad=st.integers(0, 3))
def test_text_round_trip(pairs: list[tuple[str, str]], pad: int) -> None:
    assert decode_text(encode_text(pairs) + b"\0" * pad) == pairs


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("8192", 8192),
        ("262144", 262144),
        ("0x10", 16),
        ("0X1f", 31),
        ("0xABC", 0xABC),  # odd digit count
        ("0bAQA=", 256),
        ("0BAQA", 256),  # padding may be left off
        ("0b/w==", 255),
    ],
)
def test_parse_numeric(text: str, value: int) -> None:
    assert parse_numeric(text) == value


@pytest.mark.parametrize("text", ["", "-1", "+1", " 1", "1 ", "1_000", "12a", "0x", "0xg1", "0b", "0b!!", "0bA", "²", "1.5"])
def test_parse_numeric_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_numeric(text)


def test_binary_values() -> None:
    assert parse_binary("0x0102ff") == b"\x01\x02\xff"
    assert parse_binary("0x102") == b"\x01\x02"
    assert parse_binary("0bAQL/") == b"\x01\x02\xff"
    with pytest.raises(ValueError):
        parse_binary("12")
    assert format_hex(b"\x01\xab") == "0x01ab"
    assert format_base64(b"\x01\x02\xff") == "0bAQL/"


@settings(max_examples=80, deadline=None)
@given(blob=st.binary(min_size=1, max_size=64))
def test_binary_formats_round_trip(blob: bytes) -> None:
    assert parse_binary(format_hex(blob)) == blob
    assert parse_binary(format_base64(blob)) == blob
    assert parse_numeric(format_hex(blob)) == int.from_bytes(blob, "big")

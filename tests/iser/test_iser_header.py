"""The iSER header codec (RFC 7145 9.1-9.4)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datamover_iser.header import (
    Hello,
    HelloReply,
    IserFormatError,
    IserHeader,
    cm_private_data,
    decode_header,
    peer_allows_send_with_invalidate,
)

u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)


@given(u32, u64, u32, u64, st.booleans(), st.booleans())
@settings(max_examples=200)
def test_control_header_round_trip(wstag: int, wbase: int, rstag: int, rbase: int, wsv: bool, rsv: bool) -> None:
    header = IserHeader(wstag if wsv else 0, wbase if wsv else 0, rstag if rsv else 0, rbase if rsv else 0, wsv, rsv)
    encoded = header.encode()
    assert len(encoded) == 28
    assert decode_header(encoded + b"\0" * 48) == header


def test_control_header_layout_matches_the_rfc() -> None:
    """Byte 0 = 0x10 | WSV 0x08 | RSV 0x04; then reserved, STag, VA, STag, VA (">B3xIQIQ")."""
    encoded = IserHeader(0x11223344, 0x1000, 0x55667788, 0x2000, True, True).encode()
    assert encoded == struct.pack(">B3xIQIQ", 0x1C, 0x11223344, 0x1000, 0x55667788, 0x2000)
    assert IserHeader().encode()[0] == 0x10


def test_invalid_stags_are_zero_on_the_wire() -> None:
    """RFC 7145 9.2: a STag field without its valid bit MUST be 0."""
    encoded = IserHeader(write_stag=5, write_base=9, wsv=False).encode()
    assert encoded[4:16] == bytes(12)


@given(u32)
def test_hello_round_trip(ird: int) -> None:
    ird &= 0xFFFF
    assert decode_header(Hello(ird).encode()) == Hello(ird)
    assert decode_header(HelloReply(ird, reject=True).encode()) == HelloReply(ird, True)
    assert Hello(ird).encode()[1] == 0xAA  # version 10 in both nibbles (RFC 7145 9.3)


@pytest.mark.parametrize("raw,problem", [
    (b"\x10" + bytes(10), "shorter"),
    (bytes([0x40]) + bytes(27), "unassigned"),
    (bytes([0x13]) + bytes(27), "reserved"),
    (Hello(1).encode() + b"x", "exactly 28"),
])
def test_format_errors(raw: bytes, problem: str) -> None:
    with pytest.raises(IserFormatError, match=problem):
        decode_header(raw)


def test_cm_private_data_flags() -> None:
    assert cm_private_data(send_with_invalidate=False) == b"\xc0\0\0\0"
    assert cm_private_data(send_with_invalidate=True) == b"\x80\0\0\0"
    assert peer_allows_send_with_invalidate(b"\x80\0\0\0" + bytes(52))  # zero-padded by the CM
    assert not peer_allows_send_with_invalidate(b"\xc0\0\0\0")
    assert not peer_allows_send_with_invalidate(b"")

"""Property tests: every PDU survives encode -> decode, by every decode path."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pdu_strategies import any_modelled_pdu, pdus, unknown_pdus

from datamover.pdu import (
    PDU_CLASSES,
    BHS_LENGTH,
    IncompletePdu,
    Pdu,
    UnknownPdu,
    decode,
    decode_pdu,
    digest,
    encode,
    encode_bytes,
    encode_header,
    peek_lengths,
    wire_length,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
digest_flags = st.tuples(st.booleans(), st.booleans())


@pytest.mark.parametrize("cls", list(PDU_CLASSES.values()), ids=lambda c: c.__name__)
@SETTINGS
@given(data=st.data())
def test_round_trip_every_class(cls: type[Pdu], data: st.DataObject) -> None:
    pdu = data.draw(pdus(cls))
    header_digest, data_digest = data.draw(digest_flags)

    # separate header and data, as iSER and loopback deliver them
    header = encode_header(pdu)
    assert decode(header, pdu.data) == pdu

    # one stream buffer, as TCP delivers it
    wire = encode_bytes(pdu, header_digest=header_digest, data_digest=data_digest)
    assert len(wire) % 4 == 0
    assert wire_length(wire, header_digest, data_digest) == len(wire)
    decoded, used = decode_pdu(wire, header_digest=header_digest, data_digest=data_digest)
    assert used == len(wire)
    assert decoded == pdu
    assert type(decoded) is cls


@SETTINGS
@given(pdu=any_modelled_pdu, flags=digest_flags)
def test_gather_list_shape_and_no_copy(pdu: Pdu, flags: tuple[bool, bool]) -> None:
    header_digest, data_digest = flags
    parts = encode(pdu, header_digest=header_digest, data_digest=data_digest)
    header = encode_header(pdu)
    assert parts[0][: len(header)] == header
    assert parts[0][len(header) :] == (digest([header]) if header_digest else b"")
    n = memoryview(pdu.data).nbytes
    if n == 0:
        assert parts == [parts[0]]
        return
    view = parts[1]
    assert isinstance(view, memoryview)
    assert view.obj is (pdu.data.obj if isinstance(pdu.data, memoryview) else pdu.data)  # no copy
    tail = b"".join(bytes(p) for p in parts[2:])
    assert len(tail) == (-n & 3) + (4 if data_digest else 0)
    assert tail[: -n & 3] == b"\0" * (-n & 3)
    assert peek_lengths(parts[0]) == (len(header) - BHS_LENGTH, n)


@SETTINGS
@given(pdu=any_modelled_pdu, pad=st.booleans())
def test_decode_accepts_data_with_or_without_padding(pdu: Pdu, pad: bool) -> None:
    raw = bytes(pdu.data)
    given_data = raw + b"\0" * (-len(raw) & 3) if pad else raw
    assert decode(encode_header(pdu), given_data) == pdu


@SETTINGS
@given(pdu=unknown_pdus, flags=digest_flags)
def test_unknown_opcode_round_trip(pdu: UnknownPdu, flags: tuple[bool, bool]) -> None:
    wire = encode_bytes(pdu, header_digest=flags[0], data_digest=flags[1])
    decoded, used = decode_pdu(wire, header_digest=flags[0], data_digest=flags[1])
    assert used == len(wire)
    assert isinstance(decoded, UnknownPdu)
    # raw_bhs is the header as received, so compare it with the wire, the rest field by field
    assert decoded.raw_bhs == wire[:BHS_LENGTH]
    assert dataclasses.replace(decoded, raw_bhs=pdu.raw_bhs) == pdu
    assert encode_bytes(decoded, header_digest=flags[0], data_digest=flags[1]) == wire


@SETTINGS
@given(pdus_=st.lists(any_modelled_pdu, min_size=1, max_size=4), flags=digest_flags, extra=st.binary(max_size=60))
def test_stream_of_pdus_and_every_short_prefix(pdus_: list[Pdu], flags: tuple[bool, bool], extra: bytes) -> None:
    header_digest, data_digest = flags
    wires = [encode_bytes(p, header_digest=header_digest, data_digest=data_digest) for p in pdus_]
    stream = b"".join(wires) + extra
    pos = 0
    for pdu, wire in zip(pdus_, wires):
        decoded, used = decode_pdu(memoryview(stream)[pos:], header_digest=header_digest, data_digest=data_digest)
        assert decoded == pdu
        assert used == len(wire)
        pos += used
    # a short buffer is never mistaken for a PDU, nor for a digest error
    first = wires[0]
    for cut in sorted({0, 1, 47, 48, len(first) // 2, len(first) - 1}):
        if 0 <= cut < len(first):
            with pytest.raises(IncompletePdu) as info:
                decode_pdu(first[:cut], header_digest=header_digest, data_digest=data_digest)
            assert info.value.needed > cut
            assert info.value.needed in (BHS_LENGTH, len(first))

"""Malformed input: only PduFormatError (decode) or PduEncodeError (encode) may come out."""

from __future__ import annotations

import array

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datamover.pdu import (
    BHS_LENGTH,
    Ahs,
    DataOut,
    IncompletePdu,
    LoginRequest,
    LogoutRequest,
    NopOut,
    PduEncodeError,
    PduFormatError,
    RejectReason,
    ScsiCommand,
    SnackRequest,
    TmfRequest,
    UnknownPdu,
    decode,
    decode_lun,
    decode_pdu,
    describe,
    encode,
    encode_bytes,
    encode_header,
    encode_lun,
    peek_lengths,
)

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _bhs(op: int = 0x00, ahs_words: int = 0, dsl: int = 0, rest: bytes = b"") -> bytearray:
    bhs = bytearray(48)
    bhs[0] = op
    bhs[4] = ahs_words
    bhs[5:8] = dsl.to_bytes(3, "big")
    bhs[8 : 8 + len(rest)] = rest
    return bhs


@FUZZ
@given(buf=st.binary(max_size=200), hd=st.booleans(), dd=st.booleans())
def test_decode_pdu_on_arbitrary_bytes(buf: bytes, hd: bool, dd: bool) -> None:
    try:
        decode_pdu(buf, header_digest=hd, data_digest=dd)
    except PduFormatError:
        pass


@st.composite
def framable(draw: st.DrawFn) -> bytes:
    """Random bytes whose lengths are small, so that they get past the framing checks."""
    bhs = bytearray(draw(st.binary(min_size=48, max_size=48)))
    bhs[0] = draw(st.sampled_from([0x01, 0x41, 0x03, 0x43, 0x25, 0x3F, 0x1C, 0x3E])) if draw(st.booleans()) else bhs[0]
    bhs[4] = draw(st.sampled_from([0, 0, 0, 1, 2, 6]))  # TotalAHSLength: mostly none
    bhs[5:8] = draw(st.integers(0, 24)).to_bytes(3, "big")
    return bytes(bhs) + draw(st.binary(max_size=64))


@FUZZ
@given(buf=framable())
def test_decode_of_framable_noise_is_typed_and_idempotent(buf: bytes) -> None:
    try:
        pdu, used = decode_pdu(buf)
    except PduFormatError as exc:
        assert exc.header in (b"", buf[:48])
        return
    # whatever decoded must re-encode to something that decodes the same
    again = encode_bytes(pdu)
    assert decode_pdu(again)[0] == pdu
    assert used <= len(buf)


@FUZZ
@given(header=st.binary(max_size=120), data=st.binary(max_size=40))
def test_decode_on_arbitrary_header_and_data(header: bytes, data: bytes) -> None:
    try:
        decode(header, data)
    except PduFormatError:
        pass


def test_not_a_buffer_is_a_format_error() -> None:
    with pytest.raises(PduFormatError):
        decode_pdu("not bytes")  # type: ignore[arg-type]
    with pytest.raises(PduFormatError):
        decode(bytes(48), 12)  # type: ignore[arg-type]


def test_strided_buffers_are_refused_with_typed_errors() -> None:
    wire = encode_bytes(NopOut(itt=5)) * 2
    with pytest.raises(PduFormatError):
        decode_pdu(memoryview(wire)[::2])
    with pytest.raises(PduEncodeError):
        encode(NopOut(data=memoryview(b"abcdef")[::2]))


def test_non_byte_buffers_are_read_as_bytes() -> None:
    wire = encode_bytes(NopOut(itt=5, data=b"pingpong"))
    words = array.array("I")
    words.frombytes(wire)
    assert decode_pdu(words)[0] == NopOut(itt=5, data=b"pingpong")


def test_truncated_bhs() -> None:
    with pytest.raises(PduFormatError) as info:
        decode(bytes(47))
    assert not isinstance(info.value, IncompletePdu) and info.value.header == b""
    with pytest.raises(IncompletePdu) as inc:
        decode_pdu(bytes(10))
    assert inc.value.needed == 48
    with pytest.raises(IncompletePdu):
        peek_lengths(bytes(47))


def test_header_length_disagrees_with_total_ahs_length() -> None:
    with pytest.raises(PduFormatError) as info:
        decode(_bhs(ahs_words=1))  # AHS promised, none given
    assert info.value.header == bytes(_bhs(ahs_words=1))
    with pytest.raises(PduFormatError):
        decode(bytes(_bhs()) + bytes(4))  # AHS given, none promised


def test_ahs_length_overflowing_total() -> None:
    bad = bytes(_bhs(ahs_words=1)) + bytes.fromhex("00050300")  # AHSLength 5 in a 4-byte chain
    with pytest.raises(PduFormatError) as info:
        decode(bad)
    assert info.value.reject_reason == RejectReason.INVALID_PDU_FIELD
    with pytest.raises(PduFormatError):
        decode_pdu(bad + bytes(8))


@pytest.mark.parametrize(
    "ahs",
    [
        "00000100",  # Extended CDB with AHSLength 0 (no reserved byte)
        "0005020000000001" + "0002010000000000",  # ext CDB after bidi is fine, but ...
        "00050200000000010005020000000002",  # ... two bidi AHSs are not
        "0004020000000000",  # bidi AHS of the wrong length
        "0002010000000000" * 2,  # two extended CDBs
    ],
)
def test_bad_scsi_command_ahs(ahs: str) -> None:
    raw = bytes.fromhex(ahs)
    header = bytes(_bhs(op=0x01, ahs_words=len(raw) // 4)) + raw
    if ahs.startswith("0005020000000001" + "0002"):
        pdu = decode(header)
        assert isinstance(pdu, ScsiCommand) and pdu.bidi_read_length == 1 and len(pdu.cdb) == 17
        return
    with pytest.raises(PduFormatError) as info:
        decode(header)
    assert info.value.reject_reason == RejectReason.INVALID_PDU_FIELD


def test_generic_ahs_round_trip_and_padding() -> None:
    pdu = NopOut(itt=1, ahs=[Ahs(60, b"\x00abc"), Ahs(0, b"")])
    header = encode_header(pdu)
    assert header[4] == 3  # 4+3 -> 8 bytes, then 3 -> 4 bytes
    assert header[48:] == bytes.fromhex("00043c00616263 00 00000000".replace(" ", ""))
    assert decode(header) == pdu


def test_data_length_mismatch() -> None:
    header = encode_header(DataOut(data=b"12345"))
    assert bytes(decode(header, b"12345\0\0\0").data) == b"12345"  # padding tolerated
    for bad in (b"1234", b"12345\0\0\0\0", b""):
        with pytest.raises(PduFormatError):
            decode(header, bad)
    with pytest.raises(PduFormatError):
        decode(encode_header(NopOut()), b"x")


@pytest.mark.parametrize(
    "pdu",
    [
        NopOut(itt=1 << 32),
        NopOut(lun=-1),
        ScsiCommand(attr=8),
        TmfRequest(function=128),
        LogoutRequest(reason=0x80),
        SnackRequest(type=16),
        LoginRequest(csg=4),
        LoginRequest(isid=1 << 48),
        NopOut(ahs=[Ahs(256, b"")]),
        NopOut(ahs=[Ahs(3, bytes(200))] * 6),  # over 1020 bytes of AHS
        ScsiCommand(cdb=bytes(1100)),
        UnknownPdu(raw_bhs=bytes(47)),
        UnknownPdu(opcode_value=64),
        NopOut(data=object()),  # type: ignore[arg-type]
    ],
    ids=lambda p: describe(p)[:40] if isinstance(p.data, (bytes, bytearray, memoryview)) else "bad-data",
)
def test_encode_errors(pdu: object) -> None:
    with pytest.raises(PduEncodeError):
        encode(pdu)  # type: ignore[arg-type]


def test_scsi_command_rejects_ambiguous_ahs() -> None:
    with pytest.raises(PduEncodeError):
        encode_header(ScsiCommand(ahs=[Ahs(1, b"\0abc")]))


def test_data_segment_too_long() -> None:
    with pytest.raises(PduEncodeError):
        encode_header(DataOut(data=memoryview(bytes(1 << 24))))


def test_lun_helpers() -> None:
    assert encode_lun(0) == 0
    assert encode_lun(5) == 0x0005 << 48
    assert encode_lun(256) == 0x4100 << 48
    assert encode_lun(16383) == 0x7FFF << 48
    for n in (0, 1, 255, 256, 1000, 16383):
        assert decode_lun(encode_lun(n)) == n
    assert decode_lun(0x4005 << 48) == 5  # flat addressing of a small LUN
    for bad in (-1, 16384):
        with pytest.raises(ValueError):
            encode_lun(bad)
    for raw in (0x8001 << 48, 0xC001 << 48, 0x0101 << 48, (1 << 48) | 1, 1 << 64):
        with pytest.raises(ValueError):
            decode_lun(raw)


def test_describe_names_class_flags_and_fields() -> None:
    text = str(ScsiCommand(itt=0x10, read=True, cdb=bytes.fromhex("28" + "00" * 15), data=b"abc"))
    assert text.startswith("ScsiCommand ")
    assert "itt=0x10" in text and "read" in text and "dlen=3" in text and "cdb=28" in text
    assert "function=LOGICAL_UNIT_RESET" in describe(TmfRequest(function=5))
    assert "op=0x1c" in describe(UnknownPdu(opcode_value=0x1C))
    assert BHS_LENGTH == 48

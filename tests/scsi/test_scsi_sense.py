from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from datamover.scsi import sense as S
from datamover.scsi.constants import ScsiStatus, SenseKey
from datamover.scsi.sense import ScsiError, Sense, SenseFormatError, field_pointer


@st.composite
def senses(draw: st.DrawFn) -> Sense:
    descriptor = draw(st.booleans())
    info = draw(st.none() | st.integers(0, (1 << 64) - 1 if descriptor else (1 << 32) - 1))
    sks = draw(st.none() | st.binary(min_size=3, max_size=3).map(lambda b: bytes((b[0] | 0x80,)) + b[1:]))
    return Sense(draw(st.integers(0, 15)), draw(st.integers(0, 255)), draw(st.integers(0, 255)), info, sks, descriptor)


@given(senses())
def test_round_trip(sense: Sense) -> None:
    assert Sense.decode(sense.encode()) == sense


def test_fixed_layout() -> None:
    s = Sense(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00, information=0x01020304, sks=field_pointer(2, 5))
    b = s.encode()
    assert len(b) == 18
    assert b[0] == 0xF0  # 70h with VALID
    assert b[2] == 0x05 and b[3:7] == bytes((1, 2, 3, 4)) and b[7] == 10
    assert (b[12], b[13]) == (0x24, 0)
    assert b[15:18] == bytes((0x80 | 0x40 | 0x08 | 5, 0, 2))


def test_fixed_without_information_has_valid_clear() -> None:
    b = S.LBA_OUT_OF_RANGE.encode()
    assert b[0] == 0x70 and b[3:7] == bytes(4) and b[15] == 0


def test_descriptor_layout() -> None:
    s = Sense(SenseKey.MISCOMPARE, 0x1D, 0, information=1 << 40, sks=field_pointer(7), descriptor=True)
    b = s.encode()
    assert b[0] == 0x72 and (b[1], b[2], b[3]) == (0x0E, 0x1D, 0)
    assert b[7] == len(b) - 8 == 12 + 8
    assert b[8:10] == bytes((0x00, 0x0A)) and b[10] & 0x80
    assert int.from_bytes(b[12:20], "big") == 1 << 40
    assert b[20:22] == bytes((0x02, 0x06))


def test_descriptor_without_fields_is_8_bytes() -> None:
    assert S.NO_SENSE.as_descriptor(True).encode() == bytes((0x72, 0, 0, 0, 0, 0, 0, 0))


def test_field_pointer_decoding() -> None:
    assert S.invalid_field_in_cdb(1, 7).field_pointer == (True, 1, 7)
    assert S.invalid_field_in_cdb(2).field_pointer == (True, 2, None)
    assert S.invalid_field_in_parameter_list(300, 0).field_pointer == (False, 300, 0)
    assert S.LBA_OUT_OF_RANGE.field_pointer is None


@pytest.mark.parametrize(
    ("name", "triple"),
    [
        ("INVALID_OPCODE", (5, 0x20, 0)),
        ("INVALID_FIELD_IN_CDB", (5, 0x24, 0)),
        ("LBA_OUT_OF_RANGE", (5, 0x21, 0)),
        ("LUN_NOT_SUPPORTED", (5, 0x25, 0)),
        ("WRITE_PROTECTED", (7, 0x27, 0)),
        ("PARAMETER_LIST_LENGTH_ERROR", (5, 0x1A, 0)),
        ("INVALID_FIELD_IN_PARAMETER_LIST", (5, 0x26, 0)),
        ("POWER_ON_RESET", (6, 0x29, 0)),
        ("BUS_DEVICE_RESET", (6, 0x29, 3)),
        ("MEDIUM_NOT_PRESENT", (2, 0x3A, 0)),
        ("MISCOMPARE", (0xE, 0x1D, 0)),
        ("NOT_READY", (2, 0x04, 0)),
    ],
)
def test_common_conditions(name: str, triple: tuple[int, int, int]) -> None:
    s = getattr(S, name)
    assert (s.key, s.asc, s.ascq) == triple


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key": 16, "asc": 0, "ascq": 0},
        {"key": 5, "asc": 256, "ascq": 0},
        {"key": 5, "asc": 0x24, "ascq": 0, "information": 1 << 32},  # fixed format: 32 bits
        {"key": 5, "asc": 0x24, "ascq": 0, "sks": b"\x00\x00\x01"},  # SKSV clear
        {"key": 5, "asc": 0x24, "ascq": 0, "sks": b"\x80\x00"},
    ],
)
def test_invalid_sense_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(SenseFormatError):
        Sense(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("data", [b"", b"\x70\x00\x05", b"\x71" + bytes(5), b"\x72\x00", b"\x00" * 18, b"\x7f" * 18])
def test_decode_rejects_garbage(data: bytes) -> None:
    with pytest.raises(SenseFormatError):
        Sense.decode(data)


def test_decode_rejects_overrunning_descriptor() -> None:
    data = bytes((0x72, 5, 0x24, 0, 0, 0, 0, 4, 0x02, 0x06, 0x80, 0))
    with pytest.raises(SenseFormatError):
        Sense.decode(data)


def test_decode_deferred_and_short_fixed() -> None:
    # 14 bytes is the shortest fixed sense data that still carries ASC/ASCQ
    short = S.WRITE_PROTECTED.encode()[:14]
    assert Sense.decode(short) == S.WRITE_PROTECTED
    deferred = b"\x71" + S.WRITE_ERROR.encode()[1:]
    assert Sense.decode(deferred) == S.WRITE_ERROR


def test_field_pointer_bounds() -> None:
    with pytest.raises(ValueError):
        field_pointer(1 << 16)
    with pytest.raises(ValueError):
        field_pointer(1, 8)


def test_scsi_error_carries_sense_and_status() -> None:
    e = ScsiError(S.LBA_OUT_OF_RANGE)
    assert e.sense is S.LBA_OUT_OF_RANGE and e.status == ScsiStatus.CHECK_CONDITION
    assert "ILLEGAL_REQUEST" in str(e)
    conflict = ScsiError(None, ScsiStatus.RESERVATION_CONFLICT)
    assert conflict.sense is None and "RESERVATION_CONFLICT" in str(conflict)

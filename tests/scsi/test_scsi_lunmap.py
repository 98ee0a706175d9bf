from __future__ import annotations

import struct

import pytest
from scsi_testlib import assert_check, assert_good, inquiry, run, rw10

from datamover.scsi import (
    LogicalUnit,
    LunFormatError,
    LunMap,
    MemoryBackend,
    Opcode,
    ScsiRequest,
    Sense,
    decode_lun,
    encode_lun,
)
from datamover.scsi.constants import SenseKey
from datamover.scsi.lunmap import REPORT_LUNS_WLUN


def report_luns(select: int = 0, alloc: int = 4096, control: int = 0) -> bytes:
    return struct.pack(">BxB3xIxB", 0xA0, select, alloc, control).ljust(16, b"\0")


def make_lu() -> LogicalUnit:
    return LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False)


@pytest.fixture
def lunmap() -> LunMap:
    return LunMap({0: make_lu(), 3: make_lu(), 300: make_lu()})


def ex(m: LunMap, lun: int, cdb: bytes, data: object = None, nexus: str = "N") -> object:
    return m.execute(lun, ScsiRequest(cdb, data, nexus))  # type: ignore[arg-type]


def luns_in(data: bytes) -> list[int]:
    length = struct.unpack_from(">I", data)[0]
    assert length % 8 == 0
    return [decode_lun(data[8 + i : 16 + i]) for i in range(0, length, 8)]


@pytest.mark.parametrize("lun", [0, 3, 7, 9999])
def test_report_luns_from_any_lun(lunmap: LunMap, lun: int) -> None:
    assert luns_in(assert_good(ex(lunmap, lun, report_luns()))) == [0, 3, 300]  # type: ignore[arg-type]


def test_report_luns_without_lun_0() -> None:
    m = LunMap({5: make_lu()})
    assert luns_in(assert_good(ex(m, 0, report_luns()))) == [5]  # type: ignore[arg-type]
    assert luns_in(assert_good(ex(m, REPORT_LUNS_WLUN, report_luns(select=2)))) == [5]  # type: ignore[arg-type]


def test_report_luns_select_and_fields(lunmap: LunMap) -> None:
    assert luns_in(assert_good(ex(lunmap, 0, report_luns(select=1)))) == []  # type: ignore[arg-type]
    assert assert_check(ex(lunmap, 0, report_luns(select=0x40)), 5, 0x24).field_pointer == (True, 2, None)  # type: ignore[arg-type]
    assert_check(ex(lunmap, 0, report_luns(control=0x04)), 5, 0x24)  # type: ignore[arg-type]
    short = assert_good(ex(lunmap, 0, report_luns(alloc=12)))  # type: ignore[arg-type]
    assert len(short) == 12 and struct.unpack_from(">I", short)[0] == 24
    plan = lunmap.prepare(9, report_luns(alloc=100))
    assert (plan.direction, plan.data_in_length, plan.ok) == ("read", 100, True)


def test_inquiry_to_missing_lun(lunmap: LunMap) -> None:
    data = assert_good(ex(lunmap, 7, inquiry()))  # type: ignore[arg-type]
    assert data[0] == 0x7F and len(data) == 96
    vpd = assert_good(ex(lunmap, 7, inquiry(evpd=True, page=0)))  # type: ignore[arg-type]
    assert vpd[0] == 0x7F and vpd[1] == 0
    assert_check(ex(lunmap, 7, inquiry(evpd=True, page=0x83)), 5, 0x24)  # type: ignore[arg-type]
    assert lunmap.prepare(7, inquiry()).direction == "read"


def test_other_commands_to_missing_lun(lunmap: LunMap) -> None:
    for cdb in (bytes(16), rw10(Opcode.READ_10, 0, 1), rw10(Opcode.WRITE_10, 0, 1)):
        assert_check(ex(lunmap, 7, cdb, b"x" * 512), SenseKey.ILLEGAL_REQUEST, 0x25)  # type: ignore[arg-type]
        plan = lunmap.prepare(7, cdb)
        assert not plan.ok and plan.error is not None and plan.error.asc == 0x25 and plan.data_out_length == 0
    s = Sense.decode(assert_good(ex(lunmap, 7, bytes((0x03, 0, 0, 0, 18, 0)))))  # type: ignore[arg-type]
    assert (s.key, s.asc) == (SenseKey.ILLEGAL_REQUEST, 0x25)


def test_commands_reach_the_right_lu(lunmap: LunMap) -> None:
    assert_good(ex(lunmap, 3, rw10(Opcode.WRITE_10, 0, 1), b"3" * 512))  # type: ignore[arg-type]
    assert assert_good(ex(lunmap, 3, rw10(Opcode.READ_10, 0, 1))) == b"3" * 512  # type: ignore[arg-type]
    assert assert_good(ex(lunmap, 0, rw10(Opcode.READ_10, 0, 1))) == bytes(512)  # type: ignore[arg-type]
    assert lunmap.prepare(3, rw10(Opcode.WRITE_10, 0, 2)).data_out_length == 1024


def test_lu_reset_through_map(lunmap: LunMap) -> None:
    assert_good(ex(lunmap, 3, bytes(16)))  # type: ignore[arg-type]
    assert_good(ex(lunmap, 0, bytes(16)))  # type: ignore[arg-type]
    assert lunmap.lu_reset(3) is True
    assert lunmap.lu_reset(42) is False
    assert_check(ex(lunmap, 3, bytes(16)), SenseKey.UNIT_ATTENTION, 0x29, 3)  # type: ignore[arg-type]
    assert_good(ex(lunmap, 0, bytes(16)))  # type: ignore[arg-type]
    lunmap.target_reset()
    assert_check(ex(lunmap, 0, bytes(16)), SenseKey.UNIT_ATTENTION, 0x29, 3)  # type: ignore[arg-type]
    assert lunmap.abort_task_set(0, "N") and not lunmap.abort_task_set(42, "N")


def test_inventory_change_ua_cleared_by_report_luns(lunmap: LunMap) -> None:
    assert_good(ex(lunmap, 0, bytes(16)))  # type: ignore[arg-type]
    lunmap.add(9, make_lu())
    assert 9 in lunmap and len(lunmap) == 4 and list(lunmap) == [0, 3, 9, 300]
    assert luns_in(assert_good(ex(lunmap, 0, report_luns()))) == [0, 3, 9, 300]  # type: ignore[arg-type]
    assert_good(ex(lunmap, 0, bytes(16)))  # type: ignore[arg-type]  # REPORT LUNS cleared it
    lunmap.remove(9)
    assert_check(ex(lunmap, 0, bytes(16)), SenseKey.UNIT_ATTENTION, 0x3F, 0x0E)  # type: ignore[arg-type]


def test_map_errors(lunmap: LunMap) -> None:
    with pytest.raises(ValueError):
        lunmap.add(3, make_lu())
    with pytest.raises(LunFormatError):
        lunmap.add(1 << 14, make_lu())


@pytest.mark.parametrize("lun", [0, 1, 255, 256, 0x3FFF, REPORT_LUNS_WLUN])
def test_lun_encoding_round_trip(lun: int) -> None:
    field = encode_lun(lun)
    assert len(field) == 8 and decode_lun(field) == lun


def test_lun_encoding_formats() -> None:
    assert encode_lun(5) == bytes((0, 5, 0, 0, 0, 0, 0, 0))
    assert encode_lun(300) == bytes((0x41, 0x2C, 0, 0, 0, 0, 0, 0))
    with pytest.raises(LunFormatError):
        encode_lun(1 << 14)
    for bad in (bytes(7), bytes((0, 1, 0, 2, 0, 0, 0, 0)), bytes((0x01, 1)) + bytes(6), bytes((0x80, 1)) + bytes(6)):
        with pytest.raises(LunFormatError):
            decode_lun(bad)

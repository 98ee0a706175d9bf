from __future__ import annotations

import struct

import pytest
from scsi_testlib import assert_check, assert_good, run

from datamover.scsi import LogicalUnit, MemoryBackend, Opcode
from datamover.scsi.constants import SenseKey

BLOCKS = 2048


def rc10(lba: int = 0, pmi: int = 0) -> bytes:
    return struct.pack(">BBIHBB", 0x25, 0, lba, 0, pmi, 0).ljust(16, b"\0")


def rc16(alloc: int = 32, lba: int = 0, pmi: int = 0, sa: int = 0x10) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, sa, lba, alloc, pmi, 0)


def test_read_capacity_10(mem_lu: LogicalUnit) -> None:
    plan = mem_lu.prepare(rc10())
    assert (plan.direction, plan.data_in_length) == ("read", 8)
    assert struct.unpack(">II", assert_good(run(mem_lu, rc10()))) == (BLOCKS - 1, 512)
    assert_good(run(mem_lu, rc10(lba=5, pmi=1)))
    assert assert_check(run(mem_lu, rc10(lba=5)), 5, 0x24).field_pointer == (True, 2, None)


def test_read_capacity_10_saturates_for_huge_luns() -> None:
    class Huge(MemoryBackend):
        def __init__(self) -> None:  # no RAM: only the size matters for READ CAPACITY
            self.size = (1 << 33) * 512

    lu = LogicalUnit(Huge(), power_on_ua=False)
    assert struct.unpack(">II", assert_good(run(lu, rc10()))) == (0xFFFFFFFF, 512)
    assert struct.unpack_from(">Q", assert_good(run(lu, rc16())))[0] == (1 << 33) - 1


def test_read_capacity_16(mem_lu: LogicalUnit) -> None:
    data = assert_good(run(mem_lu, rc16()))
    assert len(data) == 32
    last, bs, prot, exp, lbp = struct.unpack_from(">QIBBH", data)
    # thin provisioned by default: LBPME and LBPRZ set
    assert (last, bs, prot, exp & 0x0F, lbp & 0xC000) == (BLOCKS - 1, 512, 0, 0, 0xC000)
    assert len(assert_good(run(mem_lu, rc16(alloc=12)))) == 12
    assert assert_good(run(mem_lu, rc16(alloc=0))) == b""


def test_read_capacity_16_physical_exponent_and_4k() -> None:
    lu = LogicalUnit(MemoryBackend(1 << 20), block_size=4096, power_on_ua=False)
    assert struct.unpack_from(">QI", assert_good(run(lu, rc16()))) == (255, 4096)
    lu = LogicalUnit(MemoryBackend(1 << 20), physical_block_size=4096, power_on_ua=False)
    assert assert_good(run(lu, rc16()))[13] & 0x0F == 3


def test_service_action_in_unknown_action(mem_lu: LogicalUnit) -> None:
    sense = assert_check(run(mem_lu, rc16(sa=0x1B)), 5, 0x24)
    assert sense.field_pointer == (True, 1, 4)


def test_read_capacity_16_reserved(mem_lu: LogicalUnit) -> None:
    assert_check(run(mem_lu, rc16(sa=0x10 | 0x40)), 5, 0x24)
    assert_check(run(mem_lu, rc16(lba=1)), 5, 0x24)


# ------------------------------------------------------------------ MODE SENSE
def ms6(page: int, pc: int = 0, dbd: bool = False, alloc: int = 255, subpage: int = 0) -> bytes:
    return struct.pack(">BBBBBB", 0x1A, 0x08 if dbd else 0, (pc << 6) | page, subpage, alloc, 0).ljust(16, b"\0")


def ms10(page: int, pc: int = 0, dbd: bool = False, llbaa: bool = False, alloc: int = 1024, subpage: int = 0) -> bytes:
    byte1 = (0x08 if dbd else 0) | (0x10 if llbaa else 0)
    return struct.pack(">BBBB3xHB", 0x5A, byte1, (pc << 6) | page, subpage, alloc, 0).ljust(16, b"\0")


def pages_of(body: bytes) -> dict[int, bytes]:
    out, pos = {}, 0
    while pos < len(body):
        code, length = body[pos] & 0x3F, body[pos + 1]
        out[code] = body[pos : pos + 2 + length]
        pos += 2 + length
    assert pos == len(body)
    return out


def test_mode_sense6_all_pages(mem_lu: LogicalUnit) -> None:
    data = assert_good(run(mem_lu, ms6(0x3F)))
    assert data[0] == len(data) - 1
    assert data[2] & 0x80 == 0 and data[2] & 0x10  # not write-protected, DPOFUA
    assert data[3] == 8
    blocks, bs_hi, bs_lo = struct.unpack_from(">IxBH", data, 4)
    assert (blocks, (bs_hi << 16) | bs_lo) == (BLOCKS, 512)
    pages = pages_of(data[12:])
    assert list(pages) == [0x08, 0x0A, 0x1C]
    assert len(pages[0x08]) == 20 and pages[0x08][2] & 0x04  # WCE
    assert len(pages[0x0A]) == 12 and pages[0x0A][2] & 0x04 == 0  # D_SENSE off
    assert len(pages[0x1C]) == 12


def test_mode_sense6_dbd_and_single_page(mem_lu: LogicalUnit) -> None:
    data = assert_good(run(mem_lu, ms6(0x08, dbd=True)))
    assert data[3] == 0 and list(pages_of(data[4:])) == [0x08]


def test_mode_sense10_long_lba(mem_lu: LogicalUnit) -> None:
    data = assert_good(run(mem_lu, ms10(0x0A, llbaa=True)))
    length, _, _, longlba, bdlen = struct.unpack_from(">HBBBxH", data)
    assert length == len(data) - 2 and longlba & 1 and bdlen == 16
    assert struct.unpack_from(">Q4xI", data, 8) == (BLOCKS, 512)
    assert list(pages_of(data[24:])) == [0x0A]
    data = assert_good(run(mem_lu, ms10(0x3F)))
    assert struct.unpack_from(">H", data, 6)[0] == 8 and data[4] & 1 == 0


def test_mode_sense_page_control(mem_lu: LogicalUnit) -> None:
    changeable = pages_of(assert_good(run(mem_lu, ms6(0x08, pc=1, dbd=True)))[4:])[0x08]
    assert changeable[2] == 0x04 and changeable[3:] == bytes(17)  # only WCE is changeable
    default = assert_good(run(mem_lu, ms6(0x3F, pc=2)))
    assert default == assert_good(run(mem_lu, ms6(0x3F, pc=0)))
    assert_check(run(mem_lu, ms6(0x3F, pc=3)), SenseKey.ILLEGAL_REQUEST, 0x39)


def test_mode_sense_write_protect_and_d_sense() -> None:
    lu = LogicalUnit(MemoryBackend(1 << 20), read_only=True, descriptor_sense=True, power_on_ua=False)
    data = assert_good(run(lu, ms10(0x0A)))
    assert data[3] & 0x80  # WP
    assert pages_of(data[16:])[0x0A][2] & 0x04  # D_SENSE
    # and errors really come back in descriptor format
    result = run(lu, ms6(0x3F, pc=3))
    assert result.sense is not None and result.sense.descriptor and result.sense.encode()[0] == 0x72


def test_mode_sense_truncation(mem_lu: LogicalUnit) -> None:
    full = assert_good(run(mem_lu, ms6(0x3F)))
    short = assert_good(run(mem_lu, ms6(0x3F, alloc=4)))
    assert short == full[:4] and short[0] == len(full) - 1


@pytest.mark.parametrize("build", [ms6, ms10])
def test_mode_sense_unsupported_page_and_subpage(mem_lu: LogicalUnit, build) -> None:  # type: ignore[no-untyped-def]
    assert assert_check(run(mem_lu, build(0x19)), 5, 0x24).field_pointer == (True, 2, 5)
    assert assert_check(run(mem_lu, build(0x08, subpage=1)), 5, 0x24).field_pointer == (True, 3, None)
    assert_check(run(mem_lu, build(0x3F, subpage=2)), 5, 0x24)
    # all pages and subpages is fine
    assert_good(run(mem_lu, build(0x3F, subpage=0xFF)))
    assert_good(run(mem_lu, build(0x08, subpage=0xFF)))


def test_mode_sense_reserved_bits(mem_lu: LogicalUnit) -> None:
    cdb = bytearray(ms6(0x3F))
    cdb[1] = 0x10  # LLBAA does not exist in MODE SENSE(6)
    assert assert_check(run(mem_lu, bytes(cdb)), 5, 0x24).field_pointer == (True, 1, 4)
    cdb = bytearray(ms10(0x3F))
    cdb[5] = 1
    assert_check(run(mem_lu, bytes(cdb)), 5, 0x24)


def test_mode_sense_prepare(mem_lu: LogicalUnit) -> None:
    plan = mem_lu.prepare(ms10(0x3F, alloc=600))
    assert (plan.direction, plan.data_in_length) == ("read", 600)
    assert mem_lu.prepare(ms6(0x19)).error is not None
    assert Opcode.MODE_SENSE_10 in mem_lu.commands

"""REPORT SUPPORTED OPCODES, MODE SELECT, START STOP UNIT / PREVENT ALLOW, SANITIZE, EXTENDED COPY."""

from __future__ import annotations

import struct

from scsi_testlib import NEXUS, assert_check, assert_good, run, rw10

from datamover.scsi import LogicalUnit, LunMap, MemoryBackend, Opcode, SenseKey
from datamover.scsi.command import ScsiResult

BS = 512
OTHER = "iqn.other,i,0x9|iqn.t"


def rsoc(options: int, opcode: int = 0, sa: int = 0, rctd: bool = False, alloc: int = 8192) -> bytes:
    return struct.pack(">BBBBHIxB", 0xA3, 0x0C, (0x80 if rctd else 0) | options, opcode, sa, alloc, 0).ljust(16, b"\0")


def test_report_supported_opcodes(mem_lu: LogicalUnit) -> None:
    data = assert_good(run(mem_lu, rsoc(0)))
    (length,) = struct.unpack_from(">I", data)
    entries = [struct.unpack_from(">BxHxBH", data, 4 + 8 * k) for k in range(length // 8)]
    ops = {(op, sa if flags & 1 else None) for op, sa, flags, _ in entries}
    assert (Opcode.READ_10, None) in ops and (0x9E, 0x10) in ops and (Opcode.REPORT_LUNS, None) in ops
    assert all(sa == 0 for _, sa, flags, _ in entries if not flags & 1)
    timed = assert_good(run(mem_lu, rsoc(0, rctd=True)))
    assert struct.unpack_from(">I", timed)[0] == len(entries) * 20 and timed[4 + 5] & 0x02
    one = assert_good(run(mem_lu, rsoc(1, Opcode.VERIFY_10)))
    assert one[1] & 0x07 == 3 and struct.unpack_from(">H", one, 2)[0] == 10 and one[4] == Opcode.VERIFY_10
    assert one[5] & 0x10  # DPO is honoured, as MODE SENSE's DPOFUA says
    assert_check(run(mem_lu, rsoc(1, 0x9E)), SenseKey.ILLEGAL_REQUEST, 0x24)  # has service actions
    assert_check(run(mem_lu, rsoc(2, Opcode.READ_10)), SenseKey.ILLEGAL_REQUEST, 0x24)  # has none
    assert assert_good(run(mem_lu, rsoc(2, 0x9E, 0x10)))[4:6] == bytes((0x9E, 0xF0))
    assert assert_good(run(mem_lu, rsoc(1, 0x02)))[1] & 0x07 == 1  # not supported
    assert_check(run(mem_lu, rsoc(5)), SenseKey.ILLEGAL_REQUEST, 0x24)


def mode_select6(page: bytes) -> tuple[bytes, bytes]:
    params = bytes(4) + page
    return bytes((Opcode.MODE_SELECT_6, 0x10, 0, 0, len(params), 0)).ljust(16, b"\0"), params


def control_page(lu: LogicalUnit) -> bytearray:
    data = assert_good(run(lu, bytes((Opcode.MODE_SENSE_6, 0x08, 0x0A, 0, 255, 0)).ljust(16, b"\0")))
    return bytearray(data[4:])


def test_mode_select_swp_and_d_sense(mem_lu: LogicalUnit) -> None:
    assert_good(run(mem_lu, rw10(Opcode.READ_10, 0, 1), nexus=OTHER))  # OTHER is known to the LU
    page = control_page(mem_lu)
    page[4] |= 0x08  # SWP
    page[2] |= 0x04  # D_SENSE
    assert_good(run(mem_lu, *mode_select6(bytes(page))))
    assert mem_lu.read_only and mem_lu.d_sense
    result = run(mem_lu, rw10(Opcode.WRITE_10, 0, 1), bytes(BS))
    assert result.sense is not None and result.sense.key == SenseKey.DATA_PROTECT and result.sense.descriptor
    assert_check(run(mem_lu, rw10(Opcode.READ_10, 0, 1), nexus=OTHER), SenseKey.UNIT_ATTENTION, 0x2A, 0x01)
    # a bit that is not changeable, an unknown page, SP=1
    bad = bytearray(page)
    bad[3] ^= 0x20  # QUEUE ALGORITHM MODIFIER is not changeable
    assert_check(run(mem_lu, *mode_select6(bytes(bad))), SenseKey.ILLEGAL_REQUEST, 0x26)
    assert_check(run(mem_lu, *mode_select6(bytes((0x05, 2, 0, 0)))), SenseKey.ILLEGAL_REQUEST, 0x26)
    cdb, params = mode_select6(bytes(page))
    assert_check(run(mem_lu, cdb[:1] + b"\x11" + cdb[2:], params), SenseKey.ILLEGAL_REQUEST, 0x24)
    mem_lu.lu_reset()  # parameters go back to their defaults
    assert not mem_lu.read_only and not mem_lu.d_sense


def ssu(loej: bool, start: bool, condition: int = 0) -> bytes:
    return bytes((Opcode.START_STOP_UNIT, 0, 0, 0, (condition << 4) | (loej << 1) | start, 0)).ljust(16, b"\0")


def pamr(prevent: int) -> bytes:
    return bytes((Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, prevent, 0)).ljust(16, b"\0")


def test_removable_medium() -> None:
    lu = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False, removable=True)
    tur = bytes(16)
    assert assert_good(run(lu, bytes((0x12, 0, 0, 0, 96, 0)).ljust(16, b"\0")))[1] & 0x80  # RMB
    assert_good(run(lu, ssu(True, False)))
    assert_check(run(lu, tur), SenseKey.NOT_READY, 0x3A)
    assert_check(run(lu, rw10(Opcode.READ_10, 0, 1)), SenseKey.NOT_READY, 0x3A)
    assert_good(run(lu, ssu(True, True)))
    assert_good(run(lu, tur))
    assert_good(run(lu, pamr(1), nexus=OTHER))
    assert_check(run(lu, ssu(True, False)), SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)  # another nexus prevents
    assert_good(run(lu, ssu(True, False, condition=2)))  # power conditions ignore LOEJ
    lu.nexus_lost(OTHER)
    assert_good(run(lu, ssu(True, False)))
    assert_check(run(lu, pamr(2)), SenseKey.ILLEGAL_REQUEST, 0x24)


def sanitize(action: int, length: int = 0) -> bytes:
    return struct.pack(">BB5xHB", 0x48, action, length, 0).ljust(16, b"\0")


def settled(result: ScsiResult) -> ScsiResult:
    """A SANITIZE with IMMED=0 answers when its background operation ends."""
    assert result.pending is not None, f"expected a pending result, got {result}"
    return result.pending.result(10)


def test_sanitize(mem_lu: LogicalUnit) -> None:
    assert_good(run(mem_lu, rw10(Opcode.WRITE_10, 0, 2), b"x" * 2 * BS))
    params = bytes((0x01, 0, 0, 4)) + b"\xaa\xbb\xcc\xdd"
    assert_good(settled(run(mem_lu, sanitize(1, len(params)), params)))
    assert assert_good(run(mem_lu, rw10(Opcode.READ_10, 7, 1))) == b"\xaa\xbb\xcc\xdd" * (BS // 4)
    assert_good(settled(run(mem_lu, sanitize(2))))
    assert assert_good(run(mem_lu, rw10(Opcode.READ_10, 7, 1))) == bytes(BS)
    assert_check(run(mem_lu, sanitize(2, 8), bytes(8)), SenseKey.ILLEGAL_REQUEST, 0x24)
    assert_check(run(mem_lu, sanitize(4)), SenseKey.ILLEGAL_REQUEST, 0x24)
    assert_check(run(mem_lu, sanitize(1, 3), bytes(3)), SenseKey.ILLEGAL_REQUEST, 0x24)
    bad = bytes((0x00, 0, 0, 4)) + bytes(4)  # OWCOUNT 0
    assert_check(run(mem_lu, sanitize(1, len(bad)), bad), SenseKey.ILLEGAL_REQUEST, 0x26)
    assert_good(run(mem_lu, sanitize(0x1F)))


def xcopy(src: LogicalUnit, dst: LogicalUnit, blocks: int, src_lba: int, dst_lba: int, list_id: int = 1) -> bytes:
    def target(lu: LogicalUnit) -> bytes:
        designator = bytes((0x01, 0x03, 0, 8)) + lu.device_id
        return struct.pack(">BBH20s4xB3s", 0xE4, 0, 0, designator.ljust(20, b"\0"), 0, BS.to_bytes(3, "big"))

    targets = target(src) + target(dst)
    segment = struct.pack(">BBHHH2xHQQ", 0x02, 0, 0x18, 0, 1, blocks, src_lba, dst_lba)
    return struct.pack(">BBH4xII", list_id, 0, len(targets), len(segment), 0) + targets + segment


def test_extended_copy_between_luns() -> None:
    a = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False, serial="AAAA")
    b = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False, serial="BBBB")
    LunMap({0: a, 1: b})
    assert_good(run(a, rw10(Opcode.WRITE_10, 0, 4), b"q" * 4 * BS))
    params = xcopy(a, b, 4, 0, 100)
    cdb = struct.pack(">BB8xIxB", 0x83, 0, len(params), 0)
    assert_good(run(a, cdb, params))
    assert assert_good(run(b, rw10(Opcode.READ_10, 100, 4))) == b"q" * 4 * BS
    status = struct.pack(">BBB7xIxB", 0x84, 0, 1, 64, 0)
    assert assert_good(run(a, status))[4] == 0x01  # completed, good
    assert_check(run(a, struct.pack(">BBB7xIxB", 0x84, 0, 7, 64, 0)), SenseKey.ILLEGAL_REQUEST, 0x24)
    beyond = xcopy(a, b, 4, 0, b.num_blocks - 1)
    assert_check(run(a, struct.pack(">BB8xIxB", 0x83, 0, len(beyond), 0), beyond), SenseKey.COPY_ABORTED, 0x00)
    assert_check(run(a, cdb, params[:20]), SenseKey.ILLEGAL_REQUEST, 0x1A)
    params_op = assert_good(run(a, struct.pack(">BBB7xIxB", 0x84, 3, 0, 64, 0)))
    assert struct.unpack_from(">HH", params_op, 8) == (4, 8)
    assert NEXUS  # the default nexus ran these commands

"""Thin provisioning: UNMAP, WRITE SAME (10/16), GET LBA STATUS, VPD B2h."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from scsi_testlib import assert_check, assert_good, inquiry, run, rw10

from datamover.scsi import FileBackend, LogicalUnit, MemoryBackend, Opcode, SenseKey

BS = 512


def unmap(descriptors: list[tuple[int, int]], anchor: bool = False, length: int | None = None) -> tuple[bytes, bytes]:
    body = b"".join(struct.pack(">QI4x", lba, n) for lba, n in descriptors)
    params = struct.pack(">HH4x", len(body) + 6, len(body)) + body
    n = len(params) if length is None else length
    return struct.pack(">BB4xBHB", Opcode.UNMAP, int(anchor), 0, n, 0).ljust(16, b"\0"), params


def ws10(lba: int, n: int, flags: int = 0) -> bytes:
    return struct.pack(">BBIBHB", Opcode.WRITE_SAME_10, flags, lba, 0, n, 0).ljust(16, b"\0")


def ws16(lba: int, n: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQIBB", Opcode.WRITE_SAME_16, flags, lba, n, 0, 0)


def gls(lba: int, alloc: int = 1024) -> bytes:
    return struct.pack(">BBQIBB", 0x9E, 0x12, lba, alloc, 0, 0)


def statuses(data: bytes) -> list[tuple[int, int, int]]:
    (length,) = struct.unpack_from(">I", data)
    return [struct.unpack_from(">QIB", data, 8 + 16 * k) for k in range((length - 4) // 16)]


@pytest.fixture
def file_lu(tmp_path: Path) -> LogicalUnit:
    return LogicalUnit(FileBackend(tmp_path / "lun.img", 4 << 20), power_on_ua=False)


def read(lu: LogicalUnit, lba: int, n: int) -> bytes:
    return assert_good(run(lu, rw10(Opcode.READ_10, lba, n)))


def test_vpd_b2_and_capacity(mem_lu: LogicalUnit) -> None:
    page = assert_good(run(mem_lu, inquiry(True, 0xB2)))
    assert page[1] == 0xB2 and page[5] & 0xE0 == 0xE0  # LBPU, LBPWS, LBPWS10
    assert page[5] & 0x1C == 0x04 and page[6] & 0x07 == 0x02  # LBPRZ=001b, thin
    limits = assert_good(run(mem_lu, inquiry(True, 0xB0)))
    max_unmap, max_desc = struct.unpack_from(">II", limits, 20)
    assert 0 < max_unmap <= 1 << 20 and max_desc > 0


def test_unmap_frees_space_and_reads_zeros(file_lu: LogicalUnit) -> None:
    assert_good(run(file_lu, rw10(Opcode.WRITE_10, 0, 64), b"\xab" * 64 * BS))
    cdb, params = unmap([(0, 32)])
    assert_good(run(file_lu, cdb, params))
    assert read(file_lu, 0, 32) == bytes(32 * BS)
    assert read(file_lu, 32, 32) == b"\xab" * 32 * BS
    desc = statuses(assert_good(run(file_lu, gls(0))))
    assert desc[0] == (0, 32, 1) and desc[1][0] == 32 and desc[1][2] == 0
    # GET LBA STATUS starts at the LBA asked for, even mid-extent
    assert statuses(assert_good(run(file_lu, gls(5))))[0] == (5, 27, 1)


def test_unmap_edge_cases(mem_lu: LogicalUnit) -> None:
    blocks = mem_lu.num_blocks
    assert_good(run(mem_lu, *unmap([])))
    assert_good(run(mem_lu, *unmap([(blocks, 0)])))  # zero blocks at the end: nothing to do
    assert_check(run(mem_lu, *unmap([(blocks - 1, 2)])), SenseKey.ILLEGAL_REQUEST, 0x21)
    assert_check(run(mem_lu, *unmap([(0, 1)], anchor=True)), SenseKey.ILLEGAL_REQUEST, 0x24)
    cdb, params = unmap([(0, 1)], length=4)
    assert_check(run(mem_lu, cdb, params[:4]), SenseKey.ILLEGAL_REQUEST, 0x1A)
    assert mem_lu.prepare(unmap([])[0]).direction == "write"
    assert mem_lu.prepare(unmap([], length=0)[0]).direction == "none"


def test_write_same_fills_and_unmaps(file_lu: LogicalUnit) -> None:
    pattern = bytes(range(256)) * 2
    assert_good(run(file_lu, ws10(10, 20), pattern, expected_length=BS))
    assert read(file_lu, 10, 20) == pattern * 20
    assert_good(run(file_lu, ws16(10, 8, 0x08), pattern, expected_length=BS))  # UNMAP=1
    assert read(file_lu, 10, 8) == bytes(8 * BS)
    assert read(file_lu, 18, 12) == pattern * 12
    # misaligned (not on a 4 KiB boundary) unmaps still read back as zeros
    assert_good(run(file_lu, ws10(19, 3, 0x08), pattern))
    assert read(file_lu, 18, 6) == pattern + bytes(3 * BS) + pattern * 2


def test_write_same_checks(mem_lu: LogicalUnit) -> None:
    blocks = mem_lu.num_blocks
    block = b"\x01" * BS
    assert_check(run(mem_lu, ws10(blocks + 1, 0), block), SenseKey.ILLEGAL_REQUEST, 0x21)
    assert_check(run(mem_lu, ws10(blocks - 1, 2), block), SenseKey.ILLEGAL_REQUEST, 0x21)
    assert_check(run(mem_lu, ws10(0, 1, 0x10), block), SenseKey.ILLEGAL_REQUEST, 0x24)  # ANCHOR
    assert_check(run(mem_lu, ws10(0, 1, 0x20), block), SenseKey.ILLEGAL_REQUEST, 0x24)  # WRPROTECT
    assert_check(run(mem_lu, ws10(0, 1, 0x01), block), SenseKey.ILLEGAL_REQUEST, 0x24)  # NDOB in WS(10)
    # Data-Out must be exactly one block
    assert_check(run(mem_lu, ws10(0, 1), block * 2, expected_length=2 * BS), SenseKey.ILLEGAL_REQUEST, 0x24)
    # 0 blocks: to the end of the medium
    assert_good(run(mem_lu, ws16(blocks - 4, 0), block))
    assert read(mem_lu, blocks - 4, 4) == block * 4
    # NDOB: zeros without a Data-Out buffer
    assert mem_lu.prepare(ws16(0, 4, 0x01)).direction == "none"
    assert_good(run(mem_lu, ws16(blocks - 4, 4, 0x01)))
    assert read(mem_lu, blocks - 4, 4) == bytes(4 * BS)


def test_read_only_and_fully_provisioned() -> None:
    ro = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False, read_only=True)
    assert_check(run(ro, *unmap([(0, 1)])), SenseKey.DATA_PROTECT, 0x27)
    assert_check(run(ro, ws10(0, 1), bytes(BS)), SenseKey.DATA_PROTECT, 0x27)
    full = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False, thin=False)
    assert_check(run(full, *unmap([(0, 1)])), SenseKey.ILLEGAL_REQUEST, 0x24)
    assert_check(run(full, gls(0)), SenseKey.ILLEGAL_REQUEST, 0x24)
    assert_check(run(full, ws10(0, 1, 0x08), bytes(BS)), SenseKey.ILLEGAL_REQUEST, 0x24)


def test_get_lba_status_beyond_end(mem_lu: LogicalUnit) -> None:
    assert_check(run(mem_lu, gls(mem_lu.num_blocks)), SenseKey.ILLEGAL_REQUEST, 0x21)
    # truncated to the allocation length: header plus one descriptor
    assert len(assert_good(run(mem_lu, gls(0, 24)))) == 24


def test_get_lba_status_on_a_large_ram_disk_describes_one_scan_and_continues() -> None:
    """A RAM disk is scanned at most MEMORY_EXTENT_SCAN bytes per GET LBA STATUS: the
    descriptors end there, and asking from that LBA describes the rest (SBC lets an
    initiator walk the medium command by command)."""
    from datamover.scsi.backend import MEMORY_EXTENT_SCAN

    lu = LogicalUnit(MemoryBackend(MEMORY_EXTENT_SCAN + (1 << 20)), power_on_ua=False)
    scan_blocks = MEMORY_EXTENT_SCAN // BS
    assert_good(run(lu, rw10(0x2A, scan_blocks + 8, 8), b"\x07" * 8 * BS))
    assert statuses(assert_good(run(lu, gls(0)))) == [(0, scan_blocks, 1)]
    assert statuses(assert_good(run(lu, gls(scan_blocks)))) == [
        (scan_blocks, 8, 1), (scan_blocks + 8, 8, 0), (scan_blocks + 16, 2048 - 16, 1)]

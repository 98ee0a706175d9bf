"""VERIFY, WRITE AND VERIFY, COMPARE AND WRITE, ORWRITE, WRITE ATOMIC, PRE-FETCH, READ DEFECT DATA."""

from __future__ import annotations

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from scsi_testlib import assert_check, assert_good, run, rw10, rw12, rw16

from datamover.scsi import LogicalUnit, MemoryBackend, Opcode, ScsiStatus, Sense, SenseKey

BS = 512


def caw(lba: int, n: int, flags: int = 0) -> bytes:
    return struct.pack(">BBQ3xBBB", Opcode.COMPARE_AND_WRITE, flags, lba, n, 0, 0)


def atomic(lba: int, n: int, boundary: int = 0) -> bytes:
    return struct.pack(">BBQHHBB", Opcode.WRITE_ATOMIC_16, 0, lba, boundary, n, 0, 0)


def write(lu: LogicalUnit, lba: int, data: bytes) -> None:
    assert_good(run(lu, rw10(Opcode.WRITE_10, lba, len(data) // BS), data))


def read(lu: LogicalUnit, lba: int, n: int) -> bytes:
    return assert_good(run(lu, rw10(Opcode.READ_10, lba, n)))


def test_verify_bytchk(mem_lu: LogicalUnit) -> None:
    data = bytes(range(256)) * 4  # two blocks
    write(mem_lu, 8, data)
    assert_good(run(mem_lu, rw10(Opcode.VERIFY_10, 8, 2, flags=0x02), data))
    bad = bytearray(data)
    bad[700] ^= 0xFF
    sense = assert_check(run(mem_lu, rw16(Opcode.VERIFY_16, 8, 2, flags=0x02), bytes(bad)), SenseKey.MISCOMPARE, 0x1D)
    assert sense.information == 700
    # BYTCHK=0: medium check only, no data; BYTCHK=11b: one block compared against each
    assert mem_lu.prepare(rw12(Opcode.VERIFY_12, 8, 2)).direction == "none"
    assert_good(run(mem_lu, rw12(Opcode.VERIFY_12, 8, 2)))
    write(mem_lu, 20, data[:BS] * 3)
    assert_good(run(mem_lu, rw10(Opcode.VERIFY_10, 20, 3, flags=0x06), data[:BS]))
    assert_check(run(mem_lu, rw10(Opcode.VERIFY_10, 0, 1, flags=0x04), data[:BS]), SenseKey.ILLEGAL_REQUEST, 0x24)
    assert_check(run(mem_lu, rw10(Opcode.VERIFY_10, 0, 1, flags=0x20)), SenseKey.ILLEGAL_REQUEST, 0x24)
    # 0 blocks beyond the end is still out of range; DPO is accepted
    assert_check(run(mem_lu, rw10(Opcode.VERIFY_10, mem_lu.num_blocks + 1, 0)), SenseKey.ILLEGAL_REQUEST, 0x21)
    assert_good(run(mem_lu, rw10(Opcode.VERIFY_10, 0, 1, flags=0x10)))


def test_write_and_verify(mem_lu: LogicalUnit) -> None:
    data = b"\x5a" * 3 * BS
    assert_good(run(mem_lu, rw16(Opcode.WRITE_AND_VERIFY_16, 100, 3, flags=0x02), data))
    assert read(mem_lu, 100, 3) == data
    assert_check(run(mem_lu, rw10(Opcode.WRITE_AND_VERIFY_10, mem_lu.num_blocks - 1, 2), data[: 2 * BS]),
                 SenseKey.ILLEGAL_REQUEST, 0x21)
    ro = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False, read_only=True)
    assert_check(run(ro, rw12(Opcode.WRITE_AND_VERIFY_12, 0, 1), data[:BS]), SenseKey.DATA_PROTECT, 0x27)


def test_compare_and_write(mem_lu: LogicalUnit) -> None:
    old, new = b"A" * 2 * BS, b"B" * 2 * BS
    write(mem_lu, 4, old)
    assert mem_lu.prepare(caw(4, 2)).data_out_length == 4 * BS
    assert_good(run(mem_lu, caw(4, 2), old + new, expected_length=4 * BS))
    assert read(mem_lu, 4, 2) == new
    compare = bytearray(new)
    compare[BS + 3] = 0
    sense = assert_check(run(mem_lu, caw(4, 2), bytes(compare) + old), SenseKey.MISCOMPARE, 0x1D)
    assert sense.information == BS + 3
    assert read(mem_lu, 4, 2) == new  # nothing written on a miscompare
    # Data-Out size must match the CDB; too many blocks; beyond the end
    assert_check(run(mem_lu, caw(4, 1), old + new, expected_length=4 * BS), SenseKey.ILLEGAL_REQUEST, 0x24)
    assert_check(run(mem_lu, caw(4, 0), old, expected_length=2 * BS), SenseKey.ILLEGAL_REQUEST, 0x24)
    assert_check(run(mem_lu, caw(mem_lu.num_blocks - 1, 2), old + new), SenseKey.ILLEGAL_REQUEST, 0x21)
    assert_good(run(mem_lu, caw(0, 0), expected_length=0))


def test_compare_and_write_limit() -> None:
    lu = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False, max_transfer_bytes=8 * BS)
    assert lu.block_limits.max_compare_and_write_length == 8
    assert_check(run(lu, caw(0, 9)), SenseKey.ILLEGAL_REQUEST, 0x24)


def test_orwrite(mem_lu: LogicalUnit) -> None:
    write(mem_lu, 0, b"\x0f" * BS)
    assert_good(run(mem_lu, rw16(Opcode.ORWRITE_16, 0, 1), b"\xf0" * BS))
    assert read(mem_lu, 0, 1) == b"\xff" * BS
    assert_good(run(mem_lu, rw16(Opcode.ORWRITE_16, 0, 0)))
    assert_check(run(mem_lu, rw16(Opcode.ORWRITE_16, 0, 1, flags=0x20), b"\0" * BS), SenseKey.ILLEGAL_REQUEST, 0x24)


def test_write_atomic(mem_lu: LogicalUnit) -> None:
    limits = mem_lu.block_limits
    assert limits.max_atomic_transfer_length == mem_lu.max_transfer_blocks
    assert_good(run(mem_lu, atomic(10, 2), b"\x77" * 2 * BS))
    assert read(mem_lu, 10, 2) == b"\x77" * 2 * BS
    assert_good(run(mem_lu, atomic(0, 0)))
    assert_check(run(mem_lu, atomic(mem_lu.num_blocks + 1, 0)), SenseKey.ILLEGAL_REQUEST, 0x21)
    assert_check(run(mem_lu, atomic(0, 1, boundary=1), b"\0" * BS), SenseKey.ILLEGAL_REQUEST, 0x24)
    # all or nothing: a short Data-Out writes nothing
    assert_check(run(mem_lu, atomic(10, 2), b"\x11" * BS), SenseKey.ILLEGAL_REQUEST, 0x24)
    assert read(mem_lu, 10, 2) == b"\x77" * 2 * BS


def test_prefetch_and_defect_data(mem_lu: LogicalUnit) -> None:
    assert_good(run(mem_lu, rw10(Opcode.PRE_FETCH_10, 0, 8, flags=0x02)))
    assert_good(run(mem_lu, rw16(Opcode.PRE_FETCH_16, 0, 0)))
    assert_check(run(mem_lu, rw10(Opcode.PRE_FETCH_10, mem_lu.num_blocks, 1)), SenseKey.ILLEGAL_REQUEST, 0x21)
    cdb10 = struct.pack(">BBBxxxxHB", Opcode.READ_DEFECT_DATA_10, 0, 0x18, 32, 0).ljust(16, b"\0")
    assert assert_good(run(mem_lu, cdb10)) == bytes((0, 0x18, 0, 0))
    cdb12 = struct.pack(">BBxxxxIxB", Opcode.READ_DEFECT_DATA_12, 0x08, 32, 0).ljust(16, b"\0")
    assert assert_good(run(mem_lu, cdb12)) == bytes((0, 0x08)) + bytes(6)


def test_miscompare_sense_is_descriptor_when_asked() -> None:
    lu = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False, descriptor_sense=True)
    result = run(lu, rw10(Opcode.VERIFY_10, 0, 1, flags=0x02), b"\x01" * BS)
    assert result.status == ScsiStatus.CHECK_CONDITION
    assert result.sense is not None and result.sense.descriptor
    assert Sense.decode(result.sense.encode()).information == 0


@settings(max_examples=200, deadline=None)
@given(data=st.binary(min_size=1, max_size=200_000), where=st.integers(min_value=-1), flip=st.integers(1, 255),
       as_view=st.booleans())
def test_first_difference_finds_the_first_differing_byte(data: bytes, where: int, flip: int, as_view: bool) -> None:
    """The MISCOMPARE offset (VERIFY BYTCHK, COMPARE AND WRITE) for buffers of any type: the
    memoryviews the datamovers hand over are compared as bytes (memcmp), across the 64 KiB
    blocks it scans and inside the block it bisects."""
    from datamover.scsi.commands.compare import _first_difference

    where = -1 if where < 0 else where % len(data)
    other = bytearray(data)
    if where >= 0:
        other[where] ^= flip
    got = _first_difference(memoryview(other) if as_view else bytes(other), memoryview(data) if as_view else data)
    assert got == where

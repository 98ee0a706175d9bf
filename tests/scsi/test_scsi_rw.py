from __future__ import annotations

from pathlib import Path

import pytest
from scsi_testlib import assert_check, assert_good, run, rw6, rw10, rw12, rw16

from datamover.scsi import FileBackend, LogicalUnit, MemoryBackend, Opcode, ScsiRequest
from datamover.scsi.backend import Buffers
from datamover.scsi.commands.block_io import decode_rw
from datamover.scsi.constants import SenseKey
from datamover.scsi.sense import ScsiError

BS = 512
BLOCKS = 2048

READS = {6: Opcode.READ_6, 10: Opcode.READ_10, 12: Opcode.READ_12, 16: Opcode.READ_16}
WRITES = {6: Opcode.WRITE_6, 10: Opcode.WRITE_10, 12: Opcode.WRITE_12, 16: Opcode.WRITE_16}


def _rw6(op: int, lba: int, n: int, flags: int = 0, group: int = 0, control: int = 0) -> bytes:
    return rw6(op, lba, n, control)


BUILD = {6: _rw6, 10: rw10, 12: rw12, 16: rw16}


def pattern(n_blocks: int, seed: int = 1) -> bytes:
    return bytes((seed + i * 7) & 0xFF for i in range(n_blocks * BS))


@pytest.mark.parametrize("size", [6, 10, 12, 16])
def test_write_then_read_each_size(mem_lu: LogicalUnit, size: int) -> None:
    data = pattern(3, size)
    assert_good(run(mem_lu, BUILD[size](WRITES[size], 100, 3), memoryview(data)))
    # the data really is in the backend at LBA 100
    assert bytes(mem_lu.backend.view[100 * BS : 103 * BS]) == data  # type: ignore[attr-defined]
    assert assert_good(run(mem_lu, BUILD[size](READS[size], 100, 3))) == data


def test_cdb_decoding() -> None:
    assert decode_rw(rw10(Opcode.READ_10, 0x01020304, 0x0506, flags=0x18)) == (0x01020304, 0x0506, 0x18)
    assert decode_rw(rw12(Opcode.WRITE_12, 7, 0x01000000)) == (7, 0x01000000, 0)
    assert decode_rw(rw16(Opcode.READ_16, 0x0102030405060708, 9)) == (0x0102030405060708, 9, 0)
    assert decode_rw(rw6(Opcode.READ_6, 0x1F0001, 5)) == (0x1F0001, 5, 0)
    # READ(6)/WRITE(6) length 0 means 256 blocks
    assert decode_rw(rw6(Opcode.WRITE_6, 0, 0)) == (0, 256, 0)


def test_read6_zero_means_256(mem_lu: LogicalUnit) -> None:
    plan = mem_lu.prepare(rw6(Opcode.READ_6, 0, 0))
    assert (plan.direction, plan.data_in_length) == ("read", 256 * BS)
    assert len(assert_good(run(mem_lu, rw6(Opcode.READ_6, 0, 0)))) == 256 * BS


@pytest.mark.parametrize("size", [10, 12, 16])
@pytest.mark.parametrize("ops", [READS, WRITES])
def test_transfer_length_zero_is_good_without_data(mem_lu: LogicalUnit, size: int, ops: dict[int, int]) -> None:
    cdb = BUILD[size](ops[size], 5, 0)
    plan = mem_lu.prepare(cdb)
    assert plan.ok and plan.direction == "none" and plan.data_in_length == plan.data_out_length == 0
    result = run(mem_lu, cdb)
    assert assert_good(result) == b"" and result.data_in is None


@pytest.mark.parametrize("size", [6, 10, 12, 16])
@pytest.mark.parametrize("ops", [READS, WRITES])
def test_lba_out_of_range(mem_lu: LogicalUnit, size: int, ops: dict[int, int]) -> None:
    build = BUILD[size]
    data = bytes(2 * BS)
    # last block is fine, one past it is not
    assert_good(run(mem_lu, build(ops[size], BLOCKS - 1, 1), data))
    for lba, n in ((BLOCKS, 1), (BLOCKS - 1, 2), (BLOCKS + 1, 0) if size != 6 else (BLOCKS + 1, 1)):
        assert_check(run(mem_lu, build(ops[size], lba, n), data), SenseKey.ILLEGAL_REQUEST, 0x21)
        assert mem_lu.prepare(build(ops[size], lba, n)).error is not None


@pytest.mark.parametrize("ops", [READS, WRITES])
def test_lba_plus_length_overflow(mem_lu: LogicalUnit, ops: dict[int, int]) -> None:
    # LBA near 2^64 plus a length must not wrap around into range
    for lba in ((1 << 64) - 1, (1 << 64) - 2, 1 << 63):
        assert_check(run(mem_lu, rw16(ops[16], lba, 4)), SenseKey.ILLEGAL_REQUEST, 0x21)
    assert_check(run(mem_lu, rw10(ops[10], 0xFFFFFFFF, 2)), SenseKey.ILLEGAL_REQUEST, 0x21)
    assert_check(run(mem_lu, rw12(ops[12], 0x80000000, 0)), SenseKey.ILLEGAL_REQUEST, 0x21)


def test_lba_at_end_with_zero_length_is_good(mem_lu: LogicalUnit) -> None:
    assert_good(run(mem_lu, rw10(Opcode.READ_10, BLOCKS, 0)))


@pytest.mark.parametrize("size", [10, 12, 16])
@pytest.mark.parametrize("ops", [READS, WRITES])
def test_protect_field_refused(mem_lu: LogicalUnit, size: int, ops: dict[int, int]) -> None:
    sense = assert_check(run(mem_lu, BUILD[size](ops[size], 0, 1, flags=0x20), bytes(BS)), 5, 0x24)
    assert sense.field_pointer == (True, 1, 7)


@pytest.mark.parametrize("size", [10, 12, 16])
def test_reserved_group_bits_refused(mem_lu: LogicalUnit, size: int) -> None:
    sense = assert_check(run(mem_lu, BUILD[size](READS[size], 0, 1, group=0x80)), 5, 0x24)
    assert sense.field_pointer == (True, {10: 6, 12: 10, 16: 14}[size], 7)


def test_reserved_bits_of_read6_refused(mem_lu: LogicalUnit) -> None:
    cdb = bytearray(rw6(Opcode.READ_6, 0, 1))
    cdb[1] |= 0x20
    assert assert_check(run(mem_lu, bytes(cdb)), 5, 0x24).field_pointer == (True, 1, 5)


def test_dpo_fua_fua_nv_accepted(mem_lu: LogicalUnit) -> None:
    assert_good(run(mem_lu, rw10(Opcode.READ_10, 0, 1, flags=0x10 | 0x08 | 0x02)))
    assert_good(run(mem_lu, rw10(Opcode.WRITE_10, 0, 1, flags=0x10 | 0x08 | 0x02), bytes(BS)))


class CountingBackend(MemoryBackend):
    flushes = 0

    def flush(self) -> None:
        self.flushes += 1


def test_fua_write_flushes() -> None:
    backend = CountingBackend(BLOCKS * BS)
    lu = LogicalUnit(backend, power_on_ua=False)
    assert_good(run(lu, rw10(Opcode.WRITE_10, 0, 1), bytes(BS)))
    assert backend.flushes == 0
    assert_good(run(lu, rw16(Opcode.WRITE_16, 0, 1, flags=0x08), bytes(BS)))
    assert backend.flushes == 1


def test_read_only_lun_refuses_writes() -> None:
    lu = LogicalUnit(MemoryBackend(BLOCKS * BS), read_only=True, power_on_ua=False)
    for size in (6, 10, 12, 16):
        cdb = BUILD[size](WRITES[size], 0, 1)
        plan = lu.prepare(cdb)
        assert not plan.ok and plan.error is not None and plan.error.key == SenseKey.DATA_PROTECT
        assert plan.data_out_length == 0  # the core must not collect data
        assert_check(run(lu, cdb, bytes(BS)), SenseKey.DATA_PROTECT, 0x27)
    assert_good(run(lu, rw10(Opcode.READ_10, 0, 1)))


def test_read_only_file_backend_makes_read_only_lun(tmp_path: Path) -> None:
    path = tmp_path / "ro"
    FileBackend(path, BLOCKS * BS).close()
    lu = LogicalUnit(FileBackend(path, read_only=True), power_on_ua=False)
    assert lu.read_only
    assert_check(run(lu, rw10(Opcode.WRITE_10, 0, 1), bytes(BS)), SenseKey.DATA_PROTECT, 0x27)


def test_max_transfer_length() -> None:
    lu = LogicalUnit(MemoryBackend(BLOCKS * BS), power_on_ua=False, max_transfer_bytes=64 * BS)
    assert_good(run(lu, rw10(Opcode.READ_10, 0, 64)))
    sense = assert_check(run(lu, rw10(Opcode.READ_10, 0, 65)), 5, 0x24)
    assert sense.field_pointer == (True, 7, None)
    sense = assert_check(run(lu, rw16(Opcode.WRITE_16, 0, 65)), 5, 0x24)
    assert sense.field_pointer == (True, 10, None)


def test_prepare_reports_lengths(mem_lu: LogicalUnit) -> None:
    plan = mem_lu.prepare(rw10(Opcode.WRITE_10, 0, 8))
    assert (plan.direction, plan.data_out_length, plan.data_in_length, plan.error) == ("write", 8 * BS, 0, None)
    plan = mem_lu.prepare(rw16(Opcode.READ_16, 0, 8))
    assert (plan.direction, plan.data_out_length, plan.data_in_length) == ("read", 0, 8 * BS)


def test_short_data_out_writes_only_whole_blocks_received(mem_lu: LogicalUnit) -> None:
    """EDTL smaller than the transfer length (libiscsi's residual tests)."""
    assert_good(run(mem_lu, rw10(Opcode.WRITE_10, 0, 2), b"a" * 2 * BS))
    assert_good(run(mem_lu, rw10(Opcode.WRITE_10, 0, 2), b"b" * BS))
    assert assert_good(run(mem_lu, rw10(Opcode.READ_10, 0, 2))) == b"b" * BS + b"a" * BS
    # a partial block is not written at all; no data at all is fine too
    assert_good(run(mem_lu, rw10(Opcode.WRITE_10, 0, 1), b"c" * 200))
    assert_good(run(mem_lu, rw10(Opcode.WRITE_10, 0, 1), None))
    assert assert_good(run(mem_lu, rw10(Opcode.READ_10, 0, 1))) == b"b" * BS


def test_long_data_out_writes_only_transfer_length(mem_lu: LogicalUnit) -> None:
    assert_good(run(mem_lu, rw10(Opcode.WRITE_10, 0, 2), b"a" * 2 * BS))
    assert_good(run(mem_lu, rw10(Opcode.WRITE_10, 0, 1), b"b" * 2 * BS))
    assert assert_good(run(mem_lu, rw10(Opcode.READ_10, 0, 2))) == b"b" * BS + b"a" * BS


def test_scatter_gather_data_out(mem_lu: LogicalUnit) -> None:
    data = pattern(4)
    parts = [memoryview(data)[i : i + 700] for i in range(0, len(data), 700)]
    assert_good(run(mem_lu, rw10(Opcode.WRITE_10, 10, 4), parts))
    assert assert_good(run(mem_lu, rw10(Opcode.READ_10, 10, 4))) == data
    # a list shorter than the transfer: only whole blocks
    assert_good(run(mem_lu, rw10(Opcode.WRITE_10, 20, 4), parts[:2]))
    # 1400 bytes arrived: two whole blocks are written, the rest stays zero
    assert assert_good(run(mem_lu, rw10(Opcode.READ_10, 20, 4))) == data[: 2 * BS] + bytes(2 * BS)


def test_read_uses_preallocated_buffer(mem_lu: LogicalUnit) -> None:
    data = pattern(2)
    assert_good(run(mem_lu, rw10(Opcode.WRITE_10, 0, 2), data))
    buf = bytearray(4 * BS)
    result = mem_lu.execute(ScsiRequest(rw10(Opcode.READ_10, 0, 2), None, "n", memoryview(buf)))
    assert isinstance(result.data_in, memoryview) and result.data_in.obj is buf
    assert bytes(result.data_in) == data and buf[: 2 * BS] == data
    # a buffer too small is not used
    small = bytearray(BS)
    result = mem_lu.execute(ScsiRequest(rw10(Opcode.READ_10, 0, 2), None, "n", memoryview(small)))
    assert bytes(result.data_in) == data and small == bytes(BS)  # type: ignore[arg-type]


def test_file_lun_round_trip_and_persistence(tmp_path: Path) -> None:
    path = tmp_path / "lun.img"
    lu = LogicalUnit(FileBackend(path, BLOCKS * BS), power_on_ua=False)
    data = pattern(5, 9)
    assert_good(run(lu, rw16(Opcode.WRITE_16, 1000, 5, flags=0x08), data))
    lu.close()
    lu = LogicalUnit(FileBackend(path), power_on_ua=False)
    assert lu.serial == LogicalUnit(FileBackend(path), power_on_ua=False).serial  # stable per path
    assert assert_good(run(lu, rw16(Opcode.READ_16, 1000, 5))) == data
    lu.close()


class FailingBackend(MemoryBackend):
    def read_into(self, offset: int, buf: memoryview) -> None:
        raise OSError(5, "EIO")  # not even a BackendError: the LU must still answer

    def write_from(self, offset: int, buf: Buffers) -> None:
        from datamover.scsi import BackendError

        raise BackendError(5, "EIO")


def test_backend_errors_become_medium_errors() -> None:
    lu = LogicalUnit(FailingBackend(BLOCKS * BS), power_on_ua=False)
    assert_check(run(lu, rw10(Opcode.WRITE_10, 0, 1), bytes(BS)), SenseKey.MEDIUM_ERROR, 0x0C)
    # an unexpected exception type is contained as HARDWARE ERROR, not raised
    assert_check(run(lu, rw10(Opcode.READ_10, 0, 1)), SenseKey.HARDWARE_ERROR, 0x44)


@pytest.mark.parametrize("op", [Opcode.SYNCHRONIZE_CACHE_10, Opcode.SYNCHRONIZE_CACHE_16])
def test_synchronize_cache(op: int) -> None:
    backend = CountingBackend(BLOCKS * BS)
    lu = LogicalUnit(backend, power_on_ua=False)
    build = rw10 if op == Opcode.SYNCHRONIZE_CACHE_10 else rw16
    assert lu.prepare(build(op, 0, 0)).direction == "none"
    assert_good(run(lu, build(op, 0, 0)))  # 0 blocks: to the end of the medium
    assert_good(run(lu, build(op, 10, 5, flags=0x02)))  # IMMED
    assert backend.flushes == 2
    assert_check(run(lu, build(op, BLOCKS - 1, 2)), 5, 0x21)
    assert_check(run(lu, build(op, BLOCKS + 1, 0)), 5, 0x21)
    assert assert_check(run(lu, build(op, 0, 0, flags=0x01)), 5, 0x24).field_pointer == (True, 1, 0)
    assert backend.flushes == 2


def test_decode_rw_raises_typed_error_for_short_cdb() -> None:
    with pytest.raises(ScsiError):
        decode_rw(bytes([Opcode.READ_16, 0, 0]))

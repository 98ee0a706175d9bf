"""READ, WRITE (6/10/12/16) and SYNCHRONIZE CACHE (10/16): the SBC-4 data path.

This is the hot path: a READ(10) is one struct unpack, a few integer checks and one
``preadv`` into the caller's buffer. No protection information is supported, so
RDPROTECT/WRPROTECT other than zero are refused (as SBC-4 asks of a device that
reports PROTECT=0).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from datamover.scsi.backend import BackendError
from datamover.scsi.cdb import check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, DataOut, ScsiRequest, ScsiResult
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import Opcode
from datamover.scsi.sense import (
    LBA_OUT_OF_RANGE,
    UNRECOVERED_READ_ERROR,
    WRITE_ERROR,
    WRITE_PROTECTED,
    ScsiError,
    invalid_field_in_cdb,
)

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = ["COMMANDS", "FAST_RW", "decode_rw"]

_RW6 = struct.Struct(">BBHBB")  # opcode, LBA 20-16, LBA 15-0, length, control
_RW10 = struct.Struct(">BBIBHB")  # opcode, flags, LBA, group, length, control
_RW12 = struct.Struct(">BBIIBB")  # opcode, flags, LBA, length, group, control
_RW16 = struct.Struct(">BBQIBB")  # opcode, flags, LBA, length, group, control

_PROTECT = 0xE0  # RDPROTECT / WRPROTECT, byte 1 bits 7-5
_FUA = 0x08
_GROUP_RESERVED = 0xC0  # bits 7-6 of the group-number byte
_IMMED_SYNC_NV = 0x06  # SYNCHRONIZE CACHE byte 1: SYNC_NV (obsolete) and IMMED

#: opcode -> (struct, byte offset of TRANSFER LENGTH, byte offset of GROUP NUMBER)
_LAYOUT: dict[int, tuple[struct.Struct, int, int]] = {
    Opcode.READ_10: (_RW10, 7, 6),
    Opcode.WRITE_10: (_RW10, 7, 6),
    Opcode.READ_12: (_RW12, 6, 10),
    Opcode.WRITE_12: (_RW12, 6, 10),
    Opcode.READ_16: (_RW16, 10, 14),
    Opcode.WRITE_16: (_RW16, 10, 14),
    Opcode.SYNCHRONIZE_CACHE_10: (_RW10, 7, 6),
    Opcode.SYNCHRONIZE_CACHE_16: (_RW16, 10, 14),
}


def decode_rw(cdb: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """``(lba, blocks, byte-1 flags)`` of a READ/WRITE/SYNCHRONIZE CACHE CDB, fields checked.

    Raises ScsiError INVALID FIELD IN CDB for reserved bits or protection fields.
    """
    op = cdb[0]
    if op == Opcode.READ_6 or op == Opcode.WRITE_6:
        check_length(cdb, 6)
        _, hi, lo, n, _ = _RW6.unpack_from(cdb)
        if hi & 0xE0:
            check_reserved(cdb, 1, 0xE0)
        # READ(6)/WRITE(6): a TRANSFER LENGTH of 0 means 256 blocks (SBC-4 5.14)
        return ((hi & 0x1F) << 16) | lo, n or 256, 0
    layout, _, group_at = _LAYOUT[op]
    check_length(cdb, layout.size)
    if layout is _RW10:
        _, flags, lba, group, n, _ = layout.unpack_from(cdb)
    else:
        _, flags, lba, n, group, _ = layout.unpack_from(cdb)
    if group & _GROUP_RESERVED:
        check_reserved(cdb, group_at, _GROUP_RESERVED)
    if flags & _PROTECT and op not in (Opcode.SYNCHRONIZE_CACHE_10, Opcode.SYNCHRONIZE_CACHE_16):
        raise ScsiError(invalid_field_in_cdb(1, 7))
    return lba, n, flags


def _check_io(lu: LogicalUnit, cdb: bytes | bytearray | memoryview, write: bool) -> tuple[int, int, int]:
    lba, n, flags = decode_rw(cdb)
    if n > lu.max_transfer_blocks:
        op = cdb[0]
        at = 4 if op == Opcode.READ_6 or op == Opcode.WRITE_6 else _LAYOUT[op][1]
        raise ScsiError(invalid_field_in_cdb(at))
    if write and lu.read_only:
        raise ScsiError(WRITE_PROTECTED)
    if lba + n > lu.num_blocks:
        raise ScsiError(LBA_OUT_OF_RANGE)
    return lba, n, flags


# ------------------------------------------------------------------------------ READ
def _prepare_read(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _, n, _ = _check_io(lu, cdb, False)
    return CommandPlan("read", 0, n * lu.block_size) if n else PLAN_NONE


def _execute_read(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    lba, n, _ = _check_io(lu, req.cdb, False)
    if not n:
        return ScsiResult()
    bs = lu.block_size
    nbytes = n * bs
    buf = req.data_in_buffer
    view = buf[:nbytes] if buf is not None and buf.nbytes >= nbytes else memoryview(bytearray(nbytes))
    try:
        lu.backend.read_into(lba * bs, view)
    except BackendError as exc:
        lu.log_backend_error("read", exc)
        raise ScsiError(UNRECOVERED_READ_ERROR) from exc
    return ScsiResult(0, None, view)


# ----------------------------------------------------------------------------- WRITE
def _prepare_write(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _, n, _ = _check_io(lu, cdb, True)
    return CommandPlan("write", n * lu.block_size, 0) if n else PLAN_NONE


def _data_length(data: DataOut) -> int:
    if isinstance(data, memoryview):
        return data.nbytes
    if isinstance(data, (bytes, bytearray)):
        return len(data)
    return sum(memoryview(p).nbytes for p in data)


def _take(data: DataOut, nbytes: int) -> memoryview | list[memoryview]:
    """The first ``nbytes`` of one buffer or of a scatter-gather list, without copying."""
    if isinstance(data, (memoryview, bytes, bytearray)):
        return memoryview(data)[:nbytes]
    out: list[memoryview] = []
    for part in data:
        if nbytes <= 0:
            break
        view = memoryview(part)
        out.append(view[:nbytes] if view.nbytes > nbytes else view)
        nbytes -= view.nbytes
    return out


def _execute_write(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    lba, n, flags = _check_io(lu, req.cdb, True)
    if not n:
        return ScsiResult()
    bs = lu.block_size
    nbytes = n * bs
    data = req.data_out
    got = 0 if data is None else _data_length(data)
    if got < nbytes:
        # EDTL smaller than the transfer length: write only the whole blocks received
        # and leave the rest untouched (the core reports the residual overflow).
        nbytes = (got // bs) * bs
    if data is None or not nbytes:
        return ScsiResult()
    try:
        lu.backend.write_from(lba * bs, _take(data, nbytes) if got != nbytes else data)
        if flags & _FUA or not lu.write_cache:  # WCE=0 (MODE SELECT): write-through
            lu.backend.flush()
    except BackendError as exc:
        lu.log_backend_error("write", exc)
        raise ScsiError(WRITE_ERROR) from exc
    return ScsiResult()


# ------------------------------------------------------------------ SYNCHRONIZE CACHE
def _check_sync(lu: LogicalUnit, cdb: bytes | bytearray | memoryview) -> None:
    check_reserved(cdb, 1, 0xFF & ~_IMMED_SYNC_NV)
    lba, n, _ = decode_rw(cdb)
    # NUMBER OF LOGICAL BLOCKS 0 means "to the end of the medium"
    if lba + n > lu.num_blocks or lba > lu.num_blocks:
        raise ScsiError(LBA_OUT_OF_RANGE)


def _prepare_sync(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _check_sync(lu, cdb)
    return PLAN_NONE


def _execute_sync(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    _check_sync(lu, req.cdb)
    try:
        # A whole-device flush covers any range; IMMED may return early but the flush
        # is synchronous here anyway.
        lu.backend.flush()
    except BackendError as exc:
        lu.log_backend_error("flush", exc)
        raise ScsiError(WRITE_ERROR) from exc
    return ScsiResult()


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(Opcode.READ_6, "READ(6)", _prepare_read, _execute_read),
    CommandSpec(Opcode.READ_10, "READ(10)", _prepare_read, _execute_read),
    CommandSpec(Opcode.READ_12, "READ(12)", _prepare_read, _execute_read),
    CommandSpec(Opcode.READ_16, "READ(16)", _prepare_read, _execute_read),
    CommandSpec(Opcode.WRITE_6, "WRITE(6)", _prepare_write, _execute_write),
    CommandSpec(Opcode.WRITE_10, "WRITE(10)", _prepare_write, _execute_write),
    CommandSpec(Opcode.WRITE_12, "WRITE(12)", _prepare_write, _execute_write),
    CommandSpec(Opcode.WRITE_16, "WRITE(16)", _prepare_write, _execute_write),
    CommandSpec(Opcode.SYNCHRONIZE_CACHE_10, "SYNCHRONIZE CACHE(10)", _prepare_sync, _execute_sync),
    CommandSpec(Opcode.SYNCHRONIZE_CACHE_16, "SYNCHRONIZE CACHE(16)", _prepare_sync, _execute_sync),
)

#: READ/WRITE (10) and (16), the commands :meth:`LogicalUnit.fast_rw` may run without
#: prepare/execute: opcode -> (this module's spec, its CDB layout, is a write). An LU whose
#: table maps one of these opcodes to another spec never takes the fast path for it.
FAST_RW: dict[int, tuple[CommandSpec, struct.Struct, bool]] = {
    spec.opcode: (spec, _LAYOUT[spec.opcode][0], spec.opcode in (Opcode.WRITE_10, Opcode.WRITE_16))
    for spec in COMMANDS
    if spec.opcode in (Opcode.READ_10, Opcode.READ_16, Opcode.WRITE_10, Opcode.WRITE_16)
}
#: what must be clear for the fast path: RDPROTECT/WRPROTECT and the group byte's reserved
#: bits (each makes the general path answer with a CHECK CONDITION); FUA asks for a flush
FAST_PROTECT, FAST_GROUP_RESERVED, FAST_FUA = _PROTECT, _GROUP_RESERVED, _FUA
RW10 = _RW10


"""Thin provisioning (SBC-4 4.7, 5.31, 5.50, 5.48/5.49, 5.10): UNMAP, WRITE SAME (10)/(16)
with and without UNMAP, GET LBA STATUS, and the logical block provisioning VPD page (B2h).

A thin LU reports LBPME=1 and LBPRZ=1 in READ CAPACITY (16): deallocated blocks read back
as zeros, which a file LUN gets from ``fallocate(PUNCH_HOLE)``. The backend decides what
"mapped" means (:meth:`Backend.extents`: holes of a sparse file, zero chunks of a RAM
disk); GET LBA STATUS reports it with the granularity the backend has. Anchored blocks are
not supported (ANC_SUP=0), so ANCHOR=1 is refused.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from datamover.scsi.cdb import alloc_truncate, check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.common import (
    backend_write,
    check_range,
    check_writable,
    data_bytes,
    data_length,
    parameter_list,
)
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import Opcode, ServiceActionIn16, VpdPage
from datamover.scsi.sense import (
    LBA_OUT_OF_RANGE,
    PARAMETER_LIST_LENGTH_ERROR,
    ScsiError,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
)

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = ["COMMANDS", "setup", "decode_write_same", "MAX_WRITE_SAME_BLOCKS", "MAX_UNMAP_DESCRIPTORS"]

_UNMAP_CDB = struct.Struct(">BB4xBHB")  # opcode, ANCHOR, group, parameter list length, control
_UNMAP_HEADER = struct.Struct(">HH4x")  # UNMAP data length, block descriptor data length
_UNMAP_DESCRIPTOR = struct.Struct(">QI4x")  # LBA, number of logical blocks
_WS10 = struct.Struct(">BBIBHB")  # opcode, flags, LBA, group, blocks, control
_WS16 = struct.Struct(">BBQIBB")  # opcode, flags, LBA, blocks, group, control
_GLS_CDB = struct.Struct(">BBQIBB")  # opcode, SA, LBA, allocation length, report type, control
_GLS_HEADER = struct.Struct(">I4x")  # parameter data length
_GLS_DESCRIPTOR = struct.Struct(">QIBx2x")  # LBA, blocks, provisioning status
_LBP_PAGE = struct.Struct(">BBHBBBB")  # header, threshold exponent, flags, type, threshold %

_ANCHOR = 0x01  # UNMAP byte 1
_WS_WRPROTECT = 0xE0
_WS_ANCHOR = 0x10
_WS_UNMAP = 0x08
_WS_OBSOLETE = 0x06  # PBDATA / LBDATA
_WS_NDOB = 0x01  # WRITE SAME (16) only

_LBPU = 0x80
_LBPWS = 0x40
_LBPWS10 = 0x20
_LBPRZ_ZEROS = 0x04  # LBPRZ field (bits 4-2) = 001b: deallocated blocks read as zeros
_PROVISIONING_THIN = 0x02

_MAPPED, _DEALLOCATED = 0x0, 0x1

#: largest WRITE SAME (blocks): bounds the work one command can ask for
MAX_WRITE_SAME_BLOCKS = 0x10000
#: largest UNMAP: descriptors per command and blocks per command
MAX_UNMAP_DESCRIPTORS = 256
MAX_UNMAP_BLOCKS = 0x100000
#: WRITE SAME writes its pattern in chunks of about this many bytes
_WS_CHUNK = 1 << 20


# ------------------------------------------------------------------------- setup
def _vpd_lbp(lu: LogicalUnit) -> bytes:
    flags = _LBPU | _LBPWS | _LBPWS10 | (_LBPRZ_ZEROS if lu.lbprz else 0)
    return _LBP_PAGE.pack(lu.peripheral, VpdPage.LOGICAL_BLOCK_PROVISIONING, 4, 0, flags, _PROVISIONING_THIN, 0)


def setup(lu: LogicalUnit) -> None:
    """Turn on LBPME/LBPRZ, the B2h page and the unmap limits of the block limits page."""
    limits = lu.block_limits
    limits.max_write_same_length = min(MAX_WRITE_SAME_BLOCKS, lu.max_transfer_blocks)
    if not lu.thin:
        return
    lu.lbpme = True
    lu.lbprz = True
    lu.vpd_pages[VpdPage.LOGICAL_BLOCK_PROVISIONING] = _vpd_lbp
    limits.max_unmap_lba_count = MAX_UNMAP_BLOCKS
    limits.max_unmap_descriptor_count = MAX_UNMAP_DESCRIPTORS
    # a hole punch frees whole 4 KiB file-system blocks: smaller unmaps only zero
    limits.optimal_unmap_granularity = max(1 << lu.physical_block_exponent, 4096 // lu.block_size)
    limits.unmap_granularity_alignment = 0


def _require_thin(lu: LogicalUnit) -> None:
    if not lu.lbpme:
        # a fully provisioned LU has no UNMAP (SBC-4 4.7.2)
        raise ScsiError(invalid_field_in_cdb(0))


# ------------------------------------------------------------------------- UNMAP
def _decode_unmap(lu: LogicalUnit, cdb: bytes | bytearray | memoryview) -> int:
    check_length(cdb, 10)
    _, flags, group, length, _ = _UNMAP_CDB.unpack_from(cdb)
    check_reserved(cdb, 1, 0xFE)
    for byte in (2, 3, 4, 5):
        check_reserved(cdb, byte)
    check_reserved(cdb, 6, 0xE0)
    _require_thin(lu)
    if flags & _ANCHOR:
        raise ScsiError(invalid_field_in_cdb(1, 0))  # ANC_SUP=0
    return int(length)


def _prepare_unmap(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    length = _decode_unmap(lu, cdb)
    check_writable(lu)
    return CommandPlan("write", length, 0) if length else PLAN_NONE


def _execute_unmap(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    length = _decode_unmap(lu, req.cdb)
    check_writable(lu)
    if length == 0:
        return ScsiResult()  # no parameter list: nothing to do (SBC-4 5.31.1)
    if length < _UNMAP_HEADER.size:
        raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
    data = parameter_list(req, length, _UNMAP_HEADER.size)
    _, desc_len = _UNMAP_HEADER.unpack_from(data)
    # the descriptors actually present: bounded by both the header and the data received
    usable = min(desc_len, len(data) - _UNMAP_HEADER.size) // _UNMAP_DESCRIPTOR.size
    if usable > MAX_UNMAP_DESCRIPTORS:
        raise ScsiError(invalid_field_in_parameter_list(2))
    ranges: list[tuple[int, int]] = []
    total = 0
    for index in range(usable):
        at = _UNMAP_HEADER.size + index * _UNMAP_DESCRIPTOR.size
        lba, blocks = _UNMAP_DESCRIPTOR.unpack_from(data, at)
        if lba + blocks > lu.num_blocks:
            raise ScsiError(LBA_OUT_OF_RANGE)
        total += blocks
        if blocks > MAX_UNMAP_BLOCKS or total > MAX_UNMAP_BLOCKS:
            raise ScsiError(invalid_field_in_parameter_list(at + 8))
        if blocks:
            ranges.append((lba, blocks))
    bs = lu.block_size
    for lba, blocks in ranges:
        backend_write(lu, "unmap", lambda: lu.backend.deallocate(lba * bs, blocks * bs))
    return ScsiResult()


# -------------------------------------------------------------------- WRITE SAME
def decode_write_same(lu: LogicalUnit, cdb: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    """``(lba, blocks, flags)`` of WRITE SAME (10)/(16); 0 blocks becomes "to the end"."""
    if cdb[0] == Opcode.WRITE_SAME_10:
        check_length(cdb, 10)
        _, flags, lba, group, blocks, _ = _WS10.unpack_from(cdb)
        check_reserved(cdb, 6, 0xE0)
        if flags & _WS_NDOB:
            raise ScsiError(invalid_field_in_cdb(1, 0))
    else:
        check_length(cdb, 16)
        _, flags, lba, blocks, group, _ = _WS16.unpack_from(cdb)
        check_reserved(cdb, 14, 0xE0)
    if flags & _WS_WRPROTECT:
        raise ScsiError(invalid_field_in_cdb(1, 7))  # no protection information
    if flags & _WS_OBSOLETE:
        raise ScsiError(invalid_field_in_cdb(1, (flags & _WS_OBSOLETE).bit_length() - 1))
    if flags & _WS_ANCHOR:
        # ANCHOR needs UNMAP=1, and anchored blocks are not supported (ANC_SUP=0)
        raise ScsiError(invalid_field_in_cdb(1, 4))
    if flags & _WS_UNMAP and not lu.lbpme:
        raise ScsiError(invalid_field_in_cdb(1, 3))
    if lba >= lu.num_blocks and (blocks or lba > lu.num_blocks):
        raise ScsiError(LBA_OUT_OF_RANGE)
    if blocks == 0:
        # WSNZ=0: zero blocks means "from LBA to the end of the medium" (SBC-4 5.48)
        blocks = lu.num_blocks - lba
        if blocks > lu.block_limits.max_write_same_length:
            raise ScsiError(invalid_field_in_cdb(7 if cdb[0] == Opcode.WRITE_SAME_10 else 10))
    elif blocks > lu.block_limits.max_write_same_length:
        raise ScsiError(invalid_field_in_cdb(7 if cdb[0] == Opcode.WRITE_SAME_10 else 10))
    check_range(lu, lba, blocks)
    return lba, blocks, flags


def _prepare_write_same(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _, _, flags = decode_write_same(lu, cdb)
    check_writable(lu)
    return PLAN_NONE if flags & _WS_NDOB else CommandPlan("write", lu.block_size, 0)


def _execute_write_same(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    lba, blocks, flags = decode_write_same(lu, req.cdb)
    check_writable(lu)
    bs = lu.block_size
    if flags & _WS_NDOB:
        pattern = bytes(bs)
    else:
        if req.expected_length is not None and req.expected_length != bs:
            # exactly one block of Data-Out, whatever the initiator announced
            raise ScsiError(invalid_field_in_cdb(7 if req.cdb[0] == Opcode.WRITE_SAME_10 else 10))
        if data_length(req.data_out) < bs:
            raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
        pattern = data_bytes(req.data_out, bs)
    if not blocks:
        return ScsiResult()
    offset, length = lba * bs, blocks * bs
    backend = lu.backend
    if flags & _WS_UNMAP:
        # UNMAP=1 asks for deallocation: the blocks then read back as zeros (LBPRZ), the
        # way Linux targets treat it and libiscsi's suite checks, whatever the pattern
        backend_write(lu, "write same (unmap)", lambda: backend.deallocate(offset, length))
        return ScsiResult()
    if not any(pattern):
        backend_write(lu, "write same (zero)", lambda: backend.write_zeroes(offset, length))
        return ScsiResult()
    per_chunk = max(1, min(blocks, _WS_CHUNK // bs))
    chunk = memoryview(pattern * per_chunk)
    while length:
        n = min(length, chunk.nbytes)
        backend_write(lu, "write same", lambda: backend.write_from(offset, chunk[:n]))
        offset += n
        length -= n
    return ScsiResult()


# ---------------------------------------------------------------- GET LBA STATUS
def _decode_gls(lu: LogicalUnit, cdb: bytes | bytearray | memoryview) -> tuple[int, int]:
    check_length(cdb, 16)
    check_reserved(cdb, 1, 0xE0)
    _, _, lba, alloc, _, _ = _GLS_CDB.unpack_from(cdb)
    _require_thin(lu)
    if lba >= lu.num_blocks:
        raise ScsiError(LBA_OUT_OF_RANGE)
    return lba, int(alloc)


def _prepare_gls(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _, alloc = _decode_gls(lu, cdb)
    return CommandPlan("read", 0, alloc) if alloc else PLAN_NONE


def _execute_gls(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    lba, alloc = _decode_gls(lu, req.cdb)
    if not alloc:
        return ScsiResult()
    bs = lu.block_size
    offset = lba * bs
    # from the LBA on, as far as the backend reports in one call: a sparse file's extent
    # map to the end (cheap to walk), a RAM disk's first MEMORY_EXTENT_SCAN bytes (it reads
    # memory to find them); an initiator asks again from where the descriptors end.
    # ``room`` bounds what is returned.
    length = lu.num_blocks * bs - offset
    room = max(1, (alloc - _GLS_HEADER.size) // _GLS_DESCRIPTOR.size)
    try:
        # (twice the room: extents finer than a block can merge when rounded to blocks)
        extents = lu.backend.extents(offset, length, 2 * room + 1)
    except OSError:
        extents = [(offset, length, True)]
    body = bytearray()
    for start, size, mapped in extents[:room]:
        # the backend may report at a finer grain than blocks: round to whole blocks, and
        # start the first descriptor at the LBA asked for
        first = start // bs
        last = -(-(start + size) // bs)
        if body:
            prev_lba, prev_n, prev_status = _GLS_DESCRIPTOR.unpack_from(body, len(body) - _GLS_DESCRIPTOR.size)
            first = max(first, prev_lba + prev_n)
        if last <= first:
            continue
        status = _MAPPED if mapped else _DEALLOCATED
        body += _GLS_DESCRIPTOR.pack(first, last - first, status)
    data = _GLS_HEADER.pack(len(body) + 4) + bytes(body)
    return ScsiResult(0, None, alloc_truncate(data, alloc))


_WS10_USAGE = bytes((Opcode.WRITE_SAME_10, 0x08, 0xFF, 0xFF, 0xFF, 0xFF, 0x1F, 0xFF, 0xFF, 0x07))
_WS16_USAGE = bytes((Opcode.WRITE_SAME_16, 0x09, *b"\xff" * 12, 0x1F, 0x07))
_UNMAP_USAGE = bytes((Opcode.UNMAP, 0x00, 0, 0, 0, 0, 0x1F, 0xFF, 0xFF, 0x07))

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(Opcode.UNMAP, "UNMAP", _prepare_unmap, _execute_unmap, usage=_UNMAP_USAGE),
    CommandSpec(Opcode.WRITE_SAME_10, "WRITE SAME(10)", _prepare_write_same, _execute_write_same, usage=_WS10_USAGE),
    CommandSpec(Opcode.WRITE_SAME_16, "WRITE SAME(16)", _prepare_write_same, _execute_write_same, usage=_WS16_USAGE),
    CommandSpec(
        Opcode.SERVICE_ACTION_IN_16,
        "GET LBA STATUS",
        _prepare_gls,
        _execute_gls,
        service_action=ServiceActionIn16.GET_LBA_STATUS,
    ),
)

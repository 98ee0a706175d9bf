"""EXTENDED COPY (LID1) and RECEIVE COPY RESULTS (SPC-4 6.3/6.18, the LID1 forms): the
copy manager of this target, copying blocks within one LU or between LUs of the same
target (the :class:`~datamover.scsi.lunmap.LunMap` the LU is in).

Supported descriptors: identification target descriptors (E4h) naming an LU by a
designator of its VPD 83h page, and block-to-block segment descriptors (02h). A copy runs
to completion inside the command; its outcome is kept per list identifier for RECEIVE COPY
RESULTS (COPY STATUS), unless LIST ID USAGE is 11b (no list identifier).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from datamover.scsi.backend import BackendError
from datamover.scsi.cdb import alloc_truncate, check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.common import parameter_list
from datamover.scsi.commands.inquiry import DESIGNATOR_EUI64, DESIGNATOR_NAA, DESIGNATOR_T10_VENDOR
from datamover.scsi.constants import Opcode, SenseKey
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.sense import (
    PARAMETER_LIST_LENGTH_ERROR,
    ScsiError,
    Sense,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
)

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = ["COMMANDS", "setup", "MAX_TARGET_DESCRIPTORS", "MAX_SEGMENT_DESCRIPTORS"]

_XCOPY_CDB = struct.Struct(">BB8xIxB")  # opcode, SA, reserved, parameter list length, control
_RCR_CDB = struct.Struct(">BBB7xIxB")  # opcode, SA, list id, reserved, allocation length, control
_HEADER = struct.Struct(">BBH4xII")  # list id, STR/usage/priority, target len, segment len, inline len
_TARGET = struct.Struct(">BBH20s4xB3s")  # type, LU ID type/NUL/PDT, rel port, designator, pad, block size
_SEGMENT_HEADER = struct.Struct(">BBHHH")  # type, DC/CAT, length, source index, destination index
_B2B = struct.Struct(">2xHQQ")  # reserved, blocks, source LBA, destination LBA
_COPY_STATUS = struct.Struct(">IBHBI")  # available, status, segments processed, units, count
_OP_PARAMS = struct.Struct(">IB3xHHIIIIIxxHBBBB3xB")

_TARGET_IDENT = 0xE4
_SEGMENT_B2B = 0x02
_TARGET_LEN = 32
_SEGMENT_B2B_LEN = 28
_USAGE_NONE = 0x03

MAX_TARGET_DESCRIPTORS = 4
MAX_SEGMENT_DESCRIPTORS = 8
#: the descriptor lists together (checked before the per-kind counts, as SPC-4 orders it)
MAX_DESCRIPTOR_LIST = 1024
#: longest segment (bytes); copies go through a buffer of at most _CHUNK bytes at a time
MAX_SEGMENT_BYTES = 64 << 20
_CHUNK = 1 << 20

TOO_MANY_TARGETS = Sense(SenseKey.ILLEGAL_REQUEST, 0x26, 0x06)
TOO_MANY_SEGMENTS = Sense(SenseKey.ILLEGAL_REQUEST, 0x26, 0x08)
UNSUPPORTED_TARGET_TYPE = Sense(SenseKey.ILLEGAL_REQUEST, 0x26, 0x07)
UNSUPPORTED_SEGMENT_TYPE = Sense(SenseKey.ILLEGAL_REQUEST, 0x26, 0x09)
UNREACHABLE_TARGET = Sense(SenseKey.COPY_ABORTED, 0x08, 0x04)
COPY_ABORTED = Sense(SenseKey.COPY_ABORTED, 0x00, 0x00)
COPY_TARGET_NOT_REACHABLE = Sense(SenseKey.COPY_ABORTED, 0x0D, 0x02)

_COMPLETED_GOOD, _COMPLETED_ERROR = 0x01, 0x02


@dataclass(slots=True)
class CopyResults:
    """Outcome of past EXTENDED COPY commands, by (nexus, list id)."""

    status: dict[tuple[str, int], tuple[int, int, int]] = field(default_factory=dict)


def setup(lu: LogicalUnit) -> None:
    lu.inquiry_byte5 |= 0x08  # 3PC: third-party copy supported
    lu.copy_results = CopyResults()  # type: ignore[attr-defined]


# ------------------------------------------------------------------ EXTENDED COPY
def _decode_xcopy(cdb: bytes | bytearray | memoryview) -> int:
    check_length(cdb, 16)
    _, _, length, _ = _XCOPY_CDB.unpack_from(cdb)
    check_reserved(cdb, 1, 0xE0)
    for byte in range(2, 10):
        check_reserved(cdb, byte)
    return int(length)


def _prepare_xcopy(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    length = _decode_xcopy(cdb)
    return CommandPlan("write", length, 0) if length else PLAN_NONE


def _designator_key(data: bytes) -> tuple[int, bytes] | None:
    """(designator type, identifier) of a VPD 83h designation descriptor (LU association)."""
    if len(data) < 4:
        return None
    length = data[3]
    return data[1] & 0x0F, bytes(data[4 : 4 + length])


def _lu_designators(unit: LogicalUnit) -> set[tuple[int, bytes]]:
    dev = unit.device_id
    dtype = DESIGNATOR_NAA if dev[0] >> 4 in (2, 3, 5, 6) else DESIGNATOR_EUI64
    return {(dtype, dev), (DESIGNATOR_T10_VENDOR, unit.vendor + unit.serial.encode("ascii"))}


def _find_unit(lu: LogicalUnit, designator: bytes) -> LogicalUnit | None:
    key = _designator_key(designator)
    if key is None:
        return None
    units = [unit for _, unit in lu.lunmap.items()] if lu.lunmap is not None else [lu]
    for unit in units:
        if key in _lu_designators(unit):
            return unit
    return None


def _execute_xcopy(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    length = _decode_xcopy(req.cdb)
    if not length:
        return ScsiResult()  # an empty parameter list copies nothing (SPC-4 6.3.1)
    if length < _HEADER.size:
        raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
    data = parameter_list(req, length, _HEADER.size)
    list_id, flags, target_len, segment_len, inline_len = _HEADER.unpack_from(data)
    usage = (flags >> 3) & 0x03
    if _HEADER.size + target_len + segment_len + inline_len > len(data):
        raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
    if inline_len:
        raise ScsiError(invalid_field_in_parameter_list(12))  # no inline data
    if target_len % _TARGET_LEN or target_len + segment_len > MAX_DESCRIPTOR_LIST:
        raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
    if target_len // _TARGET_LEN > MAX_TARGET_DESCRIPTORS:
        raise ScsiError(TOO_MANY_TARGETS)
    # targets
    targets: list[tuple[LogicalUnit | None, int]] = []
    pos = _HEADER.size
    for _ in range(target_len // _TARGET_LEN):
        dtype, id_byte, _, designator, _, block = _TARGET.unpack_from(data, pos)
        if dtype != _TARGET_IDENT:
            raise ScsiError(UNSUPPORTED_TARGET_TYPE)
        if id_byte & 0x1F != 0:  # only direct-access block devices
            raise ScsiError(invalid_field_in_parameter_list(pos + 1))
        unit = None if id_byte & 0x20 else _find_unit(lu, designator)  # NUL=1: a null device
        targets.append((unit, int.from_bytes(block, "big")))
        pos += _TARGET_LEN
    # segments
    segments: list[tuple[int, int, int, int, int]] = []
    end = _HEADER.size + target_len + segment_len
    while pos < end:
        if pos + _SEGMENT_HEADER.size > end:
            raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
        stype, _, seg_len, src, dst = _SEGMENT_HEADER.unpack_from(data, pos)
        if stype != _SEGMENT_B2B:
            raise ScsiError(UNSUPPORTED_SEGMENT_TYPE)
        if len(segments) >= MAX_SEGMENT_DESCRIPTORS:
            raise ScsiError(TOO_MANY_SEGMENTS)
        if pos + 4 + seg_len > end or seg_len != _SEGMENT_B2B_LEN - 4:
            raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
        blocks, src_lba, dst_lba = _B2B.unpack_from(data, pos + _SEGMENT_HEADER.size)
        segments.append((src, dst, blocks, src_lba, dst_lba))
        pos += 4 + seg_len
    done = 0
    try:
        for src, dst, blocks, src_lba, dst_lba in segments:
            _copy_segment(targets, src, dst, blocks, src_lba, dst_lba)
            done += 1
    except ScsiError:
        if usage != _USAGE_NONE:
            lu.copy_results.status[(req.nexus, list_id)] = (_COMPLETED_ERROR, done, 0)  # type: ignore[attr-defined]
        raise
    if usage != _USAGE_NONE:
        lu.copy_results.status[(req.nexus, list_id)] = (_COMPLETED_GOOD, done, 0)  # type: ignore[attr-defined]
    return ScsiResult()


def _copy_segment(targets: list[tuple[LogicalUnit | None, int]], src: int, dst: int, blocks: int,
                  src_lba: int, dst_lba: int) -> None:
    if src >= len(targets) or dst >= len(targets):
        raise ScsiError(UNREACHABLE_TARGET)
    source, _ = targets[src]
    dest, _ = targets[dst]
    if source is None or dest is None:
        raise ScsiError(UNREACHABLE_TARGET)
    if dest.read_only:
        raise ScsiError(COPY_TARGET_NOT_REACHABLE)
    if source.not_ready is not None or dest.not_ready is not None:
        # another LU without its medium, or sanitizing (its backend is the worker's)
        raise ScsiError(COPY_TARGET_NOT_REACHABLE)
    if source.block_size != dest.block_size:
        raise ScsiError(COPY_ABORTED)
    bs = source.block_size
    if src_lba + blocks > source.num_blocks or dst_lba + blocks > dest.num_blocks:
        raise ScsiError(COPY_ABORTED)  # LBA out of range on a copy target
    if blocks * bs > MAX_SEGMENT_BYTES:
        raise ScsiError(COPY_ABORTED)
    buf = memoryview(bytearray(min(blocks * bs, _CHUNK) or bs))
    offset = 0
    total = blocks * bs
    try:
        while offset < total:
            n = min(buf.nbytes, total - offset)
            source.backend.read_into(src_lba * bs + offset, buf[:n])
            dest.backend.write_from(dst_lba * bs + offset, buf[:n])
            offset += n
    except BackendError as exc:
        source.log_backend_error("extended copy", exc)
        raise ScsiError(COPY_ABORTED) from exc


# ----------------------------------------------------------- RECEIVE COPY RESULTS
_COPY_STATUS_SA, _OPERATING_PARAMETERS_SA = 0x00, 0x03


def _decode_rcr(cdb: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    check_length(cdb, 16)
    _, sa, list_id, alloc, _ = _RCR_CDB.unpack_from(cdb)
    check_reserved(cdb, 1, 0xE0)
    return sa & 0x1F, list_id, int(alloc)


def _prepare_rcr(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _, _, alloc = _decode_rcr(cdb)
    return CommandPlan("read", 0, alloc) if alloc else PLAN_NONE


def _execute_rcr(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    sa, list_id, alloc = _decode_rcr(req.cdb)
    if sa == _OPERATING_PARAMETERS_SA:
        data = _OP_PARAMS.pack(
            _OP_PARAMS.size - 4,
            0,  # SNLID=0: list identifiers are per initiator
            MAX_TARGET_DESCRIPTORS,
            MAX_SEGMENT_DESCRIPTORS,
            MAX_DESCRIPTOR_LIST,
            MAX_SEGMENT_BYTES,
            0,  # no inline data
            0,  # no held data
            0,  # no stream devices
            1,  # total concurrent copies
            1,  # maximum concurrent copies
            9,  # data segment granularity: 2^9 bytes
            0,
            0,
            2,  # implemented descriptor codes follow
        ) + bytes((_SEGMENT_B2B, _TARGET_IDENT))
        return ScsiResult(0, None, alloc_truncate(data, alloc))
    if sa == _COPY_STATUS_SA:
        result = lu.copy_results.status.get((req.nexus, list_id))  # type: ignore[attr-defined]
        if result is None:
            raise ScsiError(invalid_field_in_cdb(2))  # no such copy
        status, segments, count = result
        data = _COPY_STATUS.pack(_COPY_STATUS.size - 4, status, segments, 0, count)
        return ScsiResult(0, None, alloc_truncate(data, alloc))
    raise ScsiError(invalid_field_in_cdb(1, 4))


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(Opcode.EXTENDED_COPY, "EXTENDED COPY(LID1)", _prepare_xcopy, _execute_xcopy, service_action=0x00,
                usage=bytes((Opcode.EXTENDED_COPY, 0x00, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07))),
    *(
        CommandSpec(Opcode.RECEIVE_COPY_RESULTS, name, _prepare_rcr, _execute_rcr, service_action=sa,
                    usage=bytes((Opcode.RECEIVE_COPY_RESULTS, sa, 0xFF, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
                                 0, 0x07)))
        for sa, name in ((_COPY_STATUS_SA, "RECEIVE COPY RESULTS (COPY STATUS)"),
                         (_OPERATING_PARAMETERS_SA, "RECEIVE COPY RESULTS (OPERATING PARAMETERS)"))
    ),
)

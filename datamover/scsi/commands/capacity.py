"""READ CAPACITY (10) and READ CAPACITY (16) (SBC-4 5.20, 5.21)."""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from datamover.scsi.cdb import alloc_truncate, check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import Opcode, ServiceActionIn16
from datamover.scsi.sense import ScsiError, invalid_field_in_cdb

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = ["COMMANDS"]

_RC10_DATA = struct.Struct(">II")  # returned LBA, block length
_RC16_CDB = struct.Struct(">BBQIBB")  # opcode, SA, LBA, allocation length, PMI, control
#: returned LBA, block length, P_TYPE/PROT_EN, P_I_EXPONENT/LBPPBE, LBPME/LBPRZ/lowest aligned LBA
_RC16_DATA = struct.Struct(">QIBBH16x")
_PMI = 0x01
_LBPME = 0x8000
_LBPRZ = 0x4000
_RC10_MAX_LBA = 0xFFFF_FFFF


def _check_rc10(cdb: bytes | bytearray | memoryview) -> None:
    check_length(cdb, 10)
    check_reserved(cdb, 1, 0xFE)  # bit 0 is the obsolete RELADR; ignore it
    check_reserved(cdb, 6)
    check_reserved(cdb, 7)
    check_reserved(cdb, 8, 0xFE)
    # PMI=0 requires LBA=0 (SBC-3; both fields are obsolete in SBC-4 but still checked
    # by initiators' test suites)
    if not cdb[8] & _PMI and any(cdb[2:6]):
        raise ScsiError(invalid_field_in_cdb(2))


def _prepare_rc10(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _check_rc10(cdb)
    return CommandPlan("read", 0, _RC10_DATA.size)


def _execute_rc10(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    _check_rc10(req.cdb)
    last = min(lu.num_blocks - 1, _RC10_MAX_LBA)  # FFFFFFFFh: "use READ CAPACITY (16)"
    return ScsiResult(0, None, _RC10_DATA.pack(last, lu.block_size))


def _check_rc16(cdb: bytes | bytearray | memoryview) -> int:
    check_length(cdb, 16)
    check_reserved(cdb, 1, 0xE0)
    _, _, lba, alloc, pmi, _ = _RC16_CDB.unpack_from(cdb)
    check_reserved(cdb, 14, 0xFE)
    if not pmi & _PMI and lba:
        raise ScsiError(invalid_field_in_cdb(2))
    return int(alloc)


def _prepare_rc16(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    alloc = _check_rc16(cdb)
    return CommandPlan("read", 0, min(alloc, _RC16_DATA.size)) if alloc else PLAN_NONE


def _execute_rc16(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    alloc = _check_rc16(req.cdb)
    flags = (_LBPME if lu.lbpme else 0) | (_LBPRZ if lu.lbprz else 0)
    data = _RC16_DATA.pack(lu.num_blocks - 1, lu.block_size, 0, lu.physical_block_exponent & 0x0F, flags)
    return ScsiResult(0, None, alloc_truncate(data, alloc))


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(Opcode.READ_CAPACITY_10, "READ CAPACITY(10)", _prepare_rc10, _execute_rc10),
    CommandSpec(
        Opcode.SERVICE_ACTION_IN_16,
        "READ CAPACITY(16)",
        _prepare_rc16,
        _execute_rc16,
        service_action=ServiceActionIn16.READ_CAPACITY_16,
    ),
)

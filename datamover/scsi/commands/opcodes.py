"""REPORT SUPPORTED OPERATION CODES and REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS
(SPC-5 6.35, 6.36), both service actions of MAINTENANCE IN (A3h).

The answer is computed from the LU's own command table, so a family added to the table
(or registered on one LU) is reported without touching this module. Each command's CDB
USAGE DATA comes from :meth:`CommandSpec.usage_data`.

REPORT LUNS is answered by the :class:`~datamover.scsi.lunmap.LunMap` before the LU sees
it; it is also registered here so that it is listed.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from datamover.scsi.cdb import alloc_truncate, check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import MaintenanceIn, Opcode
from datamover.scsi.sense import ScsiError, invalid_field_in_cdb

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = ["COMMANDS"]

_RSOC_CDB = struct.Struct(">BBBBHIxB")  # opcode, SA, RCTD/options, opcode, SA, alloc, control
_ALL_HEADER = struct.Struct(">I")
_ALL_DESCRIPTOR = struct.Struct(">BxHxBH")  # opcode, SA, CTDP/SERVACTV, CDB length
_ONE_HEADER = struct.Struct(">xBH")  # CTDP/SUPPORT, CDB size
_TIMEOUTS = struct.Struct(">HxBII")  # length 0Ah, command specific, nominal, recommended
_TMF_CDB = struct.Struct(">BBB3xIxB")  # opcode, SA, REPD, alloc, control

_RCTD = 0x80
_OPTIONS = 0x07
_CTDP_ALL = 0x02
_SERVACTV = 0x01
_CTDP_ONE = 0x80
_SUPPORTED = 0x03
_NOT_SUPPORTED = 0x01

_ALL, _ONE_OPCODE, _ONE_SA, _ONE_EITHER = 0, 1, 2, 3

#: ABORT TASK, ABORT TASK SET, CLEAR TASK SET, LOGICAL UNIT RESET, TARGET RESET (byte 0);
#: QUERY functions are not supported (byte 1 zero)
_TMF_BYTE0 = 0x80 | 0x40 | 0x20 | 0x08 | 0x02


def _timeouts(spec: CommandSpec) -> bytes:
    return _TIMEOUTS.pack(0x0A, 0, spec.timeout, spec.timeout)


def _decode(cdb: bytes | bytearray | memoryview) -> tuple[bool, int, int, int, int]:
    check_length(cdb, 12)
    _, _, flags, opcode, sa, alloc, _ = _RSOC_CDB.unpack_from(cdb)
    check_reserved(cdb, 1, 0xE0)
    check_reserved(cdb, 2, 0x78)
    options = flags & _OPTIONS
    if options > _ONE_EITHER:
        raise ScsiError(invalid_field_in_cdb(2, 2))
    return bool(flags & _RCTD), options, opcode, sa, alloc


def _prepare(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _, _, _, _, alloc = _decode(cdb)
    return CommandPlan("read", 0, alloc) if alloc else PLAN_NONE


def _has_service_actions(lu: LogicalUnit, opcode: int) -> bool:
    return any(spec.opcode == opcode and spec.service_action is not None for spec in lu.commands)


def _execute(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    rctd, options, opcode, sa, alloc = _decode(req.cdb)
    if options == _ALL:
        body = bytearray()
        for spec in lu.commands:
            servactv = spec.service_action is not None
            flags = (_CTDP_ALL if rctd else 0) | (_SERVACTV if servactv else 0)
            body += _ALL_DESCRIPTOR.pack(spec.opcode, spec.service_action or 0, flags, len(spec.usage_data()))
            if rctd:
                body += _timeouts(spec)
        data = _ALL_HEADER.pack(len(body)) + bytes(body)
        return ScsiResult(0, None, alloc_truncate(data, alloc))
    with_sa = _has_service_actions(lu, opcode)
    if options == _ONE_OPCODE:
        if with_sa:
            raise ScsiError(invalid_field_in_cdb(3))
        spec = lu.commands.find(opcode)
    elif options == _ONE_SA:
        if not with_sa:
            raise ScsiError(invalid_field_in_cdb(3))
        spec = lu.commands.find(opcode, sa)
    else:
        spec = lu.commands.find(opcode, sa) if with_sa else lu.commands.find(opcode)
    if spec is None:
        data = _ONE_HEADER.pack(_NOT_SUPPORTED, 0)
    else:
        usage = spec.usage_data()
        data = _ONE_HEADER.pack((_CTDP_ONE if rctd else 0) | _SUPPORTED, len(usage)) + usage
        if rctd:
            data += _timeouts(spec)
    return ScsiResult(0, None, alloc_truncate(data, alloc))


# ------------------------------------------------------------ supported TMFs
def _decode_tmf(cdb: bytes | bytearray | memoryview) -> tuple[bool, int]:
    check_length(cdb, 12)
    _, _, repd, alloc, _ = _TMF_CDB.unpack_from(cdb)
    check_reserved(cdb, 1, 0xE0)
    check_reserved(cdb, 2, 0x7F)
    return bool(repd & 0x80), alloc


def _prepare_tmf(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _, alloc = _decode_tmf(cdb)
    return CommandPlan("read", 0, alloc) if alloc else PLAN_NONE


def _execute_tmf(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    repd, alloc = _decode_tmf(req.cdb)
    data = bytes((_TMF_BYTE0, 0, 0, 0x0C if repd else 0)) + (bytes(12) if repd else b"")
    return ScsiResult(0, None, alloc_truncate(data, alloc))


# ---------------------------------------------------------------- REPORT LUNS
def _prepare_report_luns(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    from datamover.scsi.lunmap import LunMap

    _, alloc = LunMap._decode_report_luns(cdb)
    return CommandPlan("read", 0, alloc) if alloc else PLAN_NONE


def _execute_report_luns(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    # only reached for an LU used without a LunMap: it reports itself as LUN 0
    from datamover.scsi.lunmap import LunMap

    owner = lu.lunmap if lu.lunmap is not None else LunMap({0: lu})
    return owner._report_luns(req.cdb)


_RSOC_USAGE = bytes((Opcode.MAINTENANCE_IN, MaintenanceIn.REPORT_SUPPORTED_OPERATION_CODES, 0x87, 0xFF, 0xFF, 0xFF,
                     0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x07))
_TMF_USAGE = bytes((Opcode.MAINTENANCE_IN, MaintenanceIn.REPORT_SUPPORTED_TMFS, 0x80, 0, 0, 0,
                    0xFF, 0xFF, 0xFF, 0xFF, 0x00, 0x07))

COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(
        Opcode.MAINTENANCE_IN,
        "REPORT SUPPORTED OPERATION CODES",
        _prepare,
        _execute,
        service_action=MaintenanceIn.REPORT_SUPPORTED_OPERATION_CODES,
        usage=_RSOC_USAGE,
    ),
    CommandSpec(
        Opcode.MAINTENANCE_IN,
        "REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS",
        _prepare_tmf,
        _execute_tmf,
        service_action=MaintenanceIn.REPORT_SUPPORTED_TMFS,
        usage=_TMF_USAGE,
    ),
    CommandSpec(Opcode.REPORT_LUNS, "REPORT LUNS", _prepare_report_luns, _execute_report_luns, ua_exempt=True,
                usage=bytes((Opcode.REPORT_LUNS, 0, 0xFF, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0x07))),
)

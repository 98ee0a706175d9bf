"""START STOP UNIT (SBC-4 5.25) and PREVENT ALLOW MEDIUM REMOVAL (SBC-4 5.15).

On a removable LU (INQUIRY RMB=1) LOEJ=1 ejects (START=0) or loads (START=1) the
medium; while it is out every command that needs it fails with NOT READY / MEDIUM NOT
PRESENT. A PREVENT from any I_T nexus blocks both (MEDIUM REMOVAL PREVENTED) until every
preventing nexus allows again, loses its nexus, or the LU is reset.

Stopping without LOEJ, and power conditions, only flush the cache: the LU stays ready.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datamover.scsi.cdb import check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.common import backend_write
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import Opcode
from datamover.scsi.sense import MEDIUM_NOT_PRESENT, MEDIUM_REMOVAL_PREVENTED, ScsiError, invalid_field_in_cdb

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = ["COMMANDS", "eject", "load"]

_IMMED = 0x01
_START = 0x01
_LOEJ = 0x02
_NO_FLUSH = 0x04
_PREVENT = 0x03


def eject(lu: LogicalUnit) -> None:
    """Take the medium out (NOT READY / MEDIUM NOT PRESENT until :func:`load`)."""
    if lu.prevent:
        raise ScsiError(MEDIUM_REMOVAL_PREVENTED)
    lu.not_ready = MEDIUM_NOT_PRESENT


def load(lu: LogicalUnit) -> None:
    if lu.prevent:
        raise ScsiError(MEDIUM_REMOVAL_PREVENTED)
    if lu.not_ready is MEDIUM_NOT_PRESENT:
        lu.not_ready = None


def _decode_ssu(cdb: bytes | bytearray | memoryview) -> tuple[int, int]:
    check_length(cdb, 6)
    check_reserved(cdb, 1, 0xFE)
    check_reserved(cdb, 2)
    check_reserved(cdb, 3, 0xF0)
    check_reserved(cdb, 4, 0x08)
    return cdb[4] >> 4, cdb[4] & 0x07


def _prepare_ssu(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _decode_ssu(cdb)
    return PLAN_NONE


def _execute_ssu(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    condition, flags = _decode_ssu(req.cdb)
    if condition:
        # a power condition: START and LOEJ are ignored (SBC-4 5.25); nothing to change
        return ScsiResult()
    if flags & _LOEJ and lu.removable:
        if flags & _START:
            load(lu)
        else:
            if not flags & _NO_FLUSH and lu.not_ready is None:
                backend_write(lu, "flush", lu.backend.flush)
            eject(lu)
        return ScsiResult()
    if not flags & _START and not flags & _NO_FLUSH and lu.not_ready is None:
        backend_write(lu, "flush", lu.backend.flush)  # stopping: write the cache back
    lu.stopped = not flags & _START
    return ScsiResult()


def _decode_pamr(cdb: bytes | bytearray | memoryview) -> int:
    check_length(cdb, 6)
    for byte in (1, 2, 3):
        check_reserved(cdb, byte)
    check_reserved(cdb, 4, 0xFC)
    prevent = cdb[4] & _PREVENT
    if prevent > 1:
        # 10b/11b lock a media changer's medium; there is none
        raise ScsiError(invalid_field_in_cdb(4, 1))
    return prevent


def _prepare_pamr(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _decode_pamr(cdb)
    return PLAN_NONE


def _execute_pamr(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    if _decode_pamr(req.cdb):
        lu.prevent.add(req.nexus)
    else:
        lu.prevent.discard(req.nexus)
    return ScsiResult()


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(Opcode.START_STOP_UNIT, "START STOP UNIT", _prepare_ssu, _execute_ssu, ready_exempt=True,
                usage=bytes((Opcode.START_STOP_UNIT, 0x01, 0, 0x0F, 0xF7, 0x07))),
    CommandSpec(Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL, "PREVENT ALLOW MEDIUM REMOVAL", _prepare_pamr, _execute_pamr,
                ready_exempt=True, usage=bytes((Opcode.PREVENT_ALLOW_MEDIUM_REMOVAL, 0, 0, 0, 0x03, 0x07))),
)

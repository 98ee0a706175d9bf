"""TEST UNIT READY and REQUEST SENSE (SPC-5 6.48, 6.39): the "how are you" commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from datamover.scsi.cdb import alloc_truncate, check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import Opcode
from datamover.scsi.sense import NO_SENSE

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = ["COMMANDS"]

_DESC = 0x01


def _check_tur(cdb: bytes | bytearray | memoryview) -> None:
    check_length(cdb, 6)
    for byte in range(1, 5):
        check_reserved(cdb, byte)


def _prepare_tur(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _check_tur(cdb)
    return PLAN_NONE


def _execute_tur(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    _check_tur(req.cdb)
    # readiness (a not-ready LU answers NOT READY) is checked by the LU before this
    return ScsiResult()


def _check_request_sense(cdb: bytes | bytearray | memoryview) -> tuple[bool, int]:
    check_length(cdb, 6)
    check_reserved(cdb, 1, 0xFF & ~_DESC)
    check_reserved(cdb, 2)
    check_reserved(cdb, 3)
    return bool(cdb[1] & _DESC), cdb[4]


def _prepare_request_sense(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _, alloc = _check_request_sense(cdb)
    return CommandPlan("read", 0, alloc) if alloc else PLAN_NONE


def _execute_request_sense(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    desc, alloc = _check_request_sense(req.cdb)
    # A pending unit attention is returned as parameter data and thereby cleared; the
    # command itself succeeds (SPC-5 5.14).
    sense = lu.unit_attentions.pop(req.nexus) or lu.current_condition() or NO_SENSE
    data = sense.as_descriptor(desc).encode()
    return ScsiResult(0, None, alloc_truncate(data, alloc))


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(Opcode.TEST_UNIT_READY, "TEST UNIT READY", _prepare_tur, _execute_tur),
    CommandSpec(Opcode.REQUEST_SENSE, "REQUEST SENSE", _prepare_request_sense, _execute_request_sense, ua_exempt=True),
)

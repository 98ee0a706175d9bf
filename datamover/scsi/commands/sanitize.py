"""SANITIZE (SBC-4 5.30): OVERWRITE, BLOCK ERASE, CRYPTOGRAPHIC ERASE, EXIT FAILURE MODE.

* OVERWRITE writes the initiator's pattern (at most one block, repeated; inverted between
  passes when INVERT=1) over every block, OWCOUNT times, and makes it durable.
* BLOCK ERASE and CRYPTOGRAPHIC ERASE deallocate the whole medium (a hole punch on a file
  LUN; there is no key to destroy, so both leave blocks that read as zeros).
* EXIT FAILURE MODE clears the "sanitize failed" condition a failed operation leaves.

The operation runs to completion inside the command (IMMED is honoured by answering once
it is done), so no other command can observe a sanitize in progress. A failure leaves the
LU reporting MEDIUM ERROR / SANITIZE COMMAND FAILED to media-access commands until a new
SANITIZE completes or EXIT FAILURE MODE is sent.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

from datamover.scsi.backend import BackendError
from datamover.scsi.cdb import check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.common import check_writable, parameter_list
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import Opcode
from datamover.scsi.sense import (
    SANITIZE_FAILED,
    ScsiError,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
)

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = ["COMMANDS", "OVERWRITE", "BLOCK_ERASE", "CRYPTOGRAPHIC_ERASE", "EXIT_FAILURE_MODE"]

OVERWRITE = 0x01
BLOCK_ERASE = 0x02
CRYPTOGRAPHIC_ERASE = 0x03
EXIT_FAILURE_MODE = 0x1F

_CDB = struct.Struct(">BB5xHB")  # opcode, IMMED/AUSE/SA, reserved, parameter list length, control
_OVERWRITE_HEADER = struct.Struct(">BxH")  # INVERT/TEST/OWCOUNT, pattern length
_INVERT = 0x80
_TEST = 0x60
_OWCOUNT = 0x1F
_AUSE = 0x20
_CHUNK = 1 << 20


def _decode(cdb: bytes | bytearray | memoryview) -> tuple[int, int]:
    check_length(cdb, 10)
    _, flags, length, _ = _CDB.unpack_from(cdb)
    check_reserved(cdb, 1, 0x40)
    for byte in range(2, 7):
        check_reserved(cdb, byte)
    action = flags & 0x1F
    if action not in (OVERWRITE, BLOCK_ERASE, CRYPTOGRAPHIC_ERASE, EXIT_FAILURE_MODE):
        raise ScsiError(invalid_field_in_cdb(1, 4))
    if action == OVERWRITE:
        # a header and a pattern of at least one byte, the pattern at most one block
        if length < _OVERWRITE_HEADER.size + 1:
            raise ScsiError(invalid_field_in_cdb(7))
    elif length:
        raise ScsiError(invalid_field_in_cdb(7))  # the other actions take no parameters
    return action, length


def _prepare(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    action, length = _decode(cdb)
    if action != EXIT_FAILURE_MODE:
        check_writable(lu)
    return CommandPlan("write", length, 0) if length else PLAN_NONE


def _overwrite_pattern(lu: LogicalUnit, data: bytes, length: int) -> tuple[bytes, int, bool]:
    flags, pattern_length = _OVERWRITE_HEADER.unpack_from(data)
    if length > lu.block_size + _OVERWRITE_HEADER.size:
        raise ScsiError(invalid_field_in_cdb(7))
    if flags & _TEST:
        raise ScsiError(invalid_field_in_parameter_list(0, 6))
    count = flags & _OWCOUNT
    if not count:
        raise ScsiError(invalid_field_in_parameter_list(0, 4))
    if not pattern_length or pattern_length > lu.block_size or _OVERWRITE_HEADER.size + pattern_length != length:
        raise ScsiError(invalid_field_in_parameter_list(2))
    pattern = data[_OVERWRITE_HEADER.size : _OVERWRITE_HEADER.size + pattern_length]
    return pattern, count, bool(flags & _INVERT)


def _fill(lu: LogicalUnit, pattern: bytes) -> None:
    block = (pattern * (-(-lu.block_size // len(pattern))))[: lu.block_size]
    chunk = memoryview(block * max(1, _CHUNK // lu.block_size))
    size = lu.num_blocks * lu.block_size
    offset = 0
    while offset < size:
        n = min(chunk.nbytes, size - offset)
        lu.backend.write_from(offset, chunk[:n])
        offset += n


def _execute(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    action, length = _decode(req.cdb)
    if action == EXIT_FAILURE_MODE:
        if lu.not_ready is SANITIZE_FAILED:
            lu.not_ready = None
        lu.sanitize_failed = False
        return ScsiResult()
    check_writable(lu)
    pattern = b""
    count, invert = 0, False
    if action == OVERWRITE:
        data = parameter_list(req, length, _OVERWRITE_HEADER.size)
        pattern, count, invert = _overwrite_pattern(lu, data, length)
    try:
        if action == OVERWRITE:
            for index in range(count):
                # with INVERT the pattern alternates with its complement, ending as given
                flip = invert and (count - 1 - index) % 2 == 1
                _fill(lu, bytes(b ^ 0xFF for b in pattern) if flip else pattern)
        else:
            lu.backend.deallocate(0, lu.num_blocks * lu.block_size)
        lu.backend.flush()
    except BackendError as exc:
        lu.log_backend_error("sanitize", exc)
        lu.sanitize_failed = True
        lu.not_ready = SANITIZE_FAILED
        raise ScsiError(SANITIZE_FAILED) from exc
    if lu.not_ready is SANITIZE_FAILED:
        lu.not_ready = None
    lu.sanitize_failed = False
    return ScsiResult()


def _usage() -> bytes:
    return bytes((Opcode.SANITIZE, 0xBF, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07))


COMMANDS: tuple[CommandSpec, ...] = tuple(
    CommandSpec(Opcode.SANITIZE, name, _prepare, _execute, service_action=action, ready_exempt=action == EXIT_FAILURE_MODE,
                usage=_usage()[:1] + bytes((0xA0 | action,)) + _usage()[2:], timeout=600)
    for action, name in (
        (OVERWRITE, "SANITIZE OVERWRITE"),
        (BLOCK_ERASE, "SANITIZE BLOCK ERASE"),
        (CRYPTOGRAPHIC_ERASE, "SANITIZE CRYPTOGRAPHIC ERASE"),
        (EXIT_FAILURE_MODE, "SANITIZE EXIT FAILURE MODE"),
    )
)

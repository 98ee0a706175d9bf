"""MODE SELECT (6) and (10) (SPC-5 6.12, 6.13): change the changeable mode parameters.

A page is accepted when it has the length MODE SENSE reports and differs from the current
values only in bits the changeable-values page marks; each page code has an applier that
turns the page into LU settings (WCE, D_SENSE, SWP). After a change every other I_T
nexus gets MODE PARAMETERS CHANGED. Pages cannot be saved (SP=1 is refused).

A LOGICAL UNIT RESET brings the parameters back to their defaults (SPC-5 5.12: the saved
values, which are the defaults here).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from datamover.scsi.cdb import check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.common import parameter_list
from datamover.scsi.commands.mode import PC_CHANGEABLE, PC_CURRENT
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import ModePage as PageCode
from datamover.scsi.constants import Opcode
from datamover.scsi.sense import (
    MODE_PARAMETERS_CHANGED,
    PARAMETER_LIST_LENGTH_ERROR,
    ScsiError,
    invalid_field_in_cdb,
    invalid_field_in_parameter_list,
)

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = ["COMMANDS", "setup", "PAGE_APPLIERS"]

_HEADER6 = struct.Struct(">BBBB")  # mode data length, medium type, device specific, BD length
_HEADER10 = struct.Struct(">HBBBxH")
_SHORT_BD = struct.Struct(">IxBH")
_LONG_BD = struct.Struct(">Q4xI")
_PF = 0x10
_SP = 0x01
_PS = 0x80
_SPF = 0x40
_LONGLBA = 0x01

_WCE = 0x04
_D_SENSE = 0x04
_SWP = 0x08


def _apply_caching(lu: LogicalUnit, page: bytes) -> None:
    lu.write_cache = bool(page[2] & _WCE)


def _apply_control(lu: LogicalUnit, page: bytes) -> None:
    lu.d_sense = bool(page[2] & _D_SENSE)
    set_software_write_protect(lu, bool(page[4] & _SWP))


def _apply_nothing(lu: LogicalUnit, page: bytes) -> None:
    """Pages with no changeable bits: accepted when unchanged, nothing to apply."""


#: (page, subpage) -> what a changed page does to the LU
PAGE_APPLIERS: dict[tuple[int, int], Callable[[LogicalUnit, bytes], None]] = {
    (PageCode.CACHING, 0): _apply_caching,
    (PageCode.CONTROL, 0): _apply_control,
}


def set_software_write_protect(lu: LogicalUnit, on: bool) -> None:
    """SWP: the medium is write-protected while set, on top of a read-only configuration."""
    lu.software_write_protect = on
    lu.read_only = lu.configured_read_only or on


def setup(lu: LogicalUnit) -> None:
    defaults = (lu.write_cache, lu.d_sense)

    def revert() -> None:
        lu.write_cache, lu.d_sense = defaults
        set_software_write_protect(lu, False)

    lu.reset_hooks.append(revert)


def _decode(cdb: bytes | bytearray | memoryview) -> int:
    ten = cdb[0] == Opcode.MODE_SELECT_10
    check_length(cdb, 10 if ten else 6)
    check_reserved(cdb, 1, 0xEE)
    if ten:
        for byte in range(2, 7):
            check_reserved(cdb, byte)
        length = int.from_bytes(cdb[7:9], "big")
    else:
        check_reserved(cdb, 2)
        check_reserved(cdb, 3)
        length = cdb[4]
    if cdb[1] & _SP:
        raise ScsiError(invalid_field_in_cdb(1, 0))  # no saved pages
    if not cdb[1] & _PF and length:
        raise ScsiError(invalid_field_in_cdb(1, 4))  # only the SPC page format
    return length


def _prepare(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    length = _decode(cdb)
    return CommandPlan("write", length, 0) if length else PLAN_NONE


def _execute(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    length = _decode(req.cdb)
    if not length:
        return ScsiResult()
    ten = req.cdb[0] == Opcode.MODE_SELECT_10
    header = _HEADER10 if ten else _HEADER6
    data = parameter_list(req, length, header.size)
    if ten:
        mdl, _, _, longlba, bd_len = header.unpack_from(data)
    else:
        mdl, _, _, bd_len = header.unpack_from(data)
        longlba = 0
    if mdl:
        raise ScsiError(invalid_field_in_parameter_list(0))  # reserved in MODE SELECT
    pos = header.size
    if pos + bd_len > len(data):
        raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
    bd_size = _LONG_BD.size if longlba & _LONGLBA else _SHORT_BD.size
    if bd_len:
        if bd_len != bd_size:
            raise ScsiError(invalid_field_in_parameter_list(3 if not ten else 7))
        if longlba & _LONGLBA:
            _, block_length = _LONG_BD.unpack_from(data, pos)
        else:
            _, hi, lo = _SHORT_BD.unpack_from(data, pos)
            block_length = (hi << 16) | lo
        if block_length != lu.block_size:
            # changing the block size would mean reformatting: not supported
            raise ScsiError(invalid_field_in_parameter_list(pos + bd_size - 3))
    pos += bd_len
    changes: list[tuple[tuple[int, int], bytes]] = []
    while pos < len(data):
        start = pos
        b0 = data[pos]
        if b0 & _PS:
            raise ScsiError(invalid_field_in_parameter_list(pos, 7))  # PS is reserved here
        code = b0 & 0x3F
        if b0 & _SPF:
            if pos + 4 > len(data):
                raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
            subpage, page_len = data[pos + 1], int.from_bytes(data[pos + 2 : pos + 4], "big") + 4
        else:
            if pos + 2 > len(data):
                raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
            subpage, page_len = 0, data[pos + 1] + 2
        page = lu.mode_pages.get((code, subpage))
        if page is None:
            raise ScsiError(invalid_field_in_parameter_list(start, 5))
        current = page.build(lu, PC_CURRENT)
        changeable = page.build(lu, PC_CHANGEABLE)
        if page_len != len(current):
            raise ScsiError(invalid_field_in_parameter_list(start + 1))
        if pos + page_len > len(data):
            raise ScsiError(PARAMETER_LIST_LENGTH_ERROR)
        new = data[pos : pos + page_len]
        header_len = 4 if b0 & _SPF else 2
        for i in range(header_len, page_len):
            if (new[i] ^ current[i]) & ~changeable[i] & 0xFF:
                raise ScsiError(invalid_field_in_parameter_list(pos + i))
        changes.append(((code, subpage), bytes(new)))
        pos += page_len
    # all pages valid: apply them together
    changed = False
    for key, new in changes:
        current = lu.mode_pages[key].build(lu, PC_CURRENT)
        if new[2:] != current[2:]:
            PAGE_APPLIERS.get(key, _apply_nothing)(lu, new)
            changed = True
    if changed:
        lu.establish_ua(MODE_PARAMETERS_CHANGED, exclude=req.nexus)
    return ScsiResult()


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(Opcode.MODE_SELECT_6, "MODE SELECT(6)", _prepare, _execute,
                usage=bytes((Opcode.MODE_SELECT_6, 0x11, 0, 0, 0xFF, 0x07))),
    CommandSpec(Opcode.MODE_SELECT_10, "MODE SELECT(10)", _prepare, _execute,
                usage=bytes((Opcode.MODE_SELECT_10, 0x11, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0x07))),
)

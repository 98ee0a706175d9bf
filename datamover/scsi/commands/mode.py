"""MODE SENSE (6) and (10) (SPC-5 6.14, 6.15) and the mode pages they report.

Mode pages live in a per-LU dict (``lu.mode_pages``: (page, subpage) -> :class:`ModePage`)
whose builders read the LU's live settings, so MODE SELECT (a later family) only has to
validate a page against :meth:`ModePage.changeable` and update those settings.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datamover.scsi.cdb import alloc_truncate, check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import ModePage as PageCode
from datamover.scsi.constants import Opcode
from datamover.scsi.sense import SAVING_PARAMETERS_NOT_SUPPORTED, ScsiError, invalid_field_in_cdb

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = ["COMMANDS", "DEFAULT_MODE_PAGES", "ModePage", "PC_CURRENT", "PC_CHANGEABLE", "PC_DEFAULT", "PC_SAVED"]

PC_CURRENT = 0
PC_CHANGEABLE = 1
PC_DEFAULT = 2
PC_SAVED = 3

_ALL_SUBPAGES = 0xFF

_HEADER6 = struct.Struct(">BBBB")  # mode data length, medium type, device-specific, BD length
_HEADER10 = struct.Struct(">HBBBxH")  # ... LONGLBA byte, reserved, BD length
_SHORT_BD = struct.Struct(">IxBH")  # number of blocks, reserved, block length (24 bits)
_LONG_BD = struct.Struct(">Q4xI")  # number of blocks, reserved, block length

_WP = 0x80
_DPOFUA = 0x10
_DBD = 0x08
_LLBAA = 0x10
_LONGLBA = 0x01

_CACHING = struct.Struct(">BBBB16x")  # code, length, WCE/RCD byte, retention; rest zero
_CONTROL = struct.Struct(">BBBBBBHHH")
_INFO_EXCEPTIONS = struct.Struct(">BBBBII")

_WCE = 0x04
_D_SENSE = 0x04
_GLTSD = 0x02
_QAM_UNRESTRICTED = 0x10
_DEXCPT = 0x08
_SWP = 0x08  # control page byte 4


@dataclass(frozen=True, slots=True)
class ModePage:
    """One mode page: builders for its current and changeable values.

    ``default`` falls back to ``current`` (this emulation's defaults are its settings
    until MODE SELECT exists). Each builder returns the whole page, header included.
    """

    code: int
    subpage: int
    current: Callable[[LogicalUnit], bytes]
    changeable: Callable[[LogicalUnit], bytes]
    default: Callable[[LogicalUnit], bytes] | None = None

    def build(self, lu: LogicalUnit, pc: int) -> bytes:
        if pc == PC_CHANGEABLE:
            return self.changeable(lu)
        if pc == PC_DEFAULT and self.default is not None:
            return self.default(lu)
        return self.current(lu)


def _caching(lu: LogicalUnit) -> bytes:
    # WCE reflects the backend's write-back behaviour: writes land in the page cache and
    # SYNCHRONIZE CACHE / FUA make them durable.
    return _CACHING.pack(PageCode.CACHING, _CACHING.size - 2, _WCE if lu.write_cache else 0, 0)


def _caching_changeable(lu: LogicalUnit) -> bytes:
    # WCE: MODE SELECT may turn write-back caching off (every write is then made durable)
    return _CACHING.pack(PageCode.CACHING, _CACHING.size - 2, _WCE, 0)


def _control(lu: LogicalUnit) -> bytes:
    return _CONTROL.pack(
        PageCode.CONTROL,
        _CONTROL.size - 2,
        (_D_SENSE if lu.d_sense else 0) | _GLTSD,  # TST=000b: one task set per LU
        _QAM_UNRESTRICTED,  # QERR=00b
        _SWP if lu.software_write_protect else 0,
        0,  # TAS=0
        0,
        0xFFFF,  # busy timeout: unlimited
        0,
    )


def _control_changeable(lu: LogicalUnit) -> bytes:
    # D_SENSE (sense format) and SWP (software write protect) can be changed
    return _CONTROL.pack(PageCode.CONTROL, _CONTROL.size - 2, _D_SENSE, 0, _SWP, 0, 0, 0, 0)


def _info_exceptions(lu: LogicalUnit) -> bytes:
    # DEXCPT=1: this LU never reports informational exceptions
    return _INFO_EXCEPTIONS.pack(PageCode.INFORMATIONAL_EXCEPTIONS, _INFO_EXCEPTIONS.size - 2, _DEXCPT, 0, 0, 0)


def _info_exceptions_changeable(lu: LogicalUnit) -> bytes:
    return _INFO_EXCEPTIONS.pack(PageCode.INFORMATIONAL_EXCEPTIONS, _INFO_EXCEPTIONS.size - 2, 0, 0, 0, 0)


DEFAULT_MODE_PAGES: dict[tuple[int, int], ModePage] = {
    (PageCode.CACHING, 0): ModePage(PageCode.CACHING, 0, _caching, _caching_changeable),
    (PageCode.CONTROL, 0): ModePage(PageCode.CONTROL, 0, _control, _control_changeable),
    (PageCode.INFORMATIONAL_EXCEPTIONS, 0): ModePage(
        PageCode.INFORMATIONAL_EXCEPTIONS, 0, _info_exceptions, _info_exceptions_changeable
    ),
}


def decode_mode_sense(cdb: bytes | bytearray | memoryview) -> tuple[bool, bool, bool, int, int, int, int]:
    """``(ten_byte, dbd, llbaa, pc, page, subpage, allocation length)``, fields checked."""
    ten = cdb[0] == Opcode.MODE_SENSE_10
    check_length(cdb, 10 if ten else 6)
    check_reserved(cdb, 1, 0xE7 if ten else 0xF7)
    if ten:
        for byte in (4, 5, 6):
            check_reserved(cdb, byte)
        alloc = int.from_bytes(cdb[7:9], "big")
    else:
        alloc = cdb[4]
    pc = cdb[2] >> 6
    if pc == PC_SAVED:
        raise ScsiError(SAVING_PARAMETERS_NOT_SUPPORTED)
    return ten, bool(cdb[1] & _DBD), ten and bool(cdb[1] & _LLBAA), pc, cdb[2] & 0x3F, cdb[3], alloc


def _select_pages(lu: LogicalUnit, page: int, subpage: int) -> list[ModePage]:
    pages = lu.mode_pages
    if page == PageCode.ALL:
        if subpage == 0:
            chosen = [p for key, p in pages.items() if key[1] == 0]
        elif subpage == _ALL_SUBPAGES:
            chosen = list(pages.values())
        else:
            raise ScsiError(invalid_field_in_cdb(3))
    elif subpage == _ALL_SUBPAGES:
        chosen = [p for key, p in pages.items() if key[0] == page]
        if not chosen:
            raise ScsiError(invalid_field_in_cdb(2, 5))
    else:
        one = pages.get((page, subpage))
        if one is None:
            if any(key[0] == page for key in pages):
                raise ScsiError(invalid_field_in_cdb(3))
            raise ScsiError(invalid_field_in_cdb(2, 5))
        chosen = [one]
    # ascending page code, page 0 (vendor specific) last, as SPC-5 6.14 asks
    chosen.sort(key=lambda p: (p.code == 0, p.code, p.subpage))
    return chosen


def _prepare(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    _, _, _, _, page, subpage, alloc = decode_mode_sense(cdb)
    _select_pages(lu, page, subpage)
    return CommandPlan("read", 0, alloc) if alloc else PLAN_NONE


def _execute(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    ten, dbd, llbaa, pc, page, subpage, alloc = decode_mode_sense(req.cdb)
    body = b"".join(p.build(lu, pc) for p in _select_pages(lu, page, subpage))
    if dbd:
        descriptor = b""
    elif llbaa:
        descriptor = _LONG_BD.pack(lu.num_blocks, lu.block_size)
    else:
        descriptor = _SHORT_BD.pack(
            min(lu.num_blocks, 0xFFFF_FFFF), lu.block_size >> 16, lu.block_size & 0xFFFF
        )
    device_specific = (_WP if lu.read_only else 0) | _DPOFUA
    if ten:
        total = _HEADER10.size + len(descriptor) + len(body)
        header = _HEADER10.pack(total - 2, 0, device_specific, _LONGLBA if llbaa and descriptor else 0, len(descriptor))
    else:
        total = _HEADER6.size + len(descriptor) + len(body)
        header = _HEADER6.pack(min(total - 1, 0xFF), 0, device_specific, len(descriptor))
    return ScsiResult(0, None, alloc_truncate(header + descriptor + body, alloc))


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(Opcode.MODE_SENSE_6, "MODE SENSE(6)", _prepare, _execute),
    CommandSpec(Opcode.MODE_SENSE_10, "MODE SENSE(10)", _prepare, _execute),
)

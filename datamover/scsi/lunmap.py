"""The logical units of one target, by LUN, and what a target answers for a LUN it lacks.

REPORT LUNS is answered here for any LUN (SPC-5 6.33: the command is addressed to LUN 0
or the REPORT LUNS well-known LU, but every LUN must answer it). A LUN with no logical
unit answers INQUIRY with peripheral qualifier 011b / type 1Fh, REQUEST SENSE with LUN
NOT SUPPORTED as parameter data, and everything else with CHECK CONDITION LUN NOT
SUPPORTED (SPC-5 4.6.2 / SAM-5 5.9.2).

Also the 8-byte SAM LUN encoding used in iSCSI PDUs (:func:`encode_lun`, :func:`decode_lun`).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Mapping

from datamover.scsi.cdb import alloc_truncate, check_control, check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.inquiry import decode_inquiry, standard_inquiry_data
from datamover.scsi.constants import INQUIRY_NO_LUN, Opcode, ScsiStatus, VpdPage
from datamover.scsi.lu import LogicalUnit
from datamover.scsi.sense import (
    INVALID_OPCODE,
    LUN_NOT_SUPPORTED,
    REPORTED_LUNS_DATA_HAS_CHANGED,
    ScsiError,
    invalid_field_in_cdb,
)

__all__ = ["LunMap", "LunFormatError", "encode_lun", "decode_lun", "REPORT_LUNS_WLUN", "MAX_LUN"]

#: the REPORT LUNS well-known logical unit (SPC-5 8.2), as :func:`decode_lun` returns it
REPORT_LUNS_WLUN = 0xC101
#: highest LUN a single-level flat-space address can carry
MAX_LUN = 0x3FFF

_REPORT_LUNS_CDB = struct.Struct(">BxB3xIxB")  # opcode, SELECT REPORT, allocation length, control
_REPORT_LUNS_HEADER = struct.Struct(">I4x")  # LUN LIST LENGTH, reserved
_SELECT_ALL = (0x00, 0x02)
_SELECT_WELL_KNOWN = 0x01
_ADDRESS_PERIPHERAL = 0x00
_ADDRESS_FLAT = 0x40
_ADDRESS_EXTENDED = 0xC0


class LunFormatError(ValueError):
    """An 8-byte LUN field this target does not address (multi-level, logical unit
    addressing, or unknown extended formats). The core treats it as a missing LUN."""


def encode_lun(lun: int) -> bytes:
    """The 8-byte SAM-5 LUN for ``lun``: peripheral addressing below 256, flat space above."""
    if lun == REPORT_LUNS_WLUN:
        return bytes((0xC1, 0x01)) + bytes(6)
    if 0 <= lun < 256:
        return bytes((_ADDRESS_PERIPHERAL, lun)) + bytes(6)
    if lun <= MAX_LUN:
        return bytes((_ADDRESS_FLAT | (lun >> 8), lun & 0xFF)) + bytes(6)
    raise LunFormatError(f"LUN {lun} cannot be addressed (0..{MAX_LUN} or the REPORT LUNS W-LUN)")


def decode_lun(field: bytes | bytearray | memoryview) -> int:
    """The LUN number in an 8-byte LUN field (first level only; the rest must be zero)."""
    if len(field) != 8:
        raise LunFormatError(f"LUN field must be 8 bytes, got {len(field)}")
    b0, b1 = field[0], field[1]
    if any(field[2:]):
        raise LunFormatError(f"multi-level LUN {bytes(field).hex()} is not supported")
    method = b0 & 0xC0
    if method == _ADDRESS_PERIPHERAL:
        if b0:  # a bus identifier: a LUN behind a SCSI bus bridge we do not have
            raise LunFormatError(f"peripheral LUN with bus {b0} is not supported")
        return b1
    if method == _ADDRESS_FLAT:
        return ((b0 & 0x3F) << 8) | b1
    if b0 == 0xC1 and b1 == 0x01:
        return REPORT_LUNS_WLUN
    raise LunFormatError(f"LUN {bytes(field).hex()} uses an unsupported address method")


class LunMap:
    """LUN -> :class:`LogicalUnit` for one target, plus REPORT LUNS and missing-LUN answers."""

    def __init__(self, luns: Mapping[int, LogicalUnit] | None = None, *, vendor: str = "DATAMOVR") -> None:
        self._luns: dict[int, LogicalUnit] = {}
        self._vendor = vendor.encode("ascii", "replace")[:8].ljust(8, b" ")
        for lun, lu in (luns or {}).items():
            self.add(lun, lu)

    # ------------------------------------------------------------------ the map
    def add(self, lun: int, lu: LogicalUnit) -> None:
        """Map ``lu`` at ``lun``; the other LUs' nexuses learn that the inventory changed."""
        if not 0 <= lun <= MAX_LUN:
            raise LunFormatError(f"LUN {lun} is out of 0..{MAX_LUN}")
        if lun in self._luns:
            raise ValueError(f"LUN {lun} is already mapped")
        self._inventory_changed()
        self._luns[lun] = lu
        lu.lunmap = self

    def remove(self, lun: int) -> LogicalUnit:
        lu = self._luns.pop(lun)
        self._inventory_changed()
        return lu

    def _inventory_changed(self) -> None:
        for lu in self._luns.values():
            lu.establish_ua(REPORTED_LUNS_DATA_HAS_CHANGED)

    def get(self, lun: int) -> LogicalUnit | None:
        return self._luns.get(lun)

    def __getitem__(self, lun: int) -> LogicalUnit:
        return self._luns[lun]

    def __contains__(self, lun: object) -> bool:
        return lun in self._luns

    def __len__(self) -> int:
        return len(self._luns)

    def __iter__(self) -> Iterator[int]:
        return iter(sorted(self._luns))

    def items(self) -> list[tuple[int, LogicalUnit]]:
        return sorted(self._luns.items())

    # ------------------------------------------------------------- the two calls
    def prepare(self, lun: int, cdb: bytes) -> CommandPlan:
        """As :meth:`LogicalUnit.prepare`, for the LU at ``lun`` (or the missing-LUN rules)."""
        try:
            if cdb and cdb[0] == Opcode.REPORT_LUNS:
                _, alloc = self._decode_report_luns(cdb)
                return CommandPlan("read", 0, alloc) if alloc else PLAN_NONE
            lu = self._luns.get(lun)
            if lu is not None:
                return lu.prepare(cdb)
            return self._prepare_missing(cdb)
        except ScsiError as exc:
            return CommandPlan("none", 0, 0, exc.sense, exc.status)

    def execute(self, lun: int, request: ScsiRequest) -> ScsiResult:
        """As :meth:`LogicalUnit.execute`, for the LU at ``lun`` (or the missing-LUN rules)."""
        cdb = request.cdb
        lu = self._luns.get(lun)
        try:
            if cdb and cdb[0] == Opcode.REPORT_LUNS:
                if lu is not None:
                    # answering REPORT LUNS clears the "inventory changed" attention (SPC-5 6.33)
                    queue = lu.unit_attentions.register(request.nexus)
                    if REPORTED_LUNS_DATA_HAS_CHANGED in queue:
                        queue.remove(REPORTED_LUNS_DATA_HAS_CHANGED)
                return self._report_luns(cdb)
            if lu is not None:
                return lu.execute(request)
            return self._execute_missing(cdb)
        except ScsiError as exc:
            sense = exc.sense if lu is None or exc.sense is None else exc.sense.as_descriptor(lu.d_sense)
            return ScsiResult(exc.status, sense)

    # ----------------------------------------------------------- task management
    def lu_reset(self, lun: int) -> bool:
        """LOGICAL UNIT RESET; False when no LU is mapped there (TMF response 2)."""
        lu = self._luns.get(lun)
        if lu is None:
            return False
        lu.lu_reset()
        return True

    def target_reset(self, cold: bool = False) -> None:
        """TARGET WARM/COLD RESET: every LU is reset."""
        for lu in self._luns.values():
            lu.target_reset(cold)

    def abort_task_set(self, lun: int, nexus: str) -> bool:
        lu = self._luns.get(lun)
        if lu is None:
            return False
        lu.abort_task_set(nexus)
        return True

    def nexus_lost(self, nexus: str) -> None:
        """The session of ``nexus`` ended: tell every LU."""
        for lu in self._luns.values():
            lu.nexus_lost(nexus)

    # --------------------------------------------------------------- REPORT LUNS
    @staticmethod
    def _decode_report_luns(cdb: bytes | bytearray | memoryview) -> tuple[int, int]:
        check_length(cdb, 12)
        check_reserved(cdb, 1)
        for byte in (3, 4, 5, 10):
            check_reserved(cdb, byte)
        check_control(cdb, 12)
        _, select, alloc, _ = _REPORT_LUNS_CDB.unpack_from(cdb)
        if select not in _SELECT_ALL and select != _SELECT_WELL_KNOWN:
            raise ScsiError(invalid_field_in_cdb(2))
        return select, alloc

    def _report_luns(self, cdb: bytes | bytearray | memoryview) -> ScsiResult:
        select, alloc = self._decode_report_luns(cdb)
        # no well-known LU is reported: the REPORT LUNS W-LUN is answered but not listed
        luns = sorted(self._luns) if select in _SELECT_ALL else []
        body = b"".join(encode_lun(lun) for lun in luns)
        data = _REPORT_LUNS_HEADER.pack(len(body)) + body
        return ScsiResult(ScsiStatus.GOOD, None, alloc_truncate(data, alloc))

    # ----------------------------------------------------------------- no LU here
    def _prepare_missing(self, cdb: bytes) -> CommandPlan:
        if not cdb:
            raise ScsiError(INVALID_OPCODE)
        if cdb[0] == Opcode.INQUIRY:
            check_control(cdb, 6)
            evpd, page, alloc = decode_inquiry(cdb)
            if evpd and page != VpdPage.SUPPORTED_PAGES:
                raise ScsiError(invalid_field_in_cdb(2))
            return CommandPlan("read", 0, alloc) if alloc else PLAN_NONE
        if cdb[0] == Opcode.REQUEST_SENSE:
            check_length(cdb, 6)
            return CommandPlan("read", 0, cdb[4]) if cdb[4] else PLAN_NONE
        raise ScsiError(LUN_NOT_SUPPORTED)

    def _execute_missing(self, cdb: bytes | bytearray | memoryview) -> ScsiResult:
        if not cdb:
            raise ScsiError(INVALID_OPCODE)
        if cdb[0] == Opcode.INQUIRY:
            check_control(cdb, 6)
            evpd, page, alloc = decode_inquiry(cdb)
            if evpd:
                if page != VpdPage.SUPPORTED_PAGES:
                    raise ScsiError(invalid_field_in_cdb(2))
                data = bytes((INQUIRY_NO_LUN, VpdPage.SUPPORTED_PAGES, 0, 1, VpdPage.SUPPORTED_PAGES))
            else:
                data = standard_inquiry_data(
                    INQUIRY_NO_LUN, self._vendor, b"NO LUN".ljust(16), b"0000", cmdque=False
                )
            return ScsiResult(ScsiStatus.GOOD, None, alloc_truncate(data, alloc))
        if cdb[0] == Opcode.REQUEST_SENSE:
            check_length(cdb, 6)
            data = LUN_NOT_SUPPORTED.as_descriptor(bool(cdb[1] & 0x01)).encode()
            return ScsiResult(ScsiStatus.GOOD, None, alloc_truncate(data, cdb[4]))
        raise ScsiError(LUN_NOT_SUPPORTED)

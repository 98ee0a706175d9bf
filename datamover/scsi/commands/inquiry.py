"""INQUIRY (SPC-5 6.7): standard data and the vital product data pages.

VPD pages are builders in a per-LU dict (``lu.vpd_pages``: page code -> function of the
LU returning the whole page), so a later family adds its page (B2h for thin
provisioning, 86h for extended INQUIRY) by registering one more builder; page 00h is
computed from that dict.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from datamover.scsi.cdb import alloc_truncate, check_length, check_reserved
from datamover.scsi.command import PLAN_NONE, CommandPlan, ScsiRequest, ScsiResult
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import (
    INQUIRY_VERSION_SPC4,
    VERSION_ISCSI,
    VERSION_SAM5,
    VERSION_SBC3,
    VERSION_SPC4,
    Opcode,
    VpdPage,
)
from datamover.scsi.sense import ScsiError, invalid_field_in_cdb

if TYPE_CHECKING:
    from datamover.scsi.lu import LogicalUnit

__all__ = [
    "COMMANDS",
    "DEFAULT_VPD_PAGES",
    "BlockLimits",
    "VpdBuilder",
    "designator",
    "standard_inquiry_data",
]

VpdBuilder = Callable[["LogicalUnit"], bytes]

#: standard INQUIRY data, 96 bytes: byte 0..7, vendor, product, revision, 20 vendor
#: bytes, byte 56, reserved, 8 version descriptors, 22 reserved
_STANDARD = struct.Struct(">8B8s16s4s20x2x8H22x")
_VPD_HEADER = struct.Struct(">BBH")
_DESIGNATOR_HEADER = struct.Struct(">BBxB")
#: block limits page (SBC-4 6.6.4), 64 bytes
_BLOCK_LIMITS = struct.Struct(">BBHBBHIIIIIIIQIIIII")
_BLOCK_CHARACTERISTICS = struct.Struct(">BBHHBB56x")

_HISUP_FORMAT2 = 0x12  # HISUP=1, RESPONSE DATA FORMAT=2
_CMDQUE = 0x02
_EVPD = 0x01
_CMDDT = 0x02
_NON_ROTATING = 0x0001
_WABEREQ_READ_OK = 0x40
_WACEREQ_READ_OK = 0x10

CODE_SET_BINARY = 0x1
CODE_SET_ASCII = 0x2
ASSOC_LU = 0x0
ASSOC_TARGET_PORT = 0x1
ASSOC_TARGET_DEVICE = 0x2
DESIGNATOR_T10_VENDOR = 0x1
DESIGNATOR_EUI64 = 0x2
DESIGNATOR_NAA = 0x3
DESIGNATOR_RELATIVE_TARGET_PORT = 0x4
DESIGNATOR_TARGET_PORT_GROUP = 0x5
DESIGNATOR_SCSI_NAME = 0x8


def designator(code_set: int, association: int, dtype: int, data: bytes, protocol: int | None = None) -> bytes:
    """One identification descriptor of VPD page 83h (SPC-5 7.7.6.1)."""
    b0 = code_set | ((protocol << 4) if protocol is not None else 0)
    b1 = (0x80 if protocol is not None else 0) | (association << 4) | dtype
    return _DESIGNATOR_HEADER.pack(b0, b1, len(data)) + data


def standard_inquiry_data(
    peripheral: int,
    vendor: bytes,
    product: bytes,
    revision: bytes,
    *,
    cmdque: bool = True,
    byte5: int = 0,
    removable: bool = False,
) -> bytes:
    """The 96-byte standard INQUIRY data; ``peripheral`` is byte 0 (qualifier + type)."""
    return _STANDARD.pack(
        peripheral,
        0x80 if removable else 0,  # RMB
        INQUIRY_VERSION_SPC4,
        _HISUP_FORMAT2,
        _STANDARD.size - 5,
        byte5,  # SCCS, ACC, TPGS, 3PC, PROTECT: none yet
        0,
        _CMDQUE if cmdque else 0,
        vendor,
        product,
        revision,
        VERSION_SAM5,
        VERSION_ISCSI,
        VERSION_SPC4,
        VERSION_SBC3,
        0,
        0,
        0,
        0,
    )


@dataclass(slots=True)
class BlockLimits:
    """The fields of the block limits VPD page (B0h) in blocks; later families set theirs
    (UNMAP, WRITE SAME, COMPARE AND WRITE, atomics) on ``lu.block_limits``."""

    max_transfer_length: int
    optimal_transfer_length: int
    optimal_granularity: int
    max_compare_and_write_length: int = 0
    max_prefetch_length: int = 0
    max_unmap_lba_count: int = 0
    max_unmap_descriptor_count: int = 0
    optimal_unmap_granularity: int = 0
    unmap_granularity_alignment: int | None = None
    max_write_same_length: int = 0
    wsnz: bool = False
    max_atomic_transfer_length: int = 0
    atomic_alignment: int = 0
    atomic_granularity: int = 0


# ----------------------------------------------------------------------- VPD builders
def _page(lu: LogicalUnit, code: int, body: bytes) -> bytes:
    return _VPD_HEADER.pack(lu.peripheral, code, len(body)) + body


def _vpd_supported(lu: LogicalUnit) -> bytes:
    return _page(lu, VpdPage.SUPPORTED_PAGES, bytes(sorted(lu.vpd_pages)))


def _vpd_serial(lu: LogicalUnit) -> bytes:
    return _page(lu, VpdPage.UNIT_SERIAL_NUMBER, lu.serial.encode("ascii"))


def _vpd_device_id(lu: LogicalUnit) -> bytes:
    dev = lu.device_id
    dtype = DESIGNATOR_NAA if dev[0] >> 4 in (2, 3, 5, 6) else DESIGNATOR_EUI64
    body = [
        designator(CODE_SET_BINARY, ASSOC_LU, dtype, dev),
        designator(CODE_SET_ASCII, ASSOC_LU, DESIGNATOR_T10_VENDOR, lu.vendor + lu.serial.encode("ascii")),
    ]
    body.extend(lu.extra_designators)
    return _page(lu, VpdPage.DEVICE_IDENTIFICATION, b"".join(body))


def _vpd_block_limits(lu: LogicalUnit) -> bytes:
    lim = lu.block_limits
    uga = 0 if lim.unmap_granularity_alignment is None else 0x8000_0000 | lim.unmap_granularity_alignment
    return _BLOCK_LIMITS.pack(
        lu.peripheral,
        VpdPage.BLOCK_LIMITS,
        _BLOCK_LIMITS.size - 4,
        1 if lim.wsnz else 0,
        lim.max_compare_and_write_length,
        lim.optimal_granularity,
        lim.max_transfer_length,
        lim.optimal_transfer_length,
        lim.max_prefetch_length,
        lim.max_unmap_lba_count,
        lim.max_unmap_descriptor_count,
        lim.optimal_unmap_granularity,
        uga,
        lim.max_write_same_length,
        lim.max_atomic_transfer_length,
        lim.atomic_alignment,
        lim.atomic_granularity,
        0,  # maximum atomic transfer length with atomic boundary
        0,  # maximum atomic boundary size
    )


def _vpd_block_characteristics(lu: LogicalUnit) -> bytes:
    # non-rotating medium (an SSD-like LUN), no product type, no form factor; WABEREQ and
    # WACEREQ 01b: after a SANITIZE block or crypto erase, reads succeed (and return zeros)
    return _BLOCK_CHARACTERISTICS.pack(
        lu.peripheral, VpdPage.BLOCK_DEVICE_CHARACTERISTICS, _BLOCK_CHARACTERISTICS.size - 4, _NON_ROTATING, 0,
        _WABEREQ_READ_OK | _WACEREQ_READ_OK,
    )


DEFAULT_VPD_PAGES: dict[int, VpdBuilder] = {
    VpdPage.SUPPORTED_PAGES: _vpd_supported,
    VpdPage.UNIT_SERIAL_NUMBER: _vpd_serial,
    VpdPage.DEVICE_IDENTIFICATION: _vpd_device_id,
    VpdPage.BLOCK_LIMITS: _vpd_block_limits,
    VpdPage.BLOCK_DEVICE_CHARACTERISTICS: _vpd_block_characteristics,
}


# ---------------------------------------------------------------------------- INQUIRY
def decode_inquiry(cdb: bytes | bytearray | memoryview) -> tuple[bool, int, int]:
    """``(evpd, page code, allocation length)``, reserved and obsolete fields checked."""
    check_length(cdb, 6)
    if cdb[1] & _CMDDT:
        raise ScsiError(invalid_field_in_cdb(1, 1))
    check_reserved(cdb, 1, 0xFC)
    evpd = bool(cdb[1] & _EVPD)
    page = cdb[2]
    if not evpd and page:
        raise ScsiError(invalid_field_in_cdb(2))
    return evpd, page, int.from_bytes(cdb[3:5], "big")


def _prepare_inquiry(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
    evpd, page, alloc = decode_inquiry(cdb)
    if evpd and page not in lu.vpd_pages:
        raise ScsiError(invalid_field_in_cdb(2))
    return CommandPlan("read", 0, alloc) if alloc else PLAN_NONE


def _execute_inquiry(lu: LogicalUnit, req: ScsiRequest) -> ScsiResult:
    evpd, page, alloc = decode_inquiry(req.cdb)
    if evpd:
        builder = lu.vpd_pages.get(page)
        if builder is None:
            raise ScsiError(invalid_field_in_cdb(2))
        data = builder(lu)
    else:
        data = standard_inquiry_data(
            lu.peripheral, lu.vendor, lu.product, lu.revision, byte5=lu.inquiry_byte5, removable=lu.removable
        )
    return ScsiResult(0, None, alloc_truncate(data, alloc))


COMMANDS: tuple[CommandSpec, ...] = (
    CommandSpec(Opcode.INQUIRY, "INQUIRY", _prepare_inquiry, _execute_inquiry, ua_exempt=True),
)

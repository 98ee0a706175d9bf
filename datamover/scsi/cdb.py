"""Small helpers for decoding CDBs: lengths, reserved bits, the CONTROL byte.

Every helper raises :class:`~datamover.scsi.sense.ScsiError` carrying INVALID FIELD IN
CDB with a field pointer, which is what initiators (and libiscsi's tests) look for.
"""

from __future__ import annotations

from datamover.scsi.sense import INVALID_OPCODE, ScsiError, invalid_field_in_cdb

__all__ = ["cdb_length", "check_length", "check_reserved", "check_control", "alloc_truncate"]

#: CDB length by group code (opcode bits 7-5), SPC-5 4.2.5.1; 0 means variable/vendor.
_GROUP_LENGTH = (6, 10, 10, 0, 16, 12, 0, 0)

_CONTROL_NACA = 0x04
_CONTROL_LINK = 0x01


def cdb_length(opcode: int) -> int:
    """The fixed CDB length of ``opcode``'s group (0 for variable-length and vendor groups)."""
    return _GROUP_LENGTH[opcode >> 5]


def check_length(cdb: bytes | bytearray | memoryview, length: int) -> None:
    """Refuse a CDB shorter than its opcode needs (iSCSI pads CDBs to 16 bytes)."""
    if len(cdb) < length:
        raise ScsiError(INVALID_OPCODE if not cdb else invalid_field_in_cdb(len(cdb)))


def check_reserved(cdb: bytes | bytearray | memoryview, byte: int, mask: int = 0xFF) -> None:
    """INVALID FIELD IN CDB pointing at the highest offending bit if ``cdb[byte] & mask``."""
    bad = cdb[byte] & mask
    if bad:
        raise ScsiError(invalid_field_in_cdb(byte, bad.bit_length() - 1))


def check_control(cdb: bytes | bytearray | memoryview, length: int) -> None:
    """NACA=1 needs ACA support (SAM-5 5.11) and LINK is obsolete: refuse both."""
    control = cdb[length - 1]
    if control & _CONTROL_NACA:
        raise ScsiError(invalid_field_in_cdb(length - 1, 2))
    if control & _CONTROL_LINK:
        raise ScsiError(invalid_field_in_cdb(length - 1, 0))


def alloc_truncate(data: bytes, alloc: int) -> bytes:
    """Return at most ``alloc`` bytes (SPC-5 4.2.5.6: never an error to truncate)."""
    return data if len(data) <= alloc else data[:alloc]

"""Sense data (SPC-5 4.4): the :class:`Sense` value, its two wire formats, and the
:class:`ScsiError` that command handlers raise.

A handler never builds a response by hand: it raises ``ScsiError(SOME_SENSE)`` and the
logical unit turns that into CHECK CONDITION with the sense bytes encoded in the format
the LU is configured for (fixed unless the control mode page's D_SENSE bit is set).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from datamover.scsi.constants import ScsiStatus, SenseKey

__all__ = [
    "Sense",
    "SenseFormatError",
    "ScsiError",
    "field_pointer",
    "invalid_field_in_cdb",
    "invalid_field_in_parameter_list",
]

#: fixed format (SPC-5 4.4.3): code, segment, key, information, additional length,
#: command-specific information, ASC, ASCQ, FRU code, sense-key specific (3 bytes)
_FIXED = struct.Struct(">BBBIBIBBB3s")
_FIXED_LEN = _FIXED.size  # 18
#: descriptor format header (SPC-5 4.4.2): code, key, ASC, ASCQ, 3 reserved, additional length
_DESC_HEADER = struct.Struct(">BBBB3xB")
#: information descriptor (type 00h): type, additional length 0Ah, VALID, reserved, information
_DESC_INFO = struct.Struct(">BBBxQ")
#: sense-key specific descriptor (type 02h): type, additional length 06h, 2 reserved, SKS, reserved
_DESC_SKS = struct.Struct(">BB2x3sx")

_RESPONSE_FIXED = 0x70
_RESPONSE_FIXED_DEFERRED = 0x71
_RESPONSE_DESC = 0x72
_RESPONSE_DESC_DEFERRED = 0x73
_VALID = 0x80
_SKSV = 0x80
_DESC_TYPE_INFORMATION = 0x00
_DESC_TYPE_SKS = 0x02


class SenseFormatError(ValueError):
    """Bytes that are not sense data, or a :class:`Sense` that cannot be encoded."""


@dataclass(frozen=True, slots=True)
class Sense:
    """One sense condition: key, additional sense code and qualifier, and the optional
    INFORMATION and sense-key-specific fields.

    ``sks`` is the 3-byte sense-key-specific field exactly as on the wire, SKSV bit
    included (build it with :func:`field_pointer`). ``descriptor`` picks the encoding:
    fixed (70h, 18 bytes) or descriptor (72h). In fixed format INFORMATION is 32 bits;
    a larger value needs ``descriptor=True``.
    """

    key: int
    asc: int
    ascq: int
    information: int | None = None
    sks: bytes | None = None
    descriptor: bool = False

    def __post_init__(self) -> None:
        if not 0 <= self.key <= 0xF:
            raise SenseFormatError(f"sense key {self.key!r} is not 0..15")
        if not (0 <= self.asc <= 0xFF and 0 <= self.ascq <= 0xFF):
            raise SenseFormatError(f"ASC/ASCQ {self.asc!r}/{self.ascq!r} out of 0..255")
        if self.information is not None:
            limit = 0xFFFF_FFFF_FFFF_FFFF if self.descriptor else 0xFFFF_FFFF
            if not 0 <= self.information <= limit:
                raise SenseFormatError(
                    f"INFORMATION {self.information:#x} does not fit the "
                    f"{'descriptor' if self.descriptor else 'fixed'} format"
                )
        if self.sks is not None and (len(self.sks) != 3 or not self.sks[0] & _SKSV):
            raise SenseFormatError("sense-key specific field must be 3 bytes with SKSV set")

    # ------------------------------------------------------------------ encoding
    def encode(self) -> bytes:
        """The sense data bytes: fixed format (18 bytes) or descriptor format."""
        if not self.descriptor:
            info = self.information
            return _FIXED.pack(
                _RESPONSE_FIXED | (_VALID if info is not None else 0),
                0,
                self.key,
                info or 0,
                _FIXED_LEN - 8,
                0,
                self.asc,
                self.ascq,
                0,
                self.sks or b"\0\0\0",
            )
        parts = []
        if self.information is not None:
            parts.append(_DESC_INFO.pack(_DESC_TYPE_INFORMATION, 0x0A, _VALID, self.information))
        if self.sks is not None:
            parts.append(_DESC_SKS.pack(_DESC_TYPE_SKS, 0x06, self.sks))
        body = b"".join(parts)
        return _DESC_HEADER.pack(_RESPONSE_DESC, self.key, self.asc, self.ascq, len(body)) + body

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Sense:
        """Parse sense data in either format (current or deferred errors alike).

        Raises :class:`SenseFormatError` for an unknown response code or truncated data.
        """
        data = bytes(data)
        if not data:
            raise SenseFormatError("empty sense data")
        code = data[0] & 0x7F
        if code in (_RESPONSE_FIXED, _RESPONSE_FIXED_DEFERRED):
            if len(data) < 14:
                raise SenseFormatError(f"fixed-format sense data of {len(data)} bytes is too short")
            padded = data[:_FIXED_LEN].ljust(_FIXED_LEN, b"\0")
            _, _, key, info, _, _, asc, ascq, _, fixed_sks = _FIXED.unpack(padded)
            return cls(
                key & 0x0F,
                asc,
                ascq,
                info if data[0] & _VALID else None,
                fixed_sks if fixed_sks[0] & _SKSV else None,
                False,
            )
        if code in (_RESPONSE_DESC, _RESPONSE_DESC_DEFERRED):
            if len(data) < _DESC_HEADER.size:
                raise SenseFormatError(f"descriptor-format sense data of {len(data)} bytes is too short")
            _, key, asc, ascq, add_len = _DESC_HEADER.unpack_from(data)
            end = min(len(data), _DESC_HEADER.size + add_len)
            information: int | None = None
            sks: bytes | None = None
            pos = _DESC_HEADER.size
            while pos + 2 <= end:
                dtype, dlen = data[pos], data[pos + 1]
                if pos + 2 + dlen > end:
                    raise SenseFormatError(f"sense descriptor {dtype:#x} overruns the sense data")
                if dtype == _DESC_TYPE_INFORMATION and dlen == 0x0A:
                    _, _, valid, value = _DESC_INFO.unpack_from(data, pos)
                    if valid & _VALID:
                        information = value
                elif dtype == _DESC_TYPE_SKS and dlen == 0x06:
                    _, _, field = _DESC_SKS.unpack_from(data, pos)
                    if field[0] & _SKSV:
                        sks = field
                pos += 2 + dlen
            return cls(key & 0x0F, asc, ascq, information, sks, True)
        raise SenseFormatError(f"sense response code {data[0]:#04x} is not 70h-73h")

    # ------------------------------------------------------------------- helpers
    def as_descriptor(self, descriptor: bool) -> Sense:
        """The same condition in the other format (no-op when it already matches)."""
        return self if self.descriptor == descriptor else replace(self, descriptor=descriptor)

    @property
    def field_pointer(self) -> tuple[bool, int, int | None] | None:
        """Decoded field pointer ``(in_cdb, byte, bit or None)`` for ILLEGAL REQUEST."""
        if self.sks is None or self.key != SenseKey.ILLEGAL_REQUEST:
            return None
        b0 = self.sks[0]
        bit = b0 & 0x07 if b0 & 0x08 else None
        return bool(b0 & 0x40), int.from_bytes(self.sks[1:], "big"), bit

    def __str__(self) -> str:
        try:
            key = SenseKey(self.key).name
        except ValueError:  # pragma: no cover - every 0..15 value is named
            key = str(self.key)
        return f"{key} {self.asc:02X}h/{self.ascq:02X}h"


def field_pointer(byte: int, bit: int | None = None, *, cdb: bool = True) -> bytes:
    """The sense-key specific field pointer (SPC-5 4.4.2.4.2): SKSV, C/D, BPV, bit, byte."""
    if not 0 <= byte <= 0xFFFF:
        raise ValueError(f"field pointer byte {byte} out of 0..65535")
    b0 = _SKSV | (0x40 if cdb else 0)
    if bit is not None:
        if not 0 <= bit <= 7:
            raise ValueError(f"field pointer bit {bit} out of 0..7")
        b0 |= 0x08 | bit
    return bytes((b0, byte >> 8, byte & 0xFF))


# ----------------------------------------------------------------- common conditions
NO_SENSE = Sense(SenseKey.NO_SENSE, 0x00, 0x00)
NOT_READY = Sense(SenseKey.NOT_READY, 0x04, 0x00)  # LOGICAL UNIT NOT READY, CAUSE NOT REPORTABLE
NOT_READY_BECOMING_READY = Sense(SenseKey.NOT_READY, 0x04, 0x01)
NOT_READY_MANUAL_INTERVENTION = Sense(SenseKey.NOT_READY, 0x04, 0x03)
MEDIUM_NOT_PRESENT = Sense(SenseKey.NOT_READY, 0x3A, 0x00)
WRITE_ERROR = Sense(SenseKey.MEDIUM_ERROR, 0x0C, 0x00)
UNRECOVERED_READ_ERROR = Sense(SenseKey.MEDIUM_ERROR, 0x11, 0x00)
INTERNAL_TARGET_FAILURE = Sense(SenseKey.HARDWARE_ERROR, 0x44, 0x00)
PARAMETER_LIST_LENGTH_ERROR = Sense(SenseKey.ILLEGAL_REQUEST, 0x1A, 0x00)
INVALID_OPCODE = Sense(SenseKey.ILLEGAL_REQUEST, 0x20, 0x00)
LBA_OUT_OF_RANGE = Sense(SenseKey.ILLEGAL_REQUEST, 0x21, 0x00)
INVALID_FIELD_IN_CDB = Sense(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00)
LUN_NOT_SUPPORTED = Sense(SenseKey.ILLEGAL_REQUEST, 0x25, 0x00)
INVALID_FIELD_IN_PARAMETER_LIST = Sense(SenseKey.ILLEGAL_REQUEST, 0x26, 0x00)
SAVING_PARAMETERS_NOT_SUPPORTED = Sense(SenseKey.ILLEGAL_REQUEST, 0x39, 0x00)
INVALID_FIELD_IN_INFORMATION_UNIT = Sense(SenseKey.ILLEGAL_REQUEST, 0x0E, 0x03)
POWER_ON_RESET = Sense(SenseKey.UNIT_ATTENTION, 0x29, 0x00)
POWER_ON_OCCURRED = Sense(SenseKey.UNIT_ATTENTION, 0x29, 0x01)
BUS_DEVICE_RESET = Sense(SenseKey.UNIT_ATTENTION, 0x29, 0x03)
I_T_NEXUS_LOSS = Sense(SenseKey.UNIT_ATTENTION, 0x29, 0x07)
MODE_PARAMETERS_CHANGED = Sense(SenseKey.UNIT_ATTENTION, 0x2A, 0x01)
CAPACITY_DATA_HAS_CHANGED = Sense(SenseKey.UNIT_ATTENTION, 0x2A, 0x09)
COMMANDS_CLEARED_BY_ANOTHER_INITIATOR = Sense(SenseKey.UNIT_ATTENTION, 0x2F, 0x00)
REPORTED_LUNS_DATA_HAS_CHANGED = Sense(SenseKey.UNIT_ATTENTION, 0x3F, 0x0E)
WRITE_PROTECTED = Sense(SenseKey.DATA_PROTECT, 0x27, 0x00)
MEDIUM_REMOVAL_PREVENTED = Sense(SenseKey.ILLEGAL_REQUEST, 0x53, 0x02)
RESERVATIONS_PREEMPTED = Sense(SenseKey.UNIT_ATTENTION, 0x2A, 0x03)
RESERVATIONS_RELEASED = Sense(SenseKey.UNIT_ATTENTION, 0x2A, 0x04)
REGISTRATIONS_PREEMPTED = Sense(SenseKey.UNIT_ATTENTION, 0x2A, 0x05)
INSUFFICIENT_REGISTRATION_RESOURCES = Sense(SenseKey.ILLEGAL_REQUEST, 0x55, 0x04)
SANITIZE_IN_PROGRESS = Sense(SenseKey.NOT_READY, 0x04, 0x1B)
MEDIUM_FORMAT_CORRUPTED = Sense(SenseKey.MEDIUM_ERROR, 0x31, 0x00)
SANITIZE_FAILED = Sense(SenseKey.MEDIUM_ERROR, 0x31, 0x03)
SPACE_ALLOCATION_FAILED_WRITE_PROTECT = Sense(SenseKey.DATA_PROTECT, 0x27, 0x07)
MISCOMPARE = Sense(SenseKey.MISCOMPARE, 0x1D, 0x00)  # MISCOMPARE DURING VERIFY OPERATION
ABORTED_COMMAND = Sense(SenseKey.ABORTED_COMMAND, 0x00, 0x00)


def invalid_field_in_cdb(byte: int, bit: int | None = None) -> Sense:
    """ILLEGAL REQUEST / INVALID FIELD IN CDB with a field pointer to ``byte``/``bit``."""
    return Sense(SenseKey.ILLEGAL_REQUEST, 0x24, 0x00, sks=field_pointer(byte, bit))


def invalid_field_in_parameter_list(byte: int, bit: int | None = None) -> Sense:
    """ILLEGAL REQUEST / INVALID FIELD IN PARAMETER LIST pointing into the data-out."""
    return Sense(SenseKey.ILLEGAL_REQUEST, 0x26, 0x00, sks=field_pointer(byte, bit, cdb=False))


class ScsiError(Exception):
    """Raised by a command handler to end the command with a non-GOOD status.

    ``status`` is CHECK CONDITION unless given (RESERVATION CONFLICT and BUSY carry no
    sense). The logical unit catches it and builds the :class:`~datamover.scsi.command.ScsiResult`.
    """

    def __init__(self, sense: Sense | None, status: int = ScsiStatus.CHECK_CONDITION) -> None:
        super().__init__(str(sense) if sense is not None else ScsiStatus(status).name)
        self.sense: Sense | None = sense
        self.status: int = status

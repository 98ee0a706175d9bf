"""SCSI numbers shared by the logical-unit emulation (SAM-5, SPC-5, SBC-4).

Only numbers live here: status codes, sense keys, operation codes, service actions, VPD
and mode page codes. Command families import what they need; the iSCSI core imports
:class:`ScsiStatus` to fill the SCSI Response.
"""

from __future__ import annotations

from enum import IntEnum


class ScsiStatus(IntEnum):
    """SCSI status codes (SAM-5 5.3.1), as carried in the iSCSI SCSI Response."""

    GOOD = 0x00
    CHECK_CONDITION = 0x02
    CONDITION_MET = 0x04
    BUSY = 0x08
    RESERVATION_CONFLICT = 0x18
    TASK_SET_FULL = 0x28
    ACA_ACTIVE = 0x30
    TASK_ABORTED = 0x40


class SenseKey(IntEnum):
    """Sense keys (SPC-5 table 49)."""

    NO_SENSE = 0x0
    RECOVERED_ERROR = 0x1
    NOT_READY = 0x2
    MEDIUM_ERROR = 0x3
    HARDWARE_ERROR = 0x4
    ILLEGAL_REQUEST = 0x5
    UNIT_ATTENTION = 0x6
    DATA_PROTECT = 0x7
    BLANK_CHECK = 0x8
    VENDOR_SPECIFIC = 0x9
    COPY_ABORTED = 0xA
    ABORTED_COMMAND = 0xB
    RESERVED_C = 0xC
    VOLUME_OVERFLOW = 0xD
    MISCOMPARE = 0xE
    COMPLETED = 0xF


class Opcode(IntEnum):
    """Operation codes: those implemented now and those later families will claim.

    Keeping the later ones here (unregistered) lets a new command-family module add its
    handler without touching this file.
    """

    TEST_UNIT_READY = 0x00
    REQUEST_SENSE = 0x03
    FORMAT_UNIT = 0x04
    READ_6 = 0x08
    WRITE_6 = 0x0A
    INQUIRY = 0x12
    MODE_SELECT_6 = 0x15
    RESERVE_6 = 0x16
    RELEASE_6 = 0x17
    MODE_SENSE_6 = 0x1A
    START_STOP_UNIT = 0x1B
    SEND_DIAGNOSTIC = 0x1D
    PREVENT_ALLOW_MEDIUM_REMOVAL = 0x1E
    READ_CAPACITY_10 = 0x25
    READ_10 = 0x28
    WRITE_10 = 0x2A
    WRITE_AND_VERIFY_10 = 0x2E
    VERIFY_10 = 0x2F
    PRE_FETCH_10 = 0x34
    SYNCHRONIZE_CACHE_10 = 0x35
    READ_DEFECT_DATA_10 = 0x37
    WRITE_BUFFER = 0x3B
    READ_BUFFER = 0x3C
    WRITE_SAME_10 = 0x41
    UNMAP = 0x42
    SANITIZE = 0x48
    GET_LBA_STATUS_OLD = 0x44
    LOG_SELECT = 0x4C
    LOG_SENSE = 0x4D
    MODE_SELECT_10 = 0x55
    RESERVE_10 = 0x56
    RELEASE_10 = 0x57
    MODE_SENSE_10 = 0x5A
    PERSISTENT_RESERVE_IN = 0x5E
    PERSISTENT_RESERVE_OUT = 0x5F
    EXTENDED_COPY = 0x83
    RECEIVE_COPY_RESULTS = 0x84
    READ_16 = 0x88
    COMPARE_AND_WRITE = 0x89
    WRITE_16 = 0x8A
    ORWRITE_16 = 0x8B
    WRITE_AND_VERIFY_16 = 0x8E
    VERIFY_16 = 0x8F
    PRE_FETCH_16 = 0x90
    SYNCHRONIZE_CACHE_16 = 0x91
    WRITE_SAME_16 = 0x93
    WRITE_ATOMIC_16 = 0x9C
    SERVICE_ACTION_IN_16 = 0x9E
    SERVICE_ACTION_OUT_16 = 0x9F
    REPORT_LUNS = 0xA0
    MAINTENANCE_IN = 0xA3
    MAINTENANCE_OUT = 0xA4
    READ_12 = 0xA8
    WRITE_12 = 0xAA
    WRITE_AND_VERIFY_12 = 0xAE
    VERIFY_12 = 0xAF
    READ_DEFECT_DATA_12 = 0xB7


class ServiceActionIn16(IntEnum):
    """Service actions of SERVICE ACTION IN(16) (opcode 0x9E)."""

    READ_CAPACITY_16 = 0x10
    READ_LONG_16 = 0x11
    GET_LBA_STATUS = 0x12


class MaintenanceIn(IntEnum):
    """Service actions of MAINTENANCE IN (opcode 0xA3)."""

    REPORT_TARGET_PORT_GROUPS = 0x0A
    REPORT_SUPPORTED_OPERATION_CODES = 0x0C
    REPORT_SUPPORTED_TMFS = 0x0D
    REPORT_TIMESTAMP = 0x0F


class VpdPage(IntEnum):
    """Vital product data pages (SPC-5 7.7, SBC-4 6.6)."""

    SUPPORTED_PAGES = 0x00
    UNIT_SERIAL_NUMBER = 0x80
    DEVICE_IDENTIFICATION = 0x83
    EXTENDED_INQUIRY = 0x86
    BLOCK_LIMITS = 0xB0
    BLOCK_DEVICE_CHARACTERISTICS = 0xB1
    LOGICAL_BLOCK_PROVISIONING = 0xB2


class ModePage(IntEnum):
    """Mode page codes (SPC-5 7.5, SBC-4 6.5)."""

    READ_WRITE_ERROR_RECOVERY = 0x01
    DISCONNECT_RECONNECT = 0x02
    CACHING = 0x08
    CONTROL = 0x0A
    INFORMATIONAL_EXCEPTIONS = 0x1C
    ALL = 0x3F


class PeripheralDeviceType(IntEnum):
    """Peripheral device types (SPC-5 table 150) used by this emulation."""

    DIRECT_ACCESS = 0x00
    WELL_KNOWN_LU = 0x1E
    UNKNOWN = 0x1F


#: Peripheral qualifier 011b: "not capable of supporting a device on this LUN" (SPC-5 6.7.2).
PQ_NOT_CONNECTED = 0x3
#: The INQUIRY byte 0 returned for a LUN that has no logical unit: PQ 011b, type 1Fh.
INQUIRY_NO_LUN = (PQ_NOT_CONNECTED << 5) | PeripheralDeviceType.UNKNOWN

#: Version descriptors (SPC-5 table 155) announced in standard INQUIRY data.
VERSION_SAM5 = 0x00A0
VERSION_SPC4 = 0x0460
VERSION_SBC3 = 0x04C0
VERSION_ISCSI = 0x0960
#: INQUIRY VERSION field: 06h = SPC-4 (07h would claim SPC-5 in full).
INQUIRY_VERSION_SPC4 = 0x06

"""iSCSI opcodes and the code lists carried in PDU fields (RFC 7143 §11, RFC 7144).

Decoded PDUs hold these codes as plain ``int`` (a peer may send a value that no enum
member names, and the core must still see it to answer with a Reject or an error status).
``IntEnum`` members compare equal to those ints, so ``pdu.function == TmfFunction.LU_RESET``
works either way.
"""

from __future__ import annotations

import enum

#: The reserved Initiator Task Tag ("no task") and the "no TTT" Target Transfer Tag.
RESERVED_TAG = 0xFFFFFFFF

#: Length of the Basic Header Segment; every PDU starts with exactly this many bytes.
BHS_LENGTH = 48


class Opcode(enum.IntEnum):
    """PDU opcodes (BHS byte 0, bits 5-0)."""

    # initiator -> target
    NOP_OUT = 0x00
    SCSI_COMMAND = 0x01
    TMF_REQUEST = 0x02
    LOGIN_REQUEST = 0x03
    TEXT_REQUEST = 0x04
    DATA_OUT = 0x05
    LOGOUT_REQUEST = 0x06
    SNACK_REQUEST = 0x10
    # target -> initiator
    NOP_IN = 0x20
    SCSI_RESPONSE = 0x21
    TMF_RESPONSE = 0x22
    LOGIN_RESPONSE = 0x23
    TEXT_RESPONSE = 0x24
    DATA_IN = 0x25
    LOGOUT_RESPONSE = 0x26
    R2T = 0x31
    ASYNC_MESSAGE = 0x32
    REJECT = 0x3F


class TmfFunction(enum.IntEnum):
    """Task Management Function Request, byte 1 bits 6-0 (RFC 7143 §11.5.1, RFC 7144)."""

    ABORT_TASK = 1
    ABORT_TASK_SET = 2
    CLEAR_ACA = 3
    CLEAR_TASK_SET = 4
    LOGICAL_UNIT_RESET = 5
    #: aliases, because every codebase spells this one differently
    LUN_RESET = 5
    LU_RESET = 5
    TARGET_WARM_RESET = 6
    TARGET_COLD_RESET = 7
    TASK_REASSIGN = 8
    QUERY_TASK = 9
    QUERY_TASK_SET = 10
    I_T_NEXUS_RESET = 11
    QUERY_ASYNC_EVENT = 12


class TmfResponseCode(enum.IntEnum):
    """Task Management Function Response, byte 2 (RFC 7143 §11.6.1)."""

    FUNCTION_COMPLETE = 0
    TASK_DOES_NOT_EXIST = 1
    LUN_DOES_NOT_EXIST = 2
    TASK_STILL_ALLEGIANT = 3
    REASSIGN_NOT_SUPPORTED = 4
    FUNCTION_NOT_SUPPORTED = 5
    AUTHORIZATION_FAILED = 6
    FUNCTION_REJECTED = 255


class RejectReason(enum.IntEnum):
    """Reject PDU reason codes, byte 2 (RFC 7143 §11.17.1)."""

    DATA_DIGEST_ERROR = 0x02
    SNACK_REJECT = 0x03
    PROTOCOL_ERROR = 0x04
    COMMAND_NOT_SUPPORTED = 0x05
    IMMEDIATE_COMMAND_REJECTED = 0x06
    TASK_IN_PROGRESS = 0x07
    INVALID_DATA_ACK = 0x08
    INVALID_PDU_FIELD = 0x09
    LONG_OPERATION_REJECTED = 0x0A
    NEGOTIATION_RESET = 0x0B
    WAITING_FOR_LOGOUT = 0x0C


class LoginStatus(enum.IntEnum):
    """Login Response status as one 16-bit value: ``Status-Class << 8 | Status-Detail``."""

    SUCCESS = 0x0000
    TARGET_MOVED_TEMPORARILY = 0x0101
    TARGET_MOVED_PERMANENTLY = 0x0102
    INITIATOR_ERROR = 0x0200
    AUTHENTICATION_FAILURE = 0x0201
    AUTHORIZATION_FAILURE = 0x0202
    NOT_FOUND = 0x0203
    TARGET_REMOVED = 0x0204
    UNSUPPORTED_VERSION = 0x0205
    TOO_MANY_CONNECTIONS = 0x0206
    MISSING_PARAMETER = 0x0207
    CANT_INCLUDE_IN_SESSION = 0x0208
    SESSION_TYPE_NOT_SUPPORTED = 0x0209
    SESSION_DOES_NOT_EXIST = 0x020A
    INVALID_DURING_LOGIN = 0x020B
    TARGET_ERROR = 0x0300
    SERVICE_UNAVAILABLE = 0x0301
    OUT_OF_RESOURCES = 0x0302

    @property
    def status_class(self) -> int:
        """Status-Class (Login Response byte 36): 0 success, 1 redirect, 2 initiator, 3 target."""
        return self.value >> 8

    @property
    def status_detail(self) -> int:
        """Status-Detail (Login Response byte 37)."""
        return self.value & 0xFF


class LogoutReason(enum.IntEnum):
    """Logout Request reason code, byte 1 bits 6-0 (RFC 7143 §11.14.1)."""

    CLOSE_SESSION = 0
    CLOSE_CONNECTION = 1
    REMOVE_CONNECTION_FOR_RECOVERY = 2


class LogoutResponseCode(enum.IntEnum):
    """Logout Response, byte 2 (RFC 7143 §11.15.1)."""

    SUCCESS = 0
    CID_NOT_FOUND = 1
    RECOVERY_NOT_SUPPORTED = 2
    CLEANUP_FAILED = 3


class AsyncEvent(enum.IntEnum):
    """Asynchronous Message AsyncEvent, byte 36 (RFC 7143 §11.9.1)."""

    SCSI_ASYNC_EVENT = 0
    LOGOUT_REQUESTED = 1
    CONNECTION_DROP = 2
    ALL_CONNECTIONS_DROP = 3
    RENEGOTIATE = 4
    VENDOR = 255


class SnackType(enum.IntEnum):
    """SNACK Request type, byte 1 bits 3-0 (RFC 7143 §11.16.1)."""

    DATA_R2T = 0
    STATUS = 1
    DATA_ACK = 2
    R_DATA = 3


class Stage(enum.IntEnum):
    """Login stages for CSG/NSG (RFC 7143 §11.12.3); 2 is reserved."""

    SECURITY = 0
    OPERATIONAL = 1
    FULL_FEATURE = 3

"""The PDU model: one slotted dataclass per iSCSI opcode (RFC 7143 §11).

These classes hold field values only; the wire layouts live in :mod:`datamover.pdu.codec`.
Lengths (TotalAHSLength, DataSegmentLength) are not fields: the codec derives them from
``ahs``/``cdb``/``bidi_read_length`` and ``len(data)``, so a PDU can never disagree with
itself.

Code fields (``function``, ``reason``, ``response``, ...) are plain ints after decode; the
enums in :mod:`datamover.pdu.opcodes` compare equal to them.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass, field
from typing import ClassVar

from datamover.pdu.opcodes import (
    RESERVED_TAG,
    AsyncEvent,
    LogoutReason,
    LogoutResponseCode,
    Opcode,
    RejectReason,
    SnackType,
    TmfFunction,
    TmfResponseCode,
)

#: What a data segment may be held in; decode hands out memoryviews of the receive buffer.
Buffer = bytes | bytearray | memoryview


@dataclass(slots=True, frozen=True)
class Ahs:
    """One Additional Header Segment that the model does not otherwise name.

    ``data`` is the AHS-specific part, starting at the AHS's byte 3 (so for the standard
    types it includes their reserved byte); AHSLength on the wire is ``len(data)``.
    """

    type: int
    data: bytes


@dataclass(slots=True, kw_only=True)
class Pdu:
    """Fields common to every PDU.

    ``data`` is the data segment without padding. After decode it may alias the receive
    buffer (a memoryview): copy it if it must outlive that buffer.
    """

    OPCODE: ClassVar[Opcode]

    immediate: bool = False
    itt: int = RESERVED_TAG
    data: Buffer = b""
    ahs: list[Ahs] = field(default_factory=list)

    @property
    def opcode(self) -> int:
        """The opcode as sent on the wire (an :class:`Opcode` for the modelled classes)."""
        return self.OPCODE

    def __str__(self) -> str:
        return describe(self)


@dataclass(slots=True, kw_only=True)
class NopOut(Pdu):
    """NOP-Out (0x00): a ping or the answer to a target's NOP-In (RFC 7143 §11.18)."""

    OPCODE: ClassVar[Opcode] = Opcode.NOP_OUT
    lun: int = 0
    ttt: int = RESERVED_TAG
    cmd_sn: int = 0
    exp_stat_sn: int = 0


@dataclass(slots=True, kw_only=True)
class NopIn(Pdu):
    """NOP-In (0x20): the answer to a NOP-Out, or a target's own ping (RFC 7143 §11.19)."""

    OPCODE: ClassVar[Opcode] = Opcode.NOP_IN
    lun: int = 0
    ttt: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0


@dataclass(slots=True, kw_only=True)
class ScsiCommand(Pdu):
    """SCSI Command (0x01, RFC 7143 §11.3).

    ``cdb`` is the whole CDB. On encode a CDB over 16 bytes spills into an Extended-CDB
    AHS and a shorter one is zero-padded to 16; decode always gives back at least 16 bytes.
    ``bidi_read_length`` is the Bidirectional Read Expected Data Transfer Length AHS.
    """

    OPCODE: ClassVar[Opcode] = Opcode.SCSI_COMMAND
    final: bool = True
    read: bool = False
    write: bool = False
    attr: int = 1  # SIMPLE: what every initiator sends unless told otherwise
    lun: int = 0
    expected_data_transfer_length: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    cdb: bytes = bytes(16)
    bidi_read_length: int | None = None


@dataclass(slots=True, kw_only=True)
class ScsiResponse(Pdu):
    """SCSI Response (0x21, RFC 7143 §11.4). ``data`` = SenseLength + sense + response data."""

    OPCODE: ClassVar[Opcode] = Opcode.SCSI_RESPONSE
    bidi_overflow: bool = False  # o
    bidi_underflow: bool = False  # u
    overflow: bool = False  # O
    underflow: bool = False  # U
    response: int = 0
    status: int = 0
    snack_tag: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    exp_data_sn: int = 0
    bidi_read_residual: int = 0
    residual: int = 0


@dataclass(slots=True, kw_only=True)
class TmfRequest(Pdu):
    """Task Management Function Request (0x02, RFC 7143 §11.5)."""

    OPCODE: ClassVar[Opcode] = Opcode.TMF_REQUEST
    function: int = TmfFunction.ABORT_TASK
    lun: int = 0
    referenced_task_tag: int = RESERVED_TAG
    cmd_sn: int = 0
    exp_stat_sn: int = 0
    ref_cmd_sn: int = 0
    exp_data_sn: int = 0


@dataclass(slots=True, kw_only=True)
class TmfResponse(Pdu):
    """Task Management Function Response (0x22, RFC 7143 §11.6)."""

    OPCODE: ClassVar[Opcode] = Opcode.TMF_RESPONSE
    response: int = TmfResponseCode.FUNCTION_COMPLETE
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0


@dataclass(slots=True, kw_only=True)
class LoginRequest(Pdu):
    """Login Request (0x03, RFC 7143 §11.12); always immediate, so byte 0 is 0x43."""

    OPCODE: ClassVar[Opcode] = Opcode.LOGIN_REQUEST
    immediate: bool = True
    transit: bool = False
    cont: bool = False
    csg: int = 0
    nsg: int = 0
    version_max: int = 0
    version_min: int = 0
    isid: int = 0  # 48 bits: T(2) A(6) B(16) C(8) D(16)
    tsih: int = 0
    cid: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0


@dataclass(slots=True, kw_only=True)
class LoginResponse(Pdu):
    """Login Response (0x23, RFC 7143 §11.13)."""

    OPCODE: ClassVar[Opcode] = Opcode.LOGIN_RESPONSE
    transit: bool = False
    cont: bool = False
    csg: int = 0
    nsg: int = 0
    version_max: int = 0
    version_active: int = 0
    isid: int = 0
    tsih: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    status_class: int = 0
    status_detail: int = 0

    @property
    def status(self) -> int:
        """Status-Class and Status-Detail as one value, comparable with :class:`LoginStatus`."""
        return (self.status_class << 8) | self.status_detail


@dataclass(slots=True, kw_only=True)
class TextRequest(Pdu):
    """Text Request (0x04, RFC 7143 §11.10)."""

    OPCODE: ClassVar[Opcode] = Opcode.TEXT_REQUEST
    final: bool = True
    cont: bool = False
    lun: int = 0
    ttt: int = RESERVED_TAG
    cmd_sn: int = 0
    exp_stat_sn: int = 0


@dataclass(slots=True, kw_only=True)
class TextResponse(Pdu):
    """Text Response (0x24, RFC 7143 §11.11)."""

    OPCODE: ClassVar[Opcode] = Opcode.TEXT_RESPONSE
    final: bool = True
    cont: bool = False
    lun: int = 0
    ttt: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0


@dataclass(slots=True, kw_only=True)
class DataOut(Pdu):
    """SCSI Data-Out (0x05, RFC 7143 §11.7); TTT 0xffffffff for unsolicited data."""

    OPCODE: ClassVar[Opcode] = Opcode.DATA_OUT
    final: bool = True
    lun: int = 0
    ttt: int = RESERVED_TAG
    exp_stat_sn: int = 0
    data_sn: int = 0
    buffer_offset: int = 0


@dataclass(slots=True, kw_only=True)
class DataIn(Pdu):
    """SCSI Data-In (0x25, RFC 7143 §11.7); with ``status_present`` (S) it also ends the task."""

    OPCODE: ClassVar[Opcode] = Opcode.DATA_IN
    final: bool = True
    ack: bool = False
    overflow: bool = False
    underflow: bool = False
    status_present: bool = False
    status: int = 0
    lun: int = 0
    ttt: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    data_sn: int = 0
    buffer_offset: int = 0
    residual: int = 0


@dataclass(slots=True, kw_only=True)
class R2T(Pdu):
    """Ready To Transfer (0x31, RFC 7143 §11.8)."""

    OPCODE: ClassVar[Opcode] = Opcode.R2T
    lun: int = 0
    ttt: int = RESERVED_TAG
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    r2t_sn: int = 0
    buffer_offset: int = 0
    desired_data_transfer_length: int = 0


@dataclass(slots=True, kw_only=True)
class LogoutRequest(Pdu):
    """Logout Request (0x06, RFC 7143 §11.14)."""

    OPCODE: ClassVar[Opcode] = Opcode.LOGOUT_REQUEST
    reason: int = LogoutReason.CLOSE_SESSION
    cid: int = 0
    cmd_sn: int = 0
    exp_stat_sn: int = 0


@dataclass(slots=True, kw_only=True)
class LogoutResponse(Pdu):
    """Logout Response (0x26, RFC 7143 §11.15)."""

    OPCODE: ClassVar[Opcode] = Opcode.LOGOUT_RESPONSE
    response: int = LogoutResponseCode.SUCCESS
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    time2wait: int = 0
    time2retain: int = 0


@dataclass(slots=True, kw_only=True)
class AsyncMessage(Pdu):
    """Asynchronous Message (0x32, RFC 7143 §11.9); ITT is always 0xffffffff."""

    OPCODE: ClassVar[Opcode] = Opcode.ASYNC_MESSAGE
    lun: int = 0
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    async_event: int = AsyncEvent.SCSI_ASYNC_EVENT
    async_vcode: int = 0
    parameter1: int = 0
    parameter2: int = 0
    parameter3: int = 0


@dataclass(slots=True, kw_only=True)
class Reject(Pdu):
    """Reject (0x3F, RFC 7143 §11.17); ``data`` is the rejected PDU's 48-byte header."""

    OPCODE: ClassVar[Opcode] = Opcode.REJECT
    reason: int = RejectReason.PROTOCOL_ERROR
    stat_sn: int = 0
    exp_cmd_sn: int = 0
    max_cmd_sn: int = 0
    data_sn: int = 0  # DataSN/R2TSN


@dataclass(slots=True, kw_only=True)
class SnackRequest(Pdu):
    """SNACK Request (0x10, RFC 7143 §11.16); ``ttt`` is the TTT or the SNACK Tag."""

    OPCODE: ClassVar[Opcode] = Opcode.SNACK_REQUEST
    type: int = SnackType.DATA_R2T
    lun: int = 0
    ttt: int = RESERVED_TAG
    exp_stat_sn: int = 0
    beg_run: int = 0
    run_length: int = 0


@dataclass(slots=True, kw_only=True)
class UnknownPdu(Pdu):
    """A PDU with an unassigned (or vendor-specific) opcode.

    Decode returns it instead of raising, so that a target can answer with a Reject
    (reason COMMAND_NOT_SUPPORTED) quoting ``raw_bhs``, the header as received. On encode
    ``raw_bhs`` is sent with byte 0 (I bit, opcode), the lengths and the ITT taken from
    the fields.
    """

    opcode_value: int = 0x1C
    raw_bhs: bytes = bytes(48)

    @property
    def opcode(self) -> int:
        return self.opcode_value


#: The modelled classes by opcode (UnknownPdu is everything else).
PDU_CLASSES: dict[Opcode, type[Pdu]] = {
    cls.OPCODE: cls
    for cls in (
        NopOut,
        ScsiCommand,
        TmfRequest,
        LoginRequest,
        TextRequest,
        DataOut,
        LogoutRequest,
        SnackRequest,
        NopIn,
        ScsiResponse,
        TmfResponse,
        LoginResponse,
        TextResponse,
        DataIn,
        LogoutResponse,
        R2T,
        AsyncMessage,
        Reject,
    )
}


# ----------------------------------------------------------------------------- LUNs
def encode_lun(n: int) -> int:
    """A LUN number as the 8-byte SAM LUN field (as an int): peripheral device addressing
    for 0-255 (``n << 48``), flat space addressing (``0x4000 | n`` in the top 16 bits) for
    256-16383. That is what Linux ``int_to_scsilun`` sends, so targets and initiators agree.
    """
    if not 0 <= n <= 0x3FFF:
        raise ValueError(f"LUN {n} is outside 0..16383 (single-level addressing)")
    if n < 256:
        return n << 48
    return (0x4000 | n) << 48


def decode_lun(raw: int) -> int:
    """The LUN number in an 8-byte SAM LUN field; inverse of :func:`encode_lun`.

    Accepts single-level peripheral (method 00, bus 0) and flat space (method 01)
    addressing. Raises ValueError for other methods or multi-level LUNs, which a target
    answers as "LUN not supported".
    """
    if not 0 <= raw < 1 << 64:
        raise ValueError(f"LUN field {raw:#x} does not fit in 8 bytes")
    if raw & 0xFFFF_FFFF_FFFF:
        raise ValueError(f"multi-level LUN {raw:016x} is not supported")
    top = raw >> 48
    method = top >> 14
    if method == 0:
        if top >> 8:
            raise ValueError(f"peripheral LUN {raw:016x} addresses bus {top >> 8}, not supported")
        return top
    if method == 1:
        return top & 0x3FFF
    raise ValueError(f"LUN {raw:016x} uses addressing method {method}, not supported")


# ------------------------------------------------------------------------- describing
_HEX_FIELDS = frozenset({"itt", "ttt", "referenced_task_tag", "snack_tag", "isid", "lun"})
_CODE_ENUMS: dict[tuple[type[Pdu], str], type[enum.IntEnum]] = {
    (TmfRequest, "function"): TmfFunction,
    (TmfResponse, "response"): TmfResponseCode,
    (Reject, "reason"): RejectReason,
    (LogoutRequest, "reason"): LogoutReason,
    (LogoutResponse, "response"): LogoutResponseCode,
    (AsyncMessage, "async_event"): AsyncEvent,
    (SnackRequest, "type"): SnackType,
}


def describe(pdu: Pdu) -> str:
    """One log line for a PDU: its class, set flags and fields, data length.

    Meant for debug logs (call it lazily); it walks the dataclass fields, so it is not fast.
    """
    cls = type(pdu)
    parts = [cls.__name__ if not isinstance(pdu, UnknownPdu) else f"UnknownPdu(op={pdu.opcode_value:#04x})"]
    for f in dataclasses.fields(pdu):
        name = f.name
        value = getattr(pdu, name)
        if name == "data":
            if len(value):
                parts.append(f"dlen={memoryview(value).nbytes}")
        elif name == "ahs":
            if value:
                parts.append("ahs=" + ",".join(f"{a.type}:{len(a.data)}" for a in value))
        elif name in ("opcode_value", "raw_bhs"):
            continue
        elif isinstance(value, bool):
            if value:
                parts.append("I" if name == "immediate" else name)
        elif isinstance(value, (bytes, bytearray)):
            parts.append(f"{name}={bytes(value).hex()}")
        elif value is None:
            continue
        elif name in _HEX_FIELDS:
            parts.append(f"{name}={value:#x}")
        else:
            code_enum = _CODE_ENUMS.get((cls, name))
            if code_enum is not None and value in code_enum._value2member_map_:
                parts.append(f"{name}={code_enum(value).name}")
            else:
                parts.append(f"{name}={value}")
    if isinstance(pdu, LoginResponse) and pdu.status:
        parts.append(f"status={pdu.status:#06x}")
    return " ".join(parts)

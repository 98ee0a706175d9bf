"""Typed errors of the TCP datamover.

Errors about what the *peer* sent are :class:`~datamover.pdu.codec.PduFormatError`
subclasses, so the core can answer them as it answers codec errors (``reject_reason`` and
``header`` are set); they reach the core through ``protocol_error_notify``, never as an
exception out of the event loop. Errors about how the *core* called the datamover are
raised from the down-call.
"""

from __future__ import annotations

from datamover.pdu.codec import PduFormatError
from datamover.pdu.opcodes import RejectReason


class DataPduError(PduFormatError):
    """A Data-In, R2T or Data-Out that does not fit its task: unknown ITT or TTT, an offset
    or length outside the buffer or burst, a DataSN out of order, an incomplete burst."""

    def __init__(self, message: str, header: bytes = b"",
                 reject_reason: RejectReason = RejectReason.PROTOCOL_ERROR) -> None:
        super().__init__(message, reject_reason, header)


class SegmentTooLongError(PduFormatError):
    """A PDU announced a data segment above the receive limit in force (the negotiated
    MaxRecvDataSegmentLength, or the login bound). The stream is not read any further."""

    def __init__(self, length: int, limit: int, header: bytes = b"") -> None:
        super().__init__(f"data segment of {length} bytes exceeds the receive limit of {limit}",
                         RejectReason.PROTOCOL_ERROR, header)
        self.length: int = length
        self.limit: int = limit


class DatamoverUsageError(RuntimeError):
    """A down-call that this connection cannot honour: wrong role, wrong phase, a
    descriptor shorter than the transfer, a TTT already in use."""

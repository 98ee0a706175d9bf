"""Wire encoding and decoding of iSCSI PDUs (RFC 7143 §11).

Layout of a PDU on the wire::

    BHS (48) | AHS chain (TotalAHSLength * 4) | [HeaderDigest 4] | data | pad to 4 | [DataDigest 4]

The encoder produces a gather list so that a transport can ``sendmsg``/``writelines`` the
caller's data buffer without copying it. The decoder accepts the header and data as
separate buffers (iSER and loopback receive them that way) or one contiguous stream buffer
(:func:`decode_pdu`, TCP), and keeps the data segment as a view of the receive buffer.

Decoding is lenient about reserved fields (RFC 7143 asks receivers to ignore them) and
strict about structure: anything that cannot be framed or parsed raises
:class:`PduFormatError`, and nothing else escapes :func:`decode` or :func:`decode_pdu`.
A PDU with an opcode this module does not model decodes to :class:`UnknownPdu`.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable

from datamover.pdu.digest import ISAL_MIN, crc32c, crc32c_short
from datamover.pdu.model import (
    R2T,
    Ahs,
    AsyncMessage,
    Buffer,
    DataIn,
    DataOut,
    LoginRequest,
    LoginResponse,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Pdu,
    Reject,
    ScsiCommand,
    ScsiResponse,
    SnackRequest,
    TextRequest,
    TextResponse,
    TmfRequest,
    TmfResponse,
    UnknownPdu,
)
from datamover.pdu.opcodes import BHS_LENGTH, Opcode, RejectReason

__all__ = [
    "DigestError",
    "IncompletePdu",
    "PduEncodeError",
    "PduFormatError",
    "decode",
    "decode_pdu",
    "encode",
    "encode_bytes",
    "encode_header",
    "peek_lengths",
    "wire_length",
]


# --------------------------------------------------------------------------- errors
class PduFormatError(ValueError):
    """A received PDU cannot be framed or parsed.

    ``reject_reason`` is what a target would put in a Reject PDU; ``header`` is the
    48-byte BHS as received (to quote in that Reject), or ``b""`` if not even the BHS
    arrived.
    """

    def __init__(
        self,
        message: str,
        reject_reason: RejectReason = RejectReason.PROTOCOL_ERROR,
        header: bytes = b"",
    ) -> None:
        super().__init__(message)
        self.reject_reason: RejectReason = reject_reason
        self.header: bytes = header


class DigestError(PduFormatError):
    """A header or data digest did not match; ``which`` is ``"header"`` or ``"data"``.

    A data digest error is answered with a Reject (reason DATA_DIGEST_ERROR). After a
    header digest error the lengths cannot be trusted, so the only safe answer is to drop
    the connection; ``reject_reason`` is PROTOCOL_ERROR there for completeness.
    """

    def __init__(self, which: str, message: str, header: bytes = b"") -> None:
        reason = RejectReason.DATA_DIGEST_ERROR if which == "data" else RejectReason.PROTOCOL_ERROR
        super().__init__(message, reason, header)
        self.which: str = which


class IncompletePdu(PduFormatError):
    """The buffer holds less than one whole PDU; ``needed`` is the byte count to wait for
    (48 while the BHS itself is incomplete, the PDU's full wire length after that)."""

    def __init__(self, message: str, needed: int, header: bytes = b"") -> None:
        super().__init__(message, RejectReason.PROTOCOL_ERROR, header)
        self.needed: int = needed


class PduEncodeError(ValueError):
    """A PDU cannot be encoded: a field is out of range for its wire width, the AHS chain
    or data segment is too long, or a field holds something that is not bytes-like."""


# -------------------------------------------------------------------------- layouts
# One precompiled Struct per BHS layout; every layout covers all 48 bytes. Bytes 4-7 are
# read as one u32: TotalAHSLength (words) in the top byte, DataSegmentLength below.
_S = struct.Struct
_HEAD = _S(">B3xI")  # byte 0, lengths
_U32 = _S(">I")
_LE32 = _S("<I")
_AHS_HDR = _S(">HB")
_BIDI_AHS = _S(">HBxI")  # AHSLength=5, type 2, reserved, length

# b0 b1 lens lun itt ttt cmd_sn exp_stat_sn                 (NOP-Out, Text Request)
_REQ_TTT = _S(">BB2xIQIIII16x")
# b0 b1 lens lun itt ttt stat_sn exp_cmd_sn max_cmd_sn       (NOP-In, Text Response)
_RSP_TTT = _S(">BB2xIQIIIII12x")
# b0 b1 lens lun itt edtl cmd_sn exp_stat_sn cdb[16]
_SCSI_CMD = _S(">BB2xIQIIII16s")
# b0 b1 response status lens itt snack_tag stat_sn exp_cmd_sn max_cmd_sn exp_data_sn bidi_res res
_SCSI_RSP = _S(">BBBBI8xIIIIIIII")
# b0 b1 lens lun itt ref_task_tag cmd_sn exp_stat_sn ref_cmd_sn exp_data_sn
_TMF_REQ = _S(">BB2xIQIIIIII8x")
# b0 b1 response lens itt stat_sn exp_cmd_sn max_cmd_sn
_TMF_RSP = _S(">BBBxI8xI4xIII12x")
# b0 b1 vmax vmin lens isid_hi isid_lo tsih itt cid cmd_sn exp_stat_sn
_LOGIN_REQ = _S(">BBBBIHIHIH2xII16x")
# b0 b1 vmax vactive lens isid_hi isid_lo tsih itt stat_sn exp_cmd_sn max_cmd_sn class detail
_LOGIN_RSP = _S(">BBBBIHIHI4xIIIBB10x")
# b0 b1 lens lun itt ttt exp_stat_sn data_sn buffer_offset
_DATA_OUT = _S(">BB2xIQII4xI4xII4x")
# b0 b1 status lens lun itt ttt stat_sn exp_cmd_sn max_cmd_sn data_sn buffer_offset residual
_DATA_IN = _S(">BBxBIQIIIIIIII")
# b0 b1 lens lun itt ttt stat_sn exp_cmd_sn max_cmd_sn r2t_sn buffer_offset ddtl
_R2T = _S(">BB2xIQIIIIIIII")
# b0 b1 lens itt cid cmd_sn exp_stat_sn
_LOGOUT_REQ = _S(">BB2xI8xIH2xII16x")
# b0 b1 response lens itt stat_sn exp_cmd_sn max_cmd_sn time2wait time2retain
_LOGOUT_RSP = _S(">BBBxI8xI4xIII4xHH4x")
# b0 b1 lens lun itt stat_sn exp_cmd_sn max_cmd_sn event vcode p1 p2 p3
_ASYNC = _S(">BB2xIQI4xIIIBBHHH4x")
# b0 b1 reason lens itt stat_sn exp_cmd_sn max_cmd_sn data_sn
_REJECT = _S(">BBBxI8xI4xIIII8x")
# b0 b1 lens lun itt ttt exp_stat_sn beg_run run_length
_SNACK = _S(">BB2xIQII4xI8xII")

for _layout in (_REQ_TTT, _RSP_TTT, _SCSI_CMD, _SCSI_RSP, _TMF_REQ, _TMF_RSP, _LOGIN_REQ,
                _LOGIN_RSP, _DATA_OUT, _DATA_IN, _R2T, _LOGOUT_REQ, _LOGOUT_RSP, _ASYNC,
                _REJECT, _SNACK):  # fmt: skip
    assert _layout.size == BHS_LENGTH, _layout.format
del _layout

_MAX_DSL = 0xFFFFFF
_MAX_AHS = 255 * 4
#: padding after a data segment of length L: PADS[-L & 3] (RFC 7143 11.1)
PADS = (b"", b"\0", b"\0\0", b"\0\0\0")
_EMPTY = b""

# Byte 1 flag bits.
_F = 0x80
_C = 0x40  # Login/Text continue
_T = 0x80  # Login transit
_R = 0x40  # SCSI Command read
_W = 0x20  # SCSI Command write
_A = 0x40  # Data-In acknowledge
_O_BIDI, _U_BIDI, _O, _U = 0x10, 0x08, 0x04, 0x02
_S_BIT = 0x01
_I = 0x40  # byte 0: immediate


# -------------------------------------------------------------------------- helpers
def _byte_view(buf: object) -> Buffer:
    """``buf`` itself when it is bytes/bytearray, else a flat byte memoryview of it."""
    kind = type(buf)
    if kind is bytes or kind is bytearray:
        return buf  # type: ignore[return-value]
    try:
        view = memoryview(buf)  # type: ignore[arg-type]
        if view.ndim != 1 or view.format != "B" or not view.c_contiguous:
            view = view.cast("B")  # raises TypeError for a strided view
    except (TypeError, ValueError) as exc:
        raise PduFormatError(f"cannot read a PDU from {kind.__name__}: {exc}") from None
    return view


def _data_length(data: Buffer) -> int:
    kind = type(data)
    if kind is bytes or kind is bytearray:
        return len(data)
    try:
        return memoryview(data).nbytes
    except TypeError as exc:
        raise PduEncodeError(f"data segment must be bytes-like, not {kind.__name__}") from exc


def _pack_ahs(chain: list[Ahs]) -> bytes:
    out = bytearray()
    for item in chain:
        body = bytes(item.data)
        if not 0 <= item.type <= 0xFF:
            raise PduEncodeError(f"AHSType {item.type} does not fit in a byte")
        if len(body) > 0xFFFF:
            raise PduEncodeError(f"AHS of {len(body)} bytes exceeds AHSLength")
        out += _AHS_HDR.pack(len(body), item.type)
        out += body
        out += PADS[-(3 + len(body)) & 3]
    return bytes(out)


def _scsi_command_ahs(pdu: ScsiCommand) -> bytes:
    """Extended CDB (type 1) and Bidi Read Length (type 2) AHSs, then ``pdu.ahs``."""
    for item in pdu.ahs:
        if item.type in (1, 2):
            # the model owns these two; taking them from both places would be ambiguous
            raise PduEncodeError(f"AHS type {item.type} of a SCSI Command is set through cdb/bidi_read_length")
    out = bytearray()
    cdb = pdu.cdb
    if len(cdb) > 16:
        ext_len = len(cdb) - 15  # RFC 7143 §11.2.2.3: the reserved byte counts
        if ext_len > 0xFFFF:
            raise PduEncodeError(f"CDB of {len(cdb)} bytes is too long")
        out += _AHS_HDR.pack(ext_len, 1)
        out += b"\0"
        out += bytes(cdb[16:])
        out += PADS[-(3 + ext_len) & 3]
    if pdu.bidi_read_length is not None:
        out += _BIDI_AHS.pack(5, 2, pdu.bidi_read_length)
    if pdu.ahs:
        out += _pack_ahs(pdu.ahs)
    return bytes(out)


# ------------------------------------------------------------------------- encoders
# Each takes (pdu, lens) where lens = TotalAHSLength << 24 | DataSegmentLength and returns
# the 48-byte BHS.
def _b0(pdu: Pdu) -> int:
    return pdu.OPCODE | _I if pdu.immediate else pdu.OPCODE


def _enc_nop_out(p: NopOut, lens: int) -> bytes:
    return _REQ_TTT.pack(_b0(p), _F, lens, p.lun, p.itt, p.ttt, p.cmd_sn, p.exp_stat_sn)


def _enc_nop_in(p: NopIn, lens: int) -> bytes:
    return _RSP_TTT.pack(_b0(p), _F, lens, p.lun, p.itt, p.ttt, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn)


def _enc_scsi_command(p: ScsiCommand, lens: int) -> bytes:
    if p.attr & ~7:
        raise PduEncodeError(f"task attribute {p.attr} does not fit in 3 bits")
    b1 = (_F if p.final else 0) | (_R if p.read else 0) | (_W if p.write else 0) | p.attr
    cdb = p.cdb if type(p.cdb) is bytes else bytes(p.cdb)  # "16s" takes bytes/bytearray only
    # struct's "16s" zero-pads a short CDB and truncates a long one (the rest is in the AHS)
    return _SCSI_CMD.pack(
        _b0(p), b1, lens, p.lun, p.itt, p.expected_data_transfer_length, p.cmd_sn, p.exp_stat_sn, cdb
    )


def _enc_scsi_response(p: ScsiResponse, lens: int) -> bytes:
    b1 = (
        _F
        | (_O_BIDI if p.bidi_overflow else 0)
        | (_U_BIDI if p.bidi_underflow else 0)
        | (_O if p.overflow else 0)
        | (_U if p.underflow else 0)
    )
    return _SCSI_RSP.pack(
        _b0(p), b1, p.response, p.status, lens, p.itt, p.snack_tag, p.stat_sn, p.exp_cmd_sn,
        p.max_cmd_sn, p.exp_data_sn, p.bidi_read_residual, p.residual,
    )  # fmt: skip


def _enc_tmf_request(p: TmfRequest, lens: int) -> bytes:
    if p.function & ~0x7F:
        raise PduEncodeError(f"TMF function {p.function} does not fit in 7 bits")
    return _TMF_REQ.pack(
        _b0(p), _F | p.function, lens, p.lun, p.itt, p.referenced_task_tag, p.cmd_sn,
        p.exp_stat_sn, p.ref_cmd_sn, p.exp_data_sn,
    )  # fmt: skip


def _enc_tmf_response(p: TmfResponse, lens: int) -> bytes:
    return _TMF_RSP.pack(_b0(p), _F, p.response, lens, p.itt, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn)


def _login_flags(p: LoginRequest | LoginResponse) -> int:
    if p.csg & ~3 or p.nsg & ~3:
        raise PduEncodeError(f"login stages CSG={p.csg} NSG={p.nsg} do not fit in 2 bits")
    return (_T if p.transit else 0) | (_C if p.cont else 0) | (p.csg << 2) | p.nsg


def _split_isid(isid: int) -> tuple[int, int]:
    if not 0 <= isid < 1 << 48:
        raise PduEncodeError(f"ISID {isid:#x} does not fit in 48 bits")
    return isid >> 32, isid & 0xFFFFFFFF


def _enc_login_request(p: LoginRequest, lens: int) -> bytes:
    hi, lo = _split_isid(p.isid)
    return _LOGIN_REQ.pack(
        _b0(p), _login_flags(p), p.version_max, p.version_min, lens, hi, lo, p.tsih, p.itt,
        p.cid, p.cmd_sn, p.exp_stat_sn,
    )  # fmt: skip


def _enc_login_response(p: LoginResponse, lens: int) -> bytes:
    hi, lo = _split_isid(p.isid)
    return _LOGIN_RSP.pack(
        _b0(p), _login_flags(p), p.version_max, p.version_active, lens, hi, lo, p.tsih, p.itt,
        p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn, p.status_class, p.status_detail,
    )  # fmt: skip


def _enc_text_request(p: TextRequest, lens: int) -> bytes:
    b1 = (_F if p.final else 0) | (_C if p.cont else 0)
    return _REQ_TTT.pack(_b0(p), b1, lens, p.lun, p.itt, p.ttt, p.cmd_sn, p.exp_stat_sn)


def _enc_text_response(p: TextResponse, lens: int) -> bytes:
    b1 = (_F if p.final else 0) | (_C if p.cont else 0)
    return _RSP_TTT.pack(_b0(p), b1, lens, p.lun, p.itt, p.ttt, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn)


def _enc_data_out(p: DataOut, lens: int) -> bytes:
    return _DATA_OUT.pack(
        _b0(p), _F if p.final else 0, lens, p.lun, p.itt, p.ttt, p.exp_stat_sn, p.data_sn, p.buffer_offset
    )


def _enc_data_in(p: DataIn, lens: int) -> bytes:
    b1 = (
        (_F if p.final else 0)
        | (_A if p.ack else 0)
        | (_O if p.overflow else 0)
        | (_U if p.underflow else 0)
        | (_S_BIT if p.status_present else 0)
    )
    return _DATA_IN.pack(
        _b0(p), b1, p.status, lens, p.lun, p.itt, p.ttt, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn,
        p.data_sn, p.buffer_offset, p.residual,
    )  # fmt: skip


def _enc_r2t(p: R2T, lens: int) -> bytes:
    return _R2T.pack(
        _b0(p), _F, lens, p.lun, p.itt, p.ttt, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn, p.r2t_sn,
        p.buffer_offset, p.desired_data_transfer_length,
    )  # fmt: skip


def _enc_logout_request(p: LogoutRequest, lens: int) -> bytes:
    if p.reason & ~0x7F:
        raise PduEncodeError(f"logout reason {p.reason} does not fit in 7 bits")
    return _LOGOUT_REQ.pack(_b0(p), _F | p.reason, lens, p.itt, p.cid, p.cmd_sn, p.exp_stat_sn)


def _enc_logout_response(p: LogoutResponse, lens: int) -> bytes:
    return _LOGOUT_RSP.pack(
        _b0(p), _F, p.response, lens, p.itt, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn, p.time2wait, p.time2retain
    )


def _enc_async(p: AsyncMessage, lens: int) -> bytes:
    return _ASYNC.pack(
        _b0(p), _F, lens, p.lun, p.itt, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn, p.async_event,
        p.async_vcode, p.parameter1, p.parameter2, p.parameter3,
    )  # fmt: skip


def _enc_reject(p: Reject, lens: int) -> bytes:
    return _REJECT.pack(_b0(p), _F, p.reason, lens, p.itt, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn, p.data_sn)


def _enc_snack(p: SnackRequest, lens: int) -> bytes:
    if p.type & ~0x0F:
        raise PduEncodeError(f"SNACK type {p.type} does not fit in 4 bits")
    return _SNACK.pack(_b0(p), _F | p.type, lens, p.lun, p.itt, p.ttt, p.exp_stat_sn, p.beg_run, p.run_length)


def _enc_unknown(p: UnknownPdu, lens: int) -> bytes:
    raw = p.raw_bhs
    if len(raw) != BHS_LENGTH:
        raise PduEncodeError(f"UnknownPdu.raw_bhs must be {BHS_LENGTH} bytes, not {len(raw)}")
    if not 0 <= p.opcode_value <= 0x3F:
        raise PduEncodeError(f"opcode {p.opcode_value:#x} does not fit in 6 bits")
    out = bytearray(raw)
    out[0] = (raw[0] & 0x80) | (_I if p.immediate else 0) | p.opcode_value
    _U32.pack_into(out, 4, lens)
    _U32.pack_into(out, 16, p.itt)
    return bytes(out)


_ENCODERS: dict[type[Pdu], Callable[..., bytes]] = {
    NopOut: _enc_nop_out,
    NopIn: _enc_nop_in,
    ScsiCommand: _enc_scsi_command,
    ScsiResponse: _enc_scsi_response,
    TmfRequest: _enc_tmf_request,
    TmfResponse: _enc_tmf_response,
    LoginRequest: _enc_login_request,
    LoginResponse: _enc_login_response,
    TextRequest: _enc_text_request,
    TextResponse: _enc_text_response,
    DataOut: _enc_data_out,
    DataIn: _enc_data_in,
    R2T: _enc_r2t,
    LogoutRequest: _enc_logout_request,
    LogoutResponse: _enc_logout_response,
    AsyncMessage: _enc_async,
    Reject: _enc_reject,
    SnackRequest: _enc_snack,
    UnknownPdu: _enc_unknown,
}


def _encoder_for(cls: type) -> Callable[..., bytes]:
    encoder = _ENCODERS.get(cls)
    if encoder is None:
        # a subclass of a modelled PDU encodes as its modelled base
        for base in cls.__mro__[1:]:
            encoder = _ENCODERS.get(base)
            if encoder is not None:
                _ENCODERS[cls] = encoder
                break
        else:
            raise PduEncodeError(f"{cls.__name__} is not a PDU class this codec knows")
    return encoder


def encode_header(pdu: Pdu) -> bytes:
    """BHS + AHS chain of ``pdu`` (no digest), with TotalAHSLength and DataSegmentLength
    filled in from the AHS fields and ``len(pdu.data)``."""
    encoder = _encoder_for(type(pdu))
    if isinstance(pdu, ScsiCommand):
        ahs = _scsi_command_ahs(pdu)
    else:
        ahs = _pack_ahs(pdu.ahs) if pdu.ahs else _EMPTY
    if len(ahs) > _MAX_AHS:
        raise PduEncodeError(f"AHS chain of {len(ahs)} bytes exceeds TotalAHSLength (max {_MAX_AHS})")
    dsl = _data_length(pdu.data)
    if dsl > _MAX_DSL:
        raise PduEncodeError(f"data segment of {dsl} bytes exceeds DataSegmentLength (24 bits)")
    try:
        bhs = encoder(pdu, (len(ahs) << 22) | dsl)  # words << 24 == bytes << 22
    except struct.error as exc:
        raise PduEncodeError(f"{type(pdu).__name__}: a field is out of range: {exc}") from None
    return bhs + ahs if ahs else bhs


def encode(pdu: Pdu, *, header_digest: bool = False, data_digest: bool = False) -> list[bytes | memoryview]:
    """``pdu`` as a gather list for ``sendmsg``/``writelines``.

    ``[header]`` when there is no data, else ``[header, data, tail]`` where header is
    BHS + AHS (+ HeaderDigest), data is a memoryview of ``pdu.data`` (not a copy) and tail
    the padding (+ DataDigest); tail is left out when empty.
    """
    header = encode_header(pdu)
    if header_digest:
        header += _LE32.pack(crc32c_short(header))
    data = pdu.data
    if not len(data):
        return [header]
    view = memoryview(data)
    if view.ndim != 1 or view.format != "B" or not view.c_contiguous:
        try:
            view = view.cast("B")
        except TypeError as exc:
            raise PduEncodeError(f"data segment is not contiguous: {exc}") from None
    tail = segment_tail((view,), view.nbytes, data_digest)
    return [header, view, tail] if tail else [header, view]


def segment_tail(pieces: Iterable[Buffer], length: int, data_digest: bool) -> bytes:
    """What follows a data segment of ``length`` bytes made of ``pieces``: the padding to a
    4-byte boundary and, when negotiated, the DataDigest over the pieces and the padding
    (RFC 7143 11.1, 13.1); b"" when there is neither. The pieces are read in place."""
    pad = PADS[-length & 3]
    if not (data_digest and length):
        return pad
    value = 0
    short = crc32c_short
    for piece in pieces:
        # (short pieces skip crc32c's own length test: one Python call less per PDU)
        value = short(piece, value) if len(piece) < ISAL_MIN else crc32c(piece, value)
    if pad:
        value = short(pad, value)
        return pad + _LE32.pack(value)
    return _LE32.pack(value)


def encode_bytes(pdu: Pdu, *, header_digest: bool = False, data_digest: bool = False) -> bytes:
    """``pdu`` as one bytes object (copies the data; for tests, logs and small PDUs)."""
    return b"".join(encode(pdu, header_digest=header_digest, data_digest=data_digest))


# ------------------------------------------------------------------------ framing
def peek_lengths(bhs: Buffer) -> tuple[int, int]:
    """(total AHS length in bytes, DataSegmentLength) read from a BHS.

    Raises :class:`IncompletePdu` when fewer than 48 bytes are given.
    """
    view = _byte_view(bhs)
    if len(view) < BHS_LENGTH:
        raise IncompletePdu(f"BHS needs {BHS_LENGTH} bytes, have {len(view)}", BHS_LENGTH)
    lens = _HEAD.unpack_from(view)[1]
    return (lens >> 24) << 2, lens & 0xFFFFFF


def wire_length(bhs: Buffer, header_digest: bool = False, data_digest: bool = False) -> int:
    """Total bytes the PDU starting with ``bhs`` occupies on a byte stream, including AHS,
    digests and padding."""
    ahs_len, dsl = peek_lengths(bhs)
    total = BHS_LENGTH + ahs_len + ((dsl + 3) & ~3)
    if header_digest:
        total += 4
    if data_digest and dsl:
        total += 4
    return total


# ------------------------------------------------------------------------- decoders
# Each takes (header view, AHS list, data) and returns the PDU.
def _dec_nop_out(h: Buffer, ahs: list[Ahs], d: Buffer) -> NopOut:
    b0, _b1, _lens, lun, itt, ttt, cmd_sn, exp_stat_sn = _REQ_TTT.unpack_from(h)
    return NopOut(immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, lun=lun, ttt=ttt, cmd_sn=cmd_sn,
                  exp_stat_sn=exp_stat_sn)  # fmt: skip


def _dec_nop_in(h: Buffer, ahs: list[Ahs], d: Buffer) -> NopIn:
    b0, _b1, _lens, lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn = _RSP_TTT.unpack_from(h)
    return NopIn(immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, lun=lun, ttt=ttt, stat_sn=stat_sn,
                 exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn)  # fmt: skip


def _dec_scsi_command(h: Buffer, ahs: list[Ahs], d: Buffer) -> ScsiCommand:
    b0, b1, _lens, lun, itt, edtl, cmd_sn, exp_stat_sn, cdb = _SCSI_CMD.unpack_from(h)
    bidi: int | None = None
    if ahs:
        ahs, cdb, bidi = _take_command_ahs(h, ahs, cdb)
    return ScsiCommand(
        immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, final=b1 & _F != 0, read=b1 & _R != 0,
        write=b1 & _W != 0, attr=b1 & 7, lun=lun, expected_data_transfer_length=edtl,
        cmd_sn=cmd_sn, exp_stat_sn=exp_stat_sn, cdb=cdb, bidi_read_length=bidi,
    )  # fmt: skip


def _take_command_ahs(h: Buffer, ahs: list[Ahs], cdb: bytes) -> tuple[list[Ahs], bytes, int | None]:
    """Split the Extended-CDB and Bidi-Read-Length AHSs off a SCSI Command's chain."""
    rest: list[Ahs] = []
    bidi: int | None = None
    seen_ext = False
    for item in ahs:
        if item.type == 1:
            if seen_ext or not item.data:
                raise PduFormatError("bad or repeated Extended CDB AHS", RejectReason.INVALID_PDU_FIELD,
                                     bytes(h[:BHS_LENGTH]))  # fmt: skip
            seen_ext = True
            cdb += item.data[1:]  # skip the reserved byte
        elif item.type == 2:
            if bidi is not None or len(item.data) != 5:
                raise PduFormatError("bad or repeated Bidirectional Read AHS", RejectReason.INVALID_PDU_FIELD,
                                     bytes(h[:BHS_LENGTH]))  # fmt: skip
            bidi = int.from_bytes(item.data[1:], "big")
        else:
            rest.append(item)
    return rest, cdb, bidi


def _dec_scsi_response(h: Buffer, ahs: list[Ahs], d: Buffer) -> ScsiResponse:
    (b0, b1, response, status, _lens, itt, snack_tag, stat_sn, exp_cmd_sn, max_cmd_sn, exp_data_sn,
     bidi_res, res) = _SCSI_RSP.unpack_from(h)  # fmt: skip
    return ScsiResponse(
        immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, bidi_overflow=b1 & _O_BIDI != 0,
        bidi_underflow=b1 & _U_BIDI != 0, overflow=b1 & _O != 0, underflow=b1 & _U != 0,
        response=response, status=status, snack_tag=snack_tag, stat_sn=stat_sn,
        exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn, exp_data_sn=exp_data_sn,
        bidi_read_residual=bidi_res, residual=res,
    )  # fmt: skip


def _dec_tmf_request(h: Buffer, ahs: list[Ahs], d: Buffer) -> TmfRequest:
    b0, b1, _lens, lun, itt, rtt, cmd_sn, exp_stat_sn, ref_cmd_sn, exp_data_sn = _TMF_REQ.unpack_from(h)
    return TmfRequest(
        immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, function=b1 & 0x7F, lun=lun,
        referenced_task_tag=rtt, cmd_sn=cmd_sn, exp_stat_sn=exp_stat_sn, ref_cmd_sn=ref_cmd_sn,
        exp_data_sn=exp_data_sn,
    )  # fmt: skip


def _dec_tmf_response(h: Buffer, ahs: list[Ahs], d: Buffer) -> TmfResponse:
    b0, _b1, response, _lens, itt, stat_sn, exp_cmd_sn, max_cmd_sn = _TMF_RSP.unpack_from(h)
    return TmfResponse(immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, response=response, stat_sn=stat_sn,
                       exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn)  # fmt: skip


def _dec_login_request(h: Buffer, ahs: list[Ahs], d: Buffer) -> LoginRequest:
    b0, b1, vmax, vmin, _lens, hi, lo, tsih, itt, cid, cmd_sn, exp_stat_sn = _LOGIN_REQ.unpack_from(h)
    return LoginRequest(
        immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, transit=b1 & _T != 0, cont=b1 & _C != 0,
        csg=(b1 >> 2) & 3, nsg=b1 & 3, version_max=vmax, version_min=vmin, isid=(hi << 32) | lo,
        tsih=tsih, cid=cid, cmd_sn=cmd_sn, exp_stat_sn=exp_stat_sn,
    )  # fmt: skip


def _dec_login_response(h: Buffer, ahs: list[Ahs], d: Buffer) -> LoginResponse:
    (b0, b1, vmax, vact, _lens, hi, lo, tsih, itt, stat_sn, exp_cmd_sn, max_cmd_sn, s_class,
     s_detail) = _LOGIN_RSP.unpack_from(h)  # fmt: skip
    return LoginResponse(
        immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, transit=b1 & _T != 0, cont=b1 & _C != 0,
        csg=(b1 >> 2) & 3, nsg=b1 & 3, version_max=vmax, version_active=vact, isid=(hi << 32) | lo,
        tsih=tsih, stat_sn=stat_sn, exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn,
        status_class=s_class, status_detail=s_detail,
    )  # fmt: skip


def _dec_text_request(h: Buffer, ahs: list[Ahs], d: Buffer) -> TextRequest:
    b0, b1, _lens, lun, itt, ttt, cmd_sn, exp_stat_sn = _REQ_TTT.unpack_from(h)
    return TextRequest(immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, final=b1 & _F != 0, cont=b1 & _C != 0,
                       lun=lun, ttt=ttt, cmd_sn=cmd_sn, exp_stat_sn=exp_stat_sn)  # fmt: skip


def _dec_text_response(h: Buffer, ahs: list[Ahs], d: Buffer) -> TextResponse:
    b0, b1, _lens, lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn = _RSP_TTT.unpack_from(h)
    return TextResponse(immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, final=b1 & _F != 0,
                        cont=b1 & _C != 0, lun=lun, ttt=ttt, stat_sn=stat_sn, exp_cmd_sn=exp_cmd_sn,
                        max_cmd_sn=max_cmd_sn)  # fmt: skip


def _dec_data_out(h: Buffer, ahs: list[Ahs], d: Buffer) -> DataOut:
    b0, b1, _lens, lun, itt, ttt, exp_stat_sn, data_sn, offset = _DATA_OUT.unpack_from(h)
    return DataOut(immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, final=b1 & _F != 0, lun=lun, ttt=ttt,
                   exp_stat_sn=exp_stat_sn, data_sn=data_sn, buffer_offset=offset)  # fmt: skip


def _dec_data_in(h: Buffer, ahs: list[Ahs], d: Buffer) -> DataIn:
    (b0, b1, status, _lens, lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, data_sn, offset,
     residual) = _DATA_IN.unpack_from(h)  # fmt: skip
    return DataIn(
        immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, final=b1 & _F != 0, ack=b1 & _A != 0,
        overflow=b1 & _O != 0, underflow=b1 & _U != 0, status_present=b1 & _S_BIT != 0,
        status=status, lun=lun, ttt=ttt, stat_sn=stat_sn, exp_cmd_sn=exp_cmd_sn,
        max_cmd_sn=max_cmd_sn, data_sn=data_sn, buffer_offset=offset, residual=residual,
    )  # fmt: skip


def _dec_r2t(h: Buffer, ahs: list[Ahs], d: Buffer) -> R2T:
    (b0, _b1, _lens, lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, r2t_sn, offset,
     ddtl) = _R2T.unpack_from(h)  # fmt: skip
    return R2T(immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, lun=lun, ttt=ttt, stat_sn=stat_sn,
               exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn, r2t_sn=r2t_sn, buffer_offset=offset,
               desired_data_transfer_length=ddtl)  # fmt: skip


def _dec_logout_request(h: Buffer, ahs: list[Ahs], d: Buffer) -> LogoutRequest:
    b0, b1, _lens, itt, cid, cmd_sn, exp_stat_sn = _LOGOUT_REQ.unpack_from(h)
    return LogoutRequest(immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, reason=b1 & 0x7F, cid=cid,
                         cmd_sn=cmd_sn, exp_stat_sn=exp_stat_sn)  # fmt: skip


def _dec_logout_response(h: Buffer, ahs: list[Ahs], d: Buffer) -> LogoutResponse:
    b0, _b1, response, _lens, itt, stat_sn, exp_cmd_sn, max_cmd_sn, t2w, t2r = _LOGOUT_RSP.unpack_from(h)
    return LogoutResponse(immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, response=response,
                          stat_sn=stat_sn, exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn, time2wait=t2w,
                          time2retain=t2r)  # fmt: skip


def _dec_async(h: Buffer, ahs: list[Ahs], d: Buffer) -> AsyncMessage:
    (b0, _b1, _lens, lun, itt, stat_sn, exp_cmd_sn, max_cmd_sn, event, vcode, p1, p2,
     p3) = _ASYNC.unpack_from(h)  # fmt: skip
    return AsyncMessage(immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, lun=lun, stat_sn=stat_sn,
                        exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn, async_event=event, async_vcode=vcode,
                        parameter1=p1, parameter2=p2, parameter3=p3)  # fmt: skip


def _dec_reject(h: Buffer, ahs: list[Ahs], d: Buffer) -> Reject:
    b0, _b1, reason, _lens, itt, stat_sn, exp_cmd_sn, max_cmd_sn, data_sn = _REJECT.unpack_from(h)
    return Reject(immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, reason=reason, stat_sn=stat_sn,
                  exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn, data_sn=data_sn)  # fmt: skip


def _dec_snack(h: Buffer, ahs: list[Ahs], d: Buffer) -> SnackRequest:
    b0, b1, _lens, lun, itt, ttt, exp_stat_sn, beg_run, run_length = _SNACK.unpack_from(h)
    return SnackRequest(immediate=b0 & _I != 0, itt=itt, data=d, ahs=ahs, type=b1 & 0x0F, lun=lun, ttt=ttt,
                        exp_stat_sn=exp_stat_sn, beg_run=beg_run, run_length=run_length)  # fmt: skip


def _dec_unknown(h: Buffer, ahs: list[Ahs], d: Buffer) -> UnknownPdu:
    b0 = h[0]
    return UnknownPdu(immediate=b0 & _I != 0, itt=_U32.unpack_from(h, 16)[0], data=d, ahs=ahs,
                      opcode_value=b0 & 0x3F, raw_bhs=bytes(h[:BHS_LENGTH]))  # fmt: skip


_DECODERS: dict[int, Callable[[Buffer, list[Ahs], Buffer], Pdu]] = {
    Opcode.NOP_OUT: _dec_nop_out,
    Opcode.SCSI_COMMAND: _dec_scsi_command,
    Opcode.TMF_REQUEST: _dec_tmf_request,
    Opcode.LOGIN_REQUEST: _dec_login_request,
    Opcode.TEXT_REQUEST: _dec_text_request,
    Opcode.DATA_OUT: _dec_data_out,
    Opcode.LOGOUT_REQUEST: _dec_logout_request,
    Opcode.SNACK_REQUEST: _dec_snack,
    Opcode.NOP_IN: _dec_nop_in,
    Opcode.SCSI_RESPONSE: _dec_scsi_response,
    Opcode.TMF_RESPONSE: _dec_tmf_response,
    Opcode.LOGIN_RESPONSE: _dec_login_response,
    Opcode.TEXT_RESPONSE: _dec_text_response,
    Opcode.DATA_IN: _dec_data_in,
    Opcode.LOGOUT_RESPONSE: _dec_logout_response,
    Opcode.R2T: _dec_r2t,
    Opcode.ASYNC_MESSAGE: _dec_async,
    Opcode.REJECT: _dec_reject,
}
# Plain-int keys: the lookup with the wire's int then skips IntEnum.__hash__.
_DECODERS = {int(op): fn for op, fn in _DECODERS.items()}


def _parse_ahs(h: Buffer, end: int) -> list[Ahs]:
    chain: list[Ahs] = []
    pos = BHS_LENGTH
    while pos < end:
        length, kind = _AHS_HDR.unpack_from(h, pos)
        start = pos + 3
        stop = start + length
        if stop > end:
            raise PduFormatError(
                f"AHS at byte {pos} (AHSLength {length}) overflows TotalAHSLength ({end - BHS_LENGTH} bytes)",
                RejectReason.INVALID_PDU_FIELD,
                bytes(h[:BHS_LENGTH]),
            )
        chain.append(Ahs(kind, bytes(h[start:stop])))
        pos = (stop + 3) & ~3  # AHSs are padded to 4 bytes; end is a multiple of 4
    return chain


def decode(header: Buffer, data: Buffer = b"") -> Pdu:
    """Decode one PDU from its header (BHS + AHS chain, no digest) and data segment.

    ``data`` may carry the pad bytes (iSER senders differ) but nothing more. It is kept as
    given, not copied (sliced as a memoryview if padding must be cut off). Raises
    :class:`PduFormatError` for a short BHS, a header length that disagrees with
    TotalAHSLength, a broken AHS chain, or a data length that disagrees with
    DataSegmentLength.
    """
    h = _byte_view(header)
    size = len(h)
    if size < BHS_LENGTH:
        raise PduFormatError(f"truncated BHS: {size} of {BHS_LENGTH} bytes")
    b0, lens = _HEAD.unpack_from(h)
    ahs_end = BHS_LENGTH + ((lens >> 24) << 2)
    if size != ahs_end:
        raise PduFormatError(
            f"header is {size} bytes but TotalAHSLength says {ahs_end}",
            RejectReason.PROTOCOL_ERROR,
            bytes(h[:BHS_LENGTH]),
        )
    dsl = lens & 0xFFFFFF
    if dsl:
        data = _byte_view(data)
        have = len(data)
        if have != dsl:
            if have < dsl or have > ((dsl + 3) & ~3):
                raise PduFormatError(
                    f"data segment is {have} bytes but DataSegmentLength says {dsl}",
                    RejectReason.PROTOCOL_ERROR,
                    bytes(h[:BHS_LENGTH]),
                )
            data = memoryview(data)[:dsl]  # cut the padding off without copying
    else:
        if len(_byte_view(data)):
            raise PduFormatError(
                "data segment given but DataSegmentLength is 0", RejectReason.PROTOCOL_ERROR, bytes(h[:BHS_LENGTH])
            )
        data = _EMPTY
    ahs = _parse_ahs(h, ahs_end) if ahs_end > BHS_LENGTH else []
    decoder = _DECODERS.get(b0 & 0x3F, _dec_unknown)
    return decoder(h, ahs, data)


def decode_pdu(buf: Buffer, *, header_digest: bool = False, data_digest: bool = False) -> tuple[Pdu, int]:
    """Decode the first PDU in a byte-stream buffer; returns (pdu, bytes consumed).

    Raises :class:`IncompletePdu` (with ``needed``) when the buffer holds less than a
    whole PDU, :class:`DigestError` when a digest does not match (the header digest is
    checked as soon as the header is complete, before waiting for the data), and
    :class:`PduFormatError` for anything else malformed. The returned PDU's data is a
    memoryview into ``buf``.
    """
    b = _byte_view(buf)
    size = len(b)
    if size < BHS_LENGTH:
        raise IncompletePdu(f"BHS needs {BHS_LENGTH} bytes, have {size}", BHS_LENGTH)
    lens = _HEAD.unpack_from(b)[1]
    header_end = BHS_LENGTH + ((lens >> 24) << 2)
    dsl = lens & 0xFFFFFF
    padded = (dsl + 3) & ~3
    data_start = header_end + 4 if header_digest else header_end
    total = data_start + padded + (4 if data_digest and dsl else 0)
    view = b if type(b) is memoryview else memoryview(b)
    if header_digest and size >= data_start:
        expected = _LE32.unpack_from(view, header_end)[0]
        if crc32c_short(view[:header_end]) != expected:
            raise DigestError("header", "header digest mismatch", bytes(view[:BHS_LENGTH]))
    if size < total:
        raise IncompletePdu(f"PDU needs {total} bytes, have {size}", total, bytes(view[:BHS_LENGTH]))
    if dsl:
        data: Buffer = view[data_start : data_start + dsl]
        if data_digest:
            expected = _LE32.unpack_from(view, data_start + padded)[0]
            if crc32c(view[data_start : data_start + padded]) != expected:
                raise DigestError("data", "data digest mismatch", bytes(view[:BHS_LENGTH]))
    else:
        data = _EMPTY
    return decode(view[:header_end], data), total

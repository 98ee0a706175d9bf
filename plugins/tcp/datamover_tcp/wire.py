"""Building data PDUs (Data-In, Data-Out) whose data segment spans several buffers.

The codec's :func:`~datamover.pdu.codec.encode` takes one contiguous data buffer. A burst
handed to ``put_data`` or answered from ``data_out`` may be a scatter-gather list, and one
PDU may cover the end of one element and the start of the next. Joining them would copy the
payload; instead the header is encoded with an empty data segment, DataSegmentLength is
written into bytes 5-7, and the pieces go into the gather list as they are. Digests (when
negotiated) are computed over the pieces in place.

Data-In and Data-Out never carry an AHS, so TotalAHSLength (byte 4) stays 0.
"""

from __future__ import annotations

import struct

from datamover.pdu.codec import PADS, encode_header, segment_tail
from datamover.pdu.digest import crc32c_short
from datamover.pdu.model import DataIn, Pdu, ScsiCommand, ScsiResponse

Buffer = bytes | bytearray | memoryview

#: bytes 4-7 of the BHS: TotalAHSLength (0 for data PDUs) and DataSegmentLength
_LENGTHS = struct.Struct(">I")
#: digests go on the wire little-endian (RFC 7143 13.1, Linux put_le32)
_LE32 = struct.Struct("<I")

#: The Data-In BHS (RFC 7143 11.7), the codec's layout: b0 b1 status lengths LUN ITT TTT
#: StatSN ExpCmdSN MaxCmdSN DataSN BufferOffset ResidualCount. Packed here directly because
#: a read sends one per PDU and building a DataIn object to encode it cost more than the
#: rest of the PDU's handling.
DATA_IN_BHS = struct.Struct(">BBxBIQIIIIIIII")
#: The SCSI Response BHS (RFC 7143 11.4): b0 b1 response status lengths ITT SNACK-tag StatSN
#: ExpCmdSN MaxCmdSN ExpDataSN BidiResidual Residual; the codec's layout.
SCSI_RESPONSE_BHS = struct.Struct(">BBBBI8xIIIIIIII")
#: The SCSI Command BHS (RFC 7143 11.3): b0 b1 lengths LUN ITT EDTL CmdSN ExpStatSN CDB[16]
SCSI_COMMAND_BHS = struct.Struct(">BB2xIQIIII16s")
#: The Data-Out BHS (RFC 7143 11.3): b0 b1 lengths LUN ITT TTT ExpStatSN DataSN BufferOffset
DATA_OUT_BHS = struct.Struct(">BB2xIQII4xI4xII4x")
OP_DATA_OUT = 0x05
OP_DATA_IN = 0x25
OP_SCSI_RESPONSE = 0x21
FLAG_F, FLAG_O, FLAG_U, FLAG_S = 0x80, 0x04, 0x02, 0x01
FLAG_O_BIDI, FLAG_U_BIDI = 0x10, 0x08


def data_pdu_buffers(header: Pdu, pieces: list[memoryview], length: int, *,
                     header_digest: bool, data_digest: bool) -> list[Buffer]:
    """Gather list for ``header`` (whose ``data`` is empty) carrying ``pieces``.

    ``length`` is the sum of the pieces' sizes (the caller has it already).
    """
    bhs = bytearray(encode_header(header))
    _LENGTHS.pack_into(bhs, 4, length)
    if header_digest:
        bhs += _LE32.pack(crc32c_short(bhs))
    out: list[Buffer] = [bhs]
    out.extend(pieces)
    tail = segment_tail(pieces, length, data_digest)
    if tail:
        out.append(tail)
    return out


def data_in_buffers(out: list[Buffer], b1: int, status: int, lun: int, itt: int, stat_sn: int, exp_cmd_sn: int,
                    max_cmd_sn: int, data_sn: int, offset: int, residual: int, pieces: list[memoryview],
                    length: int, header_digest: bool, data_digest: bool) -> bytearray:
    """Append one Data-In PDU (header, ``pieces``, padding/digest) to ``out``; return its
    header (a bytearray, so that :func:`collapse_status` can still add the status to it).

    The same bytes as ``data_pdu_buffers(DataIn(...), ...)``, without the PDU object.
    """
    if header_digest:
        # packed to bytes first: the CRC then needs no 48-byte view of a 52-byte buffer
        head = DATA_IN_BHS.pack(OP_DATA_IN, b1, status, length, lun, itt, 0xFFFFFFFF, stat_sn, exp_cmd_sn,
                                max_cmd_sn, data_sn, offset, residual)
        bhs = bytearray(head)
        bhs += _LE32.pack(crc32c_short(head))
    else:
        bhs = bytearray(48)
        DATA_IN_BHS.pack_into(bhs, 0, OP_DATA_IN, b1, status, length, lun, itt, 0xFFFFFFFF, stat_sn, exp_cmd_sn,
                              max_cmd_sn, data_sn, offset, residual)
    out.append(bhs)
    out += pieces
    tail = segment_tail(pieces, length, data_digest)
    if tail:
        out.append(tail)
    return bhs


#: StatSN, ExpCmdSN, MaxCmdSN (bytes 24-35) and ResidualCount (44-47) of a Data-In BHS
_SNS = struct.Struct(">III")
_RESIDUAL = struct.Struct(">I")


def collapse_status(bhs: bytearray, status: int, overflow: bool, underflow: bool, residual: int, stat_sn: int,
                    exp_cmd_sn: int, max_cmd_sn: int) -> None:
    """Turn a final Data-In header into one that also carries the command's status (S bit,
    RFC 7143 11.7.4 phase collapse), in place; the header digest is recomputed."""
    bhs[1] |= FLAG_S | (FLAG_O if overflow else 0) | (FLAG_U if underflow else 0)
    bhs[3] = status
    _SNS.pack_into(bhs, 24, stat_sn, exp_cmd_sn, max_cmd_sn)
    _RESIDUAL.pack_into(bhs, 44, residual)
    if len(bhs) == 52:
        _LE32.pack_into(bhs, 48, crc32c_short(memoryview(bhs)[:48]))


def data_out_buffers(out: list[Buffer], final: bool, lun: int, itt: int, ttt: int, exp_stat_sn: int, data_sn: int,
                     offset: int, pieces: list[memoryview], length: int, header_digest: bool,
                     data_digest: bool) -> None:
    """Append one Data-Out PDU to ``out``: the bytes of ``data_pdu_buffers(DataOut(...))``
    without the PDU object (an R2T against an 8 KiB-PDU target becomes 32 of them)."""
    bhs = DATA_OUT_BHS.pack(OP_DATA_OUT, FLAG_F if final else 0, length, lun, itt, ttt, exp_stat_sn, data_sn, offset)
    if header_digest:
        bhs += _LE32.pack(crc32c_short(bhs))
    out.append(bhs)
    out += pieces
    tail = segment_tail(pieces, length, data_digest)
    if tail:
        out.append(tail)


def data_out_run(out: list[Buffer], view: memoryview, offset: int, wanted: int, limit: int, lun: int, itt: int,
                 ttt: int, exp_stat_sn: int) -> int:
    """Append the Data-Out PDUs answering one R2T from one flat buffer, without digests:
    the bytes of a :func:`data_out_buffers` loop (DataSN from 0, F on the last), without its
    per-PDU slicing of a descriptor and tail. Returns the number of PDUs. (Against tgtd's
    8 KiB MaxRecvDataSegmentLength a 1 MiB write is 128 of them.)"""
    pack = DATA_OUT_BHS.pack
    append = out.append
    data_sn = 0
    done = 0
    while done < wanted:
        take = limit if wanted - done > limit else wanted - done
        start = offset + done
        done += take
        append(pack(OP_DATA_OUT, FLAG_F if done == wanted else 0, take, lun, itt, ttt, exp_stat_sn, data_sn, start))
        append(view[start:start + take])
        if take & 3:
            append(PADS[-take & 3])
        data_sn += 1
    return data_sn



def command_buffers(p: ScsiCommand, header_digest: bool, data_digest: bool) -> list[Buffer] | None:
    """The gather list ``codec.encode`` makes for a plain SCSI Command (CDB of at most 16
    bytes, no AHS), packed directly; None for anything else (the codec handles those)."""
    cdb = p.cdb
    if p.ahs or type(cdb) is not bytes or len(cdb) > 16 or p.bidi_read_length is not None or p.attr & ~7:
        return None
    data = p.data
    if type(data) is bytes:
        view: Buffer = data
        length = len(data)
    else:
        view = memoryview(data)
        if view.ndim != 1 or view.format != "B" or not view.c_contiguous:
            return None
        length = view.nbytes
    if length > 0xFFFFFF:
        return None
    b1 = (FLAG_F if p.final else 0) | (0x40 if p.read else 0) | (0x20 if p.write else 0) | p.attr
    try:
        bhs = SCSI_COMMAND_BHS.pack(0x41 if p.immediate else 0x01, b1, length, p.lun, p.itt,
                                    p.expected_data_transfer_length, p.cmd_sn, p.exp_stat_sn, cdb)
    except struct.error:
        return None
    if header_digest:
        bhs += _LE32.pack(crc32c_short(bhs))
    if not length:
        return [bhs]
    tail = segment_tail((view,), length, data_digest)
    return [bhs, view, tail] if tail else [bhs, view]


def decode_command(bhs: memoryview, data: Buffer) -> ScsiCommand:
    """The ScsiCommand ``codec.decode`` gives for a SCSI Command BHS without AHS, whose
    data segment (without padding or digest) is ``data``; one unpack, no generic dispatch.
    The caller has checked the opcode, TotalAHSLength 0 and the digests."""
    b0, b1, _lengths, lun, itt, edtl, cmd_sn, exp_stat_sn, cdb = SCSI_COMMAND_BHS.unpack_from(bhs)
    return ScsiCommand(immediate=b0 & 0x40 != 0, itt=itt, data=data, ahs=[], final=b1 & FLAG_F != 0,
                       read=b1 & 0x40 != 0, write=b1 & 0x20 != 0, attr=b1 & 7, lun=lun,
                       expected_data_transfer_length=edtl, cmd_sn=cmd_sn, exp_stat_sn=exp_stat_sn, cdb=cdb)


def decode_data_in(bhs: memoryview, data: Buffer) -> DataIn:
    """The DataIn ``codec.decode`` gives for a Data-In BHS without AHS whose data segment
    (without padding or digest) is ``data``; as :func:`decode_command`, for the initiator."""
    (b0, b1, status, _lengths, lun, itt, ttt, stat_sn, exp_cmd_sn, max_cmd_sn, data_sn, offset,
     residual) = DATA_IN_BHS.unpack_from(bhs)
    return DataIn(immediate=b0 & 0x40 != 0, itt=itt, data=data, ahs=[], final=b1 & FLAG_F != 0,
                  ack=b1 & 0x40 != 0, overflow=b1 & FLAG_O != 0, underflow=b1 & FLAG_U != 0,
                  status_present=b1 & FLAG_S != 0, status=status, lun=lun, ttt=ttt, stat_sn=stat_sn,
                  exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn, data_sn=data_sn, buffer_offset=offset,
                  residual=residual)


def decode_response(bhs: memoryview, data: Buffer) -> ScsiResponse:
    """The ScsiResponse ``codec.decode`` gives for a SCSI Response BHS without AHS; as
    :func:`decode_command` (what an initiator receives for every write and most commands)."""
    (b0, b1, response, status, _lengths, itt, snack_tag, stat_sn, exp_cmd_sn, max_cmd_sn, exp_data_sn,
     bidi_residual, residual) = SCSI_RESPONSE_BHS.unpack_from(bhs)
    return ScsiResponse(immediate=b0 & 0x40 != 0, itt=itt, data=data, ahs=[], bidi_overflow=b1 & FLAG_O_BIDI != 0,
                        bidi_underflow=b1 & FLAG_U_BIDI != 0, overflow=b1 & FLAG_O != 0, underflow=b1 & FLAG_U != 0,
                        response=response, status=status, snack_tag=snack_tag, stat_sn=stat_sn,
                        exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn, exp_data_sn=exp_data_sn,
                        bidi_read_residual=bidi_residual, residual=residual)

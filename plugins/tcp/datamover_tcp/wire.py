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

from datamover.pdu.codec import encode_header
from datamover.pdu.digest import crc32c
from datamover.pdu.model import Pdu

Buffer = bytes | bytearray | memoryview

#: bytes 4-7 of the BHS: TotalAHSLength (0 for data PDUs) and DataSegmentLength
_LENGTHS = struct.Struct(">I")
#: digests go on the wire little-endian (RFC 7143 13.1, Linux put_le32)
_LE32 = struct.Struct("<I")
_PADS = (b"", b"\0", b"\0\0", b"\0\0\0")


def data_pdu_buffers(header: Pdu, pieces: list[memoryview], length: int, *,
                     header_digest: bool, data_digest: bool) -> list[Buffer]:
    """Gather list for ``header`` (whose ``data`` is empty) carrying ``pieces``.

    ``length`` is the sum of the pieces' sizes (the caller has it already).
    """
    bhs = bytearray(encode_header(header))
    _LENGTHS.pack_into(bhs, 4, length)
    if header_digest:
        bhs += _LE32.pack(crc32c(bhs))
    out: list[Buffer] = [bhs]
    out.extend(pieces)
    pad = _PADS[-length & 3]
    if data_digest and length:
        value = 0
        for piece in pieces:
            value = crc32c(piece, value)
        if pad:
            value = crc32c(pad, value)
        out.append(pad + _LE32.pack(value))
    elif pad:
        out.append(pad)
    return out

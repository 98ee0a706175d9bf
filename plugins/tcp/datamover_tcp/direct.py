"""Direct placement: receive a large data segment straight into the caller's buffer.

Without it every payload byte of a read (initiator) or a solicited write (target) is copied
twice: by the kernel into the receive buffer, then by the datamover into the task's
descriptor. When the header of a Data-In / solicited Data-Out has arrived, its data
segment is at least :data:`DIRECT_MIN` bytes and not yet complete, and the PDU fits its
task (known ITT/TTT, in range, DataSN in order), the connection points ``get_buffer`` at
the destination slices instead; ``recv_into`` then writes the payload where it belongs.
Only the bytes that had already arrived with the header are copied.

To catch segments before the receive buffer swallows them whole, the connection reads only
up to the end of the next header after a large data PDU (one extra ``recv`` per PDU, cheaper
than copying tens of KiB); a run of small PDUs switches that off again.

With data digests on, the digest is computed as the bytes land, one ``recv_into`` at a time,
while they are still in the CPU's caches; the last piece completes it and it is compared
with the received one. (Checking the whole segment afterwards read it back from memory: 47
us per MiB on the initiator, and the delay slowed the sending target by a fifth.) A task freed
mid-segment (``deallocate_task_resources``, ``connection_terminate``) switches the rest of
the segment to *discard*: the bytes are read into the receive buffer's free area and
dropped, so the caller's buffer is never written after it was handed back.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

#: Below this the copy out of the receive buffer is cheaper than the bookkeeping.
DIRECT_MIN = 32 * 1024

#: ITT (16) and TTT (20); DataSN (36) and BufferOffset (40) of Data-In / Data-Out BHSs.
_TAGS = struct.Struct(">II")
_SN_OFFSET = struct.Struct(">II")


def data_pdu_fields(bhs: memoryview) -> tuple[int, int, int, int]:
    """(ITT, TTT, DataSN, BufferOffset) of a Data-In or Data-Out header."""
    itt, ttt = _TAGS.unpack_from(bhs, 16)
    data_sn, offset = _SN_OFFSET.unpack_from(bhs, 36)
    return itt, ttt, data_sn, offset


class DirectSegment:
    """A data segment being received into destination views."""

    __slots__ = ("header", "itt", "pieces", "index", "inner", "remaining", "length", "trailer", "discard", "crc",
                 "_digest")

    def __init__(self, header: bytes, itt: int, pieces: list[memoryview], length: int, trailer: int,
                 digest: Callable[..., int] | None = None) -> None:
        #: BHS (+AHS) of the PDU, copied, without digest
        self.header = header
        self.itt = itt
        #: destination views covering the whole data segment, in order
        self.pieces = pieces
        self.index = 0
        self.inner = 0
        #: data bytes still to come from the socket
        self.remaining = length
        self.length = length
        #: bytes after the data (padding + data digest), read into the receive buffer
        self.trailer = trailer
        #: the task went away: drop the rest instead of writing the caller's buffer
        self.discard = False
        #: CRC32C of the data received so far (``digest`` given: data digests are on)
        self.crc = 0
        self._digest = digest

    def area(self) -> memoryview:
        """Where the next bytes of the segment go."""
        piece = self.pieces[self.index]
        return piece[self.inner:]

    def advance(self, nbytes: int) -> None:
        """``nbytes`` of the segment were received (into :meth:`area` unless discarding)."""
        self.remaining -= nbytes
        if self.discard:
            return
        if self._digest is not None:
            # the bytes just written, while they are in cache (area() does not cross pieces)
            self.crc = self._digest(self.pieces[self.index][self.inner:self.inner + nbytes], self.crc)
        self.inner += nbytes
        while self.index < len(self.pieces) and self.inner >= self.pieces[self.index].nbytes:
            self.inner -= self.pieces[self.index].nbytes
            self.index += 1

    def fill_prefix(self, data: memoryview) -> int:
        """Copy the bytes that arrived with the header; return the number of copy calls."""
        copies = 0
        done = 0
        total = data.nbytes
        while done < total:
            piece = self.area()
            take = min(piece.nbytes, total - done)
            piece[:take] = data[done:done + take]
            copies += 1
            done += take
            self.advance(take)
        return copies

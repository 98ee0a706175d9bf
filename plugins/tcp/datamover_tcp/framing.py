"""Incoming side of a TCP connection: the preallocated receive buffer PDUs are framed in.

The asyncio ``BufferedProtocol`` reads straight into :class:`ReceiveBuffer` (``recv_into``
under the hood); PDUs are cut out of it in place and handed on as memoryviews. The buffer
starts at the ``recv_buffer`` option's size and grows only when one PDU needs more room,
and never beyond the largest PDU the negotiated receive limit allows (the caller checks
DataSegmentLength against that limit *before* asking for room), so a peer cannot make us
allocate unbounded memory.

Bytes are moved inside the buffer only to slide an incomplete PDU to the front when the
tail is too short for it; those moves are counted in ``moved_bytes`` for ``stats()``.
The framing itself (lengths, digests, limits) is ``TcpConnection._process``.
"""

from __future__ import annotations

from collections.abc import Callable

from datamover.pdu.digest import CRC32C_RESIDUE, crc32c_short


class ReceiveBuffer:
    """A bytearray holding received, not yet consumed bytes in ``[start, end)``."""

    __slots__ = ("_buf", "_view", "start", "end", "moved_bytes", "grown")

    def __init__(self, size: int) -> None:
        self._buf = bytearray(max(size, 4096))
        self._view = memoryview(self._buf)
        self.start = 0
        self.end = 0
        #: bytes slid or copied inside this buffer (compaction and growth)
        self.moved_bytes = 0
        #: how often the buffer was reallocated larger
        self.grown = 0

    @property
    def capacity(self) -> int:
        return len(self._buf)

    @property
    def available(self) -> int:
        """Received bytes not yet consumed."""
        return self.end - self.start

    @property
    def free(self) -> int:
        return len(self._buf) - self.end

    def view(self, offset: int, length: int) -> memoryview:
        """``length`` received bytes from ``start + offset`` (aliasing the buffer)."""
        base = self.start + offset
        return self._view[base:base + length]

    def digest_ok(self, offset: int, length: int, crc: Callable[..., int] = crc32c_short) -> bool:
        """True when the 4 bytes after ``length`` received bytes from ``start + offset`` are
        their CRC32C (a header or data digest checked in place, in one call: the views around
        a 48-byte CRC cost more than the CRC itself)."""
        base = self.start + offset
        # The CRC of bytes followed by their own little-endian CRC32C is always this
        # residue, so the digest is checked without unpacking it.
        return crc(self._view[base:base + length + 4]) == CRC32C_RESIDUE

    def write_area(self) -> memoryview:
        """Where the next ``recv_into`` may write; compacts first when the tail is short."""
        if self.start and self.free < (len(self._buf) >> 3):
            self.compact()
        return self._view[self.end:]

    def commit(self, nbytes: int) -> None:
        """``nbytes`` were written into :meth:`write_area`."""
        self.end += nbytes

    def consume(self, nbytes: int) -> None:
        """The first ``nbytes`` unconsumed bytes are done with."""
        self.start += nbytes
        if self.start >= self.end:
            self.start = self.end = 0

    def compact(self) -> None:
        """Slide the unconsumed bytes to the front (memmove; overlapping is safe)."""
        if not self.start:
            return
        count = self.end - self.start
        if count:
            self._view[0:count] = self._view[self.start:self.end]
            self.moved_bytes += count
        self.start = 0
        self.end = count

    def reserve(self, total: int) -> None:
        """Make room for a PDU of ``total`` bytes starting at ``start``.

        The caller has bounded ``total`` by the negotiated limit; this never shrinks.
        """
        if self.start + total <= len(self._buf):
            return
        if total <= len(self._buf):
            self.compact()
            return
        count = self.end - self.start
        new = bytearray(total)
        new_view = memoryview(new)
        if count:
            new_view[0:count] = self._view[self.start:self.end]
            self.moved_bytes += count
        self._view.release()
        self._buf = new
        self._view = new_view
        self.start = 0
        self.end = count
        self.grown += 1

    def release(self) -> None:
        """Drop the memory (connection gone)."""
        self._view.release()
        self._buf = bytearray(0)
        self._view = memoryview(self._buf)
        self.start = self.end = 0

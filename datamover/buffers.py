"""Reused data buffers: what a datamover's ``alloc_buffer`` hands the core for task data.

Shared by the built-in TCP and loopback transports and available to third-party ones
(plugins import the core, never each other).

A fresh 1 MiB ``bytearray`` per I/O costs more than the I/O itself: glibc serves it with
``mmap``, so every byte is page-faulted in and zeroed, then unmapped again (a profile of
1 MiB reads put 300 us of the target's 660 us per I/O there). The core hands each buffer back
with ``release_buffer`` once no transfer refers to it, so buffers can be kept and reused.

Buffers are kept per power-of-two size class (at least 4 KiB) and the caller gets a view of
exactly the size it asked for. The pool is bounded: at most :data:`MAX_POOLED_BYTES` are
kept per connection and nothing above :data:`MAX_BUFFER` is pooled, so a burst of huge
transfers does not pin memory for the life of the connection.

Reused buffers are not zeroed: every user in the core fills the whole view before any byte
of it leaves (a READ fills it from the medium, a WRITE from the wire, all of it, before the
command executes).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

MIN_CLASS = 4096
MAX_BUFFER = 16 << 20
MAX_POOLED_BYTES = 64 << 20


class BufferPool:
    """Free lists of bytearrays by size class."""

    __slots__ = ("_free", "_pooled_bytes", "allocated", "reused")

    def __init__(self) -> None:
        self._free: dict[int, list[bytearray]] = {}
        self._pooled_bytes = 0
        #: buffers created / handed out again, for stats()
        self.allocated = 0
        self.reused = 0

    def take(self, size: int) -> memoryview:
        """A writable view of ``size`` bytes (contents undefined)."""
        if size > MAX_BUFFER or size <= 0:
            self.allocated += 1
            return memoryview(bytearray(size))
        capacity = MIN_CLASS if size <= MIN_CLASS else 1 << (size - 1).bit_length()
        free = self._free.get(capacity)
        if free:
            self.reused += 1
            self._pooled_bytes -= capacity
            base = free.pop()
        else:
            self.allocated += 1
            base = bytearray(capacity)
        view = memoryview(base)
        return view if size == capacity else view[:size]

    def give(self, buf: memoryview) -> None:
        """Take back a view from :meth:`take`; anything else is ignored."""
        base = buf.obj
        if type(base) is not bytearray:
            return
        capacity = len(base)
        if capacity > MAX_BUFFER or capacity < MIN_CLASS or capacity & (capacity - 1):
            return
        if self._pooled_bytes + capacity > MAX_POOLED_BYTES:
            return
        self._free.setdefault(capacity, []).append(base)
        self._pooled_bytes += capacity

    def clear(self) -> None:
        self._free.clear()
        self._pooled_bytes = 0


@dataclass(frozen=True, slots=True)
class FileSlice:
    """``length`` bytes of an open file from ``offset``: a Put_Data descriptor element for a
    datamover that takes them (:meth:`DatamoverConnection.min_file_slice`), sent by the
    kernel straight from the page cache (``os.sendfile``) instead of through a buffer.

    The bytes are read when the datamover sends them, not when the slice is made, so the
    file must stay open and those bytes unchanged until the Put_Data completes. The core
    hands over slices only where the user accepted that (the TCP option ``sendfile``).
    """

    fd: int
    offset: int
    length: int

    def __len__(self) -> int:
        return self.length

    @property
    def nbytes(self) -> int:
        return self.length

    def tail(self, skip: int) -> FileSlice:
        """The slice without its first ``skip`` bytes."""
        return FileSlice(self.fd, self.offset + skip, self.length - skip)

    def __getitem__(self, part: slice) -> FileSlice:
        """``piece[start:stop]``: a part of the slice, as for a memoryview (step 1 only)."""
        start, stop, step = part.indices(self.length)
        if step != 1:
            raise ValueError("a FileSlice takes no step")
        return FileSlice(self.fd, self.offset + start, max(0, stop - start))

    def read(self) -> bytes:
        """The bytes, read now (a short file gives fewer)."""
        return os.pread(self.fd, self.length, self.offset)

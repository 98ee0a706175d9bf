"""Scatter-gather helpers over a data descriptor (a sequence of memoryviews).

The TCP datamover slices a descriptor into PDU-sized pieces without copying (sending) and
copies a received data segment into the right place of a descriptor (receiving). Both need
"where is byte N of the descriptor": :class:`DescriptorMap` answers that with a bisect over
the cumulative element offsets, computed once per descriptor (per task or burst), not per PDU.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence


class DescriptorMap:
    """A descriptor with precomputed element start offsets.

    ``views`` are flattened to unsigned-byte memoryviews (``cast("B")``) so that lengths are
    byte counts whatever the caller's format was.
    """

    __slots__ = ("views", "starts", "length")

    def __init__(self, descriptor: Sequence[memoryview] | None) -> None:
        if descriptor is not None and len(descriptor) == 1:
            view = descriptor[0]
            if view.format == "B" and view.ndim == 1 and view.nbytes:
                # one flat buffer (nearly every command): the loop below for it
                self.views = [view]
                self.starts = [0]
                self.length = view.nbytes
                return
        views: list[memoryview] = []
        starts: list[int] = []
        total = 0
        for view in descriptor or ():
            flat = view if (view.format == "B" and view.ndim == 1) else view.cast("B")
            if not flat.nbytes:
                continue
            views.append(flat)
            starts.append(total)
            total += flat.nbytes
        self.views: list[memoryview] = views
        self.starts: list[int] = starts
        self.length: int = total

    def slices(self, offset: int, length: int) -> list[memoryview]:
        """The pieces covering ``[offset, offset + length)``, as views (no copy).

        The caller has bounds-checked; an out-of-range request raises ``ValueError``.
        """
        if offset < 0 or length < 0 or offset + length > self.length:
            raise ValueError(f"range {offset}+{length} outside descriptor of {self.length} bytes")
        out: list[memoryview] = []
        if not length:
            return out
        index = bisect_right(self.starts, offset) - 1
        inner = offset - self.starts[index]
        while length:
            view = self.views[index]
            take = min(length, view.nbytes - inner)
            out.append(view[inner:inner + take])
            length -= take
            index += 1
            inner = 0
        return out

    def scatter(self, offset: int, data: memoryview) -> int:
        """Copy ``data`` into the descriptor at ``offset``; return the number of copy calls.

        The caller has bounds-checked (``offset + len(data) <= length``) and the descriptor
        elements are writable.
        """
        length = data.nbytes
        if offset < 0 or offset + length > self.length:
            raise ValueError(f"range {offset}+{length} outside descriptor of {self.length} bytes")
        if not length:
            return 0
        if len(self.views) == 1:
            self.views[0][offset:offset + length] = data  # one buffer: one slice assignment
            return 1
        index = bisect_right(self.starts, offset) - 1
        inner = offset - self.starts[index]
        done = 0
        copies = 0
        while done < length:
            view = self.views[index]
            take = min(length - done, view.nbytes - inner)
            view[inner:inner + take] = data[done:done + take]
            copies += 1
            done += take
            index += 1
            inner = 0
        return copies

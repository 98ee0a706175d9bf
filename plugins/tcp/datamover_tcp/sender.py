"""Outgoing side of a TCP connection: one gather write per event-loop turn, no payload copy.

Everything queued during one turn of the event loop (control PDUs, the Data-In PDUs of a
``put_data``, the Data-Out answer to an R2T) goes out with a single ``os.writev`` on the
socket: an unbatched send costs 4-7 us on loopback (performance-baseline.md), and a write
per PDU halved throughput in the prototypes.

Why ``os.writev`` on the socket's fd rather than ``transport.writelines``: on Python 3.11
``writelines`` is ``write(b"".join(...))``, a full copy of every payload. ``writev`` hands
the kernel the caller's memoryviews directly. The transport is still the owner of the
socket (reading, closing, error reporting); the writer only writes while the transport's
own write buffer is empty, so byte order on the wire is kept.

Backpressure without copying: when the kernel buffer is full, one byte of the remaining
data is handed to ``transport.write``; the transport then waits for writability itself and,
because the protocol set the write-buffer high-water mark to 0, calls ``pause_writing`` /
``resume_writing`` around it. On ``resume_writing`` the rest goes out with ``writev`` again.
So a stall costs one copied byte, never a copied payload.

Other event loops (uvloop, and Python 3.12+ where the selector transport's ``writelines``
is itself a zero-copy ``sendmsg``) get ``transport.writelines``; completion callbacks then
fire once the transport reports an empty write buffer.

Limit of the fallback path: where ``writelines`` keeps references instead of copying, a
buffer still queued in the transport when ``connection_terminate`` returns stays referenced
until the transport has drained or dropped it (the writev path copies such leftovers).

File slices (the ``sendfile`` option): a :class:`~datamover.buffers.FileSlice` in the
backlog is written with ``os.sendfile`` in its place in the stream, between the gather
writes of the buffers around it; the kernel takes the bytes from the page cache, so a
file-backed read is never copied through this process. A file that ends before the slice
does is a write error (the connection drops), never a short PDU. The buffers written just
before a slice (its Data-In header) go with ``sendmsg(MSG_MORE)``, so that the kernel holds
them for the slice's pages instead of sending the 48-byte header as a segment of its own (the
connection runs with ``TCP_NODELAY``): 64 KiB READs went from 2.5 to 2.9 GB/s and from 25 to
21 us of target CPU each. (``TCP_CORK`` around a whole flush was tried and lost 40%: the
receiver then waits for the end of each flush.) ``sendmsg`` needs a socket object, which
neither event loop lends: the writer makes one on a ``dup`` of the socket's fd the first time
a slice is queued and closes it with the connection.

Early flushes (``early_flush``, the initiator's writer): once one turn has queued that many
buffers, they go out at once instead of at the end of the turn. Our initiator against our
target, both one-threaded, otherwise runs in lock step: the target cannot start on a batch
of commands until the initiator has issued all of it, and the initiator waits in turn for
the whole batch of answers. Flushing every 16 buffers lets the two overlap: 4 KiB reads at
QD32 went from 57k to 80k IOPS, with no change against tgtd. The target's writer does not
do it: against a C initiator its one write per turn is what keeps it ahead (95k IOPS with,
78k without).

Completion callbacks (``on_sent``) let ``put_data(notify=True)`` report completion only when
its bytes are in the kernel, i.e. when the descriptor is no longer referenced.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
from collections import deque
from collections.abc import Callable

from datamover.buffers import FileSlice

#: what the writer sends: memory, or (the ``sendfile`` option) a slice of an open file
Buffer = bytes | bytearray | memoryview | FileSlice

#: MSG_MORE (Linux): more data follows, do not send a partial segment yet; 0 elsewhere
_MSG_MORE = getattr(socket, "MSG_MORE", 0)

try:
    _IOV_MAX = max(16, os.sysconf("SC_IOV_MAX"))
except (AttributeError, ValueError, OSError):  # pragma: no cover - non-POSIX
    _IOV_MAX = 16


def _uses_selector_transport(transport: asyncio.BaseTransport) -> bool:
    """True where writing the socket's fd ourselves is safe and cheaper: the stdlib selector
    socket transport (plain TCP, not TLS) and uvloop's TCP transport.

    uvloop's ``writelines`` queues the buffers and writes them later from its own buffer:
    measured here it cost twice the CPU of ``os.writev`` for 1 MiB reads. Both transports
    honour the write-buffer limits the writer relies on (pause/resume around a stall).
    """
    if not hasattr(os, "writev"):
        return False
    kind = type(transport)
    if kind.__module__ == "uvloop.loop" and kind.__name__ == "TCPTransport":
        return True
    return (
        kind.__module__ == "asyncio.selector_events"
        and kind.__name__ == "_SelectorSocketTransport"
        and sys.version_info < (3, 12)
    )


class BatchedWriter:
    """Queue buffers now, write them all at the end of the current loop turn."""

    __slots__ = (
        "_loop", "_transport", "_fd", "_writev", "_backlog", "_queued", "_written",
        "_callbacks", "_scheduled", "_paused", "_closed", "_on_error", "_more_socket",
        "writes", "stall_bytes_copied", "close_bytes_copied", "_early_flush",
    )

    def __init__(self, loop: asyncio.AbstractEventLoop, on_error: Callable[[BaseException], None],
                 early_flush: int = 0) -> None:
        self._loop = loop
        #: write at once when this many buffers wait (0: only at the end of the turn)
        self._early_flush = early_flush or (1 << 62)
        self._transport: asyncio.Transport | None = None
        self._fd: int = -1
        #: a socket object on a dup of ``_fd``, for ``sendmsg(MSG_MORE)`` before file slices
        self._more_socket: socket.socket | None = None
        self._writev: bool = False
        self._backlog: deque[Buffer] = deque()
        self._queued: int = 0  # bytes ever queued
        self._written: int = 0  # bytes ever handed to the kernel (or the transport)
        self._callbacks: deque[tuple[int, Callable[[], None]]] = deque()
        self._scheduled: bool = False
        self._paused: bool = False
        self._closed: bool = False
        self._on_error = on_error
        #: number of gather writes issued (syscalls or writelines calls)
        self.writes: int = 0
        #: bytes copied into the transport's buffer to wait for writability (1 per stall)
        self.stall_bytes_copied: int = 0
        #: bytes copied into the transport's buffer by a closing flush
        self.close_bytes_copied: int = 0

    def attach(self, transport: asyncio.Transport) -> None:
        """Bind to a connected transport; choose the write path."""
        self._transport = transport
        self._writev = _uses_selector_transport(transport)
        if self._writev:
            sock = transport.get_extra_info("socket")
            self._fd = sock.fileno() if sock is not None else -1
            self._writev = self._fd >= 0
        # High-water 0: pause_writing whenever the transport holds any byte, resume when
        # it is empty again. That is the writability signal both write paths rely on.
        transport.set_write_buffer_limits(high=0, low=0)

    def can_send_files(self) -> bool:
        """True when :class:`FileSlice` buffers can be queued (the ``os.writev`` path,
        whose socket fd ``os.sendfile`` writes too)."""
        return self._writev

    def pending_base(self) -> int:
        """The stream offset the next queued byte will have (bytes ever queued)."""
        return self._queued

    def unsent(self, offset: int) -> bool:
        """True while no byte at or after stream ``offset`` has reached the kernel."""
        return self._written <= offset and not self._closed

    @property
    def pending_bytes(self) -> int:
        """Bytes queued but not yet handed to the kernel."""
        return self._queued - self._written

    def queue(self, buffers: list[Buffer], on_sent: Callable[[], None] | None = None) -> int:
        """Queue ``buffers`` (kept by reference) for this turn's write; return their size.

        ``on_sent`` runs once every byte queued so far has left this process's hands.
        """
        size = 0
        backlog = self._backlog
        for buf in buffers:
            n = len(buf) if not isinstance(buf, memoryview) else buf.nbytes
            if n:
                backlog.append(buf)
                size += n
        self._queued += size
        if on_sent is not None:
            self._callbacks.append((self._queued, on_sent))
        if not self._scheduled and not self._closed:
            self._scheduled = True
            self._loop.call_soon(self._flush_scheduled)
        elif len(backlog) >= self._early_flush:
            self.flush()  # (the turn's scheduled flush still writes what follows)
        return size

    def _flush_scheduled(self) -> None:
        self._scheduled = False
        self.flush()

    def flush(self) -> None:
        """Write as much of the backlog as the kernel takes now."""
        transport = self._transport
        if self._closed or transport is None or self._paused:
            return
        if not self._writev:
            if self._backlog:
                items = [b.read() if type(b) is FileSlice else b for b in self._backlog]
                self._backlog.clear()
                transport.writelines(items)
                self.writes += 1
                self._written = self._queued
            if not transport.get_write_buffer_size():
                self._fire(self._written)
            return
        backlog = self._backlog
        while backlog:
            head = backlog[0]
            try:
                if type(head) is FileSlice:
                    # straight from the page cache: no copy through this process
                    wanted = head.length
                    sent = os.sendfile(self._fd, head.fd, head.offset, wanted)
                    if sent == 0:
                        raise OSError(f"file ended {wanted} bytes short of a Data-In being sent")
                else:
                    iov: list[Buffer] = []
                    wanted = 0
                    before_file = False
                    for buf in backlog:
                        if type(buf) is FileSlice:
                            before_file = True
                            break
                        if len(iov) == _IOV_MAX:
                            break
                        iov.append(buf)
                        wanted += buf.nbytes if isinstance(buf, memoryview) else len(buf)
                    if before_file:
                        # the header (and whatever precedes it) waits for the slice's pages
                        sent = self._socket_for_more().sendmsg(iov, (), _MSG_MORE)
                    else:
                        sent = os.writev(self._fd, iov)
            except (BlockingIOError, InterruptedError):
                sent = 0
            except OSError as exc:
                self._closed = True
                backlog.clear()
                self._callbacks.clear()
                self._close_more_socket()
                self._on_error(exc)
                return
            self.writes += 1
            self._consume(sent)
            if backlog and sent < wanted:
                # The kernel is full. Let the transport wait for writability with a
                # one-byte write; resume_writing() brings us back.
                first = backlog.popleft()
                if type(first) is FileSlice:
                    byte = os.pread(first.fd, 1, first.offset)
                    if first.length > 1:
                        backlog.appendleft(first.tail(1))
                else:
                    view = first if isinstance(first, memoryview) else memoryview(first)
                    byte = bytes(view[:1])
                    if view.nbytes > 1:
                        backlog.appendleft(view[1:])
                self._written += 1
                self.stall_bytes_copied += 1
                self._paused = True  # until resume_writing (set now: write() may pause)
                transport.write(byte)
                if transport.get_write_buffer_size():
                    # The byte is a copy, so every buffer before it is released.
                    self._fire(self._written)
                    return
                self._paused = False
        self._fire(self._written)

    def _socket_for_more(self) -> socket.socket:
        more = self._more_socket
        if more is None:
            more = self._more_socket = socket.socket(fileno=os.dup(self._fd))
        return more

    def _consume(self, sent: int) -> None:
        """Drop ``sent`` bytes from the head of the backlog."""
        self._written += sent
        backlog = self._backlog
        while sent:
            head = backlog[0]
            n = head.nbytes if isinstance(head, memoryview) else len(head)
            if n <= sent:
                backlog.popleft()
                sent -= n
            elif type(head) is FileSlice:
                backlog[0] = head.tail(sent)
                sent = 0
            else:
                view = head if isinstance(head, memoryview) else memoryview(head)
                backlog[0] = view[sent:]
                sent = 0

    def _fire(self, upto: int) -> None:
        callbacks = self._callbacks
        while callbacks and callbacks[0][0] <= upto:
            _, callback = callbacks.popleft()
            callback()

    # ---------------------------------------------------------- protocol forwards
    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        if self._closed:
            return
        if self._backlog:
            self.flush()
        else:
            self._fire(self._written)

    # ------------------------------------------------------------------ shutdown
    def close_after_flush(self) -> None:
        """Write what can be written, hand the rest to the transport (copied), close.

        Used by ``connection_terminate``: the core owns its buffers again on return, so
        whatever the kernel did not take is copied into the transport's own buffer, which
        ``transport.close()`` still drains.
        """
        transport = self._transport
        if self._closed or transport is None:
            self._closed = True
            self._close_more_socket()
            return
        self._paused = False
        if self._backlog and not transport.get_write_buffer_size():
            self.flush()
        self._closed = True
        for buf in self._backlog:
            n = buf.nbytes if isinstance(buf, memoryview) else len(buf)
            self.close_bytes_copied += n
            transport.write(buf.read() if type(buf) is FileSlice else bytes(buf))
        self._backlog.clear()
        self._callbacks.clear()
        self._close_more_socket()
        transport.close()

    def _close_more_socket(self) -> None:
        more, self._more_socket = self._more_socket, None
        if more is not None:
            more.close()  # the dup only; the transport still owns and closes its socket

    def abandon(self) -> None:
        """Forget every queued buffer (connection lost): nothing is written or notified."""
        self._closed = True
        self._backlog.clear()
        self._callbacks.clear()
        self._close_more_socket()

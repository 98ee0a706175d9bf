"""Shared-memory fabric: processes on one host, a Unix socket per connection as doorbell.

Registered buffers from ``PD.alloc_buffer`` live in memfd segments. The first time a message
names a segment, its fd travels ahead of it over the socket (SCM_RIGHTS) and the peer maps
it; from then on an RDMA WRITE carries only (segment, offset, length) and the responder
copies straight from the requester's pages into its MR: one memcpy, as a NIC's DMA would
make. An RDMA READ names the requester's sink the same way and the responder copies into
it. Payload from memory that is not in a segment (a plain bytearray MR) travels inline in
the socket stream instead (the kernel copies it twice; prefer ``alloc_buffer``).

Listeners are abstract-namespace Unix sockets named after (namespace, host, port), so
nothing is created in the file system and a crashed process leaves nothing behind.
"""

from __future__ import annotations

import array
import asyncio
import errno
import os
import random
import socket
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..errors import ConnectionFailed, ConnectionRejected
from .link import Fabric, FabricListener, Link
from .memory import map_peer_segment
from .wire import FLAG_INLINE, FLAG_REFS, FLAG_SINK_REFS, HDR, LEN, REF, Chunk, Kind, Msg

if TYPE_CHECKING:
    from .memory import SegmentTable, ShmSegment

RX_BUF = 1 << 20
_KINDS = {int(kind): kind for kind in Kind}
MAX_FDS = 64


def _sock_name(namespace: str, host: str, port: int) -> bytes:
    return f"\0datamover-soft-rdma/{namespace}/{host}:{port}".encode()


class ShmLink(Link):
    fabric_name = "shm"

    def __init__(
        self,
        sock: socket.socket,
        side: str,
        local: tuple[str, int],
        remote: tuple[str, int],
        segments: "SegmentTable",
    ) -> None:
        super().__init__(side, local, remote)
        sock.setblocking(False)
        self.sock = sock
        self.segments = segments
        self._loop = asyncio.get_running_loop()
        self._out: deque[tuple[memoryview, list[int]]] = deque()
        self._writing = False
        self._shared: set[int] = set()  # our segment ids the peer has mapped
        self._peer_segs: dict[int, memoryview] = {}
        self._fds: deque[int] = deque()
        self._rx = bytearray(RX_BUF)
        self._rxv = memoryview(self._rx)
        self._filled = 0
        self._big: bytearray | None = None  # a frame larger than RX_BUF being assembled
        self._big_filled = 0
        self._sock_closed = False
        self._loop.add_reader(sock.fileno(), self._on_readable)

    # ------------------------------------------------------------------ sending
    def _share(self, seg: "ShmSegment") -> None:
        if seg.seg_id in self._shared:
            return
        self._shared.add(seg.seg_id)
        body = HDR.pack(Kind.SEG, 0, 0, 0, seg.size, seg.seg_id, 0, 0)
        self._queue([LEN.pack(len(body)) + body], [seg.fd])

    def _refs(self, chunks: list[Chunk]) -> bytes | None:
        if not chunks or any(c.seg is None for c in chunks):
            return None
        for c in chunks:
            assert c.seg is not None
            self._share(c.seg)
        return b"".join(REF.pack(c.seg.seg_id, c.seg_off, c.view.nbytes) for c in chunks)  # type: ignore[union-attr]

    def _transmit(self, msg: Msg) -> None:
        flags = 0
        nrefs = 0
        tail: list[Any] = []
        refs = self._refs(msg.chunks)
        if refs is not None:
            flags |= FLAG_REFS
            nrefs = len(msg.chunks)
            tail.append(refs)
        elif msg.chunks:
            flags |= FLAG_INLINE
            tail.extend(c.view for c in msg.chunks)
        if msg.sink_chunks:
            sink_refs = self._refs(msg.sink_chunks)
            if sink_refs is not None:
                flags |= FLAG_SINK_REFS
                nrefs = len(msg.sink_chunks)
                tail.append(sink_refs)
        head = HDR.pack(msg.kind, flags, nrefs, len(msg.cm), msg.psn, msg.a, msg.b, msg.c) + msg.cm
        size = len(head) + sum(memoryview(t).nbytes for t in tail)
        if not flags & FLAG_INLINE:
            # header and references are a few dozen bytes: one send for the message, not one per part
            self._queue([b"".join([LEN.pack(size), head, *tail])], [])
            return
        self._queue([LEN.pack(size) + head, *tail], [])

    def _queue(self, parts: list[Any], fds: list[int]) -> None:
        for i, p in enumerate(parts):
            mv = memoryview(p)
            if mv.format != "B" or mv.ndim != 1:
                mv = mv.cast("B")
            self._out.append((mv, fds if i == 0 else []))
        if not self._writing:
            self._flush()

    def _flush(self) -> None:
        out = self._out
        try:
            while out:
                mv, fds = out[0]
                if fds:
                    n = self.sock.sendmsg([mv], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
                else:
                    n = self.sock.send(mv)
                if n < mv.nbytes:
                    out[0] = (mv[n:], [])
                    break
                out.popleft()
        except BlockingIOError:
            pass
        except OSError as exc:
            self._fail(f"socket error: {exc}")
            return
        if out and not self._writing:
            self._writing = True
            self._loop.add_writer(self.sock.fileno(), self._on_writable)
        elif not out:
            if self._writing:
                self._writing = False
                self._loop.remove_writer(self.sock.fileno())
            if self.closed:
                self._close_socket()

    def _on_writable(self) -> None:
        self._flush()

    # ------------------------------------------------------------------ receiving
    def _on_readable(self) -> None:
        for _ in range(64):  # bounded, so one busy link cannot starve the loop
            if self._sock_closed:
                return
            if self._big is not None:
                target = memoryview(self._big)[self._big_filled:]
            else:
                target = self._rxv[self._filled:]
            try:
                n, anc, _flags, _addr = self.sock.recvmsg_into([target], socket.CMSG_SPACE(MAX_FDS * 4))
            except BlockingIOError:
                return
            except OSError as exc:
                self._fail(f"socket error: {exc}")
                return
            for level, typ, data in anc:
                if level == socket.SOL_SOCKET and typ == socket.SCM_RIGHTS:
                    fds = array.array("i")
                    fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
                    self._fds.extend(fds)
            if n == 0:
                self._fail("peer closed the connection")
                return
            if self._big is not None:
                self._big_filled += n
                if self._big_filled == len(self._big):
                    big, self._big = self._big, None
                    self._handle(memoryview(big)[LEN.size:])
            else:
                self._filled += n
                self._parse()
            if n < len(target):
                return

    def _parse(self) -> None:
        rx, mv = self._rx, self._rxv
        pos = 0
        filled = self._filled
        while filled - pos >= LEN.size:
            (size,) = LEN.unpack_from(rx, pos)
            end = pos + LEN.size + size
            if end > filled:
                if LEN.size + size > len(rx):
                    # Too big for the ring: assemble this frame in its own buffer.
                    have = filled - pos
                    self._big = bytearray(LEN.size + size)
                    self._big[:have] = mv[pos:filled]
                    self._big_filled = have
                    pos = filled
                break
            self._handle(mv[pos + LEN.size:end])
            if self.closed and self._sock_closed:
                return
            pos = end
        rest = filled - pos
        if rest and pos:
            rx[0:rest] = rx[pos:filled]
        self._filled = rest

    def _handle(self, body: memoryview) -> None:
        kind, flags, nrefs, cmlen, psn, a, b, c = HDR.unpack_from(body)
        if kind == Kind.SEG:
            if not self._fds:
                self._fail("segment announced without its fd")
                return
            self._peer_segs[a] = map_peer_segment(self._fds.popleft(), psn)
            return
        known = _KINDS.get(kind)  # (a dict lookup: Kind(kind) runs enum's Python code per message)
        if known is None:
            self._fail(f"unknown message kind {kind}")
            return
        msg = Msg(known, psn, a, b, c)
        off = HDR.size
        if cmlen:
            msg.cm = bytes(body[off:off + cmlen])
            off += cmlen
        if flags & (FLAG_REFS | FLAG_SINK_REFS):
            views = []
            for i in range(nrefs):
                seg_id, soff, length = REF.unpack_from(body, off + i * REF.size)
                seg = self._peer_segs.get(seg_id)
                if seg is None or soff + length > seg.nbytes:
                    self._fail(f"reference to unknown segment {seg_id:#x}")
                    return
                views.append(seg[soff:soff + length])
            if flags & FLAG_REFS:
                msg.data = views
            else:
                msg.sink = views
        elif flags & FLAG_INLINE:
            msg.data = [body[off:]]
        self.deliver(msg)

    # ------------------------------------------------------------------ teardown
    def _fail(self, reason: str) -> None:
        self._out.clear()
        self._close_socket()
        self.lost(reason)

    def _close_socket(self) -> None:
        if self._sock_closed:
            return
        self._sock_closed = True
        fd = self.sock.fileno()
        if fd >= 0:
            self._loop.remove_reader(fd)
            if self._writing:
                self._loop.remove_writer(fd)
                self._writing = False
        self.sock.close()
        while self._fds:
            os.close(self._fds.popleft())

    def close(self) -> None:
        """Graceful: whatever is queued is still written, then the socket closes."""
        if self.closed:
            return
        super().close()
        if not self._out:
            self._close_socket()


class _ShmListener(FabricListener):
    def __init__(
        self, sock: socket.socket, port: int, host: str, on_link: Callable[[Link], None], segments: "SegmentTable"
    ) -> None:
        self.sock = sock
        self.port = port
        self.host = host
        self.on_link = on_link
        self.segments = segments
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(sock.fileno(), self._on_accept)
        self._peer_no = 0

    def _on_accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except BlockingIOError:
                return
            except OSError:
                return
            self._peer_no += 1
            link = ShmLink(conn, "passive", (self.host, self.port), ("shm-peer", self._peer_no), self.segments)
            self.on_link(link)

    def close(self) -> None:
        if self.sock.fileno() >= 0:
            self._loop.remove_reader(self.sock.fileno())
            self.sock.close()


class ShmFabric(Fabric):
    """Processes on one host; ``namespace`` keeps unrelated runs (tests) apart."""

    name = "shm"
    uses_shm = True

    def __init__(self, namespace: str = "default") -> None:
        self.namespace = namespace

    async def listen(
        self, host: str, port: int, on_link: Callable[[Link], None], segments: "SegmentTable"
    ) -> FabricListener:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            if port == 0:
                for _ in range(200):
                    port = random.randint(49152, 65535)
                    try:
                        sock.bind(_sock_name(self.namespace, host, port))
                        break
                    except OSError as exc:
                        if exc.errno != errno.EADDRINUSE:
                            raise
                else:
                    raise OSError(errno.EADDRINUSE, "no free shm port")
            else:
                sock.bind(_sock_name(self.namespace, host, port))
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        return _ShmListener(sock, port, host, on_link, segments)

    async def connect(self, host: str, port: int, timeout: float, segments: "SegmentTable") -> Link:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, _sock_name(self.namespace, host, port)), timeout)
        except (ConnectionRefusedError, FileNotFoundError):
            sock.close()
            raise ConnectionRejected("no listener") from None
        except asyncio.TimeoutError:
            sock.close()
            raise ConnectionFailed(f"connect to shm {host}:{port} timed out") from None
        except OSError as exc:
            sock.close()
            raise ConnectionFailed(f"connect to shm {host}:{port}: {exc}", exc.errno or errno.EIO) from None
        return ShmLink(sock, "active", ("shm-client", os.getpid()), (host, port), segments)

"""pyzmq fabric: between hosts (or processes), a ROUTER per listener and a DEALER per connection.

Each message is one multipart zmq message: a header frame (``wire.HDR`` + CM body) and one
frame per payload chunk. Payload frames are sent with ``copy=False`` straight from the MR: the
requester does not touch its buffer until the completion, which comes after the responder
has the data, and the receiver copies each frame into its MR. An RDMA READ response is sent
zero-copy from the responder's MR and *tracked*: until zmq has sent it, a later request that
would change the responder's memory (WRITE, SEND) is held back, so a READ never returns data
written after it (RC ordering) even though the bytes leave asynchronously.

The sockets' fds are edge-triggered (ZMQ_FD): the reader drains until EAGAIN and re-checks
ZMQ_EVENTS after sends, as pyzmq documents. Sends never block: the high-water marks are
off, so EAGAIN only means the peer is gone (the link is then lost).

Two zmq transports, chosen per fabric and never guessed from the address:

* ``tcp`` (fabric name ``zmq``): ``tcp://host:port``, between hosts or processes;
* ``ipc`` (fabric name ``zmq-ipc``): zmq's ``ipc://`` over Unix-domain sockets, for two
  processes on one host. (host, port) names an abstract-namespace socket
  ``@datamover-zmq/<namespace>/<host>:<port>`` (Linux; nothing in the file system, nothing
  left behind), or a socket file ``<ipc_dir>/<host>:<port>`` when ``ipc_dir`` is given.
  ``host`` is only a name here; no network is involved.

Throughput (measured by bench/verbs_stream.py, docs/performance.md): the receiver copies
each frame out of the buffer zmq received it into, and zmq's I/O thread mallocs that
buffer per message. glibc hands allocations of 128 KiB and more out by ``mmap`` until the
first such buffer is freed (and always in some cases), so every received MiB may cost 256
page faults and a zeroing; ``tune_malloc`` (on by default) raises glibc's mmap and trim
thresholds once per process so those buffers are recycled from the heap instead.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import errno
import itertools
import os
import random
import re
import sys
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import zmq

from ..errors import ConnectionFailed, ConnectionRejected
from .link import Fabric, FabricListener, Link
from .wire import HDR, Kind, Msg

if TYPE_CHECKING:
    from .memory import SegmentTable

_ids = itertools.count(1)
# Requests that change responder memory must not overtake a READ response still being sent.
_MODIFYING = frozenset({Kind.RDMA_WRITE, Kind.SEND, Kind.SEND_INV, Kind.SEND_IMM})

TRANSPORTS = ("tcp", "ipc")
#: glibc mallopt parameters (malloc.h) and the values tune_malloc sets
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit
_TRIM_THRESHOLD = 256 << 20
_malloc_tuned = False
# a host in an ipc name: no path separators, nothing zmq would read as syntax
_IPC_HOST = re.compile(r"[A-Za-z0-9._:\[\]-]{1,64}\Z")


def tune_glibc_malloc() -> bool:
    """Once per process: keep glibc from mmap'ing (and unmapping) every large zmq buffer.

    True when applied (now or before); False where the C library is not glibc.
    """
    global _malloc_tuned
    if _malloc_tuned:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    _malloc_tuned = ok
    return ok


def _header(msg: Msg) -> bytes:
    return HDR.pack(msg.kind, 0, len(msg.chunks), len(msg.cm), msg.psn, msg.a, msg.b, msg.c) + msg.cm


def _decode(frames: list[Any]) -> Msg | None:
    head = frames[0].buffer if hasattr(frames[0], "buffer") else memoryview(frames[0])
    if head.nbytes < HDR.size:
        return None
    kind, _flags, _n, cmlen, psn, a, b, c = HDR.unpack_from(head)
    try:
        msg = Msg(Kind(kind), psn, a, b, c)
    except ValueError:
        return None
    if cmlen:
        msg.cm = bytes(head[HDR.size:HDR.size + cmlen])
    msg.data = [f.buffer if hasattr(f, "buffer") else f for f in frames[1:]]
    return msg


class _Pump:
    """Reads one zmq socket from the event loop (edge-triggered ZMQ_FD)."""

    def __init__(self, sock: zmq.Socket, on_frames: Callable[[list[Any]], None]) -> None:
        self.sock = sock
        self.on_frames = on_frames
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        self._fd = sock.getsockopt(zmq.FD)
        self._loop.add_reader(self._fd, self.drain)
        self.closed = False

    def drain(self) -> None:
        self._scheduled = False
        sock = self.sock
        for _ in range(256):
            if self.closed:
                return
            try:
                frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            except zmq.Again:
                return
            except zmq.ZMQError:
                return
            self.on_frames(frames)
        self.kick()  # more may be waiting: come back after others had a turn

    def kick(self) -> None:
        """After a send: the edge may have been consumed, so look again soon."""
        if not self._scheduled and not self.closed:
            self._scheduled = True
            self._loop.call_soon(self._check)

    def _check(self) -> None:
        self._scheduled = False
        if not self.closed and self.sock.getsockopt(zmq.EVENTS) & zmq.POLLIN:
            self.drain()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._loop.remove_reader(self._fd)


class ZmqLink(Link):
    fabric_name = "zmq"

    def __init__(
        self,
        side: str,
        local: tuple[str, int],
        remote: tuple[str, int],
        send: Callable[[list[Any], bool], Any],
        pump: _Pump,
        on_closed: Callable[[], None],
    ) -> None:
        super().__init__(side, local, remote)
        self._send = send
        self._pump = pump
        self._on_closed = on_closed
        self._reads_out: deque[zmq.MessageTracker] = deque()
        self._held_in: deque[Msg] = deque()
        self._recheck: asyncio.TimerHandle | None = None

    def _transmit(self, msg: Msg) -> None:
        frames: list[Any] = [_header(msg)]
        frames.extend(c.view for c in msg.chunks)
        track = msg.kind == Kind.READ_RESP and bool(msg.chunks)
        try:
            tracker = self._send(frames, track)
        except zmq.ZMQError as exc:
            self.lost(f"zmq send failed: {exc}")
            return
        if track and tracker is not None:
            self._reads_out.append(tracker)
        self._pump.kick()

    def _reads_pending(self) -> bool:
        q = self._reads_out
        while q and q[0].done:
            q.popleft()
        return bool(q)

    def frames_in(self, frames: list[Any]) -> None:
        msg = _decode(frames)
        if msg is None:
            self.lost("malformed message")
            return
        if msg.kind == Kind.BYE:
            self.lost("peer closed the connection")
            return
        if self._held_in or (msg.kind in _MODIFYING and self._reads_pending()):
            # The frames stay valid while held: zmq frames own their memory.
            self._held_in.append(msg)
            self._schedule_release()
            return
        self.deliver(msg)

    def _schedule_release(self) -> None:
        if self._recheck is None and not self.closed:
            self._recheck = asyncio.get_running_loop().call_later(0.0002, self._release_in)

    def _release_in(self) -> None:
        self._recheck = None
        held = self._held_in
        while held and not self.closed:
            if held[0].kind in _MODIFYING and self._reads_pending():
                self._schedule_release()
                return
            self.deliver(held.popleft())

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        self._held_in.clear()
        try:
            self._send([HDR.pack(Kind.BYE, 0, 0, 0, 0, 0, 0, 0)], False)
        except zmq.ZMQError:
            pass
        self._on_closed()


def _tune(sock: zmq.Socket, opts: "dict[int, int]") -> None:
    sock.setsockopt(zmq.LINGER, 1000)
    # no high-water marks: the QP's send window bounds what is in flight
    sock.setsockopt(zmq.SNDHWM, 0)
    sock.setsockopt(zmq.RCVHWM, 0)
    for opt, value in opts.items():
        sock.setsockopt(opt, value)


class _ZmqListener(FabricListener):
    def __init__(self, fabric: "ZmqFabric", host: str, port: int, on_link: Callable[[Link], None]) -> None:
        self.sock = fabric.ctx.socket(zmq.ROUTER)
        _tune(self.sock, fabric.socket_options)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        self.fabric_name = fabric.name
        try:
            self.port = fabric._bind(self.sock, host, port)
        except BaseException:
            self.sock.close(0)
            raise
        self.host = host
        self.on_link = on_link
        self.links: dict[bytes, ZmqLink] = {}
        self.pump = _Pump(self.sock, self._frames)

    def _frames(self, frames: list[Any]) -> None:
        ident = frames[0].bytes
        link = self.links.get(ident)
        if link is None:
            msg = _decode(frames[1:])
            if msg is None or msg.kind != Kind.CM_REQ:
                return  # stray message for a connection we no longer know
            link = ZmqLink(
                "passive",
                (self.host, self.port),
                ("zmq-peer", len(self.links) + 1),
                lambda fr, track, ident=ident: self.sock.send_multipart([ident, *fr], zmq.NOBLOCK, copy=False, track=track),
                self.pump,
                lambda ident=ident: self.links.pop(ident, None),
            )
            link.fabric_name = self.fabric_name
            self.links[ident] = link
            self.on_link(link)
        link.frames_in(frames[1:])

    def close(self) -> None:
        self.pump.close()
        for link in list(self.links.values()):
            link.lost("listener closed")
        self.sock.close(linger=200)


class ZmqFabric(Fabric):
    """pyzmq between processes: ``transport="tcp"`` (any hosts) or ``"ipc"`` (one host).

    ``sndbuf`` / ``rcvbuf`` set the kernel socket buffers (ZMQ_SNDBUF / ZMQ_RCVBUF; None
    leaves the kernel's defaults and, for TCP, its autotuning); ``namespace`` / ``ipc_dir``
    place ipc sockets (see the module docstring); ``tune_malloc`` see ``tune_glibc_malloc()``.
    """

    name = "zmq"
    uses_shm = False

    def __init__(
        self,
        context: zmq.Context | None = None,
        *,
        transport: str = "tcp",
        namespace: str = "",
        ipc_dir: str | None = None,
        sndbuf: int | None = None,
        rcvbuf: int | None = None,
        tune_malloc: bool = True,
    ) -> None:
        if transport not in TRANSPORTS:
            raise ValueError(f"unknown zmq transport {transport!r} (tcp, ipc)")
        if transport == "ipc" and ipc_dir is None and not sys.platform.startswith("linux"):
            raise ValueError("zmq ipc without ipc_dir needs Linux's abstract socket namespace")
        if "/" in namespace or "\0" in namespace:
            raise ValueError(f"zmq ipc namespace must not contain '/' or NUL: {namespace!r}")
        for what, value in (("sndbuf", sndbuf), ("rcvbuf", rcvbuf)):
            if value is not None and (not isinstance(value, int) or value <= 0):
                raise ValueError(f"zmq {what} must be a positive integer, got {value!r}")
        self.ctx = context or zmq.Context.instance()
        self.transport = transport
        self.name = "zmq" if transport == "tcp" else "zmq-ipc"
        self.namespace = namespace
        self.ipc_dir = ipc_dir
        self.socket_options: dict[int, int] = {}
        if sndbuf is not None:
            self.socket_options[zmq.SNDBUF] = sndbuf
        if rcvbuf is not None:
            self.socket_options[zmq.RCVBUF] = rcvbuf
        if tune_malloc:
            tune_glibc_malloc()

    def endpoint(self, host: str, port: int) -> str:
        """The zmq endpoint (host, port) names on this fabric."""
        if self.transport == "tcp":
            return f"tcp://{host}:{port}"
        if not isinstance(host, str) or not _IPC_HOST.match(host):
            raise ValueError(f"zmq ipc host must be a short name without '/': {host!r}")
        if self.ipc_dir is not None:
            return f"ipc://{self.ipc_dir}/{host}:{port}"
        return f"ipc://@datamover-zmq/{self.namespace}/{host}:{port}"

    def _bind(self, sock: zmq.Socket, host: str, port: int) -> int:
        """Bind ``sock`` for (host, port); port 0 picks a free one. The bound port."""
        if self.transport == "tcp":
            try:
                if port == 0:
                    return sock.bind_to_random_port(f"tcp://{host}")
                sock.bind(f"tcp://{host}:{port}")
                return port
            except zmq.ZMQError as exc:
                raise OSError(exc.errno, f"zmq bind tcp://{host}:{port}: {exc}") from None
        tries = 0
        while True:
            p = port or random.randint(49152, 65535)
            ep = self.endpoint(host, p)
            if self.ipc_dir is not None and os.path.exists(ep[len("ipc://"):]):
                # zmq would unlink a live listener's socket file and steal its name
                exc: OSError | zmq.ZMQError = OSError(errno.EADDRINUSE, "in use")
            else:
                try:
                    sock.bind(ep)
                    return p
                except zmq.ZMQError as e:
                    exc = e
            tries += 1
            if port or exc.errno != errno.EADDRINUSE or tries >= 100:
                raise OSError(exc.errno, f"zmq bind {ep}: {exc}") from None

    async def listen(
        self, host: str, port: int, on_link: Callable[[Link], None], segments: "SegmentTable"
    ) -> FabricListener:
        return _ZmqListener(self, host, port, on_link)

    async def connect(self, host: str, port: int, timeout: float, segments: "SegmentTable") -> Link:
        ep = self.endpoint(host, port)
        sock = self.ctx.socket(zmq.DEALER)
        _tune(sock, self.socket_options)
        # IMMEDIATE: queue only to a live connection, so a send to a vanished peer fails
        # (EAGAIN) instead of piling up; hence wait for the ZMTP handshake before using it.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECT_RETRIED)
        try:
            sock.connect(ep)
            await self._await_connected(mon, ep, timeout)
        except BaseException:
            sock.disable_monitor()
            mon.close(0)
            sock.close(0)
            raise
        sock.disable_monitor()
        mon.close(0)
        local = ("zmq-client", next(_ids))
        holder: dict[str, ZmqLink] = {}

        def closed() -> None:
            pump.close()
            sock.close(linger=1000)

        pump = _Pump(sock, lambda frames: holder["link"].frames_in(frames))
        link = ZmqLink("active", local, (host, port), lambda fr, track: sock.send_multipart(fr, zmq.NOBLOCK, copy=False, track=track), pump, closed)
        link.fabric_name = self.name
        holder["link"] = link
        return link

    @staticmethod
    async def _await_connected(mon: zmq.Socket, ep: str, timeout: float) -> None:
        from zmq.utils.monitor import recv_monitor_message

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            while mon.poll(0):
                ev = recv_monitor_message(mon)
                if ev["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return
                if ev["event"] == zmq.EVENT_CONNECT_RETRIED:
                    raise ConnectionRejected("no listener")
            if loop.time() > deadline:
                raise ConnectionFailed(f"zmq connect to {ep} timed out", errno.ETIMEDOUT)
            await asyncio.sleep(0.002)

    async def close(self) -> None:
        return None

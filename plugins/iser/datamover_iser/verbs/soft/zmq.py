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
"""

from __future__ import annotations

import asyncio
import errno
import itertools
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


class _ZmqListener(FabricListener):
    def __init__(self, ctx: zmq.Context, host: str, port: int, on_link: Callable[[Link], None]) -> None:
        self.sock = ctx.socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.setsockopt(zmq.SNDHWM, 0)
        self.sock.setsockopt(zmq.RCVHWM, 0)
        self.sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
        try:
            if port == 0:
                self.port = self.sock.bind_to_random_port(f"tcp://{host}")
            else:
                self.sock.bind(f"tcp://{host}:{port}")
                self.port = port
        except zmq.ZMQError as exc:
            self.sock.close(0)
            raise OSError(exc.errno, f"zmq bind tcp://{host}:{port}: {exc}") from None
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
            self.links[ident] = link
            self.on_link(link)
        link.frames_in(frames[1:])

    def close(self) -> None:
        self.pump.close()
        for link in list(self.links.values()):
            link.lost("listener closed")
        self.sock.close(linger=200)


class ZmqFabric(Fabric):
    name = "zmq"
    uses_shm = False

    def __init__(self, context: zmq.Context | None = None) -> None:
        self.ctx = context or zmq.Context.instance()

    async def listen(
        self, host: str, port: int, on_link: Callable[[Link], None], segments: "SegmentTable"
    ) -> FabricListener:
        return _ZmqListener(self.ctx, host, port, on_link)

    async def connect(self, host: str, port: int, timeout: float, segments: "SegmentTable") -> Link:
        sock = self.ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.SNDHWM, 0)
        sock.setsockopt(zmq.RCVHWM, 0)
        # IMMEDIATE: queue only to a live connection, so a send to a vanished peer fails
        # (EAGAIN) instead of piling up; hence wait for the ZMTP handshake before using it.
        sock.setsockopt(zmq.IMMEDIATE, 1)
        mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED | zmq.EVENT_CONNECT_RETRIED)
        try:
            sock.connect(f"tcp://{host}:{port}")
            await self._await_connected(mon, host, port, timeout)
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
        holder["link"] = link
        return link

    @staticmethod
    async def _await_connected(mon: zmq.Socket, host: str, port: int, timeout: float) -> None:
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
                raise ConnectionFailed(f"zmq connect to {host}:{port} timed out", errno.ETIMEDOUT)
            await asyncio.sleep(0.002)

    async def close(self) -> None:
        return None

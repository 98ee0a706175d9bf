"""Loopback: an honest, deterministic, in-process realisation of the RFC 5047 DI.

Both ends run in one event loop. Send_Control hands the PDU object to the peer (through the
peer's inbox, drained by one ``loop.call_soon`` callback per loop turn rather than one per
PDU, so delivery order is call order and nothing re-enters the caller);
Put_Data copies the burst into the initiator's read descriptor and Get_Data copies from its
write descriptor at call time, which is what makes "data placed before the later response"
hold, as on iSER. With ``check_codec`` every PDU is also encoded and decoded on the way,
so a field the wire could not carry shows up here too.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Mapping
from typing import ClassVar

from datamover.capabilities import TransportCapabilities
from datamover.di import (
    AcceptCallback,
    ConnectionClosed,
    DataDescriptor,
    DatamoverConnection,
    DatamoverUpcalls,
    Listener,
    Portal,
    Role,
    Transport,
)
from datamover.pdu import DataIn, Pdu, R2T, ScsiCommand, ScsiResponse, decode, encode_header
from datamover.buffers import BufferPool

_CLOSED = object()


def copy_into(dst: DataDescriptor, dst_offset: int, src: DataDescriptor) -> int:
    """Copy the bytes of ``src`` into the scatter-gather list ``dst`` from ``dst_offset``.

    Returns the number of bytes copied; raises IndexError if ``dst`` is too short.
    """
    if len(src) == 1 and len(dst) == 1:
        # one buffer into one buffer (every fast-path READ): a slice assignment
        source, segment = src[0], dst[0]
        if (type(source) is memoryview and type(segment) is memoryview and source.format == "B"
                and segment.format == "B" and source.ndim == 1 and segment.ndim == 1):
            n = source.nbytes
            if dst_offset + n > segment.nbytes:
                raise IndexError(f"descriptor too short: {segment.nbytes - dst_offset} of {n} bytes "
                                 f"placed at offset {dst_offset}")
            segment[dst_offset:dst_offset + n] = source
            return n
    chunks = [memoryview(m).cast("B") for m in src if len(m)]
    total = sum(len(c) for c in chunks)
    index = within = 0  # position in ``chunks``
    position = copied = 0  # flat offset of the current dst segment; bytes placed
    for segment in dst:
        seg_len = len(segment)
        if position + seg_len <= dst_offset:
            position += seg_len
            continue
        inner = max(0, dst_offset - position)
        while inner < seg_len and index < len(chunks):
            chunk = chunks[index]
            n = min(seg_len - inner, len(chunk) - within)
            segment[inner:inner + n] = chunk[within:within + n]
            inner += n
            within += n
            copied += n
            if within == len(chunk):
                index, within = index + 1, 0
        position += seg_len
        if index == len(chunks):
            break
    if copied < total:
        raise IndexError(f"descriptor too short: {copied} of {total} bytes placed at offset {dst_offset}")
    return copied


def copy_from(src: DataDescriptor, src_offset: int, dst: DataDescriptor) -> int:
    """Fill ``dst`` from the flat byte space of ``src`` starting at ``src_offset``."""
    want = sum(len(m) for m in dst)
    flat: list[memoryview] = []
    position = 0
    remaining = want
    for segment in src:
        seg_len = len(segment)
        if position + seg_len <= src_offset:
            position += seg_len
            continue
        start = max(0, src_offset - position)
        take = min(seg_len - start, remaining)
        flat.append(segment[start:start + take])
        remaining -= take
        position += seg_len
        if remaining == 0:
            break
    if remaining:
        raise IndexError(f"source descriptor too short for {want} bytes at offset {src_offset}")
    return copy_into(dst, 0, flat)


class LoopbackConnection(DatamoverConnection):
    """One end of an in-process connection."""

    def __init__(self, role: Role, local: Portal, peer_name: str, check_codec: bool) -> None:
        super().__init__(role, local, peer_name)
        self.peer_conn: LoopbackConnection | None = None
        self._initiator = role is Role.INITIATOR
        self._login_queue: asyncio.Queue[object] = asyncio.Queue()
        self._upcalls: DatamoverUpcalls | None = None
        self._early: list[Pdu] = []  # PDUs that arrived before we enabled
        #: PDUs sent to us, delivered in order by _drain (scheduled once per batch)
        self._inbox: deque[Pdu] = deque()
        self._drain_scheduled = False
        self._tasks: dict[int, tuple[DataDescriptor | None, DataDescriptor | None]] = {}
        self._data_sn: dict[int, int] = {}
        self._closed = False
        self._allocated = False
        self._check_codec = check_codec
        self._loop = asyncio.get_running_loop()
        self.counters = {"pdus_sent": 0, "pdus_received": 0, "payload_bytes": 0, "payload_copies": 0,
                         "put_data": 0, "get_data": 0}
        self._pool = BufferPool()

    # -------------------------------------------------------------- login channel
    async def login_send(self, pdu: Pdu) -> None:
        peer = self._live_peer()
        peer._login_queue.put_nowait(self._through_codec(pdu))
        self.counters["pdus_sent"] += 1

    async def login_recv(self, timeout: float | None = None) -> Pdu:
        if self._closed:
            raise ConnectionClosed("loopback connection closed")
        try:
            item = await asyncio.wait_for(self._login_queue.get(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError("no login PDU within the timeout") from None
        if item is _CLOSED:
            self._closed = True
            raise ConnectionClosed("peer closed the loopback connection")
        self.counters["pdus_received"] += 1
        return item  # type: ignore[return-value]

    # -------------------------------------------------------------- down-calls
    def notice_key_values(self, keys: Mapping[str, str]) -> None:
        self.keys = dict(keys)

    async def allocate_connection_resources(self, resource_descriptor: object | None = None) -> bool:
        self._allocated = True  # nothing to reserve in-process
        return True

    def deallocate_connection_resources(self) -> None:
        self._allocated = False

    async def enable_datamover(self, upcalls: DatamoverUpcalls, final_login_response: Pdu | None = None) -> None:
        if final_login_response is not None:
            await self.login_send(final_login_response)
        self._upcalls = upcalls
        early, self._early = self._early, []
        if early:
            # ahead of anything that arrived since: _drain delivers them on a later turn
            self._inbox.extendleft(reversed(early))
            if not self._drain_scheduled:
                self._drain_scheduled = True
                self._loop.call_soon(self._drain)

    def send_control(self, pdu: Pdu, *, data_out: DataDescriptor | None = None,
                     data_in: DataDescriptor | None = None, immediate_data_size: int = 0,
                     unsolicited_data_size: int = 0) -> None:
        peer = self.peer_conn
        if self._closed or peer is None or peer._closed:
            return
        if self._initiator:
            if type(pdu) is ScsiCommand:
                self._tasks[pdu.itt] = (data_out, data_in)
        elif type(pdu) is ScsiResponse:
            pdu.exp_data_sn = self._data_sn.pop(pdu.itt, 0)
        counters = self.counters
        counters["pdus_sent"] += 1
        if len(pdu.data):
            # the peer gets its own bytes: the sender may reuse its buffer after the call
            counters["payload_copies"] += len(pdu.data)
            pdu.data = bytes(pdu.data)
        peer._inbox.append(self._through_codec(pdu) if self._check_codec else pdu)
        if not peer._drain_scheduled:
            peer._drain_scheduled = True
            self._loop.call_soon(peer._drain)

    def put_data(self, header: DataIn, descriptor: DataDescriptor, notify: bool) -> None:
        peer = self.peer_conn
        if self._closed or peer is None or peer._closed:
            peer = self._live_peer()  # raises ConnectionClosed
        task = peer._tasks.get(header.itt)
        if task is None or task[1] is None:
            self._protocol_failure(f"Put_Data for task {header.itt:#x} without a read buffer")
            return
        try:
            n = copy_into(task[1], header.buffer_offset, descriptor)
        except IndexError as exc:
            self._protocol_failure(f"Put_Data outside the read buffer: {exc}")
            return
        self.counters["put_data"] += 1
        self.counters["payload_bytes"] += n
        self.counters["payload_copies"] += n
        sn = self._data_sn.get(header.itt, 0)
        self._data_sn[header.itt] = sn + 1
        if notify:
            self._loop.call_soon(self._notify_completion, header.itt, sn)

    def get_data(self, r2t: R2T, descriptor: DataDescriptor, notify: bool) -> None:
        peer = self._live_peer()
        task = peer._tasks.get(r2t.itt)
        if task is None or task[0] is None:
            self._protocol_failure(f"Get_Data for task {r2t.itt:#x} without a write buffer")
            return
        try:
            n = copy_from(task[0], r2t.buffer_offset, descriptor)
        except IndexError as exc:
            self._protocol_failure(f"Get_Data outside the write buffer: {exc}")
            return
        self.counters["get_data"] += 1
        self.counters["payload_bytes"] += n
        self.counters["payload_copies"] += n
        self._data_sn[r2t.itt] = self._data_sn.get(r2t.itt, 0) + 1
        if notify:
            self._loop.call_soon(self._notify_completion, r2t.itt, r2t.r2t_sn)

    def connection_terminate(self) -> None:
        self._close(notify_self=False)

    def deallocate_task_resources(self, itt: int) -> None:
        self._tasks.pop(itt, None)
        self._data_sn.pop(itt, None)

    def alloc_buffer(self, size: int) -> memoryview:
        """A reused buffer (pool.py): a fresh 1 MiB bytearray per I/O cost more than its copy."""
        return self._pool.take(size)

    def release_buffer(self, buf: memoryview) -> None:
        self._pool.give(buf)

    def stats(self) -> dict[str, int]:
        return dict(self.counters)

    # -------------------------------------------------------------- internals
    def _live_peer(self) -> LoopbackConnection:
        peer = self.peer_conn
        if self._closed or peer is None or peer._closed:
            raise ConnectionClosed("loopback connection closed")
        return peer

    def _through_codec(self, pdu: Pdu) -> Pdu:
        if not self._check_codec:
            return pdu
        header = encode_header(pdu)
        return decode(header, bytes(pdu.data))

    def _drain(self) -> None:
        """Deliver what was sent to us since the last drain (QD32 of 4 KiB reads went from
        one loop callback per PDU to one per turn); a PDU sent while draining waits for
        the next turn, as it would have with a callback of its own."""
        self._drain_scheduled = False
        inbox = self._inbox
        counters = self.counters
        initiator = self._initiator
        for _ in range(len(inbox)):
            pdu = inbox.popleft()
            if self._closed:
                return
            upcalls = self._upcalls
            if upcalls is None:
                self._early.append(pdu)  # held until enable_datamover (counted when delivered)
                continue
            counters["pdus_received"] += 1
            if initiator and type(pdu) is ScsiResponse:
                self._tasks.pop(pdu.itt, None)  # the datamover frees task resources itself
            upcalls.control_notify(self, pdu)

    def _notify_completion(self, itt: int, sn: int) -> None:
        if not self._closed and self._upcalls is not None:
            self._upcalls.data_completion_notify(self, itt, sn)

    def _protocol_failure(self, why: str) -> None:
        # a data transfer the peer's buffers cannot satisfy: like a bad STag on iSER, the
        # connection is unusable; both ends learn it through Connection_Terminate_Notify
        self.last_error = why
        self._close(notify_self=True)

    def _close(self, *, notify_self: bool) -> None:
        if self._closed:
            return
        self._closed = True
        self._tasks.clear()
        peer = self.peer_conn
        if peer is not None and not peer._closed:
            peer._login_queue.put_nowait(_CLOSED)
            if peer._upcalls is not None:
                self._loop.call_soon(peer._peer_gone)
            else:
                peer._pending_close = True
        if notify_self and self._upcalls is not None:
            self._loop.call_soon(self._upcalls.connection_terminate_notify, self)

    def _peer_gone(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._tasks.clear()
        if self._upcalls is not None:
            self._upcalls.connection_terminate_notify(self)

    _pending_close = False


class LoopbackListener(Listener):
    def __init__(self, transport_cls: type[LoopbackTransport], portal: Portal, on_accept: AcceptCallback) -> None:
        self.portal = portal
        self.on_accept = on_accept
        self._cls = transport_cls
        self._tasks: set[asyncio.Task[None]] = set()

    async def close(self) -> None:
        self._cls._listeners.pop((self.portal.host, self.portal.port), None)


class LoopbackTransport(Transport):
    """In-process transport; portals are names in a per-process table, not sockets."""

    name = "loopback"
    _listeners: ClassVar[dict[tuple[str, int], LoopbackListener]] = {}
    _ports = itertools.count(40000)

    @classmethod
    def capabilities(cls) -> TransportCapabilities:
        return TransportCapabilities(
            header_digest=False, data_digest=False, phase_collapse=False,
            error_recovery_levels=frozenset({0}), data_pdus_on_wire=False, zero_copy=False,
            cross_process=False, records_trace=True, provider="in-process",
        )

    @classmethod
    def option_names(cls) -> Mapping[str, type]:
        return {"check_codec": bool}

    async def listen(self, portal: Portal, on_accept: AcceptCallback) -> Listener:
        if portal.port == 0:
            portal = Portal(portal.host, next(self._ports), portal.tpgt)
        key = (portal.host, portal.port)
        if key in self._listeners:
            raise OSError(f"loopback portal {portal} is already in use")
        listener = LoopbackListener(type(self), portal, on_accept)
        self._listeners[key] = listener
        return listener

    async def connect(self, portal: Portal, timeout: float | None = None) -> DatamoverConnection:
        listener = self._listeners.get((portal.host, portal.port))
        if listener is None:
            raise ConnectionRefusedError(f"no loopback target listening on {portal}")
        check = bool(self.options.get("check_codec", False))
        initiator = LoopbackConnection(Role.INITIATOR, portal, f"loopback:{portal}", check)
        target = LoopbackConnection(Role.TARGET, listener.portal, "loopback:initiator", check)
        initiator.peer_conn, target.peer_conn = target, initiator
        task = asyncio.get_running_loop().create_task(listener.on_accept(target))
        listener._tasks.add(task)
        task.add_done_callback(listener._tasks.discard)
        return initiator

    def describe(self) -> str:
        return "loopback (in-process, one memcpy per payload byte)"

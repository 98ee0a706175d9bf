"""The iSER datamover (RFC 7145) on the verbs interface: one RC connection.

What goes on the wire (RFC 7145 7, protocol-digest 2.3):

* every iSCSI control-type PDU is one RDMA Send: the 28-byte iSER header, the BHS, AHS and
  data segment, no digests and no padding; login PDUs too (iSER-assisted login);
* Put_Data is RDMA Write into the initiator's read STag at Read Base Offset + BufferOffset;
  Get_Data is RDMA Read from its write STag at Write Base Offset + BufferOffset, with at
  most iSER-ORD Reads outstanding; Data-In, R2T, solicited Data-Out and SNACK never travel;
* the initiator advertises STags per task: type-2 memory windows bound over registered
  buffers (``stags="mw"``, the default), which the target invalidates with
  Send-with-Invalidate when allowed and the initiator invalidates locally otherwise, before
  the core sees the SCSI Response; or plain MR keys (``stags="mr"``), then the CM private
  data forbids Send-with-Invalidate (protocol-digest 4.3);
* receives are posted before the peer can send: the login buffer before connect/accept, the
  full ring in Allocate_Connection_Resources (before the initiator's NSG=3 Login Request,
  before the target's final Login Response).

Every verbs error, CM disconnect or iSER format error terminates the connection, frees the
resources and raises Connection_Terminate_Notify (RFC 7145 10.1).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from datamover.di import ConnectionClosed, DataDescriptor, DatamoverConnection, DatamoverUpcalls, Portal, Role
from datamover.pdu import (
    BHS_LENGTH,
    DataIn,
    LoginRequest,
    LoginResponse,
    Pdu,
    PduFormatError,
    R2T,
    ScsiCommand,
    ScsiResponse,
    decode,
    encode_header,
    peek_lengths,
)
from datamover_iser.header import (
    ISER_HEADER_LENGTH,
    Hello,
    HelloReply,
    IserFormatError,
    IserHeader,
    decode_header,
)
from datamover_iser.memory import BufferPool, MrIndex, RegistrationCache, address_of
from datamover_iser.verbs.enums import Access, CMEventType, WCOpcode, WCStatus, WROpcode, SendFlags, WCFlags
from datamover_iser.verbs.wr import SGE, MWBind, QPCap, RecvWR, SendWR, WorkCompletion

if TYPE_CHECKING:
    from datamover_iser.verbs.api import CMId, CQ, MR, MW, QP, Provider

log = logging.getLogger("datamover.iser")

#: what a login-phase data segment may hold (RFC 7143: MaxRecvDataSegmentLength 8192 in login)
LOGIN_DATA = 8192
#: bytes for the BHS and AHS in every receive/send slot (MaxAHSLength default 256)
HEADER_ROOM = ISER_HEADER_LENGTH + BHS_LENGTH + 256
#: data up to this size is copied into the send slot; larger data goes as its own SGE
INLINE_DATA = 8192
#: unexpected PDUs (NOP-In, Async, Reject) the initiator provisions beyond the window
MISC_RECEIVES = 8
#: receive work requests a connection's QP holds (its receive ring, plus MISC_RECEIVES)
RECV_QUEUE_DEPTH = 2048

_KIND_RECV = 1 << 60


@dataclass(slots=True)
class _InitiatorTask:
    read_stag: int = 0
    write_stag: int = 0
    windows: list["MW"] = field(default_factory=list)
    bounces: list[memoryview] = field(default_factory=list)


@dataclass(slots=True)
class _TargetTask:
    read_stag: int = 0
    read_base: int = 0
    write_stag: int = 0
    write_base: int = 0
    data_pdus: int = 0


@dataclass(slots=True)
class _Pending:
    """A send-queue WR waiting for its completion."""

    kind: str
    done: Callable[[WorkCompletion], None] | None = None
    keep: object = None  # buffers that must live until completion


class IserConnection(DatamoverConnection):
    """One iSER connection: a CM id, a QP, a CQ, receive ring and registered memory."""

    def __init__(self, role: Role, provider: Provider, cid: CMId, *, local: Portal | None, peer: str,
                 options: Mapping[str, object]) -> None:
        super().__init__(role, local, peer)
        self.provider = provider
        self.cid = cid
        self.options = options
        self.stags = str(options.get("stags", "mw"))
        self.ring_size = int(options.get("ring", 128))  # type: ignore[arg-type]
        self._loop = asyncio.get_running_loop()
        self.pd = cid.pd
        self.cq: CQ = cid.context.create_cq(4096)
        self.qp: QP = cid.create_qp(self.cq, self.cq, QPCap(max_send_wr=1024, max_recv_wr=RECV_QUEUE_DEPTH,
                                                            max_send_sge=4, max_recv_sge=1))
        self.index = MrIndex()
        # iWARP: a Read sink needs remote write; windows need MW_BIND on the MR under them
        access = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ | Access.MW_BIND
        self.pool = BufferPool(self.pd, access, self.index)
        self.cache = RegistrationCache(self.pd, access, self.index)
        self._rx: list[memoryview] = []
        self._free_rx: list[int] = []  # login buffers not posted
        self._allocated = False
        self._rx_size = HEADER_ROOM + LOGIN_DATA
        self._posted_rx = 0
        self._wr_next = 1
        self._pending: dict[int, _Pending] = {}
        self._sq_depth = 1024
        self._sq_used = 0
        self._backlog: deque[SendWR] = deque()
        self._login_queue: asyncio.Queue[object] = asyncio.Queue()
        self._upcalls: DatamoverUpcalls | None = None
        self._early: list[Pdu] = []
        self._closed = False
        self._notified = False
        self._keys: dict[str, str] = {}
        self._itasks: dict[int, _InitiatorTask] = {}
        self._ttasks: dict[int, _TargetTask] = {}
        self._mw_free: list[MW] = []
        self.peer_allows_send_inv = False
        self.ord = 1
        self._reads_in_flight = 0
        self._read_backlog: deque[tuple[SendWR, _Pending]] = deque()
        self._hello_required = False
        self.counters = {"sends": 0, "recvs": 0, "rdma_writes": 0, "rdma_reads": 0, "rdma_bytes": 0,
                         "send_payload_bytes": 0, "bounce_bytes": 0, "registrations": 0,
                         "remote_invalidations": 0, "local_invalidations": 0, "pdus_sent": 0, "pdus_received": 0,
                         "inline_copy_bytes": 0,
                         "hello_messages": 0}

    # ================================================================ set-up
    def start(self, login_receives: int) -> None:
        """Post the login receive buffer(s) and start watching the CQ.

        During login each receive is posted once, just before the PDU that makes the peer
        send (the target: before accept and before each non-final Login Response; the
        initiator: before each Login Request), and never re-posted: that way no small
        login buffer is left in the queue when the full ring goes up (Linux isert and
        iser do the same)."""
        for _ in range(login_receives):
            self._post_login_buffer()
        self._loop.add_reader(self.cq.fileno(), self._on_cq)
        self.cq.req_notify()

    def _post_login_buffer(self) -> None:
        if self._allocated or self._closed:
            return
        if self._free_rx:
            self._post_rx(self._free_rx.pop())
        else:
            self._add_rx(HEADER_ROOM + LOGIN_DATA)

    def watch_cm(self) -> None:
        self._loop.add_reader(self.cid.fileno(), self._on_cm)

    def _add_rx(self, size: int) -> None:
        buf = self.pool.alloc(size)
        region = self.index.find(*self._addr_len(buf))
        if region is None:
            raise MemoryError("iSER receive buffers must be registered")
        index = len(self._rx)
        self._rx.append(buf)
        self._post_rx(index)

    def _post_rx(self, index: int) -> None:
        buf = self._rx[index]
        addr, length = self._addr_len(buf)
        region = self.index.find(addr, length)
        assert region is not None
        self.qp.post_recv(RecvWR(_KIND_RECV | index, [SGE(addr, length, region.mr.lkey)]))
        self._posted_rx += 1

    @staticmethod
    def _addr_len(buf: memoryview) -> tuple[int, int]:
        addr = address_of(buf)
        assert addr is not None
        return addr, buf.nbytes

    # ================================================================ login channel
    async def login_send(self, pdu: Pdu) -> None:
        if self._closed:
            raise ConnectionClosed("iSER connection closed")
        # a buffer for the peer's answer goes up before we make the peer answer
        self._post_login_buffer()
        self._send_pdu(pdu, IserHeader())

    async def login_recv(self, timeout: float | None = None) -> Pdu:
        if self._closed and self._login_queue.empty():
            raise ConnectionClosed("iSER connection closed")
        try:
            item = await asyncio.wait_for(self._login_queue.get(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError("no login PDU within the timeout") from None
        if isinstance(item, Exception):
            raise item
        return item  # type: ignore[return-value]

    # ================================================================ down-calls
    def notice_key_values(self, keys: Mapping[str, str]) -> None:
        self._keys = dict(keys)
        self._hello_required = keys.get("iSERHelloRequired") == "Yes"

    def _recv_limit(self) -> int:
        name = "InitiatorRecvDataSegmentLength" if self.role is Role.INITIATOR else "TargetRecvDataSegmentLength"
        try:
            return max(LOGIN_DATA, int(self._keys.get(name, "8192"), 0))
        except ValueError:
            return LOGIN_DATA

    async def allocate_connection_resources(self, resource_descriptor: object | None = None) -> bool:
        """Post the full receive ring (RFC 7145 5.1: before the peer can send)."""
        if self._closed:
            return False
        if self._allocated:
            return True  # idempotent (RFC 5047 8.4)
        size = HEADER_ROOM + self._recv_limit()
        want = self.ring_size + (MISC_RECEIVES if self.role is Role.INITIATOR else 0)
        try:
            for _ in range(want):
                self._add_rx(size)
        except Exception as exc:
            log.warning("iSER: cannot post the receive ring: %s", exc)
            return False
        self._rx_size = size
        self._allocated = True
        return True

    def deallocate_connection_resources(self) -> None:
        return None  # freed with the connection

    async def enable_datamover(self, upcalls: DatamoverUpcalls, final_login_response: Pdu | None = None) -> None:
        if final_login_response is not None:
            self._send_pdu(final_login_response, IserHeader())
        self._upcalls = upcalls
        early, self._early = self._early, []
        for pdu in early:
            self._deliver(pdu)
        if self.role is Role.INITIATOR and self._hello_required:
            self._send_raw(Hello(ird=self.ord).encode())

    def send_control(self, pdu: Pdu, *, data_out: DataDescriptor | None = None,
                     data_in: DataDescriptor | None = None, immediate_data_size: int = 0,
                     unsolicited_data_size: int = 0) -> None:
        if self._closed:
            return
        header = IserHeader()
        if isinstance(pdu, ScsiCommand) and self.role is Role.INITIATOR:
            header = self._advertise(pdu, data_out, data_in, unsolicited_data_size)
            if header is None:
                return
        elif isinstance(pdu, ScsiResponse) and self.role is Role.TARGET:
            task = self._ttasks.pop(pdu.itt, None)
            pdu.exp_data_sn = task.data_pdus if task is not None else 0
            if task is not None and task.read_stag and self.peer_allows_send_inv:
                # RFC 7145 7.3.4: invalidate the Read STag with the response
                self._send_pdu(pdu, header, invalidate=task.read_stag)
                self.counters["remote_invalidations"] += 1
                return
        self._send_pdu(pdu, header)

    def put_data(self, header: DataIn, descriptor: DataDescriptor, notify: bool) -> None:
        task = self._ttasks.get(header.itt)
        if task is None or not task.read_stag:
            self._protocol_failure(f"Put_Data for task {header.itt:#x} without a Read STag")
            return
        view = _single(descriptor)
        sge, keep = self._local_sge(view, source=True)
        remote = task.read_base + header.buffer_offset
        task.data_pdus += 1
        sn = task.data_pdus - 1
        itt = header.itt
        done = (lambda wc: self._data_done(itt, sn)) if notify else None
        wr = SendWR(self._next_wr(), WROpcode.RDMA_WRITE, [sge] if sge else [], SendFlags.SIGNALED,
                    remote_addr=remote, rkey=task.read_stag)
        self.counters["rdma_writes"] += 1
        self.counters["rdma_bytes"] += view.nbytes
        self._post(wr, _Pending("rdma_write", done, keep))

    def get_data(self, r2t: R2T, descriptor: DataDescriptor, notify: bool) -> None:
        task = self._ttasks.get(r2t.itt)
        if task is None or not task.write_stag:
            self._protocol_failure(f"Get_Data for task {r2t.itt:#x} without a Write STag")
            return
        view = _single(descriptor)
        task.data_pdus += 1
        sge, bounce = self._local_sge(view, source=False)
        itt, r2t_sn = r2t.itt, r2t.r2t_sn

        def done(wc: WorkCompletion) -> None:
            if bounce is not None:
                view[:] = bounce  # the sink was not registered: one counted copy
                self.counters["bounce_bytes"] += view.nbytes
                self.pool.release(bounce)
            if notify:
                self._data_done(itt, r2t_sn)

        wr = SendWR(self._next_wr(), WROpcode.RDMA_READ, [sge], SendFlags.SIGNALED,
                    remote_addr=task.write_base + r2t.buffer_offset, rkey=task.write_stag)
        self.counters["rdma_reads"] += 1
        self.counters["rdma_bytes"] += view.nbytes
        pending = _Pending("rdma_read", done, view)
        if self._reads_in_flight >= self.ord:
            self._read_backlog.append((wr, pending))  # at most iSER-ORD Reads outstanding
            return
        self._reads_in_flight += 1
        self._post(wr, pending)

    def connection_terminate(self) -> None:
        self._terminate(notify=False, reason="terminated by the iSCSI layer")

    def deallocate_task_resources(self, itt: int) -> None:
        self._ttasks.pop(itt, None)
        task = self._itasks.pop(itt, None)
        if task is not None:
            self._invalidate_locally(task, lambda: None)

    def alloc_buffer(self, size: int) -> memoryview:
        return self.pool.alloc(size)

    def release_buffer(self, buf: memoryview) -> None:
        self.pool.release(buf)

    def stats(self) -> dict[str, int]:
        out = dict(self.counters)
        out["registrations"] = self.cache.registrations
        # one copy per payload byte is the RDMA operation or Send itself (a NIC's DMA; the
        # soft provider's memcpy); inline and bounce copies come on top, counted separately
        out["payload_copies"] = (self.counters["rdma_bytes"] + self.counters["send_payload_bytes"]
                                 + self.counters["inline_copy_bytes"] + self.counters["bounce_bytes"])
        return out

    # ================================================================ initiator side
    def _advertise(self, pdu: ScsiCommand, data_out: DataDescriptor | None, data_in: DataDescriptor | None,
                   unsolicited: int) -> IserHeader | None:
        """Register/bind the task's buffers and build the header that advertises them."""
        task = _InitiatorTask()
        header_kwargs: dict[str, object] = {}
        if data_in is not None:
            view = _single(data_in)
            stag, base = self._stag_for(view, Access.REMOTE_WRITE, task)
            if stag is None:
                self._protocol_failure("cannot register the read buffer")
                return None
            task.read_stag = stag
            header_kwargs.update(read_stag=stag, read_base=base, rsv=True)
        if data_out is not None and pdu.expected_data_transfer_length > unsolicited:
            view = _single(data_out)
            stag, base = self._stag_for(view, Access.REMOTE_READ, task)
            if stag is None:
                self._protocol_failure("cannot register the write buffer")
                return None
            task.write_stag = stag
            # Linux's convention (ib_iser, isert): the Write Base Offset points at the first
            # solicited byte, i.e. past the immediate and unsolicited data (finding 7)
            header_kwargs.update(write_stag=stag, write_base=base + unsolicited, wsv=True)
        self._itasks[pdu.itt] = task
        return IserHeader(**header_kwargs)  # type: ignore[arg-type]

    def _stag_for(self, view: memoryview, access: Access, task: _InitiatorTask) -> tuple[int | None, int]:
        found = self.cache.lookup(view)
        if found is None and access == Access.REMOTE_READ:
            # read-only write data (bytes): one counted copy into registered memory
            bounce = self.pool.alloc(view.nbytes)
            bounce[:] = view
            self.counters["bounce_bytes"] += view.nbytes
            task.bounces.append(bounce)
            found = self.cache.lookup(bounce)
        if found is None:
            return None, 0
        mr, addr = found
        if self.stags == "mr":
            return mr.rkey, addr
        mw = self._mw_free.pop() if self._mw_free else self.pd.alloc_mw()
        wr = SendWR(self._next_wr(), WROpcode.BIND_MW, [], SendFlags.SIGNALED,
                    bind=MWBind(mw, mr, addr, view.nbytes, access))
        self._post(wr, _Pending("bind", None, mw))
        task.windows.append(mw)
        return wr.rkey, addr  # the provider set the new window key at post time

    def _response_arrived(self, pdu: ScsiResponse, wc: WorkCompletion, index: int) -> None:
        """RFC 7145 7.3.4: every STag of the task is invalid before the core sees the response."""
        task = self._itasks.pop(pdu.itt, None)
        if task is not None:
            for bounce in task.bounces:
                self.pool.release(bounce)
        if task is None or self.stags == "mr":
            self._deliver(pdu)
            return
        invalidated = _invalidated_rkey(wc)
        if invalidated:
            self.counters["remote_invalidations"] += 1
        remaining = [mw for mw in task.windows if mw.rkey != invalidated]
        done_windows = [mw for mw in task.windows if mw.rkey == invalidated]
        self._mw_free.extend(done_windows)
        if not remaining:
            self._deliver(pdu)
            return
        # the PDU's data aliases the receive buffer: copy what the core will read
        pdu.data = bytes(pdu.data)
        task.windows = remaining
        self._invalidate_locally(task, lambda: self._deliver(pdu))

    def _invalidate_locally(self, task: _InitiatorTask, then: Callable[[], None]) -> None:
        windows = list(task.windows)
        task.windows = []
        if not windows or self.stags == "mr":
            then()
            return
        left = [len(windows)]

        def one_done(mw: MW) -> Callable[[WorkCompletion], None]:
            def done(wc: WorkCompletion) -> None:
                self._mw_free.append(mw)
                left[0] -= 1
                if left[0] == 0:
                    then()
            return done

        for mw in windows:
            self.counters["local_invalidations"] += 1
            wr = SendWR(self._next_wr(), WROpcode.LOCAL_INV, [], SendFlags.SIGNALED, invalidate_rkey=mw.rkey)
            self._post(wr, _Pending("local_inv", one_done(mw), mw))

    # ================================================================ sending
    def _send_pdu(self, pdu: Pdu, header: IserHeader, invalidate: int = 0) -> None:
        data = pdu.data
        head = encode_header(pdu)
        size = len(data)
        slot = self.pool.alloc(ISER_HEADER_LENGTH + len(head) + (size if size <= INLINE_DATA else 0))
        header.pack_into(slot, 0)
        slot[ISER_HEADER_LENGTH:ISER_HEADER_LENGTH + len(head)] = head
        used = ISER_HEADER_LENGTH + len(head)
        sges = [self._slot_sge(slot, used + (size if size <= INLINE_DATA else 0))]
        keep: list[object] = [slot]
        if size and size <= INLINE_DATA:
            slot[used:used + size] = data  # small payloads are copied next to the header
            self.counters["send_payload_bytes"] += size
            self.counters["inline_copy_bytes"] += size
        elif size:
            view = memoryview(data).cast("B")
            sge, bounce = self._local_sge(view, source=True)
            sges.append(sge)
            keep.append(bounce if bounce is not None else view)
            self.counters["send_payload_bytes"] += size
        opcode = WROpcode.SEND_WITH_INV if invalidate else WROpcode.SEND
        wr = SendWR(self._next_wr(), opcode, sges, SendFlags.SIGNALED, invalidate_rkey=invalidate)
        self.counters["sends"] += 1
        self.counters["pdus_sent"] += 1

        def release(wc: WorkCompletion) -> None:
            self.pool.release(slot)
            if len(keep) > 1 and isinstance(keep[1], memoryview) and keep[1] is not data:
                self.pool.release(keep[1])

        self._post(wr, _Pending("send", release, keep))

    def _send_raw(self, message: bytes) -> None:
        slot = self.pool.alloc(len(message))
        slot[:len(message)] = message
        wr = SendWR(self._next_wr(), WROpcode.SEND, [self._slot_sge(slot, len(message))], SendFlags.SIGNALED)
        self._post(wr, _Pending("send", lambda wc: self.pool.release(slot), slot))

    def _slot_sge(self, slot: memoryview, length: int) -> SGE:
        addr, _ = self._addr_len(slot)
        region = self.index.find(addr, length)
        assert region is not None, "send slots come from the registered pool"
        return SGE(addr, length, region.mr.lkey)

    def _local_sge(self, view: memoryview, *, source: bool) -> tuple[SGE, memoryview | None]:
        """An SGE for local memory: registered already, or registered now, or bounced."""
        addr = address_of(view)
        if addr is not None:
            region = self.index.find(addr, view.nbytes)
            if region is not None:
                return SGE(addr, view.nbytes, region.mr.lkey), None
            found = self.cache.lookup(view)
            if found is not None:
                return SGE(found[1], view.nbytes, found[0].lkey), None
        bounce = self.pool.alloc(view.nbytes)
        if source:
            bounce[:] = view  # read-only source (bytes): one counted copy
            self.counters["bounce_bytes"] += view.nbytes
        baddr, _ = self._addr_len(bounce)
        region = self.index.find(baddr, view.nbytes)
        if region is None:
            found = self.cache.lookup(bounce)
            assert found is not None
            return SGE(found[1], view.nbytes, found[0].lkey), bounce
        return SGE(baddr, view.nbytes, region.mr.lkey), bounce

    def _next_wr(self) -> int:
        wr_id = self._wr_next
        self._wr_next += 1
        return wr_id

    def _post(self, wr: SendWR, pending: _Pending) -> None:
        if self._closed:
            return
        self._pending[wr.wr_id] = pending
        if self._sq_used >= self._sq_depth:
            self._backlog.append(wr)
            return
        self._sq_used += 1
        try:
            self.qp.post_send(wr)
        except Exception as exc:
            self._pending.pop(wr.wr_id, None)
            self._terminate(notify=True, reason=f"post_send failed: {exc}")

    # ================================================================ completions
    def _on_cq(self) -> None:
        if self._closed:
            return
        self.cq.get_event()
        while True:
            completions = self.cq.poll(64)
            if not completions:
                self.cq.req_notify()
                completions = self.cq.poll(64)  # closes the arm/arrive race
                if not completions:
                    return
            for wc in completions:
                self._completion(wc)
                if self._closed:
                    return

    def _completion(self, wc: WorkCompletion) -> None:
        if wc.wr_id & _KIND_RECV:
            self._posted_rx -= 1
            if wc.status != WCStatus.SUCCESS:
                self._terminate(notify=True, reason=f"receive failed: {WCStatus(wc.status).name}")
                return
            self._received(wc.wr_id & ~_KIND_RECV, wc)
            return
        pending = self._pending.pop(wc.wr_id, None)
        self._sq_used -= 1
        while self._backlog and self._sq_used < self._sq_depth and not self._closed:
            wr = self._backlog.popleft()
            self._sq_used += 1
            self.qp.post_send(wr)
        if wc.status != WCStatus.SUCCESS:
            self._terminate(notify=True, reason=f"{pending.kind if pending else 'send'} failed: "
                                                f"{WCStatus(wc.status).name}")
            return
        if pending is None:
            return
        if pending.kind == "rdma_read":
            self._reads_in_flight -= 1
            while self._read_backlog and self._reads_in_flight < self.ord:
                wr, next_pending = self._read_backlog.popleft()
                self._reads_in_flight += 1
                self._post(wr, next_pending)
        if pending.done is not None:
            pending.done(wc)

    def _received(self, index: int, wc: WorkCompletion) -> None:
        buf = self._rx[index]
        message = buf[:wc.byte_len]
        self.counters["recvs"] += 1
        try:
            iser = decode_header(message)
        except IserFormatError as exc:
            self._terminate(notify=True, reason=f"iSER format error: {exc}")
            return
        if isinstance(iser, (Hello, HelloReply)):
            self._hello(iser)
            self._repost(index)
            return
        try:
            pdu = self._decode_pdu(message[ISER_HEADER_LENGTH:])
        except PduFormatError as exc:
            if self._upcalls is not None and hasattr(self._upcalls, "protocol_error_notify"):
                self._upcalls.protocol_error_notify(self, exc, bytes(message[ISER_HEADER_LENGTH:ISER_HEADER_LENGTH + 48]))
                self._repost(index)
            else:
                self._terminate(notify=True, reason=f"bad PDU: {exc}")
            return
        self.counters["pdus_received"] += 1
        if self.role is Role.TARGET and isinstance(pdu, ScsiCommand):
            # Write Base Offset as Linux (ib_iser, isert) uses it: it points at the first
            # solicited byte, so the solicited data at BufferOffset sits at
            # base + BufferOffset - (immediate + unsolicited length) (docs/interop.md, finding 7)
            self._ttasks[pdu.itt] = _TargetTask(iser.read_stag, iser.read_base, iser.write_stag,
                                                 iser.write_base - self._unsolicited_length(pdu))
        if isinstance(pdu, (LoginRequest, LoginResponse)) and self._upcalls is None:
            pdu.data = bytes(pdu.data)
            if self._allocated and self._rx[index].nbytes >= self._rx_size:
                self._repost(index)  # a ring buffer (the final response landed in it)
            else:
                self._free_rx.append(index)  # login buffers are posted on demand only
            self._login_queue.put_nowait(pdu)
            return
        if self._upcalls is None:
            pdu.data = bytes(pdu.data)  # held until enable_datamover: detach from the ring
            self._repost(index)
            self._early.append(pdu)
            return
        if self.role is Role.INITIATOR and isinstance(pdu, ScsiResponse):
            self._response_arrived(pdu, wc, index)
            self._repost(index)
            return
        self._deliver(pdu)
        self._repost(index)

    def _unsolicited_length(self, cmd: ScsiCommand) -> int:
        """Bytes of the command's write data sent without R2T: the immediate data, plus
        unsolicited Data-Out up to FirstBurstLength unless InitialR2T=Yes or F=1."""
        immediate = len(cmd.data)
        if cmd.final or self._keys.get("InitialR2T", "Yes") == "Yes":
            return immediate
        try:
            first_burst = int(self._keys.get("FirstBurstLength", "65536"), 0)
        except ValueError:
            first_burst = 65536
        return max(immediate, min(first_burst, cmd.expected_data_transfer_length))

    def _decode_pdu(self, body: memoryview) -> Pdu:
        if len(body) < BHS_LENGTH:
            raise PduFormatError(f"message of {len(body)} bytes holds no BHS")
        ahs, data_length = peek_lengths(body[:BHS_LENGTH])
        end = BHS_LENGTH + ahs
        if len(body) < end + data_length:
            raise PduFormatError("message shorter than its DataSegmentLength")
        # senders usually omit the pad bytes (protocol-digest 4.15): size data by DSL only
        return decode(body[:end], body[end:end + data_length])

    def _repost(self, index: int) -> None:
        if self._closed:
            return
        try:
            self._post_rx(index)
        except Exception as exc:
            self._terminate(notify=True, reason=f"post_recv failed: {exc}")

    def _deliver(self, pdu: Pdu) -> None:
        if self._closed or self._upcalls is None:
            return
        self._upcalls.control_notify(self, pdu)

    def _data_done(self, itt: int, sn: int) -> None:
        if not self._closed and self._upcalls is not None:
            self._upcalls.data_completion_notify(self, itt, sn)

    def _hello(self, message: Hello | HelloReply) -> None:
        self.counters["hello_messages"] += 1
        if isinstance(message, Hello) and self.role is Role.TARGET:
            ord_value = min(self.ord, message.ird)
            reject = not (message.min_version <= 10 <= message.max_version)
            self._send_raw(HelloReply(ord=ord_value, reject=reject).encode())
            if reject:
                self._terminate(notify=True, reason="iSER Hello with an unsupported version")
            else:
                self.ord = max(1, ord_value)
        elif isinstance(message, HelloReply) and self.role is Role.INITIATOR:
            if message.reject:
                self._terminate(notify=True, reason="the target rejected our iSER Hello")
        else:
            self._terminate(notify=True, reason=f"unexpected {type(message).__name__}")

    # ================================================================ CM and teardown
    def _on_cm(self) -> None:
        while True:
            try:
                event = self.cid.poll_event()
            except Exception:
                event = None
            if event is None:
                return
            if event.type in (CMEventType.DISCONNECTED, CMEventType.DEVICE_REMOVAL, CMEventType.TIMEWAIT_EXIT):
                self._terminate(notify=True, reason=f"CM event {event.type.name}")
                return

    def _protocol_failure(self, why: str) -> None:
        log.warning("iSER %s: %s", self.peer, why)
        self._terminate(notify=True, reason=why)

    def _terminate(self, *, notify: bool, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        log.info("iSER connection to %s ends: %s", self.peer, reason)
        for fd in (self.cq.fileno(), self.cid.fileno()):
            try:
                self._loop.remove_reader(fd)
            except Exception:
                pass
        self._login_queue.put_nowait(ConnectionClosed(reason))
        self._itasks.clear()
        self._ttasks.clear()
        self._backlog.clear()
        self._read_backlog.clear()
        self._loop.create_task(self._teardown())
        if notify and self._upcalls is not None and not self._notified:
            self._notified = True
            # RFC 7145 10.1.3.1: resources are freed, then Connection_Terminate_Notify
            self._loop.call_soon(self._upcalls.connection_terminate_notify, self)

    async def _teardown(self) -> None:
        # let Sends already posted (a Logout Response) reach the peer before disconnecting
        for _ in range(50):
            if not self._pending:
                break
            await asyncio.sleep(0.002)
            self._drain_after_close()
        try:
            await self.cid.disconnect()
        except Exception:
            pass
        for closer in (self.qp.close, self.cq.close, self.cache.close, self.pool.close, self.cid.close):
            try:
                closer()
            except Exception:
                pass

    def _drain_after_close(self) -> None:
        try:
            for wc in self.cq.poll(256):
                if not wc.wr_id & _KIND_RECV:
                    self._pending.pop(wc.wr_id, None)
        except Exception:
            self._pending.clear()


def _single(descriptor: DataDescriptor) -> memoryview:
    """iSER advertises one STag per direction: the descriptor must be one buffer."""
    if len(descriptor) != 1:
        raise ValueError("iSER data descriptors must hold exactly one buffer")
    return memoryview(descriptor[0]).cast("B")


def _invalidated_rkey(wc: WorkCompletion) -> int:
    """The rkey a Send-with-Invalidate invalidated; rxe reports it in imm_data without
    the WITH_INV flag (rdma-without-hardware.md 3, pitfall 4), so read both."""
    if wc.invalidated_rkey:
        return wc.invalidated_rkey
    if wc.wc_flags & WCFlags.WITH_INV:
        return wc.imm_data
    return 0

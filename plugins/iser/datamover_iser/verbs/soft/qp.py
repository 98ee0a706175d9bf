"""Soft RC queue pair: the state machine, the requester and the responder.

Modelled on rdma_rxe (rdma-without-hardware.md §3 is the reference):

* Requester: send WQEs are transmitted in order, each as one message with a PSN, and retire
  in order when acknowledged (ACK, READ_RESP). A NAK fails the WQE it names and moves the QP
  to ERR; every later WQE and every posted receive is flushed with WR_FLUSH_ERR.
* RNR: a SEND finding no receive is RNR-NAKed; the requester waits the responder's RNR timer
  and resends from that PSN (go-back-N), ``rnr_retry`` times (7 = for ever), then fails the
  WQE with RNR_RETRY_EXC_ERR. The responder stays in RTS.
* Responder: requests are executed in PSN order (that is RC ordering: a READ behind a WRITE
  sees the WRITE's data). RDMA WRITE/READ give the responder no completion. A bad rkey /
  missing MR access gives NAK ACCESS (REM_ACCESS_ERR), missing QP access gives NAK INV_REQ
  (REM_INV_REQ_ERR); in both cases the responder QP goes to ERR too. A receive too small
  for a SEND gives the requester REM_OP_ERR (the responder LOC_QP_OP_ERR on RoCE,
  LOC_LEN_ERR on iWARP) and a bad local key LOC_QP_OP_ERR, as rdma_rxe does (measured
  through pyverbs in the interop lab).
* Posting: a SEND posted in INIT or RTR fails with EINVAL; on RoCE it still stays queued
  (rdma_rxe rings a doorbell after queueing) and is flushed on ERR, as the lab measured. A
  receive posted in ERR is flushed at once on iWARP; on RoCE it is taken and never
  completes (rdma_rxe 6.1 has no receive doorbell).
* Lost messages (only ever caused by the fault hook) are recovered by an ack timer and
  go-back-N retransmission, ``retry_count`` times, then RETRY_EXC_ERR.
"""

from __future__ import annotations

import asyncio
import errno
import itertools
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Protocol

from ..api import QP
from ..enums import (
    Access,
    AsyncEventType,
    Personality,
    QPState,
    RNR_RETRY_INFINITE,
    SendFlags,
    WCFlags,
    WCOpcode,
    WCStatus,
    WROpcode,
    rnr_timer_seconds,
)
from ..errors import IwarpOrderError, VerbsError
from ..wr import AsyncEvent, QPCap, RecvWR, SendWR, WorkCompletion
from .memory import SoftMR, SoftMW, check_local, check_remote
from .wire import Chunk, Kind, Msg, Nak, scatter

if TYPE_CHECKING:
    from .cq import SoftCQ
    from .device import SoftPD

_qpns = itertools.count(0x11)

#: messages a requester keeps in flight before waiting for acknowledgements
SEND_WINDOW = 64

_WC_OF_WR = {
    WROpcode.SEND: WCOpcode.SEND,
    WROpcode.SEND_WITH_INV: WCOpcode.SEND,
    WROpcode.SEND_WITH_IMM: WCOpcode.SEND,
    WROpcode.RDMA_WRITE: WCOpcode.RDMA_WRITE,
    WROpcode.RDMA_READ: WCOpcode.RDMA_READ,
    WROpcode.BIND_MW: WCOpcode.BIND_MW,
    WROpcode.LOCAL_INV: WCOpcode.LOCAL_INV,
}
_KIND_OF_WR = {
    WROpcode.SEND: Kind.SEND,
    WROpcode.SEND_WITH_INV: Kind.SEND_INV,
    WROpcode.SEND_WITH_IMM: Kind.SEND_IMM,
    WROpcode.RDMA_WRITE: Kind.RDMA_WRITE,
    WROpcode.RDMA_READ: Kind.RDMA_READ,
}
_STATUS_OF_NAK = {
    Nak.INV_REQ: WCStatus.REM_INV_REQ_ERR,
    Nak.ACCESS: WCStatus.REM_ACCESS_ERR,
    Nak.OP: WCStatus.REM_OP_ERR,
}
_LEGAL = {
    QPState.RESET: {QPState.INIT},
    QPState.INIT: {QPState.INIT, QPState.RTR},
    QPState.RTR: {QPState.RTS},
    QPState.RTS: {QPState.RTS},
    QPState.ERR: set(),
}


class Endpoint(Protocol):
    """What a QP needs from its connection."""

    @property
    def lossy(self) -> bool: ...

    def send(self, msg: Msg) -> None: ...

    def terminated(self, reason: str) -> None: ...


class _SWQE:
    __slots__ = ("wr", "psn", "done", "status", "byte_len", "msg", "sink", "signaled")

    def __init__(self, wr: SendWR, signaled: bool) -> None:
        self.wr = wr
        self.psn = -1
        self.done = False
        self.status = WCStatus.SUCCESS
        self.byte_len = 0
        self.msg: Msg | None = None
        self.sink: list[Chunk] | None = None
        self.signaled = signaled


class SoftQP(QP):
    def __init__(
        self, pd: "SoftPD", send_cq: "SoftCQ", recv_cq: "SoftCQ", cap: QPCap, sq_sig_all: bool
    ) -> None:
        if cap.max_send_wr < 1 or cap.max_recv_wr < 1 or cap.max_send_sge < 1 or cap.max_recv_sge < 1:
            raise VerbsError(errno.EINVAL, f"bad QP capabilities {cap}")
        self.pd = pd
        self.context = pd.context
        self.personality: Personality = pd.context.personality
        self.send_cq = send_cq
        self.recv_cq = recv_cq
        self.cap = cap
        self.sq_sig_all = sq_sig_all
        self.qp_num = next(_qpns)
        self._state = QPState.RESET
        self.access = Access.NONE
        self.sq: deque[_SWQE] = deque()
        self.inflight: deque[_SWQE] = deque()
        self.rq: deque[RecvWR] = deque()
        self.ep: Endpoint | None = None
        self.passive = False
        self.heard_from_peer = False
        self.npsn = 0  # next PSN to send
        self.epsn = 0  # next PSN expected as responder
        # attributes the CM sets (IB CM REQ/REP carry them)
        self.rnr_retry = RNR_RETRY_INFINITE
        self.retry_count = 7
        self.min_rnr_timer = 12
        self.ack_timeout = 0.067  # IB timeout 14 = 4.096 us * 2**14
        self._rnr_left = 0
        self._retry_left = 0
        self._pump_scheduled = False
        self._timer: asyncio.TimerHandle | None = None
        self._rnr_wait: asyncio.TimerHandle | None = None
        self.closed = False

    # ------------------------------------------------------------------ state machine
    @property
    def state(self) -> QPState:
        return self._state

    def modify(self, state: QPState | None = None, *, access: Access | None = None) -> None:
        if self.closed:
            raise VerbsError(errno.EINVAL, "QP is closed")
        if access is not None:
            target = self._state if state is None else state
            if target not in (QPState.INIT, QPState.RTR, QPState.RTS):
                raise VerbsError(errno.EINVAL, f"qp_access_flags cannot be set in {target.name}")
        if state is not None:
            if state == QPState.RTR and self.ep is None:
                raise VerbsError(
                    errno.EINVAL,
                    "RTR needs the remote QP's address: soft QPs are connected by the CM "
                    "(CMId.connect/accept)",
                )
            self._move(state)
        if access is not None:
            self.access = Access(access)

    def _move(self, state: QPState) -> None:
        cur = self._state
        if state == QPState.RESET:
            self._reset()
            return
        if state == QPState.ERR:
            self._to_error()
            return
        if state not in _LEGAL.get(cur, set()):
            raise VerbsError(errno.EINVAL, f"illegal QP transition {cur.name} -> {state.name}")
        self._state = state
        if state == QPState.RTS:
            self._rnr_left = self.rnr_retry
            self._retry_left = self.retry_count
            self._schedule_pump()

    def _reset(self) -> None:
        self._cancel_timers()
        self.sq.clear()
        self.inflight.clear()
        self.rq.clear()
        self.npsn = self.epsn = 0
        self.access = Access.NONE
        self._state = QPState.RESET

    def attach(self, ep: Endpoint, passive: bool) -> None:
        """Called by the CM: bind the QP to its connection (before RTR)."""
        self.ep = ep
        self.passive = passive

    def cm_to_rts(self, rnr_retry: int, retry_count: int) -> None:
        """The CM's INIT -> RTR -> RTS with the negotiated attributes."""
        self.rnr_retry = rnr_retry
        self.retry_count = retry_count
        if self._state == QPState.INIT:
            self._move(QPState.RTR)
        if self._state == QPState.RTR:
            self._move(QPState.RTS)

    # ------------------------------------------------------------------ posting
    def post_recv(self, wrs: RecvWR | Iterable[RecvWR]) -> None:
        for wr in [wrs] if isinstance(wrs, RecvWR) else wrs:
            if self._state == QPState.RESET or self.closed:
                raise VerbsError(errno.EINVAL, f"post_recv on a QP in {self._state.name}")
            if len(wr.sg_list) > self.cap.max_recv_sge:
                raise VerbsError(errno.EINVAL, f"{len(wr.sg_list)} SGEs > max_recv_sge {self.cap.max_recv_sge}")
            if len(self.rq) >= self.cap.max_recv_wr:
                raise VerbsError(errno.ENOMEM, f"receive queue full ({self.cap.max_recv_wr})")
            if self._state == QPState.ERR and self.personality.flushes_receives_posted_in_err:
                self._complete(self.recv_cq, WorkCompletion(wr.wr_id, WCStatus.WR_FLUSH_ERR, WCOpcode.RECV, qp_num=self.qp_num))
                continue
            # RoCE in ERR: rdma_rxe (kernel 6.1) takes the receive and never completes it
            # (no doorbell for receives; its responder flushed the queue when it entered ERR)
            self.rq.append(wr)

    def post_send(self, wrs: SendWR | Iterable[SendWR]) -> None:
        for wr in [wrs] if isinstance(wrs, SendWR) else wrs:
            self._post_one(wr)
        self._schedule_pump()

    def _post_one(self, wr: SendWR) -> None:
        st = self._state
        early = st in (QPState.INIT, QPState.RTR)
        if self.closed or st == QPState.RESET or (early and not self.personality.queues_posts_before_rts):
            raise VerbsError(errno.EINVAL, f"post_send on a QP in {st.name}")
        op = wr.opcode
        if op not in _WC_OF_WR:
            raise VerbsError(errno.EINVAL, f"opcode {op!r} is not supported by the soft provider")
        if len(wr.sg_list) > self.cap.max_send_sge:
            raise VerbsError(errno.EINVAL, f"{len(wr.sg_list)} SGEs > max_send_sge {self.cap.max_send_sge}")
        if len(self.sq) + len(self.inflight) >= self.cap.max_send_wr:
            raise VerbsError(errno.ENOMEM, f"send queue full ({self.cap.max_send_wr})")
        if (
            st == QPState.RTS
            and self.personality.active_sends_first
            and self.passive
            and not self.heard_from_peer
            and op in _KIND_OF_WR
        ):
            raise IwarpOrderError()
        # (int.__and__: an IntFlag & builds an enum object, a microsecond per work request)
        signaled = self.sq_sig_all or bool(int.__and__(wr.send_flags, SendFlags.SIGNALED))
        wqe = _SWQE(wr, signaled)
        if int.__and__(wr.send_flags, SendFlags.INLINE):
            if op not in (WROpcode.SEND, WROpcode.SEND_WITH_INV, WROpcode.SEND_WITH_IMM, WROpcode.RDMA_WRITE):
                raise VerbsError(errno.EINVAL, f"{op.name} cannot be inline")
            total = sum(s.length for s in wr.sg_list)
            if total > self.cap.max_inline_data:
                raise VerbsError(errno.EINVAL, f"inline data {total} > max_inline_data {self.cap.max_inline_data}")
            # Inline data is copied at post time: the caller may reuse the buffer at once.
            wqe.msg = Msg(_KIND_OF_WR[op], chunks=[Chunk(memoryview(self._read_inline(wr)))])
        if op == WROpcode.BIND_MW:
            if wr.bind is None or not isinstance(wr.bind.mw, SoftMW):
                raise VerbsError(errno.EINVAL, "BIND_MW needs a soft MW in wr.bind")
            mw = wr.bind.mw
            wr.rkey = (mw.rkey & ~0xFF) | ((mw.rkey + 1) & 0xFF)  # the key to advertise
        if st == QPState.ERR:
            self._complete(self.send_cq, self._wc(wqe, WCStatus.WR_FLUSH_ERR))
            return
        self.sq.append(wqe)
        if early:
            # rdma_rxe: the WQE is already on the userspace ring when the doorbell fails
            raise VerbsError(errno.EINVAL, f"post_send on a QP in {st.name} (the WR stays queued, as on rdma_rxe)")

    def _read_inline(self, wr: SendWR) -> bytes:
        parts = []
        for s in wr.sg_list:
            mr = self.context.mr_covering(s.addr, s.length)
            if mr is None:
                raise VerbsError(errno.EFAULT, f"inline SGE {s.addr:#x}+{s.length} is not in registered memory")
            off = s.addr - mr.addr
            parts.append(bytes(mr.buf[off:off + s.length]))
        return b"".join(parts)

    # ------------------------------------------------------------------ requester
    def _schedule_pump(self) -> None:
        if not self._pump_scheduled and self.sq:
            self._pump_scheduled = True
            asyncio.get_running_loop().call_soon(self._pump)

    def _pump(self) -> None:
        self._pump_scheduled = False
        ep = self.ep
        while self._state == QPState.RTS and self.sq and len(self.inflight) < SEND_WINDOW:
            if self.inflight and self.inflight[-1].done and self.inflight[-1].status != WCStatus.SUCCESS:
                break  # an error WQE waits to retire: nothing behind it may start
            wqe = self.sq.popleft()
            self.inflight.append(wqe)
            wr = wqe.wr
            op = wr.opcode
            if op == WROpcode.BIND_MW or op == WROpcode.LOCAL_INV:
                wqe.status = self._local_op(wr)
                wqe.done = True
                continue
            if ep is None:
                wqe.status, wqe.done = WCStatus.LOC_QP_OP_ERR, True
                continue
            msg = self._build(wqe)
            if msg is None:
                continue  # wqe marked with a local error
            wqe.psn = msg.psn = self.npsn
            self.npsn += 1
            wqe.msg = msg
            ep.send(msg)
        self._arm_timer()
        self._retire()

    def _build(self, wqe: _SWQE) -> Msg | None:
        wr = wqe.wr
        op = wr.opcode
        kind = _KIND_OF_WR[op]
        if op == WROpcode.RDMA_READ:
            need = Access.LOCAL_WRITE
            if self.personality.read_sink_needs_remote_write:
                need |= Access.REMOTE_WRITE  # iWARP: the response is a tagged write into the sink
            sink = self._resolve(wr, need)
            if sink is None:
                # iWARP (modelled on siw): a sink without remote write is a protection error;
                # rdma_rxe reports a bad local key as a local QP operation error
                wqe.status, wqe.done = (WCStatus.LOC_PROT_ERR if self.personality.read_sink_needs_remote_write
                                        else WCStatus.LOC_QP_OP_ERR), True
                return None
            wqe.sink = sink
            wqe.byte_len = length = sum(c.view.nbytes for c in sink)
            return Msg(kind, a=wr.remote_addr, b=wr.rkey, c=length, sink_chunks=sink)
        if wqe.msg is not None:  # inline: payload captured at post time
            chunks = wqe.msg.chunks
        else:
            resolved = self._resolve(wr, Access.NONE)
            if resolved is None:
                # rdma_rxe: an SGE with a wrong lkey completes LOC_QP_OP_ERR (interop lab)
                wqe.status, wqe.done = WCStatus.LOC_QP_OP_ERR, True
                return None
            chunks = resolved
        wqe.byte_len = length = sum(c.view.nbytes for c in chunks)
        if kind == Kind.RDMA_WRITE:
            return Msg(kind, a=wr.remote_addr, b=wr.rkey, c=length, chunks=chunks)
        if kind == Kind.SEND_INV:
            return Msg(kind, b=wr.invalidate_rkey, c=length, chunks=chunks)
        return Msg(kind, a=wr.imm_data, c=length, chunks=chunks)

    def _resolve(self, wr: SendWR, need: Access) -> list[Chunk] | None:
        out = []
        keys = self.context.keys
        for s in wr.sg_list:
            if s.length == 0:
                continue
            hit = check_local(keys, self.pd, s.lkey, s.addr, s.length, need)
            if hit is None:
                return None
            mr, off = hit
            out.append(Chunk(mr.buf[off:off + s.length], mr.seg, mr.seg_offset + off))
        return out

    def _local_op(self, wr: SendWR) -> WCStatus:
        keys = self.context.keys
        if wr.opcode == WROpcode.BIND_MW:
            b = wr.bind
            assert b is not None
            mw, mr = b.mw, b.mr
            if (
                not isinstance(mr, SoftMR)
                or not mr.valid
                or not (mr.access & Access.MW_BIND)
                or mr.pd is not self.pd
                or not isinstance(mw, SoftMW)
                or mw.pd is not self.pd
                or not (mr.addr <= b.addr and b.addr + b.length <= mr.addr + mr.length)
            ):
                return WCStatus.MW_BIND_ERR
            keys.pop(mw.rkey)
            mw.rkey = wr.rkey
            mw.mr, mw.addr, mw.length, mw.access, mw.valid = mr, b.addr, b.length, Access(b.access), True
            keys.add(mw.rkey, mw)
            return WCStatus.SUCCESS
        obj = keys.get(wr.invalidate_rkey)  # LOCAL_INV
        if obj is None or obj.pd is not self.pd:
            return WCStatus.LOC_PROT_ERR
        obj.valid = False
        return WCStatus.SUCCESS

    def _on_response(self, msg: Msg) -> None:
        if self._state not in (QPState.RTS, QPState.SQD):
            return
        kind = msg.kind
        p = msg.psn
        progress = False
        if kind == Kind.ACK or kind == Kind.READ_RESP:
            first_unread: _SWQE | None = None
            for wqe in self.inflight:
                if wqe.psn < 0 or wqe.done:
                    continue  # local operations are done when executed
                if wqe.psn > p:
                    break
                if wqe.wr.opcode == WROpcode.RDMA_READ:
                    if kind == Kind.READ_RESP and wqe.psn == p:
                        if msg.data:
                            assert wqe.sink is not None
                            scatter(msg.data, [c.view for c in wqe.sink])
                        wqe.done = progress = True
                    elif first_unread is None:
                        first_unread = wqe  # acknowledged past a read whose response was lost
                    continue
                wqe.done = progress = True
            if first_unread is not None:
                self._retransmit_from(first_unread.psn)
        elif kind == Kind.NAK:
            code = Nak(msg.a)
            for wqe in self.inflight:
                if 0 <= wqe.psn < p and not wqe.done and wqe.wr.opcode != WROpcode.RDMA_READ:
                    wqe.done = True
                    progress = True
            if code == Nak.RNR:
                if self.rnr_retry != RNR_RETRY_INFINITE and self._rnr_left <= 0:
                    self._fail_psn(p, WCStatus.RNR_RETRY_EXC_ERR)
                else:
                    if self.rnr_retry != RNR_RETRY_INFINITE:
                        self._rnr_left -= 1
                    if self._rnr_wait is None:
                        delay = rnr_timer_seconds(msg.b)
                        self._rnr_wait = asyncio.get_running_loop().call_later(delay, self._rnr_resend, p)
            else:
                self._fail_psn(p, _STATUS_OF_NAK[code])
        elif kind == Kind.TERMINATE:
            # iWARP: the peer's QP failed. Sends complete at transmission on iWARP, so the
            # WQEs up to the failing one succeed; everything behind it is flushed.
            for wqe in self.inflight:
                if 0 <= wqe.psn <= p and not wqe.done:
                    wqe.done = True
            self._retire()
            self._to_error()
            return
        if progress:
            self._rnr_left = self.rnr_retry
            self._retry_left = self.retry_count
        self._retire()
        self._arm_timer(restart=progress)
        self._schedule_pump()

    def _fail_psn(self, p: int, status: WCStatus) -> None:
        for wqe in self.inflight:
            if wqe.psn == p:
                wqe.status, wqe.done = status, True
                return

    def _rnr_resend(self, p: int) -> None:
        self._rnr_wait = None
        if self._state == QPState.RTS:
            self._retransmit_from(p)

    def _retransmit_from(self, p: int) -> None:
        ep = self.ep
        if ep is None:
            return
        # a snapshot: sending can complete and retire WQEs (inflight changes under us)
        for wqe in list(self.inflight):
            if wqe.psn >= p and not wqe.done and wqe.msg is not None:
                ep.send(wqe.msg)
                if self.ep is None:
                    break  # the link went down while we resent
        self._arm_timer(restart=True)

    def _arm_timer(self, restart: bool = False) -> None:
        """The ack timer runs only on a lossy link (fault hook installed), see faults.py."""
        ep = self.ep
        pending = any(w.psn >= 0 and not w.done for w in self.inflight)
        if restart and self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not pending:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is None and ep is not None and ep.lossy:
            self._timer = asyncio.get_running_loop().call_later(self.ack_timeout, self._ack_timeout)

    def _ack_timeout(self) -> None:
        self._timer = None
        if self._state != QPState.RTS:
            return
        head = next((w for w in self.inflight if w.psn >= 0 and not w.done), None)
        if head is None:
            return
        if self._retry_left <= 0:
            head.status, head.done = WCStatus.RETRY_EXC_ERR, True
            self._retire()
            return
        self._retry_left -= 1
        self._retransmit_from(head.psn)

    def _retire(self) -> None:
        q = self.inflight
        while q and q[0].done:
            wqe = q.popleft()
            if wqe.status != WCStatus.SUCCESS:
                self._complete(self.send_cq, self._wc(wqe, wqe.status))
                self._to_error()
                return
            if wqe.signaled:
                self._complete(self.send_cq, self._wc(wqe, WCStatus.SUCCESS))

    def _wc(self, wqe: _SWQE, status: WCStatus) -> WorkCompletion:
        ok = status == WCStatus.SUCCESS
        return WorkCompletion(
            wqe.wr.wr_id, status, _WC_OF_WR[wqe.wr.opcode], wqe.byte_len if ok else 0, qp_num=self.qp_num
        )

    def _complete(self, cq: "SoftCQ", wc: WorkCompletion, responder: bool = False) -> bool:
        """Post a CQE. As in rdma_rxe, a full CQ loses the CQE and raises CQ_ERR; on the
        responder side (a receive completion) the QP then goes to ERR, the requester's QP
        carries on."""
        if cq.push(wc):
            return True
        if responder and self._state != QPState.ERR:
            self.context.raise_async(AsyncEvent(AsyncEventType.QP_FATAL, f"QP {self.qp_num:#x}: CQ overflow"))
            self._to_error()
        return False

    # ------------------------------------------------------------------ responder
    def _on_request(self, msg: Msg) -> None:
        if self._state not in (QPState.RTR, QPState.RTS):
            return  # RESET/INIT/ERR: the packet is silently dropped, as on a NIC
        ep = self.ep
        assert ep is not None
        self.heard_from_peer = True
        p = msg.psn
        if p != self.epsn:
            if p < self.epsn:
                if msg.kind == Kind.RDMA_READ:
                    self._do_read(msg)  # reads are re-executed
                else:
                    ep.send(Msg(Kind.ACK, self.epsn - 1))
            return  # p > epsn: behind a NAKed or lost packet; the requester will resend
        kind = msg.kind
        if kind == Kind.RDMA_WRITE:
            self._do_write(msg)
        elif kind == Kind.RDMA_READ:
            self._do_read(msg)
        else:
            self._do_send(msg)

    def _nak_fatal(self, p: int, code: Nak) -> None:
        assert self.ep is not None
        self.ep.send(Msg(Kind.NAK, p, int(code)))
        self._to_error()

    def _do_write(self, msg: Msg) -> None:
        if not int.__and__(self.access, Access.REMOTE_WRITE):
            self._nak_fatal(msg.psn, Nak.INV_REQ)
            return
        hit = check_remote(self.context.keys, self.pd, msg.b, msg.a, msg.c, Access.REMOTE_WRITE)
        if isinstance(hit, WCStatus):
            self._nak_fatal(msg.psn, Nak.ACCESS)
            return
        mr, off = hit
        if msg.c:
            scatter(msg.data, [mr.buf[off:off + msg.c]])
        self.epsn += 1
        assert self.ep is not None
        self.ep.send(Msg(Kind.ACK, msg.psn))

    def _do_read(self, msg: Msg) -> None:
        if not int.__and__(self.access, Access.REMOTE_READ):
            self._nak_fatal(msg.psn, Nak.INV_REQ)
            return
        hit = check_remote(self.context.keys, self.pd, msg.b, msg.a, msg.c, Access.REMOTE_READ)
        if isinstance(hit, WCStatus):
            self._nak_fatal(msg.psn, Nak.ACCESS)
            return
        mr, off = hit
        src = mr.buf[off:off + msg.c]
        if msg.psn == self.epsn:
            self.epsn += 1
        assert self.ep is not None
        if msg.sink is not None:
            scatter([src], msg.sink)  # direct placement: the one copy
            self.ep.send(Msg(Kind.READ_RESP, msg.psn, c=msg.c, capture=[src]))
        else:
            self.ep.send(
                Msg(Kind.READ_RESP, msg.psn, c=msg.c, chunks=[Chunk(src, mr.seg, mr.seg_offset + off)] if msg.c else [])
            )

    def _do_send(self, msg: Msg) -> None:
        assert self.ep is not None
        if not self.rq:
            if self.personality is Personality.IWARP:
                # No RNR on iWARP: an untagged message with no buffer terminates the stream.
                self.ep.send(Msg(Kind.TERMINATE, msg.psn))
                self._to_error()
                self.ep.terminated("iWARP: SEND arrived with no receive posted")
            else:
                self.ep.send(Msg(Kind.NAK, msg.psn, int(Nak.RNR), self.min_rnr_timer))
            return
        rwr = self.rq[0]
        length = msg.c
        dsts = []
        room = 0
        keys = self.context.keys
        for s in rwr.sg_list:
            if s.length == 0:
                continue
            hit = check_local(keys, self.pd, s.lkey, s.addr, s.length, Access.LOCAL_WRITE)
            if hit is None:
                self.rq.popleft()
                self._complete(self.recv_cq, WorkCompletion(rwr.wr_id, WCStatus.LOC_PROT_ERR, WCOpcode.RECV, qp_num=self.qp_num))
                self._nak_fatal(msg.psn, Nak.OP)
                return
            mr, off = hit
            dsts.append(mr.buf[off:off + s.length])
            room += s.length
        if length > room:
            self.rq.popleft()
            self._complete(self.recv_cq, WorkCompletion(rwr.wr_id, self.personality.short_recv_status, WCOpcode.RECV, qp_num=self.qp_num))
            # rdma_rxe (measured in the interop lab, kernel 6.1): the requester sees a remote
            # operational error for a receive that is too small
            self._nak_fatal(msg.psn, Nak.OP)
            return
        flags = WCFlags.GRH if self.personality is Personality.ROCE_V2 else WCFlags.NONE
        imm = inv = 0
        if msg.kind == Kind.SEND_INV:
            obj = keys.get(msg.b)
            if obj is None or obj.pd is not self.pd or not obj.valid:
                self._nak_fatal(msg.psn, Nak.OP)
                return
            obj.valid = False
            flags |= WCFlags.WITH_INV
            inv = msg.b
        elif msg.kind == Kind.SEND_IMM:
            flags |= WCFlags.WITH_IMM
            imm = msg.a
        if length:
            scatter(msg.data, dsts)
        self.rq.popleft()
        self.epsn += 1
        self.ep.send(Msg(Kind.ACK, msg.psn))
        self._complete(
            self.recv_cq,
            WorkCompletion(rwr.wr_id, WCStatus.SUCCESS, WCOpcode.RECV, length, flags, imm or inv, inv, self.qp_num),
            responder=True,
        )

    # ------------------------------------------------------------------ errors
    def _to_error(self) -> None:
        """Enter ERR: flush every outstanding send WQE and every posted receive."""
        if self._state == QPState.ERR:
            return
        self._state = QPState.ERR
        self._cancel_timers()
        pending = list(self.inflight) + list(self.sq)
        self.inflight.clear()
        self.sq.clear()
        for wqe in pending:
            self.send_cq.push(self._wc(wqe, WCStatus.WR_FLUSH_ERR))
        rq = list(self.rq)
        self.rq.clear()
        for rwr in rq:
            self.recv_cq.push(WorkCompletion(rwr.wr_id, WCStatus.WR_FLUSH_ERR, WCOpcode.RECV, qp_num=self.qp_num))

    def _cancel_timers(self) -> None:
        for h in (self._timer, self._rnr_wait):
            if h is not None:
                h.cancel()
        self._timer = self._rnr_wait = None

    def close(self) -> None:
        if not self.closed:
            self._cancel_timers()
            self.closed = True
            self.ep = None

    def __repr__(self) -> str:
        return f"SoftQP(qpn={self.qp_num:#x}, state={self._state.name})"

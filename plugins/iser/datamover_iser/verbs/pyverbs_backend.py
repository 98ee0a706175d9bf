"""The pyverbs backend: a thin adapter from the verbs interface to rdma-core's pyverbs.

Written against Debian's python3-pyverbs 44 (and the module names of >= 46), following
rdma-without-hardware.md §3:

* pyverbs never releases the GIL, so nothing here calls a blocking pyverbs function while an
  event is not known to be pending: the rdma_cm event channel and the completion channel are
  found through /proc/self/fd (44 exposes neither fd), made O_NONBLOCK, and waited on with
  ``loop.add_reader``; ``CMEvent(ch)`` / ``get_cq_event`` run only once their fd is readable.
* MRs register the caller's buffer by address (no copy); the type-2 MW key to advertise is
  the bind WR's ``rkey``; SEND_WITH_INV puts the rkey in ``imm_data`` (same C union).
* External QPs, moved with ``cmid.init_qp_attr``; INIT is redone after the CONNECT_RESPONSE
  (pitfall 1) so the QP gets its remote access flags; the active side calls ``establish``.
* rxe reports a SEND_WITH_INV receive with wc_flags 0x5 and the rkey in imm_data instead of
  IBV_WC_WITH_INV (pitfall 4); completions are normalised to ``WCFlags.WITH_INV``.
* Child CM ids are never closed while their listener lives (pitfall 2).

Limitation: pyverbs' ``CMEvent`` does not say which cm_id an event belongs to, so the
passive side gets one event channel per listener; ESTABLISHED goes to the connection being
accepted (accepts are serialised). A DISCONNECTED goes first to the oldest child that
disconnected itself and still owes its event (the IB CM reports it when the peer's DREP
comes, possibly after a new connection was accepted: the interop lab saw libiscsi's
reconnect torn down by the previous connection's late event), else to the oldest
connected child. Active ids each have their own channel and are exact.

Nothing in pyverbs is imported at module import time: this module imports everywhere.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import fcntl
import logging
import mmap
import os
import select
from collections import deque
from collections.abc import Iterable
from typing import Any

from .api import CQ, MR, MW, PD, QP, CMId, Context, Listener, Provider, wait_readable
from .enums import Access, AsyncEventType, CMEventType, Personality, QPState, WCFlags, WCOpcode, WCStatus, WROpcode
from .errors import CMError, ConnectionFailed, ConnectionRejected, VerbsError
from .wr import AsyncEvent, CMEvent, ConnParam, QPCap, RecvWR, SendWR, WorkCompletion

log = logging.getLogger(__name__)


def _enums() -> tuple[Any, Any]:
    try:
        import pyverbs.libibverbs_enums as e  # rdma-core >= 46
        import pyverbs.librdmacm_enums as ce
    except ImportError:
        import pyverbs.cm_enums as ce  # rdma-core 44 (Debian 12)
        import pyverbs.enums as e
    return e, ce


def _err(exc: Exception, what: str) -> VerbsError:
    code = getattr(exc, "error_code", 0) or errno.EIO
    return VerbsError(abs(code), f"{what}: {exc}")


def _fdset() -> dict[int, str]:
    out = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            out[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            pass
    return out


def _new_fd(before: dict[int, str]) -> int:
    """The infiniband fd pyverbs just opened, made non-blocking."""
    fds = [fd for fd, t in _fdset().items() if before.get(fd) != t and "infiniband" in t]
    if len(fds) != 1:
        raise VerbsError(errno.EIO, f"cannot find the new rdma fd (candidates {fds})")
    fd = fds[0]
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
    return fd


# Async events read from a device's async fd, per fd: rdma_cm shares one ibv_context per
# device among all ids, so every PvContext wrapper of that device must see the same queue.
_ASYNC_QUEUES: dict[int, deque[AsyncEvent]] = {}
# struct ibv_context: device pointer, 32 ops pointers, cmd_fd, async_fd (rdma-core 44 verbs.h)
_CTX_CMD_FD_OFFSET = 8 + 32 * 8


class _IbvAsyncEvent(ctypes.Structure):
    _fields_ = [("element", ctypes.c_void_p), ("event_type", ctypes.c_int), ("_pad", ctypes.c_int)]


class _AsyncReader:
    """ibv_get_async_event / ibv_ack_async_event through ctypes for one device context.

    pyverbs 44's ``Context.get_async_event`` cannot acknowledge what it returns, and an event
    read but not acknowledged makes ibv_destroy_cq / ibv_destroy_qp wait for ever (the lab's
    hang). So the context is found among librdmacm's (``rdma_get_devices``) by its cmd_fd,
    which pyverbs does expose, and events are read and acknowledged here, only when the
    async fd is readable (never blocking the loop)."""

    def __init__(self, cmd_fd: int) -> None:
        verbs = ctypes.CDLL("libibverbs.so.1")
        rdmacm = ctypes.CDLL("librdmacm.so.1")
        rdmacm.rdma_get_devices.restype = ctypes.POINTER(ctypes.c_void_p)
        rdmacm.rdma_get_devices.argtypes = [ctypes.POINTER(ctypes.c_int)]
        rdmacm.rdma_free_devices.argtypes = [ctypes.POINTER(ctypes.c_void_p)]
        verbs.ibv_get_async_event.argtypes = [ctypes.c_void_p, ctypes.POINTER(_IbvAsyncEvent)]
        verbs.ibv_ack_async_event.argtypes = [ctypes.POINTER(_IbvAsyncEvent)]
        self._verbs = verbs
        self.ctx: int | None = None
        self.fd = -1
        count = ctypes.c_int(0)
        devices = rdmacm.rdma_get_devices(ctypes.byref(count))
        if not devices:
            return
        try:
            for i in range(count.value):
                ctx = devices[i]
                fds = (ctypes.c_int * 2).from_address(ctx + _CTX_CMD_FD_OFFSET)
                if fds[0] == cmd_fd and "infinibandevent" in _fd_target(fds[1]):
                    self.ctx, self.fd = ctx, fds[1]
        finally:
            rdmacm.rdma_free_devices(devices)

    def read(self) -> tuple[int, str] | None:
        if self.ctx is None or not _readable(self.fd):
            return None
        ev = _IbvAsyncEvent()
        if self._verbs.ibv_get_async_event(self.ctx, ctypes.byref(ev)) != 0:
            return None
        kind = ev.event_type
        self._verbs.ibv_ack_async_event(ctypes.byref(ev))
        return kind, f"ibv_event_type {kind}"


def _fd_target(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


class PvMR(MR):
    def __init__(self, pd: "PvPD", buf: Any, access: Access) -> None:
        from pyverbs.mr import MR as _MR

        mv = memoryview(buf)
        if mv.readonly:
            raise VerbsError(errno.EACCES, "cannot register a read-only buffer")
        mv = mv.cast("B") if mv.format != "B" else mv
        self._view = mv
        self._pin = (ctypes.c_char * mv.nbytes).from_buffer(mv)
        self.addr = ctypes.addressof(self._pin)
        self.length = mv.nbytes
        self.access = Access(access)
        try:
            self.mr = _MR(pd.pd, self.length, int(access), address=self.addr)
        except Exception as exc:
            raise _err(exc, "ibv_reg_mr") from None
        self.lkey = self.mr.lkey
        self.rkey = self.mr.rkey

    @property
    def buf(self) -> memoryview:
        return self._view

    def close(self) -> None:
        self.mr.close()


class PvMW(MW):
    def __init__(self, pd: "PvPD") -> None:
        from pyverbs.mr import MW as _MW

        e, _ = _enums()
        self.pd_obj = pd
        self.mw = _MW(pd.pd, e.IBV_MW_TYPE_2)
        self.rkey = self.mw.rkey

    def close(self) -> None:
        self.mw.close()


class PvCQ(CQ):
    def __init__(self, ctx: "PvContext", cqe: int) -> None:
        from pyverbs.cq import CQ as _CQ
        from pyverbs.cq import CompChannel

        before = _fdset()
        self.cc = CompChannel(ctx.ctx)
        self._fd = _new_fd(before)
        try:
            self.cq = _CQ(ctx.ctx, cqe, None, self.cc, 0)
        except Exception as exc:
            raise _err(exc, "ibv_create_cq") from None
        # the provider's capacity (rxe: 2^k - 1 >= cqe), as ibv_cq.cqe reports it
        self.cqe = int(getattr(self.cq, "cqe", cqe))
        self.context = ctx

    def poll(self, n: int = 16) -> list[WorkCompletion]:
        _, wcs = self.cq.poll(n)
        return [self.context.wc(w) for w in wcs]

    def fileno(self) -> int:
        return self._fd

    def req_notify(self) -> None:
        self.cq.req_notify()

    def get_event(self) -> bool:
        if not _readable(self._fd):
            return False
        self.cc.get_cq_event(self.cq)
        self.cq.ack_events(1)
        return True

    def close(self) -> None:
        self.cq.close()
        self.cc.close()


class PvQP(QP):
    def __init__(self, pd: "PvPD", send_cq: PvCQ, recv_cq: PvCQ, cap: QPCap, sq_sig_all: bool) -> None:
        from pyverbs.qp import QP as _QP
        from pyverbs.qp import QPCap as _QPCap
        from pyverbs.qp import QPInitAttr

        e, _ = _enums()
        self.pd = pd
        self.cap = cap
        attr = QPInitAttr(
            qp_type=e.IBV_QPT_RC, scq=send_cq.cq, rcq=recv_cq.cq,
            cap=_QPCap(cap.max_send_wr, cap.max_recv_wr, cap.max_send_sge, cap.max_recv_sge, cap.max_inline_data),
            sq_sig_all=int(sq_sig_all),
        )
        try:
            self.qp = _QP(pd.pd, attr)
        except Exception as exc:
            raise _err(exc, "ibv_create_qp") from None
        self.qp_num = self.qp.qp_num
        self.cmid: Any = None

    @property
    def state(self) -> QPState:
        from pyverbs.qp import QPAttr  # noqa: F401

        e, _ = _enums()
        attr, _init = self.qp.query(e.IBV_QP_STATE)
        return QPState(attr.qp_state)

    def cm_move(self, *states: QPState) -> None:
        for st in states:
            attr, mask = self.cmid.init_qp_attr(int(st))
            self.qp.modify(attr, mask)

    def modify(self, state: QPState | None = None, *, access: Access | None = None) -> None:
        from pyverbs.qp import QPAttr

        e, _ = _enums()
        try:
            if state in (QPState.INIT, QPState.RTR, QPState.RTS) and self.cmid is not None:
                attr, mask = self.cmid.init_qp_attr(int(state))
                if access is not None:
                    attr.qp_access_flags = int(access)
                self.qp.modify(attr, mask)
                return
            attr = QPAttr()
            mask = 0
            if state is not None:
                attr.qp_state = int(state)
                mask |= e.IBV_QP_STATE
                if state == QPState.INIT:
                    attr.pkey_index, attr.port_num = 0, self.pd.context.port
                    mask |= e.IBV_QP_PKEY_INDEX | e.IBV_QP_PORT | e.IBV_QP_ACCESS_FLAGS
                    attr.qp_access_flags = int(access or 0)
            if access is not None:
                attr.qp_access_flags = int(access)
                mask |= e.IBV_QP_ACCESS_FLAGS
            self.qp.modify(attr, mask)
        except VerbsError:
            raise
        except Exception as exc:
            raise _err(exc, "ibv_modify_qp") from None

    def post_send(self, wrs: SendWR | Iterable[SendWR]) -> None:
        from pyverbs.mr import MWBindInfo
        from pyverbs.wr import SGE as _SGE
        from pyverbs.wr import SendWR as _SendWR

        for wr in [wrs] if isinstance(wrs, SendWR) else wrs:
            sg = [_SGE(s.addr, s.length, s.lkey) for s in wr.sg_list]
            pw = _SendWR(wr_id=wr.wr_id, opcode=int(wr.opcode), num_sge=len(sg), sg=sg or None,
                         send_flags=int(wr.send_flags))
            if wr.opcode in (WROpcode.RDMA_WRITE, WROpcode.RDMA_READ, WROpcode.RDMA_WRITE_WITH_IMM):
                pw.set_wr_rdma(wr.rkey, wr.remote_addr)
            if wr.opcode == WROpcode.SEND_WITH_INV or wr.opcode == WROpcode.LOCAL_INV:
                pw.imm_data = wr.invalidate_rkey  # the invalidate_rkey shares imm_data's union
            elif wr.opcode in (WROpcode.SEND_WITH_IMM, WROpcode.RDMA_WRITE_WITH_IMM):
                pw.imm_data = int.from_bytes(wr.imm_data.to_bytes(4, "big"), "little")
            if wr.opcode == WROpcode.BIND_MW:
                b = wr.bind
                if b is None or not isinstance(b.mw, PvMW) or not isinstance(b.mr, PvMR):
                    raise VerbsError(errno.EINVAL, "BIND_MW needs a pyverbs MW/MR in wr.bind")
                if getattr(b.mw, "bound_once", False):
                    # rxe takes the MW's current key from userspace ibv_mw.rkey, which a type-2 bind
                    # never updates (pyverbs cannot set it): a second bind of the same MW fails
                    # MW_BIND_ERR. Rebinding therefore means a fresh MW.
                    from pyverbs.mr import MW as _MW
                    e_, _ = _enums()
                    pd_ = b.mw.mw.pd if hasattr(b.mw.mw, "pd") else None
                    old_mw = b.mw.mw
                    b.mw.mw = _MW(b.mw.pd_obj.pd, e_.IBV_MW_TYPE_2)
                    old_mw.close()
                b.mw.bound_once = True
                pw.set_bind_wr(b.mw.mw, MWBindInfo(b.mr.mr, b.addr, b.length, int(b.access)))
                wr.rkey = pw.rkey  # the key to advertise (not mw.rkey)
                b.mw.rkey = pw.rkey  # the window's key is now the bound one (LOCAL_INV, SEND_WITH_INV match it)
            try:
                self.qp.post_send(pw)
            except Exception as exc:
                raise _err(exc, "ibv_post_send") from None

    def post_recv(self, wrs: RecvWR | Iterable[RecvWR]) -> None:
        from pyverbs.wr import SGE as _SGE
        from pyverbs.wr import RecvWR as _RecvWR

        for wr in [wrs] if isinstance(wrs, RecvWR) else wrs:
            sg = [_SGE(s.addr, s.length, s.lkey) for s in wr.sg_list]
            try:
                self.qp.post_recv(_RecvWR(wr.wr_id, len(sg), sg or None))
            except Exception as exc:
                raise _err(exc, "ibv_post_recv") from None

    def close(self) -> None:
        self.qp.close()


class PvPD(PD):
    def __init__(self, context: "PvContext", pd: Any) -> None:
        self.context = context
        self.pd = pd

    def reg_mr(self, buf: Any, access: Access) -> PvMR:
        return PvMR(self, buf, access)

    def alloc_buffer(self, size: int) -> memoryview:
        if size <= 0:
            raise VerbsError(errno.EINVAL, f"buffer size must be positive, got {size}")
        return memoryview(mmap.mmap(-1, size))

    def alloc_mw(self) -> PvMW:
        return PvMW(self)

    def create_qp(self, send_cq: CQ, recv_cq: CQ, cap: QPCap | None = None, sq_sig_all: bool = False) -> PvQP:
        if not isinstance(send_cq, PvCQ) or not isinstance(recv_cq, PvCQ):
            raise VerbsError(errno.EINVAL, "pyverbs QPs need pyverbs CQs")
        return PvQP(self, send_cq, recv_cq, cap or QPCap(), sq_sig_all)


class PvContext(Context):
    provider_name = "pyverbs"

    def __init__(self, ctx: Any, personality: Personality, port: int) -> None:
        self.ctx = ctx
        self.personality = personality
        self.port = port
        name = getattr(ctx, "name", "")
        self.device_name = name.decode() if isinstance(name, bytes) else str(name)
        self._async: _AsyncReader | None = None

    def alloc_pd(self) -> PvPD:
        from pyverbs.pd import PD as _PD

        return PvPD(self, _PD(self.ctx))

    def create_cq(self, cqe: int) -> PvCQ:
        return PvCQ(self, cqe)

    def poll_async_event(self) -> AsyncEvent | None:
        """The device's next asynchronous event (CQ_ERR on overflow, QP_FATAL, ...), read and
        acknowledged without blocking (see ``_AsyncReader``)."""
        if self._async is None:
            try:
                self._async = _AsyncReader(self.ctx.cmd_fd)
            except (OSError, AttributeError) as exc:
                log.warning("pyverbs: async events unavailable: %s", exc)
                return None
        reader = self._async
        queue = _ASYNC_QUEUES.setdefault(reader.fd, deque())
        while (got := reader.read()) is not None:
            code, detail = got
            try:
                queue.append(AsyncEvent(AsyncEventType(code), f"{self.device_name}: {detail}"))
            except ValueError:
                continue  # port/device events the verbs API does not model
        return queue.popleft() if queue else None

    def wc(self, w: Any) -> WorkCompletion:
        flags = WCFlags(w.wc_flags & 0xF)
        status = WCStatus(w.status)
        opcode = WCOpcode(w.opcode) if status == WCStatus.SUCCESS else WCOpcode.SEND
        inv = 0
        if opcode == WCOpcode.RECV and (flags & WCFlags.WITH_INV or (flags & WCFlags.IP_CSUM_OK and w.imm_data)):
            # rxe pitfall 4: WITH_INVALIDATE reported as 0x4 with the rkey in imm_data
            flags = (flags & ~WCFlags.IP_CSUM_OK) | WCFlags.WITH_INV
            inv = w.imm_data
        return WorkCompletion(w.wr_id, status, opcode, w.byte_len, flags, w.imm_data, inv, w.qp_num, w.src_qp,
                              w.vendor_err)


class _Channel:
    """One rdma_cm event channel with a non-blocking fd, drained from the loop."""

    def __init__(self) -> None:
        from pyverbs.cmid import CMEventChannel

        before = _fdset()
        try:
            self.ch = CMEventChannel()
        except Exception as exc:
            raise _err(exc, "rdma_create_event_channel") from None
        self.fd = _new_fd(before)

    async def next(self, timeout: float | None) -> tuple[int, bytes]:
        from pyverbs.cmid import CMEvent as _CMEvent

        if not _readable(self.fd) and not await wait_readable(self.fd, timeout):
            raise TimeoutError("no rdma_cm event")
        ev = _CMEvent(self.ch)  # returns at once: the fd is readable
        etype, priv = ev.event_type, bytes(ev.private_data or b"")
        ev.ack_cm_event()
        return etype, priv


class PvCMId(CMId):
    def __init__(self, provider: "PyverbsProvider", cmid: Any, channel: _Channel | None, listener: "PvListener | None" = None) -> None:
        self.provider = provider
        self.cmid = cmid
        self.channel = channel
        self.listener = listener
        self.private_data = b""
        self.param: ConnParam | None = None
        self.qp: PvQP | None = None
        self.state = "idle"
        self._rdma_disconnect_called = False
        self.owes_disconnected_event = False  # a child that called rdma_disconnect first
        self._events: asyncio.Queue[CMEvent] = asyncio.Queue()
        self._efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        personality = provider.personality
        self.context = PvContext(cmid.context, personality, provider.port)
        self.pd = PvPD(self.context, cmid.pd)

    def create_qp(self, send_cq: CQ, recv_cq: CQ, cap: QPCap | None = None, sq_sig_all: bool = False) -> PvQP:
        qp = self.pd.create_qp(send_cq, recv_cq, cap, sq_sig_all)
        qp.cmid = self.cmid
        qp.cm_move(QPState.INIT)
        return qp

    async def _expect(self, want: set[int], timeout: float) -> tuple[int, bytes]:
        assert self.channel is not None
        etype, priv = await self.channel.next(timeout)
        if etype not in want:
            raise ConnectionFailed(f"rdma_cm event {etype} instead of {sorted(want)}", errno.ECONNREFUSED)
        return etype, priv

    async def connect(self, qp: QP, param: ConnParam | None = None, timeout: float = 10.0) -> bytes:
        from pyverbs.cmid import ConnParam as _CP

        _, ce = _enums()
        if not isinstance(qp, PvQP):
            raise CMError(errno.EINVAL, "connect needs a QP from CMId.create_qp")
        param = param or ConnParam()
        if len(param.private_data) > self.provider.personality.max_connect_private_data:
            raise CMError(errno.EINVAL, "connect private data too long")
        cp = _CP(resources=param.responder_resources, depth=param.initiator_depth, retry=param.retry_count,
                 rnr_retry=param.rnr_retry, qp_num=qp.qp_num, data_len=len(param.private_data))
        if param.private_data:
            cp.set_private_data(param.private_data)
        self.qp = qp
        try:
            self.cmid.connect(cp)
        except Exception as exc:
            raise _err(exc, "rdma_connect") from None
        etype, priv = await self._expect(
            {ce.RDMA_CM_EVENT_CONNECT_RESPONSE, ce.RDMA_CM_EVENT_ESTABLISHED, ce.RDMA_CM_EVENT_REJECTED,
             ce.RDMA_CM_EVENT_UNREACHABLE, ce.RDMA_CM_EVENT_CONNECT_ERROR}, timeout)
        if etype == ce.RDMA_CM_EVENT_REJECTED:
            raise ConnectionRejected("rejected by peer", priv)
        if etype in (ce.RDMA_CM_EVENT_UNREACHABLE, ce.RDMA_CM_EVENT_CONNECT_ERROR):
            raise ConnectionFailed(f"rdma_cm event {etype}", errno.EHOSTUNREACH)
        qp.cm_move(QPState.INIT, QPState.RTR, QPState.RTS)  # INIT again: pitfall 1
        if etype == ce.RDMA_CM_EVENT_CONNECT_RESPONSE:
            self.cmid.establish()
        self.state = "connected"
        self.provider._watch(self)
        return priv

    async def accept(self, qp: QP, param: ConnParam | None = None, timeout: float = 10.0) -> None:
        from pyverbs.cmid import ConnParam as _CP

        if not isinstance(qp, PvQP) or self.listener is None:
            raise CMError(errno.EINVAL, "accept needs a passive id and a QP from CMId.create_qp")
        param = param or ConnParam()
        if len(param.private_data) > self.provider.personality.max_accept_private_data:
            raise CMError(errno.EINVAL, "accept private data too long")
        qp.cm_move(QPState.RTR, QPState.RTS)
        cp = _CP(resources=param.responder_resources, depth=param.initiator_depth, retry=param.retry_count,
                 rnr_retry=param.rnr_retry, qp_num=qp.qp_num, data_len=len(param.private_data))
        if param.private_data:
            cp.set_private_data(param.private_data)
        self.qp = qp
        async with self.listener.accept_lock:
            fut = asyncio.get_running_loop().create_future()
            self.listener.accepting = (self, fut)
            try:
                self.cmid.accept(cp)
                await asyncio.wait_for(fut, timeout)
            except asyncio.TimeoutError:
                raise ConnectionFailed("no ESTABLISHED") from None
            except Exception as exc:
                if isinstance(exc, VerbsError):
                    raise
                raise _err(exc, "rdma_accept") from None
            finally:
                self.listener.accepting = None
        self.state = "connected"

    async def reject(self, private_data: bytes = b"") -> None:
        try:
            self.cmid.reject(private_data)
        except Exception as exc:
            raise _err(exc, "rdma_reject") from None
        self.state = "rejected"

    async def disconnect(self) -> None:
        if self.state == "disconnected":
            # The peer's DREQ came first: rdma_disconnect is what sends the DREP, without
            # which the peer reports DISCONNECTED only when its DREQ times out (interop lab).
            self._answer_dreq()
            return
        if self.state != "connected":
            return
        try:
            self._rdma_disconnect_called = True
            self.cmid.disconnect()
        except Exception as exc:
            raise _err(exc, "rdma_disconnect") from None
        self.owes_disconnected_event = self.channel is None  # arrives on the listener's channel
        if self.channel is not None:
            # the active side's own channel reports its DISCONNECTED
            return
        self._disconnected()

    def _answer_dreq(self) -> None:
        if self._rdma_disconnect_called:
            return
        self._rdma_disconnect_called = True
        try:
            self.cmid.disconnect()
        except Exception:
            pass  # the peer already gave up: nothing to answer

    def _disconnected(self) -> None:
        if self.state == "disconnected":
            return
        self.state = "disconnected"
        if self.qp is not None:
            try:
                self.qp.modify(QPState.ERR)  # rdma_cm leaves external QPs alone; flush them
            except VerbsError:
                pass
        self._events.put_nowait(CMEvent(CMEventType.DISCONNECTED))
        os.eventfd_write(self._efd, 1)

    def poll_event(self) -> CMEvent | None:
        try:
            ev = self._events.get_nowait()
        except asyncio.QueueEmpty:
            return None
        if self._events.empty():
            try:
                os.eventfd_read(self._efd)
            except BlockingIOError:
                pass
        return ev

    def fileno(self) -> int:
        return self._efd

    def close(self) -> None:
        if self.state == "disconnected":
            self._answer_dreq()
        if self.listener is None:  # pitfall 2: children live as long as their listener
            try:
                self.cmid.close()
            except Exception:
                pass


class PvListener(Listener):
    def __init__(self, provider: "PyverbsProvider", host: str, port: int, backlog: int) -> None:
        from pyverbs.cmid import CMID, AddrInfo

        _, ce = _enums()
        self.provider = provider
        self.host = host
        self.port = port
        self.channel = _Channel()
        import random
        self.cmid = CMID(creator=self.channel.ch, port_space=ce.RDMA_PS_TCP)
        tries = [port] if port else [random.randint(20000, 60000) for _ in range(20)]
        for i, p in enumerate(tries):
            try:
                self.cmid.bind_addr(AddrInfo(src=host, src_service=str(p), port_space=ce.RDMA_PS_TCP,
                                             flags=ce.RAI_PASSIVE))
                self.port = p
                break
            except Exception as exc:
                if i == len(tries) - 1:
                    raise _err(exc, "rdma_bind_addr") from None
        try:
            self.cmid.listen(backlog)
        except Exception as exc:
            raise _err(exc, "rdma_listen") from None
        self.children: list[PvCMId] = []
        self.requests: asyncio.Queue[PvCMId] = asyncio.Queue()
        self.accept_lock = asyncio.Lock()
        self.accepting: tuple[PvCMId, asyncio.Future[None]] | None = None
        asyncio.get_running_loop().add_reader(self.channel.fd, self._drain)

    def _drain(self) -> None:
        from pyverbs.cmid import CMID
        from pyverbs.cmid import CMEvent as _CMEvent

        _, ce = _enums()
        while _readable(self.channel.fd):
            ev = _CMEvent(self.channel.ch)
            etype = ev.event_type
            if etype == ce.RDMA_CM_EVENT_CONNECT_REQUEST:
                child = PvCMId(self.provider, CMID(creator=ev, listen_id=self.cmid), None, self)
                child.private_data = bytes(ev.private_data or b"")
                ev.ack_cm_event()
                self.children.append(child)
                self.requests.put_nowait(child)
                continue
            ev.ack_cm_event()
            if etype == ce.RDMA_CM_EVENT_ESTABLISHED and self.accepting is not None:
                _, fut = self.accepting
                if not fut.done():
                    fut.set_result(None)
            elif etype in (ce.RDMA_CM_EVENT_REJECTED, ce.RDMA_CM_EVENT_CONNECT_ERROR) and self.accepting:
                _, fut = self.accepting
                if not fut.done():
                    fut.set_exception(ConnectionFailed(f"rdma_cm event {etype} while accepting"))
            elif etype == ce.RDMA_CM_EVENT_DISCONNECTED:
                # see the module docstring's limitation
                owing = next((c for c in self.children if c.owes_disconnected_event), None)
                if owing is not None:
                    owing.owes_disconnected_event = False
                    continue
                for child in self.children:
                    if child.state == "connected":
                        child._disconnected()
                        break

    async def get_request(self, timeout: float | None = None) -> PvCMId:
        try:
            return await asyncio.wait_for(self.requests.get(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError("no connect request") from None

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.channel.fd)
        for child in self.children:
            try:
                child.cmid.close()
            except Exception:
                pass
        self.cmid.close()


class PyverbsProvider(Provider):
    """Real verbs through pyverbs on ``device`` (port ``port``)."""

    name = "pyverbs"

    def __init__(self, device: str, port: int = 1) -> None:
        from pyverbs.device import Context as _Ctx

        e, _ = _enums()
        self.device = device
        self.port = port
        with _Ctx(name=device) as ctx:
            node = getattr(ctx.query_device(), "node_type", None)
            link = ctx.query_port(port).link_layer
        if node == e.IBV_NODE_RNIC:
            self.personality = Personality.IWARP
        else:
            self.personality = Personality.ROCE_V2  # InfiniBand also behaves as RC here
        self._link = "Ethernet" if link == e.IBV_LINK_LAYER_ETHERNET else "InfiniBand"
        self._watched: list[PvCMId] = []

    def describe(self) -> str:
        return f"pyverbs provider (device {self.device} port {self.port}, {self.personality.value}, {self._link})"

    async def listen(self, host: str, port: int, backlog: int = 16) -> PvListener:
        return PvListener(self, host, port, backlog)

    async def resolve(self, host: str, port: int, timeout: float = 5.0) -> PvCMId:
        from pyverbs.cmid import CMID, AddrInfo

        _, ce = _enums()
        ch = _Channel()
        cmid = CMID(creator=ch.ch, port_space=ce.RDMA_PS_TCP)
        try:
            cmid.resolve_addr(AddrInfo(dst=host, dst_service=str(port), port_space=ce.RDMA_PS_TCP),
                              int(timeout * 1000))
            etype, _ = await ch.next(timeout)
            if etype != ce.RDMA_CM_EVENT_ADDR_RESOLVED:
                raise ConnectionFailed(f"address resolution of {host}: event {etype}", errno.EHOSTUNREACH)
            cmid.resolve_route(int(timeout * 1000))
            etype, _ = await ch.next(timeout)
            if etype != ce.RDMA_CM_EVENT_ROUTE_RESOLVED:
                raise ConnectionFailed(f"route resolution of {host}: event {etype}", errno.EHOSTUNREACH)
        except VerbsError:
            raise
        except Exception as exc:
            raise _err(exc, "rdma_resolve_addr/route") from None
        return PvCMId(self, cmid, ch)

    def _watch(self, cid: PvCMId) -> None:
        """Active ids: their own channel reports DISCONNECTED."""
        assert cid.channel is not None
        ch = cid.channel
        _, ce = _enums()

        def drain() -> None:
            from pyverbs.cmid import CMEvent as _CMEvent

            while _readable(ch.fd):
                ev = _CMEvent(ch.ch)
                etype = ev.event_type
                ev.ack_cm_event()
                if etype == ce.RDMA_CM_EVENT_DISCONNECTED:
                    asyncio.get_running_loop().remove_reader(ch.fd)
                    cid._disconnected()
                    return

        asyncio.get_running_loop().add_reader(ch.fd, drain)
        self._watched.append(cid)

    async def close(self) -> None:
        for cid in self._watched:
            if cid.channel is not None:
                try:
                    asyncio.get_running_loop().remove_reader(cid.channel.fd)
                except Exception:
                    pass

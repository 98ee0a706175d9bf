"""Soft connection manager: REQ / REP / RTU, REJ, DREQ / DREP over a fabric link.

It follows rdma_cm as the iSER plugin sees it: the active side sends a REQ with up to 56
bytes of private data (RoCE; 512 on iWARP) and its QP number; the passive side gets a
connect request, moves its QP to RTS and answers REP (up to 196 bytes) or REJ; the active
side moves its QP to RTS and sends RTU; both are then ESTABLISHED. ``disconnect`` sends a
DREQ; both QPs go to ERR (so whatever is posted is flushed) and both ids report
DISCONNECTED. A link that dies (peer process gone, fault hook break) does the same.

On RoCE the IB CM's timing is kept, as the interop lab measured on rdma_rxe: the side that
receives the DREQ reports DISCONNECTED at once, but answers DREP only when its application
calls ``disconnect`` (or closes the id); the side that sent the DREQ reports DISCONNECTED
when that DREP arrives, or after ``DREQ_TIMEOUT_S`` without one. So an application that
never calls ``disconnect`` on DISCONNECTED stalls its peer here as it would on hardware.
On iWARP (iw_cm, a TCP close) both sides report DISCONNECTED at once.

Per IB CM, the ``rnr_retry`` in a REQ is used by the passive QP and the one in a REP by the
active QP; rdma-without-hardware.md §3 shows the accept's ``rnr_retry=0`` failing the
initiator's SEND.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections import deque
from typing import TYPE_CHECKING

from ..api import CMId, Listener
from ..enums import Access, CMEventType, QPState
from ..errors import CMError, ConnectionFailed, ConnectionRejected, VerbsError
from ..wr import CMEvent, ConnParam, QPCap
from .link import FabricListener, Link
from .qp import SoftQP
from .wire import CM_KINDS, REQUESTS, RESPONSES, CmBody, Kind, Msg

if TYPE_CHECKING:
    from ..api import CQ, QP
    from .device import SoftContext, SoftPD
    from .provider import SoftProvider

#: How long the side that sent a DREQ waits for the DREP before it reports DISCONNECTED
#: anyway (IB CM retries DREQs for several seconds; rdma_rxe gave no event within 10 s).
DREQ_TIMEOUT_S = 4.0

log = logging.getLogger(__name__)

# What rdma_cm gives a connected QP (cma_ib_init_qp_attr / rdma_init_qp_attr).
CM_QP_ACCESS = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ


class EventQueue:
    """A deque of events with an eventfd that is readable while the deque is non-empty."""

    def __init__(self) -> None:
        self._q: deque[CMEvent] = deque()
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self.closed = False

    def push(self, ev: CMEvent) -> None:
        if self.closed:
            return
        self._q.append(ev)
        os.eventfd_write(self._fd, 1)

    def pop(self) -> CMEvent | None:
        if not self._q:
            return None
        ev = self._q.popleft()
        if not self._q:
            try:
                os.eventfd_read(self._fd)
            except BlockingIOError:
                pass
        return ev

    def fileno(self) -> int:
        return self._fd

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._fd)


class SoftConnection:
    """Glue between a link, the CM id that owns it and (once given) its QP."""

    def __init__(self, provider: "SoftProvider", link: Link, cmid: "SoftCMId") -> None:
        self.provider = provider
        self.link = link
        self.cmid = cmid
        self.qp: SoftQP | None = None
        link.on_message = self._on_message
        link.on_close = self._on_close
        link.fault_hook = provider.fault_hook
        link.tap = provider.capture
        provider._links.add(link)

    # Endpoint protocol for the QP
    @property
    def lossy(self) -> bool:
        return self.link.lossy

    def send(self, msg: Msg) -> None:
        self.link.send(msg)

    def terminated(self, reason: str) -> None:
        self.cmid._lost(reason)

    def _on_message(self, msg: Msg) -> None:
        kind = msg.kind
        qp = self.qp
        if kind in REQUESTS:
            if qp is not None:
                qp._on_request(msg)
        elif kind in RESPONSES:
            if qp is not None:
                qp._on_response(msg)
            if kind == Kind.TERMINATE:
                self.cmid._lost("iWARP terminate from peer")
        elif kind in CM_KINDS:
            self.cmid._on_cm(msg)

    def _on_close(self, reason: str) -> None:
        self.provider._links.discard(self.link)
        self.cmid._lost(reason)


class SoftCMId(CMId):
    """A soft rdma_cm id (active after ``resolve``, passive from a listener)."""

    def __init__(
        self, provider: "SoftProvider", side: str, host: str, port: int
    ) -> None:
        self.provider = provider
        self.context: "SoftContext" = provider.context
        self.pd: "SoftPD" = provider.pd
        self.side = side
        self.host = host
        self.port = port
        self.private_data = b""
        self.param: ConnParam | None = None
        self.state = "idle" if side == "active" else "new"
        self.conn: SoftConnection | None = None
        self.qp: SoftQP | None = None
        self._req: CmBody | None = None
        self._waiter: asyncio.Future[Msg] | None = None
        self._events = EventQueue()
        self._on_request_ready: "SoftListener | None" = None
        self._drep_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------ helpers
    def create_qp(
        self, send_cq: "CQ", recv_cq: "CQ", cap: QPCap | None = None, sq_sig_all: bool = False
    ) -> SoftQP:
        qp = self.pd.create_qp(send_cq, recv_cq, cap, sq_sig_all)
        qp.modify(QPState.INIT, access=CM_QP_ACCESS)
        return qp

    def _check_qp(self, qp: "QP") -> SoftQP:
        if not isinstance(qp, SoftQP) or qp.pd is not self.pd:
            raise CMError(errno.EINVAL, "the QP must be created on this CM id's PD (CMId.create_qp)")
        if qp.state != QPState.INIT:
            raise CMError(errno.EINVAL, f"the QP must be in INIT to connect, it is {qp.state.name}")
        return qp

    def _check_private(self, data: bytes, limit: int, what: str) -> bytes:
        data = bytes(data)
        if len(data) > limit:
            raise CMError(
                errno.EINVAL,
                f"{what} private data is {len(data)} bytes; {self.context.personality.value} allows {limit}",
            )
        return data

    async def _wait_cm(self, timeout: float, what: str) -> Msg:
        loop = asyncio.get_running_loop()
        if self.conn is not None and self.conn.link.closed:
            raise ConnectionFailed(f"connection lost before {what}", errno.ECONNRESET)
        self._waiter = loop.create_future()
        try:
            return await asyncio.wait_for(self._waiter, timeout)
        except asyncio.TimeoutError:
            raise ConnectionFailed(f"no {what} within {timeout} s") from None
        finally:
            self._waiter = None

    # ------------------------------------------------------------------ active side
    async def connect(self, qp: "QP", param: ConnParam | None = None, timeout: float = 10.0) -> bytes:
        if self.side != "active" or self.state != "idle":
            raise CMError(errno.EINVAL, f"connect on a {self.side} CM id in state {self.state}")
        param = param or ConnParam()
        sqp = self._check_qp(qp)
        priv = self._check_private(
            param.private_data, self.context.personality.max_connect_private_data, "connect"
        )
        self.state = "connecting"
        try:
            link = await self.provider.fabric.connect(self.host, self.port, timeout, self.context.segments)
        except (ConnectionRejected, ConnectionFailed):
            self.state = "idle"
            raise
        self.conn = SoftConnection(self.provider, link, self)
        sqp.attach(self.conn, passive=False)
        sqp.min_rnr_timer = param.min_rnr_timer
        self.qp = sqp
        self.conn.qp = sqp
        body = CmBody(
            sqp.qp_num, 0, param.rnr_retry, param.retry_count, param.min_rnr_timer,
            param.responder_resources, param.initiator_depth, 0, priv,
        )
        link.send(Msg(Kind.CM_REQ, cm=body.encode()))
        try:
            reply = await self._wait_cm(timeout, "REP")
        except ConnectionFailed:
            self.state = "idle"
            link.close()
            raise
        rep = CmBody.decode(reply.cm)
        if reply.kind == Kind.CM_REJ:
            self.state = "rejected"
            link.close()
            raise ConnectionRejected("rejected by peer", rep.private_data)
        sqp.cm_to_rts(rep.rnr_retry, param.retry_count)
        link.send(Msg(Kind.CM_RTU))
        self.state = "connected"
        return rep.private_data

    # ------------------------------------------------------------------ passive side
    def _attach_incoming(self, provider: "SoftProvider", link: Link, listener: "SoftListener") -> None:
        self.conn = SoftConnection(provider, link, self)
        self._on_request_ready = listener

    async def accept(self, qp: "QP", param: ConnParam | None = None, timeout: float = 10.0) -> None:
        if self.side != "passive" or self.state != "req_rcvd" or self.conn is None or self._req is None:
            raise CMError(errno.EINVAL, f"accept on a {self.side} CM id in state {self.state}")
        param = param or ConnParam()
        sqp = self._check_qp(qp)
        priv = self._check_private(
            param.private_data, self.context.personality.max_accept_private_data, "accept"
        )
        conn = self.conn
        sqp.attach(conn, passive=True)
        sqp.min_rnr_timer = param.min_rnr_timer
        self.qp = sqp
        conn.qp = sqp
        req = self._req
        # rdma_accept moves the QP to RTR and RTS before the REP goes out.
        sqp.cm_to_rts(req.rnr_retry, req.retry_count)
        self.state = "accepting"
        body = CmBody(
            sqp.qp_num, 0, param.rnr_retry, param.retry_count, param.min_rnr_timer,
            param.responder_resources, param.initiator_depth, 0, priv,
        )
        conn.link.send(Msg(Kind.CM_REP, cm=body.encode()))
        if self.state == "accepting":
            await self._wait_cm(timeout, "RTU")
        if self.state != "connected":
            raise ConnectionFailed(f"connection lost while accepting ({self.state})", errno.ECONNRESET)

    async def reject(self, private_data: bytes = b"") -> None:
        if self.side != "passive" or self.state != "req_rcvd" or self.conn is None:
            raise CMError(errno.EINVAL, f"reject on a {self.side} CM id in state {self.state}")
        priv = self._check_private(private_data, self.context.personality.max_reject_private_data, "reject")
        self.state = "rejected"
        self.conn.link.send(Msg(Kind.CM_REJ, cm=CmBody(reason=28, private_data=priv).encode()))
        self.conn.link.close()

    # ------------------------------------------------------------------ both sides
    async def disconnect(self) -> None:
        if self.state == "dreq_rcvd":
            self._answer_dreq()
            return
        if self.state not in ("connected", "accepting"):
            if self.state in ("disconnected", "disconnecting"):
                return
            raise CMError(errno.EINVAL, f"disconnect in state {self.state}")
        assert self.conn is not None
        self.conn.link.send(Msg(Kind.CM_DREQ))
        if not self._ib_cm:
            self._disconnected()
            self.conn.link.close()
            return
        # IB CM: flush now, report DISCONNECTED when the DREP comes (or the DREQ times out)
        self.state = "disconnecting"
        self._flush_qp()
        self._drep_timer = asyncio.get_running_loop().call_later(DREQ_TIMEOUT_S, self._drep_timeout)

    @property
    def _ib_cm(self) -> bool:
        return not self.context.personality.cm_required  # RoCE: rdma_cm over the IB CM

    def _drep_timeout(self) -> None:
        self._drep_timer = None
        if self.state == "disconnecting":
            log.info("soft CM: no DREP from %s within %.0f s", self.describe(), DREQ_TIMEOUT_S)
            self._disconnected()
            if self.conn is not None:
                self.conn.link.close()

    def _answer_dreq(self) -> None:
        """The application's disconnect after a peer's DREQ: DREP, then the link may go."""
        self.state = "disconnected"
        if self.conn is not None:
            self.conn.link.send(Msg(Kind.CM_DREP))
            self.conn.link.close()

    def _flush_qp(self) -> None:
        if self.qp is not None and self.qp.state != QPState.ERR:
            self.qp.modify(QPState.ERR)

    def _disconnected(self) -> None:
        self.state = "disconnected"
        if self._drep_timer is not None:
            self._drep_timer.cancel()
            self._drep_timer = None
        self._flush_qp()
        self._events.push(CMEvent(CMEventType.DISCONNECTED))

    def _on_cm(self, msg: Msg) -> None:
        kind = msg.kind
        if kind == Kind.CM_REQ and self.state == "new":
            try:
                body = CmBody.decode(msg.cm)
            except ValueError:
                log.warning("soft CM: malformed REQ dropped")
                return
            self._req = body
            self.private_data = body.private_data
            self.param = ConnParam(
                body.private_data, body.responder_resources, body.initiator_depth,
                body.retry_count, body.rnr_retry, body.min_rnr_timer,
            )
            self.state = "req_rcvd"
            if self._on_request_ready is not None:
                self._on_request_ready._requests.put_nowait(self)
        elif kind in (Kind.CM_REP, Kind.CM_REJ) and self.state == "connecting":
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(msg)
        elif kind == Kind.CM_RTU and self.state == "accepting":
            self.state = "connected"
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_result(msg)
        elif kind == Kind.CM_DREQ and self.state in ("connected", "accepting", "connecting"):
            assert self.conn is not None
            was = self.state
            self._disconnected()
            if self._ib_cm and was != "connecting":
                self.state = "dreq_rcvd"  # DREP when the application calls disconnect
            else:
                self.conn.link.send(Msg(Kind.CM_DREP))
                self.conn.link.close()
            if self._waiter is not None and not self._waiter.done():
                self._waiter.set_exception(ConnectionFailed("peer disconnected", errno.ECONNRESET))
        elif kind in (Kind.CM_DREP, Kind.CM_DREQ) and self.state == "disconnecting":
            # the DREP, or the peer's own DREQ crossing ours: both ends are done
            assert self.conn is not None
            if kind == Kind.CM_DREQ:
                self.conn.link.send(Msg(Kind.CM_DREP))
            self._disconnected()
            self.conn.link.close()

    def _lost(self, reason: str) -> None:
        """The link died (or an iWARP terminate): as a disconnect, from the fabric."""
        if self.state in ("connected", "accepting", "disconnecting"):
            log.info("soft CM: connection %s lost: %s", self.describe(), reason)
            self._disconnected()
            if self.conn is not None:
                self.conn.link.close()
        elif self.state == "dreq_rcvd":
            self.state = "disconnected"  # already reported; the peer gave up waiting
        elif self.state == "req_rcvd":
            self.state = "disconnected"  # the requester went away before accept/reject
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(ConnectionFailed(f"connection lost: {reason}", errno.ECONNRESET))

    def poll_event(self) -> CMEvent | None:
        return self._events.pop()

    def fileno(self) -> int:
        return self._events.fileno()

    def describe(self) -> str:
        link = self.conn.link.describe() if self.conn else f"{self.host}:{self.port}"
        return f"soft/{self.context.personality.value} {link}"

    def close(self) -> None:
        if self.conn is not None and self.state in ("connected", "accepting"):
            self.conn.link.send(Msg(Kind.CM_DREQ))
            self._disconnected()
        elif self.state == "dreq_rcvd":
            self._answer_dreq()
        if self._drep_timer is not None:
            self._drep_timer.cancel()
            self._drep_timer = None
        if self.conn is not None:
            self.conn.link.close()
        self.state = "closed"
        self._events.close()


class SoftListener(Listener):
    def __init__(self, provider: "SoftProvider", host: str, backlog: int) -> None:
        self.provider = provider
        self.host = host
        self.port = 0
        self.backlog = backlog
        self._requests: asyncio.Queue[SoftCMId] = asyncio.Queue()
        self._fl: FabricListener | None = None
        self.closed = False

    def _on_link(self, link: Link) -> None:
        if self.closed:
            link.close()
            return
        cmid = SoftCMId(self.provider, "passive", link.remote[0], link.remote[1])
        cmid._attach_incoming(self.provider, link, self)

    async def get_request(self, timeout: float | None = None) -> SoftCMId:
        if self.closed:
            raise CMError(errno.EBADF, "listener is closed")
        try:
            return await asyncio.wait_for(self._requests.get(), timeout)
        except asyncio.TimeoutError:
            raise TimeoutError("no connect request") from None

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self._fl is not None:
                self._fl.close()


def check_port(port: int) -> int:
    if not isinstance(port, int) or not 0 <= port <= 65535:
        raise VerbsError(errno.EINVAL, f"port must be 0..65535, got {port!r}")
    return port

"""Work requests, work completions and the small parameter records of the verbs interface.

Shaped after pyverbs (``pyverbs.wr.SGE/SendWR/RecvWR``, ``pyverbs.cq.WC``,
``pyverbs.qp.QPCap``, ``pyverbs.cmid.ConnParam``) but as plain slotted dataclasses, so the
soft provider needs no pyverbs and the pyverbs adapter converts field by field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .enums import (
    Access,
    AsyncEventType,
    CMEventType,
    RNR_RETRY_INFINITE,
    SendFlags,
    WCFlags,
    WCOpcode,
    WCStatus,
    WROpcode,
)

if TYPE_CHECKING:
    from .api import MR, MW


@dataclass(slots=True)
class SGE:
    """One scatter/gather element: ``addr`` is a virtual address inside the MR named by ``lkey``."""

    addr: int
    length: int
    lkey: int


@dataclass(slots=True)
class MWBind:
    """What a BIND_MW work request binds: a window over ``[addr, addr+length)`` of ``mr``."""

    mw: "MW"
    mr: "MR"
    addr: int
    length: int
    access: Access


@dataclass(slots=True)
class SendWR:
    """A send-queue work request.

    ``remote_addr``/``rkey`` are used by RDMA_WRITE/RDMA_READ; ``invalidate_rkey`` by
    SEND_WITH_INV and LOCAL_INV; ``imm_data`` by *_WITH_IMM; ``bind`` by BIND_MW. For
    BIND_MW the provider stores the new window key in ``rkey`` when it is posted (that is the
    key to advertise, as pyverbs' ``bind_wr.rkey``).
    """

    wr_id: int
    opcode: WROpcode
    sg_list: list[SGE] = field(default_factory=list)
    send_flags: SendFlags = SendFlags.SIGNALED
    remote_addr: int = 0
    rkey: int = 0
    invalidate_rkey: int = 0
    imm_data: int = 0
    bind: MWBind | None = None


@dataclass(slots=True)
class RecvWR:
    """A receive-queue work request."""

    wr_id: int
    sg_list: list[SGE] = field(default_factory=list)


@dataclass(slots=True)
class WorkCompletion:
    """One CQE. For error statuses only ``wr_id``, ``status``, ``qp_num`` are meaningful (as in verbs)."""

    wr_id: int
    status: WCStatus
    opcode: WCOpcode
    byte_len: int = 0
    wc_flags: WCFlags = WCFlags.NONE
    imm_data: int = 0
    invalidated_rkey: int = 0
    qp_num: int = 0
    src_qp: int = 0
    vendor_err: int = 0

    @property
    def ok(self) -> bool:
        return self.status == WCStatus.SUCCESS


@dataclass(slots=True)
class QPCap:
    """``ibv_qp_cap``: queue depths and limits enforced at post time."""

    max_send_wr: int = 64
    max_recv_wr: int = 64
    max_send_sge: int = 4
    max_recv_sge: int = 4
    max_inline_data: int = 64


@dataclass(slots=True)
class ConnParam:
    """``rdma_conn_param``.

    ``rnr_retry`` follows IB CM: the value in a connect() REQ is used by the *passive* QP and
    the value in an accept() REP by the *active* QP (the side that asks the other to retry).
    7 means retry for ever.
    """

    private_data: bytes = b""
    responder_resources: int = 4
    initiator_depth: int = 4
    retry_count: int = 7
    rnr_retry: int = RNR_RETRY_INFINITE
    min_rnr_timer: int = 12  # IB-encoded, 12 = 0.64 ms


@dataclass(slots=True)
class CMEvent:
    """One connection-manager event of a CM id."""

    type: CMEventType
    private_data: bytes = b""
    status: int = 0


@dataclass(slots=True)
class AsyncEvent:
    """One affiliated asynchronous event (``ibv_get_async_event``)."""

    type: AsyncEventType
    detail: str = ""


def sge_of(mr: "MR", offset: int = 0, length: int | None = None) -> SGE:
    """An SGE covering ``length`` bytes of ``mr`` from ``offset`` (the whole rest by default)."""
    if length is None:
        length = mr.length - offset
    return SGE(mr.addr + offset, length, mr.lkey)


__all__ = [
    "SGE",
    "MWBind",
    "SendWR",
    "RecvWR",
    "WorkCompletion",
    "QPCap",
    "ConnParam",
    "CMEvent",
    "AsyncEvent",
    "sge_of",
    "WCStatus",
    "WCOpcode",
    "WCFlags",
    "WROpcode",
    "SendFlags",
]

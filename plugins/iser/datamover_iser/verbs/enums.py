"""Verbs constants, numbered exactly as libibverbs / librdmacm number them.

Both backends speak these values: the pyverbs adapter passes them straight through to
rdma-core (the numbers are the ABI), and the soft provider produces them, so a test can
compare a work completion from either backend field by field.
"""

from __future__ import annotations

import enum


class WCStatus(enum.IntEnum):
    """``enum ibv_wc_status``."""

    SUCCESS = 0
    LOC_LEN_ERR = 1
    LOC_QP_OP_ERR = 2
    LOC_EEC_OP_ERR = 3
    LOC_PROT_ERR = 4
    WR_FLUSH_ERR = 5
    MW_BIND_ERR = 6
    BAD_RESP_ERR = 7
    LOC_ACCESS_ERR = 8
    REM_INV_REQ_ERR = 9
    REM_ACCESS_ERR = 10
    REM_OP_ERR = 11
    RETRY_EXC_ERR = 12
    RNR_RETRY_EXC_ERR = 13
    LOC_RDD_VIOL_ERR = 14
    REM_INV_RD_REQ_ERR = 15
    REM_ABORT_ERR = 16
    INV_EECN_ERR = 17
    INV_EEC_STATE_ERR = 18
    FATAL_ERR = 19
    RESP_TIMEOUT_ERR = 20
    GENERAL_ERR = 21


class WCOpcode(enum.IntEnum):
    """``enum ibv_wc_opcode``."""

    SEND = 0
    RDMA_WRITE = 1
    RDMA_READ = 2
    COMP_SWAP = 3
    FETCH_ADD = 4
    BIND_MW = 5
    LOCAL_INV = 6
    RECV = 128
    RECV_RDMA_WITH_IMM = 129


class WROpcode(enum.IntEnum):
    """``enum ibv_wr_opcode`` (the subset the soft provider executes is noted per member)."""

    RDMA_WRITE = 0
    RDMA_WRITE_WITH_IMM = 1  # not executed by the soft provider
    SEND = 2
    SEND_WITH_IMM = 3
    RDMA_READ = 4
    ATOMIC_CMP_AND_SWP = 5  # not executed by the soft provider
    ATOMIC_FETCH_AND_ADD = 6  # not executed by the soft provider
    LOCAL_INV = 7
    BIND_MW = 8
    SEND_WITH_INV = 9


class Access(enum.IntFlag):
    """``enum ibv_access_flags`` (the bits the plugin uses)."""

    NONE = 0
    LOCAL_WRITE = 1
    REMOTE_WRITE = 2
    REMOTE_READ = 4
    REMOTE_ATOMIC = 8
    MW_BIND = 16


class SendFlags(enum.IntFlag):
    """``enum ibv_send_flags``."""

    NONE = 0
    FENCE = 1
    SIGNALED = 2
    SOLICITED = 4
    INLINE = 8


class WCFlags(enum.IntFlag):
    """``enum ibv_wc_flags``.

    Normalised: a receive completion of SEND_WITH_INV carries ``WITH_INV`` on both backends
    (rdma_rxe reports 0x5 instead; the pyverbs adapter fixes that up, see
    rdma-without-hardware.md §3 pitfall 4).
    """

    NONE = 0
    GRH = 1
    WITH_IMM = 2
    IP_CSUM_OK = 4
    WITH_INV = 8


class QPState(enum.IntEnum):
    """``enum ibv_qp_state``."""

    RESET = 0
    INIT = 1
    RTR = 2
    RTS = 3
    SQD = 4
    SQE = 5
    ERR = 6


class CMEventType(enum.IntEnum):
    """``enum rdma_cm_event_type``."""

    ADDR_RESOLVED = 0
    ADDR_ERROR = 1
    ROUTE_RESOLVED = 2
    ROUTE_ERROR = 3
    CONNECT_REQUEST = 4
    CONNECT_RESPONSE = 5
    CONNECT_ERROR = 6
    UNREACHABLE = 7
    REJECTED = 8
    ESTABLISHED = 9
    DISCONNECTED = 10
    DEVICE_REMOVAL = 11
    MULTICAST_JOIN = 12
    MULTICAST_ERROR = 13
    ADDR_CHANGE = 14
    TIMEWAIT_EXIT = 15


class AsyncEventType(enum.IntEnum):
    """``enum ibv_event_type`` (the members the soft provider raises)."""

    CQ_ERR = 0
    QP_FATAL = 1
    QP_REQ_ERR = 2
    QP_ACCESS_ERR = 3
    COMM_EST = 4


class Personality(enum.Enum):
    """Which wire the provider presents; it changes rules a consumer must honour.

    iWARP (RFC 5040/5041/5044): an RDMA READ response is a tagged write into the requester's
    sink, so the sink MR needs REMOTE_WRITE; QPs can only be connected through the CM; the
    passive side may not send until the active side has sent (MPA); there is no RNR retry.
    """

    ROCE_V2 = "roce-v2"
    IWARP = "iwarp"

    @property
    def read_sink_needs_remote_write(self) -> bool:
        return self is Personality.IWARP

    @property
    def cm_required(self) -> bool:
        return self is Personality.IWARP

    @property
    def active_sends_first(self) -> bool:
        return self is Personality.IWARP

    def cq_capacity(self, requested: int) -> int:
        """The CQ size a device of this kind gives for ``requested`` entries (interop lab):
        rdma_rxe keeps one slot free in a power-of-two ring (4 -> 7), siw rounds up (4 -> 4)."""
        if self is Personality.ROCE_V2:
            return (1 << requested.bit_length()) - 1 if requested & (requested + 1) else requested
        return 1 << (requested - 1).bit_length()

    @property
    def queues_posts_before_rts(self) -> bool:
        """rdma_rxe queues a WR posted in INIT or RTR in userspace, and only the doorbell
        fails (EINVAL): the WR stays on the send queue, is flushed when the QP goes to ERR and
        would run once the QP reaches RTS (interop lab, kernel 6.1, rdma-core 44)."""
        return self is Personality.ROCE_V2

    @property
    def flushes_receives_posted_in_err(self) -> bool:
        """siw completes a receive posted in ERR with WR_FLUSH_ERR at once; rdma_rxe (kernel
        6.1) takes it and never completes it: receives have no doorbell, and its responder
        flushed the queue when the QP entered ERR (interop lab)."""
        return self is Personality.IWARP

    @property
    def short_recv_status(self) -> "WCStatus":
        """The responder's completion for a SEND longer than its receive: rdma_rxe reports
        LOC_QP_OP_ERR (interop lab); siw reports LOC_LEN_ERR."""
        return WCStatus.LOC_QP_OP_ERR if self is Personality.ROCE_V2 else WCStatus.LOC_LEN_ERR

    @property
    def max_connect_private_data(self) -> int:
        # rdma_cm over IB CM (RDMA_PS_TCP): 56 bytes in REQ; MPA allows 512.
        return 56 if self is Personality.ROCE_V2 else 512

    @property
    def max_accept_private_data(self) -> int:
        return 196 if self is Personality.ROCE_V2 else 512

    @property
    def max_reject_private_data(self) -> int:
        return 148 if self is Personality.ROCE_V2 else 512


# rnr_retry == 7 means "retry for ever" in IB (o10-2.2.?); retry_cnt has no such value.
RNR_RETRY_INFINITE = 7


def rnr_timer_seconds(code: int) -> float:
    """IB's encoded minimum RNR NAK timer (IBA table 45) in seconds; 0 means 655.36 ms."""
    table_ms = (
        655.36, 0.01, 0.02, 0.03, 0.04, 0.06, 0.08, 0.12, 0.16, 0.24, 0.32, 0.48, 0.64,
        0.96, 1.28, 1.92, 2.56, 3.84, 5.12, 7.68, 10.24, 15.36, 20.48, 30.72, 40.96,
        61.44, 81.92, 122.88, 163.84, 245.76, 327.68, 491.52,
    )
    if not 0 <= code < len(table_ms):
        raise ValueError(f"min_rnr_timer code must be 0..31, got {code}")
    return table_ms[code] / 1000.0

"""What soft endpoints say to each other: one message per RC packet train or CM MAD.

In-process, messages travel as objects; the shm and zmq fabrics encode the header with
``HDR`` and carry payload as shared-memory references (shm), raw bytes, or separate
zero-copy frames (zmq).

A message leaving a QP carries its payload as ``Chunk``s (a view of the local MR plus, when
the MR lies in a shared-memory segment, where in that segment); a delivered message carries
``data`` as plain buffers to copy from and, for an RDMA READ whose sink the responder can
reach directly, ``sink`` as writable views.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass, field
from typing import Any

from .memory import ShmSegment


class Kind(enum.IntEnum):
    # requester -> responder
    SEND = 1
    SEND_INV = 2
    SEND_IMM = 3
    RDMA_WRITE = 4
    RDMA_READ = 5
    # responder -> requester
    ACK = 10
    NAK = 11
    READ_RESP = 12
    TERMINATE = 13  # iWARP: the peer's QP failed; this one goes to ERR too
    # connection manager
    CM_REQ = 20
    CM_REP = 21
    CM_RTU = 22
    CM_REJ = 23
    CM_DREQ = 24
    CM_DREP = 25
    # shm fabric only: a segment fd follows (SCM_RIGHTS)
    SEG = 40
    # zmq fabric only: the sending side closed its end (zmq hides TCP disconnects)
    BYE = 41


REQUESTS = frozenset({Kind.SEND, Kind.SEND_INV, Kind.SEND_IMM, Kind.RDMA_WRITE, Kind.RDMA_READ})
RESPONSES = frozenset({Kind.ACK, Kind.NAK, Kind.READ_RESP, Kind.TERMINATE})
CM_KINDS = frozenset({Kind.CM_REQ, Kind.CM_REP, Kind.CM_RTU, Kind.CM_REJ, Kind.CM_DREQ, Kind.CM_DREP})


class Nak(enum.IntEnum):
    """NAK syndromes (IBA 9.7.5.2.8), reduced to what changes the requester's completion."""

    RNR = 1
    INV_REQ = 2  # -> REM_INV_REQ_ERR
    ACCESS = 3  # -> REM_ACCESS_ERR
    OP = 4  # -> REM_OP_ERR


@dataclass(slots=True)
class Chunk:
    """A piece of outgoing payload: a view of local memory, and its shm location if any."""

    view: memoryview
    seg: ShmSegment | None = None
    seg_off: int = 0


@dataclass(slots=True)
class Msg:
    """One message. Field use by kind:

    SEND*: a=imm_data (SEND_IMM), b=rkey to invalidate (SEND_INV).
    RDMA_WRITE/RDMA_READ: a=remote address, b=rkey, c=length.
    ACK/READ_RESP: psn acknowledged. NAK: a=``Nak``, b=RNR timer code.
    CM_*: ``cm`` is the encoded CM body (``CmBody``).
    """

    kind: Kind
    psn: int = 0
    a: int = 0
    b: int = 0
    c: int = 0
    cm: bytes = b""
    chunks: list[Chunk] = field(default_factory=list)  # outgoing payload
    sink_chunks: list[Chunk] | None = None  # outgoing READ: where the data should land
    data: list[Any] = field(default_factory=list)  # delivered payload buffers
    sink: list[memoryview] | None = None  # delivered READ: direct-placement sink
    # READ_RESP after direct placement carries no payload; the capture still shows the data.
    capture: list[memoryview] | None = None

    @property
    def payload_len(self) -> int:
        if self.chunks:
            return sum(c.view.nbytes for c in self.chunks)
        return sum(memoryview(d).nbytes for d in self.data)

    def delivered(self) -> "Msg":
        """A header copy for the receiving side (the sender keeps its own for retransmission)."""
        return Msg(self.kind, self.psn, self.a, self.b, self.c, self.cm)


# kind, flags, nrefs, cmlen, psn, a, b, c
HDR = struct.Struct("<BBHIQQII")
FLAG_INLINE = 1  # payload bytes follow
FLAG_REFS = 2  # payload as shm references follow
FLAG_SINK_REFS = 4  # READ sink as shm references follows
REF = struct.Struct("<QQQ")  # seg_id, offset, length
LEN = struct.Struct("<I")


@dataclass(slots=True)
class CmBody:
    """The CM fields the soft CM carries (a REQ/REP's QP parameters and private data)."""

    qpn: int = 0
    psn: int = 0
    rnr_retry: int = 7
    retry_count: int = 7
    min_rnr_timer: int = 12
    responder_resources: int = 0
    initiator_depth: int = 0
    reason: int = 0
    private_data: bytes = b""

    _S = struct.Struct("<IIBBBBBBH")

    def encode(self) -> bytes:
        return self._S.pack(
            self.qpn, self.psn, self.rnr_retry, self.retry_count, self.min_rnr_timer,
            self.responder_resources, self.initiator_depth, 0, self.reason,
        ) + self.private_data

    @classmethod
    def decode(cls, raw: bytes) -> "CmBody":
        if len(raw) < cls._S.size:
            raise ValueError(f"CM body too short: {len(raw)} bytes")
        qpn, psn, rnr, retry, timer, rr, depth, _, reason = cls._S.unpack_from(raw)
        return cls(qpn, psn, rnr, retry, timer, rr, depth, reason, bytes(raw[cls._S.size:]))


def scatter(srcs: list[Any], dsts: list[memoryview]) -> int:
    """Copy the concatenation of ``srcs`` into the concatenation of ``dsts``; bytes copied.

    One memcpy per (source, destination) overlap: with one source and one destination of
    the same size that is the single copy a NIC's DMA would make.
    """
    total = 0
    di = 0
    doff = 0
    for src in srcs:
        s = memoryview(src).cast("B") if not isinstance(src, memoryview) else src
        if s.format != "B":
            s = s.cast("B")
        soff = 0
        n = s.nbytes
        while soff < n:
            if di >= len(dsts):
                raise ValueError("scatter: destination too small")
            d = dsts[di]
            room = d.nbytes - doff
            k = min(room, n - soff)
            d[doff:doff + k] = s[soff:soff + k]
            soff += k
            doff += k
            total += k
            if doff == d.nbytes:
                di += 1
                doff = 0
    return total

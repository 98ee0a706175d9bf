"""The soft provider's fault seam: one callable consulted for every message it carries.

A reliability test installs a hook on a ``SoftProvider``; the hook sees each message about
to leave a QP or the CM (``FaultPoint``) and answers with a ``Fault`` (or ``None`` for "carry
it as is"). The provider then behaves as a lossy RoCE fabric would: a dropped or corrupted
packet (a corrupted one fails its ICRC and is discarded at the receiver) is recovered by the
requester's retransmission timer, up to ``retry_count`` times (then RETRY_EXC_ERR); a delay
holds this message and everything behind it (the link stays ordered); a break tears the
connection down (both QPs to ERR, DISCONNECTED on both CM ids).

The retransmission timer only runs while a hook is installed: without one the fabrics are
lossless and a timer could only produce spurious errors when a peer process is slow.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass


class FaultKind(enum.Enum):
    DROP = "drop"
    DELAY = "delay"
    CORRUPT = "corrupt"
    BREAK = "break"


@dataclass(slots=True, frozen=True)
class Fault:
    kind: FaultKind
    seconds: float = 0.0  # for DELAY

    @classmethod
    def drop(cls) -> "Fault":
        return cls(FaultKind.DROP)

    @classmethod
    def delay(cls, seconds: float) -> "Fault":
        return cls(FaultKind.DELAY, seconds)

    @classmethod
    def corrupt(cls) -> "Fault":
        return cls(FaultKind.CORRUPT)

    @classmethod
    def broken(cls) -> "Fault":
        return cls(FaultKind.BREAK)


@dataclass(slots=True, frozen=True)
class FaultPoint:
    """What is about to be carried: ``kind`` is the wire message name (``"SEND"``,
    ``"RDMA_WRITE"``, ``"ACK"``, ``"CM_REQ"`` ...), ``psn`` its sequence number, ``length`` its
    payload length, ``side`` "active" or "passive", ``conn`` the connection's number."""

    conn: int
    side: str
    kind: str
    psn: int
    length: int


FaultHook = Callable[[FaultPoint], "Fault | None"]

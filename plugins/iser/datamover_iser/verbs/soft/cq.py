"""Soft completion queue: a bounded deque plus an eventfd for the event loop.

Like an ibverbs CQ with a completion channel: the fd becomes readable when a completion is
added while the CQ is armed (``req_notify``); ``get_event`` reads the eventfd. Overflow is
what rdma_rxe does: the completion that does not fit is lost and a CQ_ERR asynchronous event
is raised; a receive completion's QP goes to ERR, a send completion's QP carries on.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from typing import TYPE_CHECKING

from ..api import CQ
from ..enums import AsyncEventType
from ..errors import VerbsError
from ..wr import AsyncEvent, WorkCompletion

if TYPE_CHECKING:
    from .device import SoftContext

MAX_CQE = 1 << 20


class SoftCQ(CQ):
    def __init__(self, context: "SoftContext", cqe: int) -> None:
        if not 1 <= cqe <= MAX_CQE:
            raise VerbsError(errno.EINVAL, f"cqe must be 1..{MAX_CQE}, got {cqe}")
        self.context = context
        self.cqe = context.personality.cq_capacity(cqe)
        self._q: deque[WorkCompletion] = deque()
        self._fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._armed = False
        self.overflowed = False
        self.closed = False

    def push(self, wc: WorkCompletion) -> bool:
        """Add a completion; False (and a CQ_ERR event) when the CQ is full."""
        if len(self._q) >= self.cqe:
            self.overflowed = True  # sticky, for diagnostics; rxe keeps using the CQ
            self.context.raise_async(AsyncEvent(AsyncEventType.CQ_ERR, f"CQ overflow ({self.cqe} entries)"))
            return False
        self._q.append(wc)
        if self._armed:
            self._armed = False
            os.eventfd_write(self._fd, 1)
        return True

    def poll(self, n: int = 16) -> list[WorkCompletion]:
        q = self._q
        if n >= len(q):
            out = list(q)
            q.clear()
            return out
        return [q.popleft() for _ in range(n)]

    def __len__(self) -> int:
        return len(self._q)

    def fileno(self) -> int:
        return self._fd

    def req_notify(self) -> None:
        self._armed = True

    def get_event(self) -> bool:
        try:
            os.eventfd_read(self._fd)
            return True
        except BlockingIOError:
            return False

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            os.close(self._fd)

"""Soft device context and protection domain."""

from __future__ import annotations

import errno
import mmap
from collections import deque
from typing import Any

from ..api import CQ, PD, Context
from ..enums import Access, Personality
from ..errors import VerbsError
from ..wr import AsyncEvent, QPCap
from .cq import SoftCQ
from .memory import KeyTable, SegmentTable, ShmSegment, SoftMR, SoftMW, writable_view
from .qp import SoftQP


class SoftContext(Context):
    """One soft "device" per provider instance: its key table, shm segments and async events."""

    provider_name = "soft"

    def __init__(self, personality: Personality, use_shm: bool, device_name: str) -> None:
        self.personality = personality
        self.device_name = device_name
        self.use_shm = use_shm
        self.keys = KeyTable()
        self.segments = SegmentTable()
        self._mrs: list[SoftMR] = []
        self._async: deque[AsyncEvent] = deque()

    def alloc_pd(self) -> "SoftPD":
        return SoftPD(self)

    def create_cq(self, cqe: int) -> SoftCQ:
        return SoftCQ(self, cqe)

    def poll_async_event(self) -> AsyncEvent | None:
        return self._async.popleft() if self._async else None

    def raise_async(self, ev: AsyncEvent) -> None:
        self._async.append(ev)

    def segment_of(self, addr: int, length: int) -> tuple[ShmSegment | None, int]:
        return self.segments.find(addr, length)

    def mr_covering(self, addr: int, length: int) -> SoftMR | None:
        for mr in self._mrs:
            if mr.valid and mr.addr <= addr and addr + length <= mr.addr + mr.length:
                return mr
        return None

    def _track(self, mr: SoftMR) -> None:
        self._mrs = [m for m in self._mrs if m.valid]
        self._mrs.append(mr)

    def close(self) -> None:
        self.segments.close()


class SoftPD(PD):
    def __init__(self, context: SoftContext) -> None:
        self.context = context

    def reg_mr(self, buf: Any, access: Access) -> SoftMR:
        access = Access(access)
        if access & (Access.REMOTE_WRITE | Access.REMOTE_ATOMIC) and not access & Access.LOCAL_WRITE:
            # ibv_reg_mr: remote write/atomic require local write (EINVAL otherwise)
            raise VerbsError(errno.EINVAL, "REMOTE_WRITE/REMOTE_ATOMIC need LOCAL_WRITE")
        view = writable_view(buf)
        key = self.context.keys.new_key()
        mr = SoftMR(self, view, access, key)
        self.context.keys.add(key, mr)
        self.context._track(mr)
        return mr

    def alloc_buffer(self, size: int) -> memoryview:
        if size <= 0:
            raise VerbsError(errno.EINVAL, f"buffer size must be positive, got {size}")
        if self.context.use_shm:
            seg = ShmSegment.create(size)
            self.context.segments.add(seg)
            return seg.view
        return memoryview(mmap.mmap(-1, size))  # page-aligned and zeroed, like posix_memalign

    def alloc_mw(self) -> SoftMW:
        key = self.context.keys.new_key() & ~0xFF
        mw = SoftMW(self, key)
        self.context.keys.add(key, mw)
        return mw

    def create_qp(
        self, send_cq: CQ, recv_cq: CQ, cap: QPCap | None = None, sq_sig_all: bool = False
    ) -> SoftQP:
        if not isinstance(send_cq, SoftCQ) or not isinstance(recv_cq, SoftCQ):
            raise VerbsError(errno.EINVAL, "soft QPs need soft CQs")
        return SoftQP(self, send_cq, recv_cq, cap or QPCap(), sq_sig_all)

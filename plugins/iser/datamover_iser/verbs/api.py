"""The verbs interface the iSER plugin programs against; two backends implement it.

The object graph is pyverbs' (provider -> CM id -> context/PD -> MR/MW, CQ, QP), reduced to
what an iSER datamover needs, and made asyncio-friendly:

* Nothing here blocks. ``CQ.poll`` and ``CMId.poll_event`` return at once; ``CQ.fileno`` and
  ``CMId.fileno`` are readable when there is something to fetch, so a consumer can use
  ``loop.add_reader``; the ``async`` helpers (``CQ.wait``, ``CMId.get_event``, connect,
  accept, ...) do exactly that.
* MRs register existing writable buffers without copying. ``PD.alloc_buffer`` returns a
  buffer that a provider can move with the least copying (shared memory for the soft
  provider's shm fabric, ordinary page-aligned memory elsewhere); prefer it for data buffers.
* Statuses, opcodes, flags and states are the libibverbs numbers (``enums``), so results
  from the two backends compare field by field.

Typical active side::

    cid = await provider.resolve(host, port)
    cq = cid.context.create_cq(256)
    qp = cid.create_qp(cq, cq, QPCap(...))          # comes back in INIT: post receives now
    qp.post_recv(RecvWR(...))
    reply = await cid.connect(qp, ConnParam(private_data=b"..."))   # QP is RTS afterwards

Passive side: ``listener = await provider.listen(host, port)``,
``cid = await listener.get_request()`` (``cid.private_data`` is the REQ's), create the QP
with ``cid.create_qp`` as above, then ``await cid.accept(qp, ConnParam(...))`` or ``await cid.reject(b"")``.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Iterable
from typing import Any

from .enums import Access, Personality, QPState
from .wr import AsyncEvent, CMEvent, ConnParam, QPCap, RecvWR, SendWR, WorkCompletion


async def wait_readable(fd: int, timeout: float | None) -> bool:
    """Wait until ``fd`` is readable without blocking the loop; False on timeout."""
    loop = asyncio.get_running_loop()
    fut: asyncio.Future[None] = loop.create_future()

    def ready() -> None:
        if not fut.done():
            fut.set_result(None)

    loop.add_reader(fd, ready)
    try:
        await asyncio.wait_for(fut, timeout)
        return True
    except asyncio.TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


class MR(abc.ABC):
    """A registered memory region over an existing buffer (no copy)."""

    addr: int
    length: int
    lkey: int
    rkey: int
    access: Access

    @property
    @abc.abstractmethod
    def buf(self) -> memoryview:
        """The registered bytes (a view of the caller's buffer, not a copy)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Deregister; the buffer itself stays the caller's."""


class MW(abc.ABC):
    """A type-2 memory window; ``rkey`` changes at every bind (advertise the post-bind key)."""

    rkey: int

    @abc.abstractmethod
    def close(self) -> None: ...


class CQ(abc.ABC):
    """A completion queue with a pollable fd.

    ``fileno()`` becomes readable when a completion arrives after ``req_notify()`` (as an
    ibverbs completion channel); ``get_event()`` consumes that notification. ``wait`` wraps
    the usual poll / arm / poll / sleep loop.
    """

    #: The capacity the provider gave, which may exceed the request: rdma_rxe (and mlx5)
    #: round ``cqe + 1`` up to a power of two and subtract one (4 -> 7), siw rounds ``cqe``
    #: up to a power of two (4 -> 4). Size overflow handling on this, not on the request.
    cqe: int

    @abc.abstractmethod
    def poll(self, n: int = 16) -> list[WorkCompletion]:
        """Up to ``n`` completions, oldest first; never blocks."""

    @abc.abstractmethod
    def fileno(self) -> int: ...

    @abc.abstractmethod
    def req_notify(self) -> None:
        """Arm: the fd becomes readable at the next completion."""

    @abc.abstractmethod
    def get_event(self) -> bool:
        """Consume a pending notification (True if there was one); never blocks."""

    @abc.abstractmethod
    def close(self) -> None: ...

    async def wait(self, count: int = 1, timeout: float | None = 10.0) -> list[WorkCompletion]:
        """Exactly ``count`` completions (fewer only by raising TimeoutError)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        out: list[WorkCompletion] = []
        while True:
            out += self.poll(count - len(out))
            if len(out) >= count:
                return out
            self.req_notify()
            out += self.poll(count - len(out))  # closes the arm/arrive race
            if len(out) >= count:
                return out
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError(f"{len(out)}/{count} completions: {out}")
            if await wait_readable(self.fileno(), left):
                self.get_event()

    async def next(self, max_n: int = 16, timeout: float | None = None) -> list[WorkCompletion]:
        """At least one completion (up to ``max_n``)."""
        got = self.poll(max_n)
        if got:
            return got
        first = await self.wait(1, timeout)
        return first + self.poll(max_n - 1)


class QP(abc.ABC):
    """An RC queue pair; ``state`` follows RESET -> INIT -> RTR -> RTS, any -> ERR/RESET."""

    qp_num: int
    cap: QPCap

    @property
    @abc.abstractmethod
    def state(self) -> QPState: ...

    @abc.abstractmethod
    def modify(self, state: QPState | None = None, *, access: Access | None = None) -> None:
        """Move to ``state`` and/or change ``qp_access_flags``; an illegal move raises EINVAL."""

    @abc.abstractmethod
    def post_send(self, wrs: SendWR | Iterable[SendWR]) -> None:
        """Queue send WRs; EINVAL/ENOMEM synchronously for a bad state or over-full queue."""

    @abc.abstractmethod
    def post_recv(self, wrs: RecvWR | Iterable[RecvWR]) -> None: ...

    @abc.abstractmethod
    def close(self) -> None: ...


class PD(abc.ABC):
    """A protection domain: MRs, MWs and QPs live here."""

    context: "Context"

    @abc.abstractmethod
    def reg_mr(self, buf: Any, access: Access) -> MR:
        """Register ``buf`` (a writable buffer: bytearray, mmap, memoryview, ...) with no copy."""

    @abc.abstractmethod
    def alloc_buffer(self, size: int) -> memoryview:
        """A zeroed writable buffer the provider moves best (register it with ``reg_mr``)."""

    @abc.abstractmethod
    def alloc_mw(self) -> MW: ...

    @abc.abstractmethod
    def create_qp(
        self, send_cq: CQ, recv_cq: CQ, cap: QPCap | None = None, sq_sig_all: bool = False
    ) -> QP:
        """A new RC QP in RESET (``CMId.create_qp`` gives one the CM will connect)."""


class Context(abc.ABC):
    """A device context."""

    provider_name: str
    device_name: str
    personality: Personality

    @abc.abstractmethod
    def alloc_pd(self) -> PD: ...

    @abc.abstractmethod
    def create_cq(self, cqe: int) -> CQ: ...

    @abc.abstractmethod
    def poll_async_event(self) -> AsyncEvent | None:
        """The next affiliated asynchronous event (CQ overflow, QP fatal ...), if any."""


class CMId(abc.ABC):
    """One end of an RC connection managed by the CM (rdma_cm's ``rdma_cm_id``).

    ``context``/``pd`` are the device resources to build the QP on. On the passive side,
    ``private_data`` and ``param`` are what the connect request carried.
    """

    context: Context
    pd: PD
    private_data: bytes
    param: ConnParam | None

    @abc.abstractmethod
    def create_qp(
        self, send_cq: CQ, recv_cq: CQ, cap: QPCap | None = None, sq_sig_all: bool = False
    ) -> QP:
        """An RC QP on ``pd``, already in INIT so receives can be posted before connecting."""

    @abc.abstractmethod
    async def connect(self, qp: QP, param: ConnParam | None = None, timeout: float = 10.0) -> bytes:
        """Active side: send REQ, wait for REP (whose private data is returned), QP to RTS."""

    @abc.abstractmethod
    async def accept(self, qp: QP, param: ConnParam | None = None, timeout: float = 10.0) -> None:
        """Passive side: QP to RTS, send REP, wait until ESTABLISHED."""

    @abc.abstractmethod
    async def reject(self, private_data: bytes = b"") -> None: ...

    @abc.abstractmethod
    async def disconnect(self) -> None:
        """Both QPs go to ERR (posted WRs flush) and both sides see DISCONNECTED."""

    @abc.abstractmethod
    def poll_event(self) -> CMEvent | None: ...

    @abc.abstractmethod
    def fileno(self) -> int: ...

    async def get_event(self, timeout: float | None = 10.0) -> CMEvent:
        """The next CM event of this id (DISCONNECTED, ...)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            ev = self.poll_event()
            if ev is not None:
                return ev
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise TimeoutError("no CM event")
            await wait_readable(self.fileno(), left)

    @abc.abstractmethod
    def close(self) -> None: ...


class Listener(abc.ABC):
    """A listening CM id."""

    host: str
    port: int

    @abc.abstractmethod
    async def get_request(self, timeout: float | None = None) -> CMId:
        """The next connect request, as a passive CM id to accept or reject."""

    @abc.abstractmethod
    def close(self) -> None: ...


class Provider(abc.ABC):
    """A verbs backend instance: where connections come from and who moves the bytes."""

    name: str  # "soft" or "pyverbs"
    personality: Personality

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for reports and logs: provider, personality, fabric/device."""

    @abc.abstractmethod
    async def listen(self, host: str, port: int, backlog: int = 16) -> Listener: ...

    @abc.abstractmethod
    async def resolve(self, host: str, port: int, timeout: float = 5.0) -> CMId:
        """Resolve address and route to a peer; the CM id then has context and PD."""

    @abc.abstractmethod
    async def close(self) -> None: ...

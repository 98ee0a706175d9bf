"""A connection's message pipe, and the fabric interface that makes them.

Every fabric gives an ordered, reliable ``Link`` per CM connection. The base class applies
the fault hook and the capture tap to every outgoing message, so each fabric only moves
bytes (``_transmit``) and hands received messages to ``deliver``.
"""

from __future__ import annotations

import abc
import asyncio
import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from ..faults import FaultHook, FaultKind, FaultPoint
from .wire import Kind, Msg

if TYPE_CHECKING:
    from .memory import SegmentTable

log = logging.getLogger(__name__)
_conn_ids = itertools.count(1)


class Tap(Protocol):
    """Receives every message a link carries (the pcap writer implements this)."""

    def record(self, link: "Link", msg: Msg, corrupt: bool = False) -> None: ...


class Link(abc.ABC):
    """One side of a connection. ``on_message`` / ``on_close`` are set by the connection."""

    fabric_name: str = "?"

    def __init__(self, side: str, local: tuple[str, int], remote: tuple[str, int]) -> None:
        self.side = side  # "active" | "passive"
        self.local = local
        self.remote = remote
        self.conn_id = next(_conn_ids)
        self.on_message: Callable[[Msg], None] | None = None
        self.on_close: Callable[[str], None] | None = None
        self.fault_hook: FaultHook | None = None
        self.tap: Tap | None = None
        self.closed = False
        self._held: deque[Msg] = deque()
        self._hold_handle: asyncio.TimerHandle | None = None
        self.sent_messages = 0
        self.sent_bytes = 0

    @property
    def lossy(self) -> bool:
        """True while a fault hook may lose messages (the QPs then run retransmit timers)."""
        return self.fault_hook is not None

    def send(self, msg: Msg) -> None:
        """Carry ``msg`` to the peer, in order; silently nothing once closed."""
        if self.closed:
            return
        hook = self.fault_hook
        if hook is not None:
            fault = hook(FaultPoint(self.conn_id, self.side, msg.kind.name, msg.psn, msg.payload_len))
            if fault is not None:
                if fault.kind is FaultKind.DROP:
                    return
                if fault.kind is FaultKind.CORRUPT:
                    # A corrupted RoCE packet fails its ICRC and the receiver discards it.
                    if self.tap is not None:
                        self.tap.record(self, msg, corrupt=True)
                    return
                if fault.kind is FaultKind.BREAK:
                    self.abort("fault hook broke the connection")
                    return
                if fault.kind is FaultKind.DELAY:
                    self._held.append(msg)
                    if self._hold_handle is None:
                        loop = asyncio.get_running_loop()
                        self._hold_handle = loop.call_later(fault.seconds, self._release)
                    return
        if self._held:
            self._held.append(msg)  # keep order behind a delayed message
            return
        self._emit(msg)

    def _emit(self, msg: Msg) -> None:
        if self.tap is not None:
            self.tap.record(self, msg)
        self.sent_messages += 1
        self._transmit(msg)

    def _release(self) -> None:
        self._hold_handle = None
        while self._held and not self.closed:
            self._emit(self._held.popleft())

    def deliver(self, msg: Msg) -> None:
        """Called by the fabric for each received message, in order."""
        if self.closed or self.on_message is None:
            return
        try:
            self.on_message(msg)
        except Exception:  # a bug in an endpoint must not kill the fabric's reader
            log.exception("soft verbs: error handling %s on connection %d", msg.kind.name, self.conn_id)

    def abort(self, reason: str) -> None:
        """Tear down both directions now; the connection sees ``on_close(reason)``."""
        if self.closed:
            return
        self.close()
        if self.on_close is not None:
            self.on_close(reason)

    def lost(self, reason: str) -> None:
        """Called by the fabric when the peer went away."""
        self.abort(reason)

    @abc.abstractmethod
    def _transmit(self, msg: Msg) -> None: ...

    def close(self) -> None:
        self.closed = True
        if self._hold_handle is not None:
            self._hold_handle.cancel()
            self._hold_handle = None
        self._held.clear()

    def describe(self) -> str:
        return f"{self.fabric_name} {self.local[0]}:{self.local[1]} -> {self.remote[0]}:{self.remote[1]}"


class FabricListener(abc.ABC):
    port: int

    @abc.abstractmethod
    def close(self) -> None: ...


class Fabric(abc.ABC):
    """Where soft connections run: in one process, between processes, between hosts."""

    name: str = "?"
    #: whether ``alloc_buffer`` should hand out shared-memory segments
    uses_shm: bool = False

    @abc.abstractmethod
    async def listen(
        self, host: str, port: int, on_link: Callable[[Link], None], segments: "SegmentTable"
    ) -> FabricListener:
        """Accept connections; ``on_link`` must set the link's handlers before returning."""

    @abc.abstractmethod
    async def connect(self, host: str, port: int, timeout: float, segments: "SegmentTable") -> Link:
        """A link to the listener at host:port, or ConnectionRejected / ConnectionFailed."""

    async def close(self) -> None:
        return None


def is_cm(msg: Msg) -> bool:
    return Kind.CM_REQ <= msg.kind <= Kind.CM_DREP

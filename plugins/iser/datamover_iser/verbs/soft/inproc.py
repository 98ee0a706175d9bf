"""In-process fabric: both ends in one event loop; messages are handed over with call_soon.

Payloads are not copied in transit: the responder copies straight from the requester's MR
view into its own (one memcpy per RDMA WRITE/READ or SEND), as DMA would.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from ..errors import ConnectionRejected
from .link import Fabric, FabricListener, Link
from .wire import Msg

if TYPE_CHECKING:
    from .memory import SegmentTable


class InprocLink(Link):
    fabric_name = "inproc"

    def __init__(self, side: str, local: tuple[str, int], remote: tuple[str, int]) -> None:
        super().__init__(side, local, remote)
        self.peer: InprocLink | None = None
        self._loop = asyncio.get_running_loop()

    def _transmit(self, msg: Msg) -> None:
        peer = self.peer
        if peer is None or peer.closed:
            return
        d = msg.delivered()
        d.data = [c.view for c in msg.chunks]
        if msg.sink_chunks is not None:
            d.sink = [c.view for c in msg.sink_chunks]
        self._loop.call_soon(peer.deliver, d)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        peer = self.peer
        if peer is not None and not peer.closed:
            # After everything already sent: call_soon keeps FIFO order.
            self._loop.call_soon(peer.lost, "peer closed the connection")


class _InprocListener(FabricListener):
    def __init__(self, fabric: "InprocFabric", key: tuple[str, int], on_link: Callable[[Link], None]) -> None:
        self.fabric = fabric
        self.key = key
        self.port = key[1]
        self.on_link = on_link

    def close(self) -> None:
        if self.fabric._listeners.get(self.key) is self:
            del self.fabric._listeners[self.key]


class InprocFabric(Fabric):
    """A namespace of listeners within one process (``default()`` is shared)."""

    name = "inproc"
    uses_shm = False
    _default: ClassVar["InprocFabric | None"] = None

    def __init__(self) -> None:
        self._listeners: dict[tuple[str, int], _InprocListener] = {}
        self._ports = itertools.count(49152)
        self._client_ports = itertools.count(32768)

    @classmethod
    def default(cls) -> "InprocFabric":
        if cls._default is None:
            cls._default = cls()
        return cls._default

    async def listen(
        self, host: str, port: int, on_link: Callable[[Link], None], segments: "SegmentTable"
    ) -> FabricListener:
        if port == 0:
            port = next(p for p in self._ports if (host, p) not in self._listeners)
        key = (host, port)
        if key in self._listeners:
            raise OSError(98, f"inproc address {host}:{port} already in use")
        fl = _InprocListener(self, key, on_link)
        self._listeners[key] = fl
        return fl

    async def connect(self, host: str, port: int, timeout: float, segments: "SegmentTable") -> Link:
        fl = self._listeners.get((host, port))
        if fl is None:
            raise ConnectionRejected("no listener")
        local = ("inproc-client", next(self._client_ports))
        a = InprocLink("active", local, (host, port))
        b = InprocLink("passive", (host, port), local)
        a.peer, b.peer = b, a
        fl.on_link(b)
        return a

    async def close(self) -> None:
        return None  # shared namespace; listeners are closed by their owners

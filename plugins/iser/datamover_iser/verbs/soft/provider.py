"""The soft provider: a software RDMA "device" on a chosen fabric and personality."""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

from ..api import Provider
from ..enums import Personality
from ..faults import FaultHook
from .cm import SoftCMId, SoftListener, check_port
from .device import SoftContext, SoftPD
from .link import Fabric, Link

if TYPE_CHECKING:
    from .link import Tap


#: the fabric names make_fabric knows
FABRIC_NAMES = ("inproc", "shm", "zmq", "zmq-ipc")


def make_fabric(fabric: Fabric | str) -> Fabric:
    """A fabric instance from a name (``inproc``, ``shm``, ``zmq`` over tcp://, ``zmq-ipc``
    over zmq's Unix-socket transport between processes of one host) or as given."""
    if isinstance(fabric, Fabric):
        return fabric
    if fabric == "inproc":
        from .inproc import InprocFabric

        return InprocFabric.default()
    if fabric == "shm":
        from .shm import ShmFabric

        return ShmFabric()
    if fabric == "zmq":
        from .zmq import ZmqFabric

        return ZmqFabric()
    if fabric == "zmq-ipc":
        from .zmq import ZmqFabric

        return ZmqFabric(transport="ipc")
    raise ValueError(f"unknown soft fabric {fabric!r} ({', '.join(FABRIC_NAMES)})")


class SoftProvider(Provider):
    """Software RDMA with rdma_rxe's semantics; it never pretends to be hardware.

    ``fault_hook`` (see ``faults``) is consulted for every message; ``capture`` (a
    ``pcap.PcapWriter``) records every message as RoCEv2 frames.
    """

    name = "soft"

    def __init__(
        self,
        fabric: Fabric | str = "inproc",
        personality: Personality | str = Personality.ROCE_V2,
        *,
        fault_hook: FaultHook | None = None,
        capture: "Tap | None" = None,
    ) -> None:
        self.personality = Personality(personality)
        self.fabric = make_fabric(fabric)
        dev = "soft-roce0" if self.personality is Personality.ROCE_V2 else "soft-iw0"
        self.context = SoftContext(self.personality, self.fabric.uses_shm, dev)
        self.pd: SoftPD = self.context.alloc_pd()  # rdma_cm's per-device PD
        self._fault_hook = fault_hook
        self.capture = capture
        self._links: "weakref.WeakSet[Link]" = weakref.WeakSet()
        self._listeners: list[SoftListener] = []

    @property
    def fault_hook(self) -> FaultHook | None:
        return self._fault_hook

    @fault_hook.setter
    def fault_hook(self, hook: FaultHook | None) -> None:
        """Install/remove the hook, also on live connections."""
        self._fault_hook = hook
        for link in list(self._links):
            link.fault_hook = hook

    def describe(self) -> str:
        return (
            f"soft provider ({self.personality.value} personality, {self.fabric.name} fabric; "
            "software RDMA, no NIC)"
        )

    async def listen(self, host: str, port: int, backlog: int = 16) -> SoftListener:
        listener = SoftListener(self, host, backlog)
        listener._fl = await self.fabric.listen(host, check_port(port), listener._on_link, self.context.segments)
        listener.port = listener._fl.port
        self._listeners.append(listener)
        return listener

    async def resolve(self, host: str, port: int, timeout: float = 5.0) -> SoftCMId:
        # Address and route resolution are trivial on a soft fabric; reachability shows at connect.
        return SoftCMId(self, "active", host, check_port(port))

    async def close(self) -> None:
        for listener in self._listeners:
            listener.close()
        for link in list(self._links):
            link.abort("provider closed")
        await self.fabric.close()

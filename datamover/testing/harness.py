"""The conformance kit's harness: a target and initiators for one transport, in-process.

Kit tests are plain synchronous functions that run their scenario with
:meth:`KitHarness.run` (a fresh event loop per test), so the kit works whatever asyncio
plugin or mode the plugin author's test suite uses.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from datamover.capabilities import TransportCapabilities
from datamover.di import DatamoverConnection, NotImplementedTransport, Portal, Transport
from datamover.initiator import InitiatorConfig, InitiatorSession
from datamover.initiator.login import LoginResult, initiator_login
from datamover.pdu import Pdu
from datamover.target import LunConfig, TargetConfig, TargetServer, TargetServerConfig
from datamover.trace import DITrace

TARGET_IQN = "iqn.2026-11.org.datamover.kit:disk"
INITIATOR_IQN = "iqn.2026-11.org.datamover.kit:host"

T = TypeVar("T")

#: builds a fresh transport instance (one for the target, one per initiator)
TransportFactory = Callable[[], Transport]


class KitHarness:
    """One transport under test: how to build it, where its target listens, helpers."""

    def __init__(self, factory: TransportFactory, portal: Portal | None = None, *, timeout: float = 60.0) -> None:
        self.factory = factory
        probe = factory()
        self.name: str = probe.name
        self.capabilities: TransportCapabilities = probe.capabilities()
        self._portal = portal
        self.timeout = timeout

    @property
    def portal(self) -> Portal:
        """Where the kit's target listens: port 0 on 127.0.0.1 (a name for in-process
        transports) unless the subclass's ``target_portal`` fixture says otherwise."""
        if self._portal is not None:
            return self._portal
        return Portal("127.0.0.1", 0) if self.capabilities.cross_process else Portal(f"kit-{self.name}", 0)

    def run(self, scenario: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run one async scenario to completion in a fresh event loop, with a time limit."""

        async def bounded() -> T:
            return await asyncio.wait_for(scenario(), self.timeout)

        return asyncio.run(bounded())

    @contextlib.asynccontextmanager
    async def target(self, *, keys: dict[str, str] | None = None, lun_size: int = 16 << 20,
                     trace: DITrace | None = None, **target_kwargs: Any) -> AsyncIterator[tuple[TargetServer, Portal]]:
        """A target with one memory LUN; yields the server and the portal it bound."""
        target = TargetConfig(TARGET_IQN, [LunConfig("memory", lun_size)], power_on_ua=False, **target_kwargs)
        transport = self.factory()
        config = TargetServerConfig(targets=[target], portals=[self.portal], transport=self.name,
                                    transport_options=dict(transport.options), keys=dict(keys or {}))
        server = TargetServer(config, transport=transport, trace=trace)
        portals = await server.start()  # NotImplementedTransport: the kit fixture skips
        try:
            yield server, portals[0]
        finally:
            await server.stop()

    def session(self, portal: Portal, *, keys: dict[str, str] | None = None, trace: DITrace | None = None,
                target: str | None = TARGET_IQN, **config_kwargs: Any) -> InitiatorSession:
        config = InitiatorConfig(name=INITIATOR_IQN, keys=dict(keys or {}), **config_kwargs)
        return InitiatorSession(self.factory(), portal, config, target, trace=trace, recover=False)

    async def raw_client(self, portal: Portal, *, keys: dict[str, str] | None = None) -> RawClient:
        client = RawClient()
        await client.connect(self.factory(), portal, keys=keys)
        return client

    async def check_implemented(self) -> None:
        """Raise NotImplementedTransport if the transport cannot listen yet."""

        async def refuse(conn: DatamoverConnection) -> None:
            conn.connection_terminate()

        listener = await self.factory().listen(self.portal, refuse)
        await listener.close()


async def wait_until(predicate: Callable[[], bool], timeout: float = 2.0) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` passes (False): for state
    a peer in the same loop updates asynchronously (a target ending a session)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() >= deadline:
            return False
        await asyncio.sleep(0.01)
    return True


class RawClient:
    """A deliberately low-level initiator for hostile-input tests: logs in with the real
    login code, then sends whatever PDUs a test builds and records every up-call."""

    def __init__(self) -> None:
        self.received: list[Pdu] = []
        self.errors: list[Exception] = []
        self.terminated = asyncio.Event()
        self._arrived = asyncio.Event()
        self.conn: DatamoverConnection | None = None
        self.login: LoginResult | None = None
        self.exp_stat_sn = 0

    # up-calls ------------------------------------------------------------------
    def control_notify(self, conn: DatamoverConnection, pdu: Pdu) -> None:
        self.received.append(pdu)
        self._arrived.set()

    def connection_terminate_notify(self, conn: DatamoverConnection) -> None:
        self.terminated.set()

    def data_completion_notify(self, conn: DatamoverConnection, itt: int, sn: int) -> None:
        return None

    def data_ack_notify(self, conn: DatamoverConnection, itt: int, data_sn: int) -> None:
        return None

    def sn_update(self, conn: DatamoverConnection, exp_cmd_sn: int, max_cmd_sn: int,
                  stat_sn: int | None = None) -> None:
        return None

    def protocol_error_notify(self, conn: DatamoverConnection, error: Exception, header: bytes = b"") -> None:
        self.errors.append(error)

    # driving -------------------------------------------------------------------
    async def connect(self, transport: Transport, portal: Portal, *, keys: dict[str, str] | None = None,
                      target: str = TARGET_IQN, initiator: str = INITIATOR_IQN) -> LoginResult:
        self.conn = await transport.connect(portal, timeout=10.0)
        config = InitiatorConfig(name=initiator, keys=dict(keys or {}))
        self.login = await initiator_login(self.conn, config, transport.capabilities(), target_name=target,
                                           cmd_sn=1, itt=1)
        self.conn.notice_key_values(self.login.agreed)
        await self.conn.enable_datamover(self)
        self.exp_stat_sn = (self.login.stat_sn + 1) & 0xFFFFFFFF
        return self.login

    def send(self, pdu: Pdu) -> None:
        assert self.conn is not None, "connect() first"
        self.conn.send_control(pdu)

    async def next(self, timeout: float = 5.0) -> Pdu:
        """The next PDU from the target; TimeoutError if none comes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.received:
            self._arrived.clear()
            left = deadline - loop.time()
            if left <= 0:
                raise TimeoutError("no PDU from the target")
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                raise TimeoutError("no PDU from the target") from None
        return self.received.pop(0)

    async def quiet(self, seconds: float = 0.3) -> bool:
        """True if nothing arrives within ``seconds``."""
        await asyncio.sleep(seconds)
        return not self.received

    def close(self) -> None:
        if self.conn is not None:
            self.conn.connection_terminate()
            self.conn = None


async def gather_limited(jobs: list[Callable[[], Awaitable[None]]], limit: int) -> None:
    """Run ``jobs`` with at most ``limit`` in flight."""
    semaphore = asyncio.Semaphore(limit)

    async def one(job: Callable[[], Awaitable[None]]) -> None:
        async with semaphore:
            await job()

    await asyncio.gather(*(one(job) for job in jobs))


__all__ = ["INITIATOR_IQN", "TARGET_IQN", "KitHarness", "NotImplementedTransport", "RawClient",
           "TransportFactory", "gather_limited", "wait_until"]

"""A deliberately low-level initiator for hostile-input tests: logs in with the real login
code, then sends whatever PDUs a test builds and records every up-call."""

from __future__ import annotations

import asyncio

from datamover.di import DatamoverConnection, Portal
from datamover.initiator.config import InitiatorConfig
from datamover.initiator.login import LoginResult, initiator_login
from datamover.pdu import Pdu
from datamover.plugin import create_transport
from tests.conftest import INITIATOR_IQN, TARGET_IQN


class RawClient:
    def __init__(self) -> None:
        self.received: list[Pdu] = []
        self.terminated = asyncio.Event()
        self.errors: list[Exception] = []
        self._arrived = asyncio.Event()
        self.conn: DatamoverConnection | None = None
        self.login: LoginResult | None = None

    # up-calls
    def control_notify(self, conn: DatamoverConnection, pdu: Pdu) -> None:
        self.received.append(pdu)
        self._arrived.set()

    def connection_terminate_notify(self, conn: DatamoverConnection) -> None:
        self.terminated.set()

    def data_completion_notify(self, conn: DatamoverConnection, itt: int, sn: int) -> None:
        pass

    def data_ack_notify(self, conn: DatamoverConnection, itt: int, data_sn: int) -> None:
        pass

    def protocol_error_notify(self, conn: DatamoverConnection, error: Exception, header: bytes = b"") -> None:
        self.errors.append(error)

    async def connect(self, transport: str, portal: Portal, *, target: str = TARGET_IQN,
                      keys: dict[str, str] | None = None) -> LoginResult:
        options = {"check_codec": False} if transport == "loopback" else {}
        tr = create_transport(transport, options)
        self.conn = await tr.connect(portal)
        config = InitiatorConfig(name=INITIATOR_IQN, keys=dict(keys or {}))
        self.login = await initiator_login(self.conn, config, tr.capabilities(), target_name=target, cmd_sn=1, itt=1)
        self.conn.notice_key_values(self.login.agreed)
        await self.conn.enable_datamover(self)
        self.cmd_sn = 1
        self.exp_stat_sn = (self.login.stat_sn + 1) & 0xFFFFFFFF
        return self.login

    def send(self, pdu: Pdu) -> None:
        assert self.conn is not None
        self.conn.send_control(pdu)

    async def next(self, timeout: float = 2.0) -> Pdu:
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.received:
            self._arrived.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError("no PDU from the target")
            try:
                await asyncio.wait_for(self._arrived.wait(), left)
            except asyncio.TimeoutError:
                raise TimeoutError("no PDU from the target") from None
        return self.received.pop(0)

    async def quiet(self, seconds: float = 0.2) -> bool:
        """True if nothing arrives within ``seconds``."""
        await asyncio.sleep(seconds)
        return not self.received

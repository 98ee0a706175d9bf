"""The conformance kit's raw client (datamover.testing.harness.RawClient), addressed by
transport name and logging in with this test suite's names."""

from __future__ import annotations

from datamover.di import Portal
from datamover.initiator.login import LoginResult
from datamover.plugin import create_transport
from datamover.testing.harness import RawClient as KitRawClient
from tests.conftest import INITIATOR_IQN, TARGET_IQN


class RawClient(KitRawClient):
    async def connect(self, transport: str, portal: Portal, *, target: str = TARGET_IQN,  # type: ignore[override]
                      keys: dict[str, str] | None = None) -> LoginResult:
        options = {"check_codec": False} if transport == "loopback" else {}
        login = await super().connect(create_transport(transport, options), portal, keys=keys, target=target,
                                      initiator=INITIATOR_IQN)
        self.cmd_sn = 1
        return login

    async def next(self, timeout: float = 2.0):  # type: ignore[no-untyped-def,override]
        return await super().next(timeout)

    async def quiet(self, seconds: float = 0.2) -> bool:
        return await super().quiet(seconds)

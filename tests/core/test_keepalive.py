"""NOP-In keepalive (RFC 7143 11.19): the target pings idle initiators and drops silent ones."""

from __future__ import annotations

import asyncio

from datamover.pdu import NopIn
from datamover.target import LunConfig, TargetConfig, TargetServer, TargetServerConfig
from datamover.di import Portal
from tests.conftest import TARGET_IQN, make_session
from tests.core.rawclient import RawClient


def _config() -> TargetServerConfig:
    return TargetServerConfig(targets=[TargetConfig(TARGET_IQN, [LunConfig("memory", 1 << 20)], power_on_ua=False)],
                              portals=[Portal("loopback", 0)], transport="loopback", nop_interval=0.1,
                              nop_timeout=0.3)


async def test_pinged_initiator_that_answers_stays_logged_in() -> None:
    server = TargetServer(_config())
    portal = (await server.start())[0]
    try:
        session = make_session("loopback", portal)
        await session.login()
        await asyncio.sleep(0.8)  # several ping intervals, no I/O
        assert session.is_up and len(server.sessions) == 1
        assert (await session.test_unit_ready()).good
        await session.logout()
    finally:
        await server.stop()


async def test_silent_initiator_is_dropped() -> None:
    server = TargetServer(_config())
    portal = (await server.start())[0]
    try:
        client = RawClient()  # never answers NOP-In pings
        await client.connect("loopback", portal)
        ping = await client.next(timeout=2)
        assert isinstance(ping, NopIn) and ping.ttt != 0xFFFFFFFF and ping.itt == 0xFFFFFFFF
        await asyncio.wait_for(client.terminated.wait(), 3)
        assert not server.sessions
    finally:
        await server.stop()

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


async def test_login_has_one_deadline_for_all_its_pdus() -> None:
    """A peer that keeps the login going with slow PDUs is cut off at login_timeout."""
    from datamover.pdu import LoginRequest
    from datamover.plugin import create_transport
    from datamover.di import ConnectionClosed

    config = _config()
    config.login_timeout = 0.5
    server = TargetServer(config)
    portal = (await server.start())[0]
    try:
        conn = await create_transport("loopback").connect(portal)
        text = b"InitiatorName=iqn.2026-11.org.x:slow\x00SessionType=Normal\x00TargetName=" + TARGET_IQN.encode()
        closed = False
        for _ in range(10):
            try:
                # C=1: "more text follows", each answered by an empty response
                await conn.login_send(LoginRequest(itt=1, cont=True, csg=0, nsg=0, isid=0x800000000001,
                                                   cmd_sn=1, data=text))
                await conn.login_recv(timeout=2)
            except (ConnectionClosed, TimeoutError):
                closed = True
                break
            await asyncio.sleep(0.2)
        assert closed, "the target kept a trickling login open past login_timeout"
    finally:
        await server.stop()


async def test_logins_in_progress_are_bounded() -> None:
    from datamover.plugin import create_transport

    config = _config()
    config.max_connections = 3
    server = TargetServer(config)
    portal = (await server.start())[0]
    try:
        transport = create_transport("loopback")
        conns = [await transport.connect(portal) for _ in range(6)]
        await asyncio.sleep(0.05)
        assert len(server._login_tasks) == 3
        for conn in conns:
            conn.connection_terminate()
    finally:
        await server.stop()

"""Limits against abuse (issue 10): every length, count and allocation a peer drives is
bounded by a negotiated or configured limit *before* memory is allocated. Each test plays
the hostile peer against a live TCP target and checks the bound, and that the target goes on
serving others."""

from __future__ import annotations

import asyncio
import struct
import time
import tracemalloc

import pytest

from datamover.di import Portal
from datamover.initiator import InitiatorConfig, InitiatorSession, discover
from datamover.pdu import LoginRequest, LoginResponse, LoginStatus, NopOut, ScsiCommand, encode_lun
from datamover.pdu.text import encode_text
from datamover.plugin import create_transport
from datamover.session.errors import LoginError
from datamover.target import LunConfig, TargetConfig, TargetServer, TargetServerConfig
from datamover.trace import DITrace
from tests.conftest import INITIATOR_IQN, TARGET_IQN, make_session, running_target
from tests.core.rawclient import RawClient


async def _healthy(portal: Portal) -> None:
    """Another initiator still gets served."""
    session = make_session("tcp", portal)
    await session.login()
    assert (await session.test_unit_ready()).good
    await session.logout()


def _raw_write(client: RawClient, data: bytes) -> None:
    client.conn._transport.write(data)  # type: ignore[union-attr]  # the hostile bytes themselves


async def test_data_segment_above_the_limit_is_refused_before_allocation() -> None:
    async with running_target("tcp", keys={"MaxRecvDataSegmentLength": "8192"}) as (server, portal):
        client = RawClient()
        await client.connect("tcp", portal)
        bhs = bytearray(48)
        bhs[0] = 0x40 | 0x00  # immediate NOP-Out
        bhs[5:8] = (0xFFFFFF).to_bytes(3, "big")  # 16 MiB - 1 announced
        bhs[16:20] = b"\xff\xff\xff\xff"
        tracemalloc.start()
        try:
            _raw_write(client, bytes(bhs) + bytes(4096))
            await asyncio.wait_for(client.terminated.wait(), 3.0)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert peak < 4 << 20, f"{peak} bytes allocated for a segment that was refused"
        await _healthy(portal)


async def test_ahs_is_bounded_and_bad_ahs_rejected() -> None:
    """TotalAHSLength is one byte (at most 1020 bytes); a garbage AHS gets a Reject or ends
    the connection, never an exception or a hang."""
    async with running_target("tcp") as (server, portal):
        client = RawClient()
        login = await client.connect("tcp", portal)
        bhs = bytearray(48)
        bhs[0] = 0x01  # SCSI Command
        bhs[1] = 0x80
        bhs[4] = 255  # 1020 bytes of AHS
        bhs[16:20] = (5).to_bytes(4, "big")
        bhs[24:28] = login.exp_cmd_sn.to_bytes(4, "big")
        _raw_write(client, bytes(bhs) + b"\xee" * 1020)
        try:
            reply = await client.next(2.0)
            assert type(reply).__name__ in ("Reject", "ScsiResponse")
        except TimeoutError:
            assert client.terminated.is_set()
        await _healthy(portal)


async def test_login_text_is_bounded() -> None:
    """Login text continued (C=1) without end: refused once it passes the text bound."""
    async with running_target("tcp") as (server, portal):
        conn = await create_transport("tcp").connect(portal, timeout=3.0)
        chunk = encode_text([("X-Pad", "a" * 8000)])
        status = 0
        try:
            for _ in range(40):  # 320 KB offered; the bound is 64 KiB
                await conn.login_send(LoginRequest(itt=1, cont=True, csg=0, isid=0x80_0000_0001, cmd_sn=1,
                                                   data=chunk))
                rsp = await conn.login_recv(timeout=3.0)
                assert isinstance(rsp, LoginResponse)
                status = rsp.status_class << 8 | rsp.status_detail
                if status:
                    break
        except (ConnectionError, TimeoutError):
            status = -1
        finally:
            conn.connection_terminate()
        assert status == LoginStatus.INITIATOR_ERROR


async def test_text_responses_respect_the_initiators_limit() -> None:
    """SendTargets over many targets: each Text Response fits the initiator's 512-byte
    MaxRecvDataSegmentLength (the TCP datamover drops a connection on any larger one)."""
    targets = [TargetConfig(f"iqn.2026-11.org.datamover.reliability:t{i:04d}", [LunConfig("memory", 4096)],
                            power_on_ua=False) for i in range(300)]
    config = TargetServerConfig(targets=targets, portals=[Portal("127.0.0.1", 0)], transport="tcp")
    async with TargetServer(config) as server:
        portal = server.listeners[0].portal
        found = await discover(create_transport("tcp"), portal, InitiatorConfig(
            keys={"MaxRecvDataSegmentLength": "512"}))
        assert len(found) == 300


async def test_outstanding_r2ts_stay_within_max_outstanding_r2t() -> None:
    keys = {"MaxOutstandingR2T": "2", "MaxBurstLength": "16384", "FirstBurstLength": "8192",
            "InitialR2T": "Yes", "ImmediateData": "No"}
    trace = DITrace()
    async with running_target("tcp", keys=keys, trace=trace) as (server, portal):
        session = make_session("tcp", portal, keys=keys)
        await session.login()
        await asyncio.gather(*(session.write_blocks(0, i * 512, bytes(256 * 1024)) for i in range(4)))
        await session.logout()
    outstanding: dict[object, int] = {}
    worst = 0
    for event in trace.events:
        if event.role != "target":
            continue
        fields = dict(event.fields)
        if event.call == "get_data":
            outstanding[fields["itt"]] = outstanding.get(fields["itt"], 0) + 1
            worst = max(worst, outstanding[fields["itt"]])
        elif event.call == "data_completion_notify" and fields.get("kind") == "get_data":
            outstanding[fields["itt"]] -= 1
    assert trace.calls("get_data") and worst == 2


async def test_tasks_per_session_are_bounded_by_the_window() -> None:
    """A flood of commands that never finish (writes whose data never comes, commands far
    ahead of ExpCmdSN): the session holds at most queue_depth of them."""
    async with running_target("tcp", keys={"InitialR2T": "Yes", "ImmediateData": "No"}) as (server, portal):
        client = RawClient()
        login = await client.connect("tcp", portal, keys={"InitialR2T": "Yes", "ImmediateData": "No"})
        depth = server.config.queue_depth
        cdb = struct.pack(">BBQIBB", 0x8A, 0, 0, 128, 0, 0)  # WRITE(16), 64 KiB, data never sent
        for i in range(depth * 3):
            client.send(ScsiCommand(itt=100 + i, final=True, write=True, lun=encode_lun(0),
                                    expected_data_transfer_length=65536,
                                    cmd_sn=(login.exp_cmd_sn + i) & 0xFFFFFFFF, exp_stat_sn=client.exp_stat_sn,
                                    cdb=cdb))
        for i in range(depth * 3):  # and NOP-Outs far ahead, to be held for ordering
            client.send(NopOut(itt=5000 + i, cmd_sn=(login.exp_cmd_sn + depth * 3 + 10 + i) & 0xFFFFFFFF,
                               exp_stat_sn=client.exp_stat_sn))
        await asyncio.sleep(0.5)
        (session,) = server.sessions.values()
        assert len(session.tasks) + len(session._held) <= depth
        await _healthy(portal)


async def test_sessions_per_target_are_bounded() -> None:
    async with running_target("tcp") as (server, portal):
        server.config.max_sessions = 3
        sessions = [make_session("tcp", portal) for _ in range(3)]
        for s in sessions:
            await s.login()
        extra = make_session("tcp", portal)
        with pytest.raises(LoginError) as info:
            await extra.login()
        assert info.value.status == LoginStatus.OUT_OF_RESOURCES
        for s in sessions:
            await s.logout()


async def test_connections_per_portal_are_bounded() -> None:
    async with running_target("tcp") as (server, portal):
        limit = getattr(server.config, "max_connections", None)
        assert isinstance(limit, int), "no configured connections-per-portal limit"
        socks = [await asyncio.open_connection(portal.host, portal.port) for _ in range(limit + 20)]
        await asyncio.sleep(0.3)
        try:
            assert len(server._login_tasks) <= limit
        finally:
            for _, writer in socks:
                writer.close()


async def test_login_time_is_bounded_in_total() -> None:
    """A slow-loris login (a PDU just inside login_timeout, over and over) must still end
    once the whole login has taken login_timeout."""
    async with running_target("tcp") as (server, portal):
        server.config.login_timeout = 1.0
        conn = await create_transport("tcp").connect(portal, timeout=3.0)
        started = time.monotonic()
        ended = None
        try:
            pairs = [("InitiatorName", INITIATOR_IQN), ("SessionType", "Normal"), ("TargetName", TARGET_IQN),
                     ("AuthMethod", "None")]
            for _ in range(15):
                await conn.login_send(LoginRequest(itt=1, csg=0, isid=0x80_0000_0002, cmd_sn=1,
                                                   data=encode_text(pairs)))
                pairs = []
                rsp = await conn.login_recv(timeout=3.0)
                if not isinstance(rsp, LoginResponse) or rsp.status_class:
                    ended = time.monotonic() - started
                    break
                await asyncio.sleep(0.3)
        except (ConnectionError, TimeoutError):
            ended = time.monotonic() - started
        finally:
            conn.connection_terminate()
        assert ended is not None and ended < 2.0, "the login went on past login_timeout"

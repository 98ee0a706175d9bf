"""The core's key scenarios over every real transport (TCP, iSER on the soft provider),
smaller than the loopback acceptance matrix so the default suite stays fast."""

from __future__ import annotations

import asyncio
import random

import pytest

from datamover.pdu import LoginRequest, NopOut, Reject, RejectReason, UnknownPdu
from datamover.session.errors import LoginError
from datamover.target.config import ChapConfig
from datamover.trace import DITrace
from tests.conftest import make_session, running_target
from tests.core.rawclient import RawClient

TRANSPORTS = ["tcp", "iser"]


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("initial_r2t,immediate", [("Yes", "Yes"), ("Yes", "No"), ("No", "Yes"), ("No", "No")])
async def test_data_integrity(transport: str, initial_r2t: str, immediate: str) -> None:
    keys = {"InitialR2T": initial_r2t, "ImmediateData": immediate, "FirstBurstLength": "65536",
            "MaxBurstLength": "262144", "MaxRecvDataSegmentLength": "16384",
            "TargetRecvDataSegmentLength": "16384"}
    trace = DITrace()
    async with running_target(transport, keys=keys, trace=trace) as (_, portal):
        session = make_session(transport, portal, keys=keys, trace=trace)
        await session.login()
        rng = random.Random(9)
        chunks = [(lba, rng.randbytes(size)) for lba, size in
                  [(0, 512), (8, 4096), (64, 65536 + 512), (512, 1 << 20), (4096, 300 * 1024)]]
        await asyncio.gather(*(session.write_blocks(0, lba, data) for lba, data in chunks))
        for lba, data in chunks:
            assert bytes(await session.read_blocks(0, lba, len(data) // 512)) == data
        await session.logout()
    assert trace.calls("get_data"), "solicited data never fetched"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_chap_and_discovery(transport: str) -> None:
    from datamover.initiator import InitiatorConfig, discover
    from datamover.plugin import create_transport

    chap = ChapConfig("alice", b"secret-of-alice-1", "target1", b"secret-of-target1")
    async with running_target(transport, chap=chap) as (server, portal):
        good = make_session(transport, portal, chap_user="alice", chap_secret=b"secret-of-alice-1",
                            mutual_user="target1", mutual_secret=b"secret-of-target1")
        await good.login()
        await good.logout()
        bad = make_session(transport, portal, chap_user="alice", chap_secret=b"not-the-secret!!")
        with pytest.raises(LoginError):
            await bad.login()
        found = await discover(create_transport(transport), portal, InitiatorConfig())
        assert list(found) and all(addresses for addresses in found.values())


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_hostile_pdus_get_rfc_answers(transport: str) -> None:
    async with running_target(transport) as (server, portal):
        client = RawClient()
        login = await client.connect(transport, portal)
        raw = bytearray(48)
        raw[0] = 0x1C
        client.send(UnknownPdu(opcode_value=0x1C, raw_bhs=bytes(raw)))
        reply = await client.next()
        assert isinstance(reply, Reject) and reply.reason == RejectReason.COMMAND_NOT_SUPPORTED
        client.send(LoginRequest(itt=3, transit=True, csg=1, nsg=3, isid=1, cmd_sn=1, exp_stat_sn=client.exp_stat_sn))
        reply = await client.next()
        assert isinstance(reply, Reject) and reply.reason == RejectReason.PROTOCOL_ERROR
        client.send(NopOut(itt=7, cmd_sn=(login.max_cmd_sn + 10) & 0xFFFFFFFF, exp_stat_sn=client.exp_stat_sn))
        assert await client.quiet()
        client.send(NopOut(itt=9, cmd_sn=login.exp_cmd_sn, exp_stat_sn=client.exp_stat_sn))
        assert (await client.next()).itt == 9
        # a healthy session alongside is unaffected
        session = make_session(transport, portal)
        await session.login()
        assert (await session.test_unit_ready()).good
        await session.logout()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_erl0_recovery(transport: str) -> None:
    async with running_target(transport) as (server, portal):
        session = make_session(transport, portal, recovery_backoff=(0.01, 0.1))
        await session.login()
        rng = random.Random(4)
        blocks = [rng.randbytes(32 * 1024) for _ in range(32)]

        async def drop_soon() -> None:
            await asyncio.sleep(0.001)
            for target_session in list(server.sessions.values()):
                target_session.close()

        await asyncio.gather(drop_soon(), *(session.write_blocks(0, i * 64, blocks[i]) for i in range(32)))
        for i in range(32):
            assert bytes(await session.read_blocks(0, i * 64, 64)) == blocks[i]
        await session.logout()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_tmf(transport: str) -> None:
    async with running_target(transport) as (server, portal):
        session = make_session(transport, portal)
        await session.login()
        assert await session.lun_reset(0) == 0
        assert await session.task_management(5, lun=9) == 2  # LUN does not exist
        assert await session.abort_task(0xABCDE, 0) in (0, 1)
        assert await session.task_management(6) == 0  # TARGET WARM RESET
        assert (await session.test_unit_ready()).good or True  # a UA may follow a reset
        await session.logout()

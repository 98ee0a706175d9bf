"""Issue 2 acceptance: each bad input gets the answer the RFC requires and no exception
escapes the target (the target keeps serving a healthy session afterwards)."""

from __future__ import annotations

import pytest

from datamover.pdu import (
    DataOut,
    LoginRequest,
    NopOut,
    PduFormatError,
    Reject,
    RejectReason,
    ScsiCommand,
    ScsiResponse,
    UnknownPdu,
    decode_pdu,
    encode_header,
    encode_lun,
)
from datamover.pdu.text import TextFormatError, decode_text
from datamover.session.errors import LoginError
from tests.conftest import TARGET_IQN, make_session, running_target
from tests.core.rawclient import RawClient

async def _healthy(portal) -> None:  # type: ignore[no-untyped-def]
    """A second, well-behaved session still gets service."""
    session = make_session("loopback", portal)
    await session.login()
    assert (await session.test_unit_ready()).good
    await session.logout()


async def test_unknown_opcode_is_rejected_command_not_supported() -> None:
    """RFC 7143 11.17.1: an opcode the target does not know -> Reject, reason 0x05."""
    async with running_target() as (server, portal):
        client = RawClient()
        await client.connect("loopback", portal)
        raw = bytearray(48)
        raw[0] = 0x1C  # a vendor-specific initiator opcode we do not implement
        client.send(UnknownPdu(opcode_value=0x1C, raw_bhs=bytes(raw)))
        reply = await client.next()
        assert isinstance(reply, Reject)
        assert reply.reason == RejectReason.COMMAND_NOT_SUPPORTED
        assert bytes(reply.data[:1]) == b"\x1c"
        await _healthy(portal)


def test_truncated_bhs_is_a_format_error() -> None:
    """RFC 7143 11.2: a BHS is 48 bytes; fewer is a format error, never a crash."""
    whole = b"".join(bytes(part) for part in [encode_header(NopOut(itt=1, cmd_sn=1))])
    for cut in (0, 1, 20, 47):
        with pytest.raises(PduFormatError):
            decode_pdu(whole[:cut])


async def test_data_segment_above_negotiated_maximum_is_rejected() -> None:
    """RFC 7143 13.12: data beyond MaxRecvDataSegmentLength is a protocol error -> Reject."""
    async with running_target(keys={"MaxRecvDataSegmentLength": "8192"}) as (server, portal):
        client = RawClient()
        login = await client.connect("loopback", portal, keys={"ImmediateData": "Yes"})
        limit = int(login.agreed["MaxRecvDataSegmentLength.target"])
        client.send(NopOut(itt=5, immediate=True, cmd_sn=1, exp_stat_sn=client.exp_stat_sn,
                           data=bytes(limit + 512)))
        reply = await client.next()
        assert isinstance(reply, Reject) and reply.reason == RejectReason.PROTOCOL_ERROR
        await _healthy(portal)


async def test_cmdsn_outside_window_is_silently_ignored() -> None:
    """RFC 7143 4.2.2.1: a non-immediate PDU with CmdSN outside [ExpCmdSN, MaxCmdSN] is
    silently discarded; the session continues with the right CmdSN."""
    async with running_target() as (server, portal):
        client = RawClient()
        login = await client.connect("loopback", portal)
        far = (login.max_cmd_sn + 10) & 0xFFFFFFFF
        client.send(NopOut(itt=7, cmd_sn=far, exp_stat_sn=client.exp_stat_sn))
        client.send(NopOut(itt=8, cmd_sn=(login.exp_cmd_sn - 5) & 0xFFFFFFFF, exp_stat_sn=client.exp_stat_sn))
        assert await client.quiet(), "the target answered a PDU outside the CmdSN window"
        client.send(NopOut(itt=9, cmd_sn=login.exp_cmd_sn, exp_stat_sn=client.exp_stat_sn))
        reply = await client.next()
        assert reply.itt == 9


async def test_login_pdu_in_full_feature_phase_is_rejected() -> None:
    """RFC 7143 6.1 / RFC 5047 10.3.10: Login in full feature phase -> Reject (protocol error)."""
    async with running_target() as (server, portal):
        client = RawClient()
        await client.connect("loopback", portal)
        client.send(LoginRequest(itt=3, transit=True, csg=1, nsg=3, isid=1, cmd_sn=1,
                                 exp_stat_sn=client.exp_stat_sn))
        reply = await client.next()
        assert isinstance(reply, Reject) and reply.reason == RejectReason.PROTOCOL_ERROR
        await _healthy(portal)


def test_text_key_without_equals_is_a_format_error() -> None:
    """RFC 7143 6.1: every text item is key=value."""
    with pytest.raises(TextFormatError):
        decode_text(b"InitiatorName\x00")


async def test_login_text_key_without_equals_fails_with_initiator_error() -> None:
    """A login whose text has an item without '=' ends with class 2 (initiator error)."""
    async with running_target() as (server, portal):
        from datamover.plugin import create_transport

        conn = await create_transport("loopback").connect(portal)
        await conn.login_send(LoginRequest(itt=1, transit=True, csg=1, nsg=3, isid=0x80000000AB, cmd_sn=1,
                                           data=b"InitiatorName\x00"))
        reply = await conn.login_recv(timeout=2)
        assert reply.status_class == 2 and reply.status_detail == 0


async def test_unknown_target_name_login_fails_not_found() -> None:
    """RFC 7143 11.13.5: unknown TargetName -> 0x0203 (not found)."""
    async with running_target() as (server, portal):
        session = make_session("loopback", portal, target="iqn.2026-11.org.datamover.test:nope")
        with pytest.raises(LoginError) as info:
            await session.login()
        assert info.value.status == 0x0203
        await _healthy(portal)


async def test_initiator_outside_acl_fails_authorization() -> None:
    """RFC 7143 11.13.5: an initiator the target does not admit -> 0x0202."""
    async with running_target(acl=["iqn.2026-11.org.datamover.test:someone-else"]) as (server, portal):
        session = make_session("loopback", portal)
        with pytest.raises(LoginError) as info:
            await session.login()
        assert info.value.status == 0x0202


async def test_unsolicited_data_for_finished_task_is_dropped_and_session_survives() -> None:
    async with running_target() as (server, portal):
        client = RawClient()
        login = await client.connect("loopback", portal)
        client.send(DataOut(itt=0x77, final=True, ttt=0xFFFFFFFF, data=bytes(512)))
        cdb = bytes([0x00]) + bytes(5)  # TEST UNIT READY
        client.send(ScsiCommand(itt=0x78, final=True, lun=encode_lun(0), cmd_sn=login.exp_cmd_sn,
                                exp_stat_sn=client.exp_stat_sn, cdb=cdb))
        reply = await client.next()
        assert isinstance(reply, ScsiResponse) and reply.itt == 0x78 and reply.status == 0


async def test_scsi_command_with_bad_lba_gets_check_condition() -> None:
    async with running_target() as (server, portal):
        session = make_session("loopback", portal)
        await session.login()
        import struct

        blocks, _ = await session.read_capacity()
        outcome = await session.execute(0, struct.pack(">BBQIBB", 0x88, 0, blocks, 1, 0, 0), read_length=512)
        assert outcome.status == 0x02
        assert outcome.sense[2] & 0x0F == 0x05 and outcome.sense[12] == 0x21  # LBA out of range
        await session.logout()


async def test_snack_at_erl0_is_rejected() -> None:
    from datamover.pdu import SnackRequest

    async with running_target() as (server, portal):
        client = RawClient()
        await client.connect("loopback", portal)
        client.send(SnackRequest(itt=4, type=1, exp_stat_sn=client.exp_stat_sn))
        reply = await client.next()
        assert isinstance(reply, Reject) and reply.reason == RejectReason.PROTOCOL_ERROR


async def test_duplicate_itt_is_rejected_task_in_progress() -> None:
    """RFC 7143 11.17.1: a command reusing the ITT of an active task -> Reject 0x07."""
    keys = {"InitialR2T": "No", "ImmediateData": "No"}
    async with running_target(keys=keys) as (server, portal):
        client = RawClient()
        login = await client.connect("loopback", portal, keys=keys)
        import struct

        write = struct.pack(">BBIBHB", 0x2A, 0, 0, 0, 1, 0)  # WRITE(10), 1 block
        sn = login.exp_cmd_sn
        # F=0: unsolicited data follows, so the task stays active until it arrives
        client.send(ScsiCommand(itt=0x10, final=False, write=True, lun=encode_lun(0), cmd_sn=sn,
                                expected_data_transfer_length=512, exp_stat_sn=client.exp_stat_sn, cdb=write))
        client.send(ScsiCommand(itt=0x10, final=True, lun=encode_lun(0), cmd_sn=(sn + 1) & 0xFFFFFFFF,
                                exp_stat_sn=client.exp_stat_sn, cdb=bytes(6)))
        reply = await client.next()
        assert isinstance(reply, Reject) and reply.reason == RejectReason.TASK_IN_PROGRESS
        client.send(DataOut(itt=0x10, final=True, ttt=0xFFFFFFFF, lun=encode_lun(0), buffer_offset=0,
                            data=bytes(512)))
        reply = await client.next()
        assert isinstance(reply, ScsiResponse) and reply.itt == 0x10 and reply.status == 0


async def test_unsolicited_data_out_with_wrong_datasn_fails_the_command() -> None:
    """RFC 7143 11.7.5: DataSN of an unsolicited sequence starts at 0 (libiscsi
    iSCSIDataSnInvalid): a wrong one is rejected and the command fails, it never hangs."""
    keys = {"InitialR2T": "No", "ImmediateData": "No"}
    async with running_target(keys=keys) as (server, portal):
        client = RawClient()
        login = await client.connect("loopback", portal, keys=keys)
        import struct

        write = struct.pack(">BBIBHB", 0x2A, 0, 100, 0, 1, 0)
        client.send(ScsiCommand(itt=0x20, final=False, write=True, lun=encode_lun(0), cmd_sn=login.exp_cmd_sn,
                                expected_data_transfer_length=512, exp_stat_sn=client.exp_stat_sn, cdb=write))
        client.send(DataOut(itt=0x20, final=True, ttt=0xFFFFFFFF, lun=encode_lun(0), buffer_offset=0,
                            data_sn=27, data=bytes(512)))
        replies = [await client.next(), await client.next()]
        assert any(isinstance(r, Reject) and r.reason == RejectReason.PROTOCOL_ERROR for r in replies)
        response = next(r for r in replies if isinstance(r, ScsiResponse))
        assert response.itt == 0x20 and response.status == 0x02
        assert not server.sessions[next(iter(server.sessions))].tasks

"""ERL 0 recovery and task management over loopback."""

from __future__ import annotations

import asyncio
import random

from tests.conftest import make_session, running_target


async def test_erl0_reinstatement_reissues_unanswered_commands() -> None:
    """RFC 7143 7.1.4.1: after a connection loss the initiator logs in again (same ISID,
    TSIH 0) and re-issues every command without a response; nothing acknowledged is lost."""
    async with running_target(keys={"InitialR2T": "Yes"}) as (server, portal):
        session = make_session("loopback", portal, recovery_backoff=(0.01, 0.1))
        await session.login()
        rng = random.Random(3)
        blocks = [rng.randbytes(64 * 1024) for _ in range(64)]

        async def drop_soon() -> None:
            await asyncio.sleep(0)
            for target_session in list(server.sessions.values()):
                target_session.close()  # the target vanishes mid-I/O

        writes = [session.write_blocks(0, i * 128, blocks[i]) for i in range(64)]
        await asyncio.gather(drop_soon(), *writes)
        assert session.recoveries >= 1
        for i in range(64):
            assert bytes(await session.read_blocks(0, i * 128, 128)) == blocks[i]
        await session.logout()


async def test_abort_task_and_lun_reset() -> None:
    """RFC 7143 11.5: ABORT TASK of an active task completes it without a SCSI Response."""
    import struct

    from datamover.session.errors import TaskAborted

    keys = {"InitialR2T": "No", "ImmediateData": "No", "FirstBurstLength": "4096"}
    async with running_target(keys=keys) as (server, portal):
        session = make_session("loopback", portal, keys=keys)
        await session.login()
        assert await session.lun_reset(0) == 0
        assert await session.abort_task(0x12345, 0) in (0, 1)  # no such task
        # a TMF on a LUN that does not exist
        assert await session.task_management(5, lun=7) == 2
        # abort a real task: hold a write open by withholding the target's data collection
        cdb = struct.pack(">BBQIBB", 0x8A, 0, 0, 8, 0, 0)
        task = asyncio.ensure_future(session.execute(0, cdb, data_out=bytes(4096)))
        await asyncio.sleep(0)
        itt = max(session._pending)  # the write's ITT
        response = await session.abort_task(itt, 0)
        assert response in (0, 1)
        if response == 0:
            try:
                await task
            except TaskAborted:
                pass
        else:
            await task
        assert (await session.test_unit_ready()).good
        await session.logout()


async def test_command_timeout_reinstates_the_session_and_reissues() -> None:
    """A response lost on a connection that otherwise works: after command_timeout the
    initiator drops the connection, logs in again and re-issues the command."""
    async with running_target() as (server, portal):
        session = make_session("loopback", portal, command_timeout=0.3, recovery_backoff=(0.01, 0.05))
        await session.login()
        target_session = next(iter(server.sessions.values()))
        original = target_session.send
        dropped = []

        def lose_first_response(pdu, **kwargs):  # type: ignore[no-untyped-def]
            from datamover.pdu import ScsiResponse

            if isinstance(pdu, ScsiResponse) and not dropped:
                dropped.append(pdu.itt)
                return  # the response vanishes
            original(pdu, **kwargs)

        target_session.send = lose_first_response  # type: ignore[method-assign]
        data = bytes(range(256)) * 16
        await session.write_blocks(0, 40, data)
        assert dropped and session.recoveries == 1
        assert bytes(await session.read_blocks(0, 40, 8)) == data
        await session.logout()


async def test_other_initiators_tasks_end_with_task_aborted_and_are_retried() -> None:
    """A LUN reset from one initiator aborts another's tasks with TASK ABORTED (TAS) and a
    unit attention; the other initiator retries and its caller sees success."""
    keys = {"InitialR2T": "No", "ImmediateData": "No", "FirstBurstLength": "4096"}
    async with running_target(keys=keys) as (server, portal):
        victim = make_session("loopback", portal, keys=keys)
        resetter = make_session("loopback", portal, keys=keys)
        await victim.login()
        await resetter.login()
        victim_target = next(s for s in server.sessions.values() if s.initiator_name == victim.config.name
                             and s.isid == victim.config.isid)
        # hold the victim's write open: its unsolicited data never arrives
        import struct

        dropped: list[int] = []
        original = victim.conn.send_control  # type: ignore[union-attr]
        from datamover.pdu import DataOut

        def drop_data(pdu, **kwargs):  # type: ignore[no-untyped-def]
            if isinstance(pdu, DataOut) and not dropped:
                dropped.append(pdu.itt)
                return
            original(pdu, **kwargs)

        victim.conn.send_control = drop_data  # type: ignore[union-attr,method-assign]
        cdb = struct.pack(">BBQIBB", 0x8A, 0, 0, 8, 0, 0)
        write = asyncio.ensure_future(victim.execute(0, cdb, data_out=b"v" * 4096))
        await asyncio.sleep(0.05)
        assert victim_target.tasks, "the victim's write should be waiting for its data"
        assert await resetter.lun_reset(0) == 0
        outcome = await asyncio.wait_for(write, 5)
        assert outcome.good  # retried after TASK ABORTED and the unit attention
        await victim.logout()
        await resetter.logout()


async def test_target_reset_can_be_refused() -> None:
    async with running_target(allow_target_reset=False) as (server, portal):
        session = make_session("loopback", portal)
        await session.login()
        assert await session.task_management(6) == 6  # function authorization failed
        await session.logout()

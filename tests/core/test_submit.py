"""InitiatorSession.submit: one command issued without a coroutine, its outcome in a future."""

from __future__ import annotations

import asyncio
import struct

import pytest

from datamover.initiator import ScsiOutcome
from datamover.session.errors import SessionClosed
from tests.conftest import make_session, running_target

_CDB16 = struct.Struct(">BBQIBB")


def read16(lba: int, blocks: int) -> bytes:
    return _CDB16.pack(0x88, 0, lba, blocks, 0, 0)


def write16(lba: int, blocks: int) -> bytes:
    return _CDB16.pack(0x8A, 0, lba, blocks, 0, 0)


async def test_writes_and_reads_complete_through_callbacks() -> None:
    async with running_target() as (server, portal):
        session = make_session("loopback", portal)
        await session.login()
        done: list[tuple[int, ScsiOutcome]] = []
        writes = [session.submit(0, write16(i * 8, 8), data_out=bytes([i]) * 4096) for i in range(32)]
        for i, future in enumerate(writes):
            future.add_done_callback(lambda f, i=i: done.append((i, f.result())))
        await asyncio.gather(*writes)
        assert sorted(i for i, _ in done) == list(range(32)) and all(o.good for _, o in done)
        buffers = [memoryview(bytearray(4096)) for _ in range(32)]
        outcomes = await asyncio.gather(*(session.submit(0, read16(i * 8, 8), read_buffer=buffers[i])
                                          for i in range(32)))
        assert all(o.good for o in outcomes)
        assert all(bytes(buffers[i]) == bytes([i]) * 4096 for i in range(32))
        assert bytes(outcomes[5].data) == bytes([5]) * 4096
        # any buffer object, and a CDB given as a bytearray
        back = bytearray(4096)
        assert (await session.submit(0, bytearray(read16(8, 8)), read_buffer=back)).good and back == b"\x01" * 4096
        await session.logout()


async def test_commands_beyond_the_window_wait_for_it() -> None:
    """A target that takes 2 commands at a time: submit still returns at once, and the
    commands the window holds back go as it opens."""
    async with running_target() as (server, portal):
        server.config.queue_depth = 2  # the window each new session is offered
        session = make_session("loopback", portal)
        await session.login()
        futures = [session.submit(0, write16(i * 8, 8), data_out=bytes([i + 1]) * 4096) for i in range(12)]
        assert len(session._pending) == 2  # sent; the other ten wait for the window
        assert all(o.good for o in await asyncio.gather(*futures))
        for i in range(12):
            assert bytes(await session.read_blocks(0, i * 8, 8)) == bytes([i + 1]) * 4096
        await session.logout()


async def test_unit_attention_is_reported_not_retried() -> None:
    async with running_target() as (server, portal):
        session = make_session("loopback", portal)
        await session.login()
        assert (await session.submit(0, read16(0, 8), read_buffer=bytearray(4096))).good
        assert await session.lun_reset(0) == 0
        outcome = await session.submit(0, read16(0, 8), read_buffer=bytearray(4096))
        assert outcome.not_run and outcome.status == 0x02 and outcome.sense[2] & 0x0F == 0x06
        again = await session.submit(0, read16(0, 8), read_buffer=bytearray(4096))
        assert again.good and not again.not_run
        await session.logout()


async def test_a_session_that_ends_fails_the_waiting_commands() -> None:
    async with running_target() as (server, portal):
        server.config.queue_depth = 1
        session = make_session("loopback", portal, recovery_attempts=0)
        await session.login()
        futures = [session.submit(0, read16(0, 8), read_buffer=bytearray(4096)) for _ in range(4)]
        assert len(session._pending) == 1  # three wait for the window
        await session.close()
        async with asyncio.timeout(5):  # a waiting command's future must not be left hanging
            results = await asyncio.gather(*futures, return_exceptions=True)
        assert sum(isinstance(r, SessionClosed) for r in results) >= 3, results
        assert all(isinstance(r, (ScsiOutcome, SessionClosed)) for r in results), results


async def test_bad_buffers_are_refused_before_anything_is_sent() -> None:
    async with running_target() as (server, portal):
        session = make_session("loopback", portal)
        await session.login()
        with pytest.raises(ValueError, match="bidirectional"):
            session.submit(0, read16(0, 8), data_out=bytes(4096), read_buffer=bytearray(4096))
        with pytest.raises(TypeError):
            session.submit(0, read16(0, 8), read_buffer=memoryview(bytearray(8192))[::2])  # not contiguous
        assert not session._pending
        await session.logout()


async def test_submitted_commands_survive_a_connection_loss() -> None:
    """ERL 0: commands submitted and unanswered when the connection drops are re-issued
    after the session is reinstated, and their futures complete as if nothing happened."""
    async with running_target() as (server, portal):
        session = make_session("loopback", portal, recovery_backoff=(0.01, 0.05))
        await session.login()
        payloads = [bytes([i + 1]) * 4096 for i in range(16)]
        futures = [session.submit(0, write16(i * 8, 8), data_out=payloads[i]) for i in range(16)]
        for target_session in list(server.sessions.values()):
            target_session.close()  # the target vanishes with the writes in flight
        async with asyncio.timeout(10):
            outcomes = await asyncio.gather(*futures)
        assert all(o.good for o in outcomes) and session.recoveries >= 1
        for i in range(16):
            assert bytes(await session.read_blocks(0, i * 8, 8)) == payloads[i]
        await session.logout()

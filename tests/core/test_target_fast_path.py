"""The target's fast path (TargetSession._fast_command): plain READ/WRITE (10)/(16) run in
one pass, everything else (and every command the fast path declines) takes the general
path with the same answer. Run over loopback and TCP: the fast path sits above the DI, so
it must hold whatever the transport."""

from __future__ import annotations

import contextlib
import random
import struct
from collections.abc import AsyncIterator

import pytest

from datamover.initiator import InitiatorSession
from datamover.scsi.backend import BackendError
from datamover.target.server import TargetServer
from tests.conftest import make_session, running_target

TRANSPORTS = ["loopback", "tcp"]


def _counters(server: TargetServer) -> dict[str, int]:
    (session,) = server.sessions.values()
    return session.counters


def _lu(server: TargetServer):  # type: ignore[no-untyped-def]
    (lunmap,) = server.lunmaps.values()
    return lunmap.get(0)


@contextlib.asynccontextmanager
async def logged_in(transport: str, *, keys: dict[str, str] | None = None,
                    **target_kwargs: object) -> AsyncIterator[tuple[TargetServer, InitiatorSession]]:
    """A target with one LUN and an initiator logged in to it (logged out at the end)."""
    async with running_target(transport, keys=keys, **target_kwargs) as (server, portal):  # type: ignore[arg-type]
        session = make_session(transport, portal, keys=keys)
        await session.login()
        try:
            yield server, session
        finally:
            await session.logout()


def read10(lba: int, blocks: int) -> bytes:
    return struct.pack(">BBIBHB", 0x28, 0, lba, 0, blocks, 0)


def write10(lba: int, blocks: int, fua: bool = False) -> bytes:
    return struct.pack(">BBIBHB", 0x2A, 0x08 if fua else 0, lba, 0, blocks, 0)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_plain_reads_and_writes_run_fast_and_read_back(transport: str) -> None:
    rng = random.Random(5)
    async with logged_in(transport) as (server, session):
        payloads = {}
        for lba in range(0, 2048, 64):  # WRITE(16) with immediate data, READ(16)
            payloads[lba] = rng.randbytes(64 * 512)
            await session.write_blocks(0, lba, payloads[lba])
        for lba in range(2048, 2560, 8):  # WRITE(10) with FUA, READ(10)
            payloads[lba] = rng.randbytes(8 * 512)
            (await session.execute(0, write10(lba, 8, fua=True), data_out=payloads[lba])).check()
        before = dict(_counters(server))
        for lba, data in payloads.items():
            blocks = len(data) // 512
            if lba < 2048:
                got = bytes(await session.read_blocks(0, lba, blocks))
            else:
                got = bytes((await session.execute(0, read10(lba, blocks), read_length=len(data))).check().data)
            assert got == data, f"LBA {lba}: read back differs"
        after = _counters(server)
    reads = len(payloads)
    assert after["fast_path"] - before["fast_path"] == reads, "a plain READ missed the fast path"
    assert after["commands"] - before["commands"] == reads
    assert after["bytes_out"] - before["bytes_out"] == sum(len(d) for d in payloads.values())
    # the nexus's first command takes the general path, which registers the nexus
    assert before["fast_path"] == len(payloads) - 1, "plain WRITEs with all their data missed the fast path"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_residual_takes_the_general_path_and_reports_it(transport: str) -> None:
    async with logged_in(transport) as (server, session):
        await session.write_blocks(0, 0, bytes(range(256)) * 16)
        fast = _counters(server)["fast_path"]
        outcome = (await session.execute(0, read10(0, 8), read_length=8192)).check()  # EDTL 8 KiB, 4 KiB sent
        assert outcome.underflow and outcome.residual == 4096
        assert bytes(outcome.data[:4096]) == bytes(range(256)) * 16
        assert _counters(server)["fast_path"] == fast


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_unit_attention_is_reported_before_any_fast_command(transport: str) -> None:
    async with logged_in(transport) as (server, session):
        await session.read_blocks(0, 0, 8)
        assert await session.lun_reset(0) == 0
        outcome = await session.execute(0, read10(0, 8), read_length=4096, ua_retries=0)
        assert outcome.status == 0x02 and outcome.sense[2] & 0x0F == 0x06, "the reset's unit attention was skipped"
        (await session.execute(0, read10(0, 8), read_length=4096, ua_retries=0)).check()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_read_and_write_blocks_retry_past_a_unit_attention(transport: str) -> None:
    """read_blocks / write_blocks issue small commands themselves; a command refused with
    the reset's unit attention is run again (execute's retries), not raised."""
    async with logged_in(transport) as (server, session):
        await session.write_blocks(0, 0, bytes(range(256)) * 16)
        commands = _counters(server)["commands"]
        assert await session.lun_reset(0) == 0
        assert bytes(await session.read_blocks(0, 0, 8)) == bytes(range(256)) * 16
        assert _counters(server)["commands"] == commands + 2  # refused once, then run
        assert await session.lun_reset(0) == 0
        assert (await session.write_blocks(0, 8, b"w" * 4096)).good
        assert bytes(await session.read_blocks(0, 8, 8)) == b"w" * 4096


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_backend_error_reaches_the_initiator_as_medium_error(transport: str) -> None:
    async with logged_in(transport) as (server, session):
        await session.read_blocks(0, 0, 8)
        lu = _lu(server)
        backend = lu.backend
        calls = {"read": 0, "write": 0}

        def broken_read(offset: int, buf: memoryview) -> None:
            calls["read"] += 1
            raise BackendError(5, "injected read failure")

        def broken_small_read(offset: int, length: int) -> bytes:
            calls["read"] += 1
            raise BackendError(5, "injected read failure")

        def broken_write(offset: int, buf: object) -> None:
            calls["write"] += 1
            raise BackendError(5, "injected write failure")

        # (the fast path reads small transfers with backend.read, the general path with read_into)
        backend.read_into, backend.read, backend.write_from = broken_read, broken_small_read, broken_write
        outcome = await session.execute(0, read10(0, 8), read_length=4096, ua_retries=0)
        assert outcome.status == 0x02 and (outcome.sense[2] & 0x0F, outcome.sense[12]) == (0x03, 0x11)
        outcome = await session.execute(0, write10(0, 8), data_out=bytes(4096), ua_retries=0)
        assert outcome.status == 0x02 and (outcome.sense[2] & 0x0F, outcome.sense[12]) == (0x03, 0x0C)
        # the fast path tried, then the general path tried again and reported it
        assert calls == {"read": 2, "write": 2}
        del backend.read_into, backend.write_from
        (await session.execute(0, read10(0, 8), read_length=4096)).check()


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_writes_without_all_their_data_in_the_command_take_the_general_path(transport: str) -> None:
    keys = {"ImmediateData": "No", "InitialR2T": "Yes"}
    async with logged_in(transport, keys=keys) as (server, session):
        await session.read_blocks(0, 0, 8)  # the nexus's first command: general path
        data = random.Random(9).randbytes(32 * 512)
        await session.write_blocks(0, 100, data)  # its data comes after an R2T
        assert _counters(server)["fast_path"] == 0
        assert bytes(await session.read_blocks(0, 100, 32)) == data
        assert _counters(server)["fast_path"] == 1


@pytest.mark.parametrize("sendfile", [False, True])
async def test_file_lun_reads_over_tcp_with_and_without_sendfile(sendfile: bool, tmp_path) -> None:
    """A file LUN over TCP: with the sendfile option a fast READ's data goes from the page
    cache to the socket (no buffer taken from the pool, nothing copied in user space);
    reads across MaxBurstLength, interleaved with writes, read back what was written."""
    from datamover.target.config import LunConfig

    lun = LunConfig(str(tmp_path / "lun.img"), 16 << 20)
    keys = {"MaxBurstLength": "262144"}
    rng = random.Random(3)
    async with logged_in("tcp", keys=keys, luns=[lun], transport_options={"sendfile": sendfile}) as (server,
                                                                                                   session):
        await session.read_blocks(0, 0, 8)  # the nexus's first command
        (target_session,) = server.sessions.values()
        assert (target_session.conn.min_file_slice() is not None) == sendfile
        expected = bytearray(16 << 20)
        solicited = 0  # writes above FirstBurstLength: data after an R2T, into a pool buffer
        large_reads = 0  # above SMALL_READ (which gets a bytes object): a pool buffer, or sendfile
        for _ in range(40):
            lba = rng.randrange(0, (16 << 20) // 512 - 2048)
            blocks = rng.choice([1, 8, 128, 1024, 2048])  # up to 1 MiB: four bursts
            data = rng.randbytes(blocks * 512)
            solicited += len(data) > 262144
            await session.write_blocks(0, lba, data)
            expected[lba * 512:(lba + blocks) * 512] = data
            lba2 = rng.randrange(0, (16 << 20) // 512 - 2048)
            large_reads += blocks * 512 > 16384  # all of them >= 64 KiB, sendfile's minimum
            got = await session.read_blocks(0, lba2, blocks)
            assert bytes(got) == bytes(expected[lba2 * 512:(lba2 + blocks) * 512])
        stats = target_session.conn.stats()
        counters = dict(target_session.counters)
    assert counters["fast_path"] >= 40  # every READ (WRITEs above FirstBurstLength take R2Ts)
    buffers = stats["buffers_allocated"] + stats["buffers_reused"]
    if sendfile:  # the nexus's first read and the solicited writes: no READ took a buffer
        assert buffers == 1 + solicited
    else:
        assert buffers == 1 + solicited + large_reads


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_mapped_file_lun_reads_without_a_system_call(transport: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """LUN option mmap: READs of every size (small ones into bytes, larger ones into pooled
    buffers) copy out of the mapping, never pread, and read back what was written, a write
    just before a read included."""
    import os

    from datamover.target.config import LunConfig

    rng = random.Random(11)
    lun = LunConfig(str(tmp_path / "mapped.img"), 8 << 20, mmap=True)
    async with logged_in(transport, luns=[lun]) as (server, session):
        def refuse(*args: object) -> None:
            raise AssertionError("a mapped LUN read with a system call")

        monkeypatch.setattr(os, "pread", refuse)
        monkeypatch.setattr(os, "preadv", refuse)
        for size in (512, 4096, 64 << 10, 1 << 20):
            data = rng.randbytes(size)
            assert (await session.write_blocks(0, 2048, data)).good
            assert bytes(await session.read_blocks(0, 2048, size // 512)) == data

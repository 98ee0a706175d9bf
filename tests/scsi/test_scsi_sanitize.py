"""SANITIZE as a long operation: in progress, refusing commands, surviving resets, answered late."""

from __future__ import annotations

import asyncio
import struct
import time

import pytest
from scsi_testlib import NEXUS, assert_check, assert_good, run, rw10

from datamover.scsi import LogicalUnit, MemoryBackend, Opcode, SenseKey
from datamover.scsi.command import ScsiResult
from datamover.scsi.sense import Sense

BS = 512
OTHER = "iqn.other,i,0x9|iqn.t"
#: 1 MiB at 2 MiB/s: half a second of sanitize, long enough to look at, short for a test
SIZE = 1 << 20
SLOW = 2 << 20


def sanitize(action: int, length: int = 0, immed: bool = False) -> bytes:
    return struct.pack(">BB5xHB", 0x48, (0x80 if immed else 0) | action, length, 0).ljust(16, b"\0")


OVERWRITE_AA = bytes((0x01, 0, 0, 4)) + b"\xaa" * 4


def slow_lu(**kw: object) -> LogicalUnit:
    return LogicalUnit(MemoryBackend(SIZE), power_on_ua=False, serial="SANITIZE01", sanitize_rate=SLOW,
                       **kw)  # type: ignore[arg-type]


def progress(sense: Sense) -> int:
    assert sense.sks is not None and sense.sks[0] & 0x80
    return int.from_bytes(sense.sks[1:], "big")


def in_progress(result: ScsiResult) -> int:
    """Assert NOT READY / SANITIZE IN PROGRESS; return the progress indication."""
    return progress(assert_check(result, SenseKey.NOT_READY, 0x04, 0x1B))


def test_overwrite_runs_in_the_background_and_refuses_commands() -> None:
    lu = slow_lu()
    started = time.monotonic()
    result = run(lu, sanitize(1, len(OVERWRITE_AA)), OVERWRITE_AA)
    assert result.pending is not None and not result.pending.done()
    assert lu.sanitizing is not None
    # media access, START STOP UNIT (ready-exempt otherwise) and a second SANITIZE are refused
    in_progress(run(lu, bytes(6)))
    in_progress(run(lu, rw10(Opcode.READ_10, 0, 1)))
    in_progress(run(lu, bytes((Opcode.START_STOP_UNIT, 0, 0, 0, 1, 0))))
    in_progress(run(lu, sanitize(2)))
    in_progress(run(lu, sanitize(0x1F)))
    # INQUIRY, REPORT LUNS and REQUEST SENSE go through; REQUEST SENSE shows the progress
    assert assert_good(run(lu, bytes((Opcode.INQUIRY, 0, 0, 0, 36, 0))))[:1] == b"\x00"
    assert_good(run(lu, struct.pack(">BxB3xIxB", Opcode.REPORT_LUNS, 0, 64, 0)))
    first = progress(Sense.decode(assert_good(run(lu, bytes((Opcode.REQUEST_SENSE, 0, 0, 0, 18, 0))))))
    time.sleep(0.15)
    later = in_progress(run(lu, bytes(6)))
    assert later > first
    assert_good(result.pending.result(10))
    assert time.monotonic() - started >= SIZE / SLOW * 0.8  # paced, not instantaneous
    assert lu.sanitizing is None and lu.not_ready is None
    assert_good(run(lu, bytes(6)))
    assert assert_good(run(lu, rw10(Opcode.READ_10, SIZE // BS - 1, 1))) == b"\xaa" * BS


def test_sanitize_survives_resets_and_nexus_loss_and_keeps_their_attentions() -> None:
    lu = slow_lu()
    assert_good(run(lu, bytes(6), nexus=OTHER))  # OTHER is known to the LU
    result = run(lu, sanitize(1, len(OVERWRITE_AA)), OVERWRITE_AA)
    assert result.pending is not None
    lu.abort_task_set(NEXUS)
    lu.lu_reset()
    lu.target_reset(cold=True)
    lu.nexus_lost(OTHER)
    assert lu.sanitizing is not None and not result.pending.done()
    # the reset's attention comes first (the initiator's login clears it), then the sanitize
    assert_check(run(lu, bytes(6)), SenseKey.UNIT_ATTENTION, 0x29, 0x01)
    in_progress(run(lu, bytes(6)))
    assert_good(result.pending.result(10))
    # the other nexus's attention was kept through the sanitize
    assert_check(run(lu, bytes(6), nexus=OTHER), SenseKey.UNIT_ATTENTION, 0x29, 0x07)
    assert_good(run(lu, bytes(6), nexus=OTHER))


def test_immed_answers_at_once() -> None:
    lu = slow_lu()
    assert_good(run(lu, sanitize(1, len(OVERWRITE_AA), immed=True), OVERWRITE_AA))
    operation = lu.sanitizing
    assert operation is not None
    in_progress(run(lu, bytes(6)))
    assert_good(operation.wait(10))
    assert_good(run(lu, bytes(6)))


def test_close_interrupts_a_sanitize() -> None:
    lu = slow_lu()
    result = run(lu, sanitize(1, len(OVERWRITE_AA)), OVERWRITE_AA)
    assert result.pending is not None
    started = time.monotonic()
    lu.close()
    assert time.monotonic() - started < 2
    assert_check(result.pending.result(1), SenseKey.MEDIUM_ERROR, 0x31, 0x03)
    assert lu.sanitizing is None and lu.sanitize_failed


def test_failure_mode_and_exit() -> None:
    lu = slow_lu()
    lu.sanitize_rate = 0

    def broken(offset: int, buf: object) -> None:
        from datamover.scsi.backend import BackendError

        raise BackendError("medium gone")

    lu.backend.write_from = broken  # type: ignore[method-assign]
    result = run(lu, sanitize(1, len(OVERWRITE_AA)), OVERWRITE_AA)
    assert result.pending is not None
    assert_check(result.pending.result(5), SenseKey.MEDIUM_ERROR, 0x31, 0x03)
    assert_check(run(lu, rw10(Opcode.READ_10, 0, 1)), SenseKey.MEDIUM_ERROR, 0x31, 0x03)
    assert_good(run(lu, sanitize(0x1F)))  # EXIT FAILURE MODE
    assert_good(run(lu, rw10(Opcode.READ_10, 0, 1)))


def test_no_medium_refuses_sanitize() -> None:
    lu = slow_lu(removable=True)
    assert_good(run(lu, bytes((Opcode.START_STOP_UNIT, 0, 0, 0, 0x02, 0))))  # eject
    assert_check(run(lu, sanitize(1, len(OVERWRITE_AA)), OVERWRITE_AA), SenseKey.NOT_READY, 0x3A)
    assert lu.sanitizing is None


# ------------------------------------------------------------------ over the target
async def test_target_answers_sanitize_when_it_ends_and_abort_leaves_it_running() -> None:
    from tests.conftest import make_session, running_target

    async with running_target() as (server, portal):
        lu = next(iter(server.lunmaps.values()))[0]
        lu.sanitize_rate = 256 << 20  # the 64 MiB LUN: a quarter of a second
        session = make_session("loopback", portal)
        await session.login()
        started = time.monotonic()
        command = asyncio.ensure_future(session.execute(0, sanitize(1, len(OVERWRITE_AA)),
                                                        data_out=OVERWRITE_AA))
        await asyncio.sleep(0.05)
        assert not command.done()  # no response while the medium is being overwritten
        tur = await session.test_unit_ready()
        assert tur.status == 0x02
        sense = Sense.decode(tur.sense)
        assert (sense.key, sense.asc, sense.ascq) == (SenseKey.NOT_READY, 0x04, 0x1B)
        outcome = await asyncio.wait_for(command, 10)
        assert outcome.good and time.monotonic() - started >= 0.2
        assert (await session.test_unit_ready()).good

        # aborted: the task ends without a SCSI Response, the sanitize goes on
        from datamover.session.errors import TaskAborted

        command = asyncio.ensure_future(session.execute(0, sanitize(1, len(OVERWRITE_AA)),
                                                        data_out=OVERWRITE_AA))
        await asyncio.sleep(0.05)
        itt = max(session._pending)
        assert await session.abort_task(itt, 0) == 0
        with pytest.raises(TaskAborted):
            await asyncio.wait_for(command, 5)
        operation = lu.sanitizing
        assert operation is not None
        sense = Sense.decode((await session.test_unit_ready()).sense)
        assert (sense.key, sense.asc, sense.ascq) == (SenseKey.NOT_READY, 0x04, 0x1B)
        await asyncio.get_running_loop().run_in_executor(None, operation.wait, 10)
        assert (await session.test_unit_ready()).good
        await session.logout()

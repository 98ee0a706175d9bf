"""LogicalUnit.fast_rw: the core's one-call READ/WRITE path must never take a command the
general path (prepare + execute) would answer with anything but GOOD, must agree with it
on direction, offset, length and flushing, and must take every plain READ/WRITE (10)/(16)
of a LU in a clean state (or the fast path silently stops being used)."""

from __future__ import annotations

import random

import pytest
from scsi_testlib import NEXUS, rw6, rw10, rw12, rw16, run

from datamover.scsi import LogicalUnit, MemoryBackend, ScsiStatus
from datamover.scsi.commands.table import CommandSpec
from datamover.scsi.constants import Opcode
from datamover.scsi.sense import NOT_READY, POWER_ON_OCCURRED, ScsiError

BLOCKS = 2048
FAST_OPS = (Opcode.READ_10, Opcode.READ_16, Opcode.WRITE_10, Opcode.WRITE_16)
WRITES = (Opcode.WRITE_6, Opcode.WRITE_10, Opcode.WRITE_12, Opcode.WRITE_16)


class CountingBackend(MemoryBackend):
    """Counts flushes, so the fast path's ``flush after writing`` can be compared."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.flushes = 0

    def flush(self) -> None:
        self.flushes += 1


def _lu(**kwargs: object) -> LogicalUnit:
    lu = LogicalUnit(CountingBackend(BLOCKS * 512), power_on_ua=False, **kwargs)  # type: ignore[arg-type]
    lu.unit_attentions.register(NEXUS)  # a nexus that has logged in and has nothing pending
    return lu


def _random_cdb(rng: random.Random) -> bytes:
    op = rng.choice(FAST_OPS + (Opcode.READ_6, Opcode.READ_12, Opcode.WRITE_6, Opcode.WRITE_12))
    # mostly valid fields, with each kind of invalid one now and then
    lba = rng.choice([0, 1, BLOCKS - 8, rng.randrange(BLOCKS - 300), rng.randrange(BLOCKS - 300), BLOCKS - 1,
                      BLOCKS, 1 << 40])
    n = rng.choice([1, 8, 64, rng.randrange(1, 300), rng.randrange(1, 300), 0, BLOCKS, BLOCKS + 1])
    flags = rng.choice([0, 0, 0, 0x08, 0x10, 0x02, 0x20, 0xE0, rng.randrange(256)])
    group = rng.choice([0, 0, 0, 0, 0x01, 0x40, 0xC0])
    control = rng.choice([0, 0, 0, 0, 0x01, 0x04, 0x80])
    if op in (Opcode.READ_6, Opcode.WRITE_6):
        return rw6(op, lba & 0x1FFFFF, n & 0xFF, control)
    build = rw10 if op in (Opcode.READ_10, Opcode.WRITE_10) else rw12 if op in (Opcode.READ_12,
                                                                                 Opcode.WRITE_12) else rw16
    lba &= 0xFFFFFFFF if build is not rw16 else (1 << 64) - 1
    return build(op, lba, n & (0xFFFF if build is rw10 else 0xFFFFFFFF), flags, group, control)


def _apply_state(lu: LogicalUnit, rng: random.Random) -> str:
    state = rng.choice(["clean", "clean", "read_only", "not_ready", "ua", "reserved", "write_through"])
    if state == "read_only":
        lu.read_only = True
    elif state == "not_ready":
        lu.not_ready = NOT_READY
    elif state == "ua":
        lu.establish_ua(POWER_ON_OCCURRED, NEXUS)
    elif state == "reserved":  # another nexus holds a reservation: every access conflicts
        def conflict(*_: object) -> None:
            raise ScsiError(None, ScsiStatus.RESERVATION_CONFLICT)

        lu.reservation_gate = conflict
    elif state == "write_through":
        lu.write_cache = False
    return state


@pytest.mark.parametrize("seed", range(4))
def test_fast_rw_agrees_with_the_general_path(seed: int) -> None:
    rng = random.Random(seed)
    fast_seen = general_only = 0
    for _ in range(3000):
        lu = _lu(max_transfer_bytes=128 * 512) if rng.random() < 0.3 else _lu()
        state = _apply_state(lu, rng)
        cdb = _random_cdb(rng)
        plan = lu.fast_rw(cdb, NEXUS)
        general = lu.prepare(cdb)
        write = cdb[0] in WRITES
        nbytes = (general.data_out_length if write else general.data_in_length) if general.error is None else 0
        data = rng.randbytes(nbytes) if write and nbytes else None
        before = lu.backend.flushes  # type: ignore[attr-defined]
        result = run(lu, cdb, data)
        flushed = lu.backend.flushes > before  # type: ignore[attr-defined]
        if plan is None:
            if (state == "clean" and cdb[0] in FAST_OPS and result.status == ScsiStatus.GOOD and nbytes):
                pytest.fail(f"fast_rw refused a plain command the general path runs: {cdb.hex()}")
            general_only += 1
            continue
        fast_seen += 1
        offset, length, is_write, flush = plan
        assert result.status == ScsiStatus.GOOD, f"fast_rw took {cdb.hex()} ({state}), general: {result}"
        assert general.error is None and general.direction == ("write" if write else "read")
        assert is_write == write and length == nbytes
        assert offset == int.from_bytes(cdb[2:6] if cdb[0] in (Opcode.READ_10, Opcode.WRITE_10)
                                        else cdb[2:10], "big") * 512
        assert flush == flushed, f"flush {flush} but the general path flushed: {flushed} ({cdb.hex()}, {state})"
        if not write:
            back = bytearray(length)
            lu.backend.read_into(offset, memoryview(back))
            assert bytes(result.data_in) == bytes(back)
    assert fast_seen > 60 and general_only > 60  # both sides of the rule were exercised


def test_a_command_table_that_replaces_read_10_keeps_it_off_the_fast_path() -> None:
    lu = _lu()
    assert lu.fast_rw(rw10(Opcode.READ_10, 0, 8), NEXUS) is not None
    seen: list[bytes] = []

    def prepare(unit: LogicalUnit, cdb: bytes):  # type: ignore[no-untyped-def]
        seen.append(bytes(cdb))
        from datamover.scsi.command import PLAN_NONE
        return PLAN_NONE

    def execute(unit: LogicalUnit, request):  # type: ignore[no-untyped-def]
        from datamover.scsi.command import ScsiResult
        return ScsiResult()

    lu.register(CommandSpec(Opcode.READ_10, "READ(10) (vendor)", prepare, execute), replace=True)
    assert lu.fast_rw(rw10(Opcode.READ_10, 0, 8), NEXUS) is None
    assert lu.fast_rw(rw16(Opcode.READ_16, 0, 8), NEXUS) is not None  # the others stay fast


def test_an_unknown_nexus_takes_the_general_path() -> None:
    """The first command of a nexus registers it (and may owe it a power-on attention)."""
    lu = _lu()
    assert lu.fast_rw(rw10(Opcode.READ_10, 0, 8), "iqn.other,i,0x1|t") is None

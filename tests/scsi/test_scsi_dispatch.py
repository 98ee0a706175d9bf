from __future__ import annotations

import pytest
from scsi_testlib import assert_check, assert_good, inquiry, run, rw10

from datamover.scsi import CommandPlan, LogicalUnit, MemoryBackend, Opcode, ScsiResult, ScsiStatus
from datamover.scsi.commands import CommandSpec, CommandTable, default_table
from datamover.scsi.commands.table import service_action_of
from datamover.scsi.constants import SenseKey
from datamover.scsi.sense import INVALID_OPCODE, ScsiError


@pytest.mark.parametrize("opcode", [0x02, 0x3E, 0x7E, 0xC0, 0xFF, Opcode.FORMAT_UNIT, Opcode.LOG_SELECT])
def test_unsupported_opcode(mem_lu: LogicalUnit, opcode: int) -> None:
    cdb = bytes([opcode]) + bytes(15)
    assert_check(run(mem_lu, cdb), SenseKey.ILLEGAL_REQUEST, 0x20)
    plan = mem_lu.prepare(cdb)
    assert not plan.ok and plan.status == ScsiStatus.CHECK_CONDITION and plan.error == INVALID_OPCODE


def test_empty_cdb(mem_lu: LogicalUnit) -> None:
    assert_check(run(mem_lu, b""), SenseKey.ILLEGAL_REQUEST, 0x20)
    assert mem_lu.prepare(b"").error == INVALID_OPCODE


def test_short_cdb(mem_lu: LogicalUnit) -> None:
    assert_check(run(mem_lu, bytes([Opcode.READ_16, 0, 0, 0])), SenseKey.ILLEGAL_REQUEST, 0x24)
    assert not mem_lu.prepare(bytes([Opcode.READ_10])).ok


@pytest.mark.parametrize(("control", "bit"), [(0x04, 2), (0x01, 0)])
def test_naca_and_link_refused(mem_lu: LogicalUnit, control: int, bit: int) -> None:
    sense = assert_check(run(mem_lu, rw10(Opcode.READ_10, 0, 1, control=control)), 5, 0x24)
    assert sense.field_pointer == (True, 9, bit)
    cdb = bytearray(inquiry())
    cdb[5] = control
    assert assert_check(run(mem_lu, bytes(cdb)), 5, 0x24).field_pointer == (True, 5, bit)
    # vendor-specific control bits are ignored
    assert_good(run(mem_lu, rw10(Opcode.READ_10, 0, 1, control=0xC0)))


def test_custom_command_registered_per_lu(mem_lu: LogicalUnit) -> None:
    def prepare(lu: LogicalUnit, cdb: bytes) -> CommandPlan:
        return CommandPlan("read", 0, 4)

    def execute(lu: LogicalUnit, req) -> ScsiResult:  # type: ignore[no-untyped-def]
        if req.cdb[1]:
            raise ScsiError(INVALID_OPCODE)
        return ScsiResult(0, None, b"ping")

    mem_lu.register(CommandSpec(0xC0, "VENDOR PING", prepare, execute))
    assert assert_good(run(mem_lu, bytes([0xC0]) + bytes(15))) == b"ping"
    assert_check(run(mem_lu, bytes([0xC0, 1]) + bytes(14)), 5, 0x20)
    other = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False)
    assert_check(run(other, bytes([0xC0]) + bytes(15)), 5, 0x20)
    with pytest.raises(ValueError):
        mem_lu.register(CommandSpec(0xC0, "again", prepare, execute))
    mem_lu.register(CommandSpec(0xC0, "again", prepare, execute), replace=True)


def test_handler_bug_is_contained(mem_lu: LogicalUnit, caplog: pytest.LogCaptureFixture) -> None:
    def boom(lu: LogicalUnit, x: object) -> ScsiResult:
        raise ZeroDivisionError

    mem_lu.register(CommandSpec(0xC1, "BOOM", boom, boom))  # type: ignore[arg-type]
    assert_check(run(mem_lu, bytes([0xC1]) + bytes(15)), SenseKey.HARDWARE_ERROR, 0x44)
    plan = mem_lu.prepare(bytes([0xC1]) + bytes(15))
    assert plan.error is not None and plan.error.key == SenseKey.HARDWARE_ERROR
    assert "command failed" in caplog.text and "prepare failed" in caplog.text  # logged, not raised


def test_table_service_actions() -> None:
    table = default_table()
    assert table.find(Opcode.SERVICE_ACTION_IN_16, 0x10) is not None
    assert table.find(Opcode.SERVICE_ACTION_IN_16) is None
    assert table.find(Opcode.READ_10) is not None
    names = [spec.name for spec in table]
    assert "READ CAPACITY(16)" in names and "INQUIRY" in names
    spec = table.find(Opcode.READ_10)
    assert spec is not None
    with pytest.raises(ValueError):
        table.register(CommandSpec(Opcode.SERVICE_ACTION_IN_16, "x", spec.prepare, spec.execute))
    with pytest.raises(ValueError):
        table.register(CommandSpec(Opcode.READ_10, "x", spec.prepare, spec.execute, service_action=1))
    table.register(CommandSpec(Opcode.SERVICE_ACTION_IN_16, "READ LONG(16)", spec.prepare, spec.execute, 0x11))
    table.unregister(Opcode.SERVICE_ACTION_IN_16, 0x11)
    assert table.find(Opcode.SERVICE_ACTION_IN_16, 0x11) is None
    table.unregister(Opcode.READ_10)
    assert Opcode.READ_10 not in table
    assert Opcode.READ_10 in default_table()  # a fresh table is unaffected
    with pytest.raises(ScsiError):
        table.lookup(bytes([Opcode.READ_10]) + bytes(9))


def test_service_action_of_variable_length_cdb() -> None:
    cdb = bytes([0x7F, 0, 0, 0, 0, 0, 0, 0x18, 0x00, 0x0B]) + bytes(22)
    assert service_action_of(cdb) == 0x0B
    assert service_action_of(bytes([0x9E, 0xF0])) == 0x10


def test_empty_table_lu(mem_lu: LogicalUnit) -> None:
    lu = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False, commands=CommandTable())
    assert_check(run(lu, bytes(16)), 5, 0x20)
    lu.register(default_table().find(Opcode.TEST_UNIT_READY))  # type: ignore[arg-type]
    assert_good(run(lu, bytes(16)))


def test_result_and_plan_helpers() -> None:
    assert ScsiResult().good and not ScsiResult(ScsiStatus.BUSY).good
    assert CommandPlan("none", error=INVALID_OPCODE).status == ScsiStatus.CHECK_CONDITION
    assert CommandPlan("none", status=ScsiStatus.RESERVATION_CONFLICT).ok is False
    assert CommandPlan("read", 0, 8).ok

from __future__ import annotations

import struct

from scsi_testlib import assert_check, assert_good, inquiry, run, rw10

from datamover.scsi import LogicalUnit, MemoryBackend, Opcode, Sense
from datamover.scsi.constants import SenseKey
from datamover.scsi.sense import CAPACITY_DATA_HAS_CHANGED, MEDIUM_NOT_PRESENT, MODE_PARAMETERS_CHANGED

TUR = bytes(16)


def request_sense(desc: bool = False, alloc: int = 252) -> bytes:
    return struct.pack(">BBBBBB", 0x03, int(desc), 0, 0, alloc, 0).ljust(16, b"\0")


def report_luns_like_exempt(lu: LogicalUnit, nexus: str) -> None:
    assert_good(run(lu, inquiry(), nexus=nexus))


def fresh() -> LogicalUnit:
    return LogicalUnit(MemoryBackend(1 << 20))


def test_power_on_ua_once_per_nexus() -> None:
    lu = fresh()
    assert_check(run(lu, TUR, nexus="A"), SenseKey.UNIT_ATTENTION, 0x29, 0x00)
    assert_good(run(lu, TUR, nexus="A"))
    # another nexus has its own condition
    assert_check(run(lu, rw10(Opcode.READ_10, 0, 1), nexus="B"), SenseKey.UNIT_ATTENTION, 0x29, 0x00)
    assert_good(run(lu, rw10(Opcode.READ_10, 0, 1), nexus="B"))


def test_inquiry_and_report_luns_do_not_clear_ua() -> None:
    lu = fresh()
    report_luns_like_exempt(lu, "A")
    report_luns_like_exempt(lu, "A")
    assert_check(run(lu, TUR, nexus="A"), SenseKey.UNIT_ATTENTION, 0x29)
    assert_good(run(lu, TUR, nexus="A"))


def test_request_sense_returns_and_clears_ua() -> None:
    lu = fresh()
    data = assert_good(run(lu, request_sense(), nexus="A"))
    s = Sense.decode(data)
    assert (s.key, s.asc, s.ascq) == (SenseKey.UNIT_ATTENTION, 0x29, 0)
    assert_good(run(lu, TUR, nexus="A"))
    # then no sense
    s = Sense.decode(assert_good(run(lu, request_sense(), nexus="A")))
    assert (s.key, s.asc, s.ascq) == (0, 0, 0)


def test_request_sense_descriptor_format_and_truncation(mem_lu: LogicalUnit) -> None:
    data = assert_good(run(mem_lu, request_sense(desc=True)))
    assert data[0] == 0x72
    assert len(assert_good(run(mem_lu, request_sense(alloc=4)))) == 4
    assert_check(run(mem_lu, struct.pack(">6B", 0x03, 0x02, 0, 0, 18, 0)), 5, 0x24)


def test_power_on_ua_can_be_disabled(mem_lu: LogicalUnit) -> None:
    assert_good(run(mem_lu, TUR, nexus="X"))


def test_lu_reset_sets_ua_for_every_known_nexus(mem_lu: LogicalUnit) -> None:
    for n in ("A", "B"):
        assert_good(run(mem_lu, TUR, nexus=n))
    mem_lu.lu_reset()
    for n in ("A", "B"):
        assert_check(run(mem_lu, TUR, nexus=n), SenseKey.UNIT_ATTENTION, 0x29, 0x03)
        assert_good(run(mem_lu, TUR, nexus=n))
    # a nexus first seen after the reset has no reset to hear about (power-on UA is off)
    assert_good(run(mem_lu, TUR, nexus="C"))


def test_reset_supersedes_other_conditions(mem_lu: LogicalUnit) -> None:
    assert_good(run(mem_lu, TUR, nexus="A"))
    mem_lu.establish_ua(MODE_PARAMETERS_CHANGED)
    mem_lu.establish_ua(CAPACITY_DATA_HAS_CHANGED)
    mem_lu.establish_ua(CAPACITY_DATA_HAS_CHANGED)  # not queued twice
    assert mem_lu.unit_attentions.pending["A"] == [MODE_PARAMETERS_CHANGED, CAPACITY_DATA_HAS_CHANGED]
    mem_lu.lu_reset()
    assert_check(run(mem_lu, TUR, nexus="A"), SenseKey.UNIT_ATTENTION, 0x29, 0x03)
    assert_good(run(mem_lu, TUR, nexus="A"))


def test_conditions_reported_in_order(mem_lu: LogicalUnit) -> None:
    assert_good(run(mem_lu, TUR, nexus="A"))
    mem_lu.establish_ua(MODE_PARAMETERS_CHANGED, "A")
    mem_lu.establish_ua(CAPACITY_DATA_HAS_CHANGED, exclude="A")
    assert_check(run(mem_lu, TUR, nexus="A"), SenseKey.UNIT_ATTENTION, 0x2A, 0x01)
    assert_good(run(mem_lu, TUR, nexus="A"))


def test_ua_outranks_errors_and_unknown_opcodes() -> None:
    lu = fresh()
    assert_check(run(lu, bytes([0xFF]) + bytes(15), nexus="A"), SenseKey.UNIT_ATTENTION, 0x29)
    assert_check(run(lu, bytes([0xFF]) + bytes(15), nexus="A"), SenseKey.ILLEGAL_REQUEST, 0x20)


def test_ua_reported_before_data_is_touched() -> None:
    lu = fresh()
    result = run(lu, rw10(Opcode.WRITE_10, 0, 1), b"\xaa" * 512, nexus="A")
    assert_check(result, SenseKey.UNIT_ATTENTION, 0x29)
    assert bytes(lu.backend.view[:512]) == bytes(512)  # type: ignore[attr-defined]


def test_nexus_loss_and_forget(mem_lu: LogicalUnit) -> None:
    assert_good(run(mem_lu, TUR, nexus="A"))
    mem_lu.nexus_lost("A")
    mem_lu.nexus_lost("never-seen")  # harmless
    assert_check(run(mem_lu, TUR, nexus="A"), SenseKey.UNIT_ATTENTION, 0x29, 0x07)
    mem_lu.unit_attentions.forget("A")
    assert "A" not in mem_lu.unit_attentions.pending


def test_peek_does_not_consume() -> None:
    lu = fresh()
    assert lu.unit_attentions.peek("new") is not None
    assert "new" not in lu.unit_attentions.pending
    assert_check(run(lu, TUR, nexus="new"), SenseKey.UNIT_ATTENTION, 0x29)
    assert lu.unit_attentions.peek("new") is None


def test_not_ready_lun(mem_lu: LogicalUnit) -> None:
    mem_lu.not_ready = MEDIUM_NOT_PRESENT
    assert_check(run(mem_lu, TUR), SenseKey.NOT_READY, 0x3A)
    assert_check(run(mem_lu, rw10(Opcode.READ_10, 0, 1)), SenseKey.NOT_READY, 0x3A)
    assert mem_lu.prepare(rw10(Opcode.WRITE_10, 0, 1)).error == MEDIUM_NOT_PRESENT
    assert_good(run(mem_lu, inquiry()))
    s = Sense.decode(assert_good(run(mem_lu, request_sense())))
    assert (s.key, s.asc) == (SenseKey.NOT_READY, 0x3A)
    mem_lu.not_ready = None
    assert_good(run(mem_lu, TUR))


def test_tur_reserved_bytes(mem_lu: LogicalUnit) -> None:
    assert assert_check(run(mem_lu, bytes([0, 0, 0, 1, 0, 0])), 5, 0x24).field_pointer == (True, 3, 0)
    assert mem_lu.prepare(TUR).ok and mem_lu.prepare(TUR).direction == "none"

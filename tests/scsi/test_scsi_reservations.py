"""PERSISTENT RESERVE IN/OUT and RESERVE/RELEASE: conflicts across I_T nexuses, unit attentions."""

from __future__ import annotations

import struct

import pytest
from scsi_testlib import assert_check, assert_good, run, rw10

from datamover.scsi import LogicalUnit, Opcode, ScsiStatus, SenseKey
from datamover.scsi.commands.reservations import EXCLUSIVE_ACCESS, WRITE_EXCLUSIVE, WRITE_EXCLUSIVE_AR

A = "iqn.a,i,0x1|iqn.t"
B = "iqn.b,i,0x2|iqn.t"
BS = 512


def prout(sa: int, key: int, sa_key: int = 0, kind: int = 0, flags: int = 0) -> tuple[bytes, bytes]:
    cdb = struct.pack(">BBB2xIB", Opcode.PERSISTENT_RESERVE_OUT, sa, kind, 24, 0).ljust(16, b"\0")
    return cdb, struct.pack(">QQ4xBx2x", key, sa_key, flags)


def prin(sa: int, alloc: int = 1024) -> bytes:
    return struct.pack(">BB5xHB", Opcode.PERSISTENT_RESERVE_IN, sa, alloc, 0).ljust(16, b"\0")


def do(lu: LogicalUnit, nexus: str, sa: int, key: int, sa_key: int = 0, kind: int = 0) -> object:
    cdb, data = prout(sa, key, sa_key, kind)
    return run(lu, cdb, data, nexus=nexus)


def conflict(result: object) -> None:
    assert result.status == ScsiStatus.RESERVATION_CONFLICT and result.sense is None  # type: ignore[attr-defined]


def read(lu: LogicalUnit, nexus: str) -> object:
    return run(lu, rw10(Opcode.READ_10, 0, 1), nexus=nexus)


def write(lu: LogicalUnit, nexus: str) -> object:
    return run(lu, rw10(Opcode.WRITE_10, 0, 1), bytes(BS), nexus=nexus)


def test_register_read_keys_and_generation(mem_lu: LogicalUnit) -> None:
    assert_good(do(mem_lu, A, 0, 0, 0x11))
    assert_good(do(mem_lu, B, 6, 0x999, 0x22))  # REGISTER AND IGNORE EXISTING KEY
    gen, length = struct.unpack_from(">II", data := assert_good(run(mem_lu, prin(0), nexus=A)))
    assert gen == 2 and sorted(struct.unpack_from(">QQ", data, 8)) == [0x11, 0x22]
    conflict(do(mem_lu, A, 0, 0x99, 0x33))  # wrong key
    assert_good(do(mem_lu, A, 0, 0x11, 0))  # unregister
    assert struct.unpack_from(">II", assert_good(run(mem_lu, prin(0), nexus=A))) == (3, 8)


def test_write_exclusive_and_exclusive_access(mem_lu: LogicalUnit) -> None:
    assert_good(do(mem_lu, A, 0, 0, 0xA))
    assert_good(do(mem_lu, B, 0, 0, 0xB))
    assert_good(do(mem_lu, A, 1, 0xA, kind=WRITE_EXCLUSIVE))
    data = assert_good(run(mem_lu, prin(1), nexus=B))
    assert struct.unpack_from(">IIQ", data)[1:] == (16, 0xA) and data[21] == WRITE_EXCLUSIVE
    assert_good(write(mem_lu, A))
    assert_good(read(mem_lu, B))
    conflict(write(mem_lu, B))
    conflict(do(mem_lu, B, 1, 0xB, kind=WRITE_EXCLUSIVE))  # someone else holds it
    assert_check(do(mem_lu, A, 2, 0xA, kind=EXCLUSIVE_ACCESS), SenseKey.ILLEGAL_REQUEST, 0x26, 0x04)
    assert_good(do(mem_lu, A, 2, 0xA, kind=WRITE_EXCLUSIVE))
    assert_good(write(mem_lu, B))
    assert_good(do(mem_lu, A, 1, 0xA, kind=EXCLUSIVE_ACCESS))
    conflict(read(mem_lu, B))
    assert_good(run(mem_lu, prin(0), nexus=B))  # PR IN is always allowed


def test_all_registrants_and_preempt(mem_lu: LogicalUnit) -> None:
    assert_good(do(mem_lu, A, 0, 0, 0xA))
    assert_good(do(mem_lu, B, 0, 0, 0xB))
    assert_good(do(mem_lu, A, 1, 0xA, kind=WRITE_EXCLUSIVE_AR))
    assert_good(write(mem_lu, B))  # every registrant holds it
    # B preempts A's registration: A gets REGISTRATIONS PREEMPTED
    assert_good(do(mem_lu, B, 4, 0xB, 0xA, kind=WRITE_EXCLUSIVE_AR))
    assert_check(run(mem_lu, rw10(Opcode.READ_10, 0, 1), nexus=A), SenseKey.UNIT_ATTENTION, 0x2A, 0x05)
    conflict(write(mem_lu, A))
    conflict(do(mem_lu, A, 0, 0xA, 0xC))  # A's key is gone


def test_clear_gives_preempted_attention(mem_lu: LogicalUnit) -> None:
    assert_good(do(mem_lu, A, 0, 0, 0xA))
    assert_good(do(mem_lu, B, 0, 0, 0xB))
    assert_good(do(mem_lu, A, 1, 0xA, kind=EXCLUSIVE_ACCESS))
    assert_good(do(mem_lu, A, 3, 0xA))
    assert_check(read(mem_lu, B), SenseKey.UNIT_ATTENTION, 0x2A, 0x03)
    assert_good(read(mem_lu, B))
    assert mem_lu.reservation_gate is None  # nothing reserved: the hot path is back to one test


@pytest.mark.parametrize("bad", ["scope", "type", "length", "aptpl"])
def test_prout_field_errors(mem_lu: LogicalUnit, bad: str) -> None:
    cdb, data = prout(1, 0, kind=WRITE_EXCLUSIVE)
    if bad == "scope":
        cdb = cdb[:2] + bytes((0x10 | WRITE_EXCLUSIVE,)) + cdb[3:]
        assert_check(run(mem_lu, cdb, data), SenseKey.ILLEGAL_REQUEST, 0x24)
    elif bad == "type":
        cdb = cdb[:2] + bytes((0x02,)) + cdb[3:]
        assert_check(run(mem_lu, cdb, data), SenseKey.ILLEGAL_REQUEST, 0x24)
    elif bad == "length":
        cdb = cdb[:8] + bytes((20,)) + cdb[9:]
        assert_check(run(mem_lu, cdb, data[:20]), SenseKey.ILLEGAL_REQUEST, 0x1A)
    else:
        cdb, data = prout(0, 0, 0xA, flags=0x01)
        assert_check(run(mem_lu, cdb, data), SenseKey.ILLEGAL_REQUEST, 0x26)


def test_prin_capabilities_and_bad_service_action(mem_lu: LogicalUnit) -> None:
    caps = assert_good(run(mem_lu, prin(2)))
    assert struct.unpack_from(">H", caps)[0] == 8 and caps[3] & 0x80  # TMV
    assert_check(run(mem_lu, prin(4)), SenseKey.ILLEGAL_REQUEST, 0x24)
    assert_good(do(mem_lu, A, 0, 0, 0xA))
    full = assert_good(run(mem_lu, prin(3)))
    assert struct.unpack_from(">Q", full, 8)[0] == 0xA and b"iqn.a,i,0x1" in full


def test_reserve6_conflicts_and_release(mem_lu: LogicalUnit) -> None:
    reserve = bytes((Opcode.RESERVE_6,)) + bytes(15)
    release = bytes((Opcode.RELEASE_6,)) + bytes(15)
    mode_sense = bytes((Opcode.MODE_SENSE_6, 0, 0x3F, 0, 255, 0)).ljust(16, b"\0")
    assert_good(run(mem_lu, reserve, nexus=A))
    assert_good(run(mem_lu, reserve, nexus=A))
    conflict(run(mem_lu, reserve, nexus=B))
    assert_good(run(mem_lu, release, nexus=B))  # a no-op
    conflict(run(mem_lu, mode_sense, nexus=B))
    assert_good(run(mem_lu, mode_sense, nexus=A))
    conflict(do(mem_lu, B, 0, 0, 0xB))
    mem_lu.nexus_lost(A)  # the holder's session ended
    assert_good(run(mem_lu, reserve, nexus=B))
    mem_lu.lu_reset()  # a reset releases it
    assert mem_lu.reservation_gate is None


def test_persistent_blocks_reserve6(mem_lu: LogicalUnit) -> None:
    assert_good(do(mem_lu, A, 0, 0, 0xA))
    assert_good(do(mem_lu, A, 1, 0xA, kind=WRITE_EXCLUSIVE))
    conflict(run(mem_lu, bytes((Opcode.RESERVE_6,)) + bytes(15), nexus=B))
    conflict(run(mem_lu, bytes((Opcode.RESERVE_6,)) + bytes(15), nexus=A))

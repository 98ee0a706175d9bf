"""CDB builders and assertions shared by the SCSI tests (imported by basename)."""

from __future__ import annotations

import struct

from datamover.scsi import LogicalUnit, ScsiRequest, ScsiResult, ScsiStatus, Sense

NEXUS = "iqn.test:init,isid=1,iqn.test:tgt"


def rw10(op: int, lba: int, n: int, flags: int = 0, group: int = 0, control: int = 0) -> bytes:
    return struct.pack(">BBIBHB", op, flags, lba, group, n, control).ljust(16, b"\0")


def rw12(op: int, lba: int, n: int, flags: int = 0, group: int = 0, control: int = 0) -> bytes:
    return struct.pack(">BBIIBB", op, flags, lba, n, group, control).ljust(16, b"\0")


def rw16(op: int, lba: int, n: int, flags: int = 0, group: int = 0, control: int = 0) -> bytes:
    return struct.pack(">BBQIBB", op, flags, lba, n, group, control)


def rw6(op: int, lba: int, n: int, control: int = 0) -> bytes:
    return struct.pack(">BBHBB", op, (lba >> 16) & 0x1F, lba & 0xFFFF, n, control).ljust(16, b"\0")


def inquiry(evpd: bool = False, page: int = 0, alloc: int = 255, byte1: int = 0) -> bytes:
    return struct.pack(">BBBHB", 0x12, byte1 | int(evpd), page, alloc, 0).ljust(16, b"\0")


def run(lu: LogicalUnit, cdb: bytes, data: object = None, nexus: str = NEXUS, **kw: object) -> ScsiResult:
    return lu.execute(ScsiRequest(cdb, data, nexus, **kw))  # type: ignore[arg-type]


def assert_good(result: ScsiResult) -> bytes:
    assert result.status == ScsiStatus.GOOD, f"expected GOOD, got {result}"
    assert result.sense is None
    return bytes(result.data_in) if result.data_in is not None else b""


def assert_check(result: ScsiResult, key: int, asc: int, ascq: int = 0) -> Sense:
    assert result.status == ScsiStatus.CHECK_CONDITION, f"expected CHECK CONDITION, got {result}"
    sense = result.sense
    assert sense is not None
    assert (sense.key, sense.asc, sense.ascq) == (key, asc, ascq), f"got {sense}"
    # what goes on the wire must parse back to the same condition
    assert Sense.decode(sense.encode()) == sense
    return sense

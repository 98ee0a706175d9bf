from __future__ import annotations

import struct

import pytest
from scsi_testlib import assert_check, assert_good, inquiry, run

from datamover.scsi import LogicalUnit, LunConfigError, MemoryBackend
from datamover.scsi.constants import VpdPage


def test_standard_inquiry(mem_lu: LogicalUnit) -> None:
    data = assert_good(run(mem_lu, inquiry(alloc=255)))
    assert len(data) == 96
    assert data[0] == 0x00  # connected direct-access block device
    assert data[2] in (0x06, 0x07)  # SPC-4 or SPC-5
    assert data[3] & 0x0F == 2 and data[3] & 0x10  # response format 2, HISUP
    assert data[4] == len(data) - 5
    assert data[7] & 0x02  # CMDQUE
    assert data[8:16] == b"DATAMOVR"
    assert data[16:32] == b"datamover LUN   "
    assert data[32:36] == b"0001"
    versions = struct.unpack(">8H", data[58:74])
    assert 0x0460 in versions and 0x0960 in versions


def test_inquiry_truncated_to_allocation_length(mem_lu: LogicalUnit) -> None:
    plan = mem_lu.prepare(inquiry(alloc=36))
    assert (plan.direction, plan.data_in_length) == ("read", 36)
    data = assert_good(run(mem_lu, inquiry(alloc=36)))
    assert len(data) == 36 and data[4] == 91  # ADDITIONAL LENGTH still tells the full size
    assert assert_good(run(mem_lu, inquiry(alloc=0))) == b""
    assert mem_lu.prepare(inquiry(alloc=0)).direction == "none"


def test_custom_identity() -> None:
    lu = LogicalUnit(MemoryBackend(1 << 20), vendor="ACME", product="Disk", revision="9", serial="S1")
    data = assert_good(run(lu, inquiry()))
    assert data[8:36] == b"ACME    Disk            9   "


@pytest.mark.parametrize(
    "kwargs",
    [
        {"vendor": "TOOLONGVENDOR"},
        {"product": "x" * 17},
        {"revision": "12345"},
        {"vendor": "caf\u00e9"},
        {"serial": ""},
        {"serial": "has space"},
        {"device_id": b"\x50" + bytes(3)},
        {"device_id": b"\x60" + bytes(7)},  # NAA 6 is 16 bytes
        {"block_size": 1000},
        {"block_size": 256},
        {"physical_block_size": 1024 + 512},
        {"max_transfer_bytes": 100},
        {"naa_oui": 1 << 24},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(LunConfigError):
        LogicalUnit(MemoryBackend(1 << 20), **kwargs)  # type: ignore[arg-type]


def test_backend_not_multiple_of_block_size() -> None:
    with pytest.raises(LunConfigError):
        LogicalUnit(MemoryBackend(1536), block_size=1024)


def vpd(lu: LogicalUnit, page: int) -> bytes:
    data = assert_good(run(lu, inquiry(evpd=True, page=page, alloc=0xFFFF)))
    assert data[0] == 0x00 and data[1] == page
    assert int.from_bytes(data[2:4], "big") == len(data) - 4
    return data


def test_vpd_supported_pages(mem_lu: LogicalUnit) -> None:
    pages = list(vpd(mem_lu, 0x00)[4:])
    assert pages == sorted(pages)
    assert {0x00, 0x80, 0x83, 0xB0, 0xB1} <= set(pages)
    # every listed page is served
    for page in pages:
        vpd(mem_lu, page)


def test_vpd_serial(mem_lu: LogicalUnit) -> None:
    assert vpd(mem_lu, 0x80)[4:] == b"TESTSERIAL01"


def parse_designators(body: bytes) -> list[tuple[int, int, int, bytes]]:
    out, pos = [], 0
    while pos < len(body):
        code_set, b1, _, length = body[pos : pos + 4]
        out.append((code_set & 0x0F, (b1 >> 4) & 0x3, b1 & 0x0F, body[pos + 4 : pos + 4 + length]))
        pos += 4 + length
    assert pos == len(body)
    return out


def test_vpd_device_identification(mem_lu: LogicalUnit) -> None:
    des = parse_designators(vpd(mem_lu, 0x83)[4:])
    naa = [d for d in des if d[2] == 0x3]
    assert len(naa) == 1
    code_set, assoc, _, ident = naa[0]
    assert code_set == 1 and assoc == 0 and len(ident) == 8 and ident[0] >> 4 == 5  # IEEE Registered
    t10 = [d for d in des if d[2] == 0x1]
    assert t10 and t10[0][0] == 2 and t10[0][3] == b"DATAMOVRTESTSERIAL01"


def test_device_id_differs_per_serial_and_can_be_given() -> None:
    a = LogicalUnit(MemoryBackend(1 << 20), serial="A")
    b = LogicalUnit(MemoryBackend(1 << 20), serial="B")
    assert a.device_id != b.device_id
    eui = bytes.fromhex("0011223344556677")
    c = LogicalUnit(MemoryBackend(1 << 20), serial="C", device_id=eui, power_on_ua=False)
    des = parse_designators(vpd(c, 0x83)[4:])
    assert (1, 0, 0x2, eui) in des  # EUI-64
    naa6 = bytes.fromhex("6001405" + "0" * 25)
    d = LogicalUnit(MemoryBackend(1 << 20), serial="D", device_id=naa6, power_on_ua=False)
    assert (1, 0, 0x3, naa6) in parse_designators(vpd(d, 0x83)[4:])


def test_vpd_block_limits() -> None:
    lu = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False, max_transfer_bytes=1 << 20)
    data = vpd(lu, 0xB0)
    assert len(data) == 64
    granularity, max_len, opt_len = struct.unpack_from(">HII", data, 6)
    assert max_len == (1 << 20) // 512
    assert 0 < opt_len <= max_len and granularity == 8


def test_vpd_block_device_characteristics(mem_lu: LogicalUnit) -> None:
    data = vpd(mem_lu, 0xB1)
    assert len(data) == 64 and data[4:6] == b"\x00\x01"  # non-rotating


def test_evpd_zero_with_page_code_is_invalid(mem_lu: LogicalUnit) -> None:
    sense = assert_check(run(mem_lu, inquiry(evpd=False, page=0x80)), 5, 0x24)
    assert sense.field_pointer == (True, 2, None)
    assert mem_lu.prepare(inquiry(evpd=False, page=0x80)).error == sense


def test_unsupported_vpd_page(mem_lu: LogicalUnit) -> None:
    assert_check(run(mem_lu, inquiry(evpd=True, page=0xC7)), 5, 0x24)
    assert not mem_lu.prepare(inquiry(evpd=True, page=0xC7)).ok


def test_cmddt_and_reserved_bits(mem_lu: LogicalUnit) -> None:
    assert assert_check(run(mem_lu, inquiry(byte1=0x02)), 5, 0x24).field_pointer == (True, 1, 1)
    assert assert_check(run(mem_lu, inquiry(byte1=0x40)), 5, 0x24).field_pointer == (True, 1, 6)


def test_added_vpd_page_is_listed(mem_lu: LogicalUnit) -> None:
    mem_lu.vpd_pages[VpdPage.EXTENDED_INQUIRY] = lambda lu: bytes((0, 0x86, 0, 4, 0, 0, 0, 0))
    assert 0x86 in vpd(mem_lu, 0x00)[4:]
    assert vpd(mem_lu, 0x86) == bytes((0, 0x86, 0, 4, 0, 0, 0, 0))
    # other LUs keep their own page set
    other = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False)
    assert 0x86 not in vpd(other, 0x00)[4:]
    # a fully provisioned LU has no logical block provisioning page
    assert 0xB2 in vpd(other, 0x00)[4:]
    full = LogicalUnit(MemoryBackend(1 << 20), power_on_ua=False, thin=False)
    assert 0xB2 not in vpd(full, 0x00)[4:]

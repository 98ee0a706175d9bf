"""tshark decodes our initiator talking to our target over TCP, digests off and on, cleanly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from datamover.di import Portal
from datamover.initiator import InitiatorConfig, InitiatorSession
from datamover.plugin import create_transport
from tests.interop.conftest import INITIATOR_IQN, needs, peer_or_skip
from tools.interop import start_our_target
from tools.interop.capture import digest_fields, dropped_segments, expert_info, iscsi_opcodes, start_capture

BLOCK = 512


async def _traffic(host: str, port: int, iqn: str, digests: str) -> dict[str, str]:
    """Login, discovery-free I/O of several sizes (immediate data, R2T, Data-In), TMF, NOP, logout."""
    config = InitiatorConfig(name=INITIATOR_IQN, keys={"HeaderDigest": digests, "DataDigest": digests},
                             login_timeout=10.0)
    session = InitiatorSession(create_transport("tcp", {}), Portal(host, port), config, iqn, recover=False)
    await session.login()
    try:
        agreed = dict(session.agreed)
        await session.report_luns()
        await session.inquiry(0)
        for size in (512, 4096, 65536, 1 << 20):
            data = os.urandom(size)
            await session.write_blocks(0, 64, data, BLOCK)
            assert bytes(await session.read_blocks(0, 64, size // BLOCK, BLOCK)) == data
        await session.nop(b"ping")
        assert (await session.abort_task(0x12345, 0)) in (0, 1)
    finally:
        await session.logout()
    return agreed


@pytest.mark.parametrize("digests", ["None", "CRC32C"])
async def test_capture_decodes_without_errors(tmp_path: Path, digests: str) -> None:
    needs("tshark")
    keys = {"HeaderDigest": "CRC32C,None", "DataDigest": "CRC32C,None"}
    with start_our_target(tmp_path / "lun.img", 64 << 20, log_dir=tmp_path, keys=keys) as target:
        pcap = tmp_path / f"digests-{digests}.pcapng"
        capture = peer_or_skip(lambda: start_capture(target.port, pcap))
        try:
            agreed = await _traffic(target.host, target.port, target.iqn, digests)
        finally:
            capture.stop()
    assert agreed.get("HeaderDigest") == digests and agreed.get("DataDigest") == digests, agreed
    lost = dropped_segments(pcap, target.port)
    if lost:
        pytest.skip(f"the capture lost {lost} TCP segment(s) (machine too busy); decode would be partial")
    opcodes = iscsi_opcodes(pcap, target.port)
    names = " ".join(opcodes)
    # Login, SCSI Command/Response, Data-In, R2T/Data-Out, NOP, TMF and Logout all decoded
    for opcode in ("0x03", "0x23", "0x01", "0x21", "0x25", "0x00", "0x20", "0x02", "0x22", "0x06", "0x26"):
        assert opcodes.get(opcode, 0) > 0, f"no PDU with opcode {opcode} decoded; saw {names}"
    report = expert_info(pcap, target.port)
    assert report.malformed == 0, report.raw
    assert not report.errors, report.raw
    if digests == "CRC32C":
        seen = digest_fields(pcap, target.port)
        assert seen["iscsi.headerdigest32"] > 0, f"Wireshark decoded no header digest: {seen}"
        assert seen["iscsi.datadigest32"] > 0, f"Wireshark decoded no data digest: {seen}"

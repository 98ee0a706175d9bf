"""A capture of an iSER session on the soft provider, decoded by tshark (RFC 7145 on the wire).

tshark sees iSER and iSCSI inside RoCEv2: every SCSI command is matched with its response,
and every RDMA Write / Read carries an STag that a command advertised. The ICRC of every
frame is checked here (tshark does not check it).
"""

from __future__ import annotations

import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from tests.conftest import make_session, running_target

pytestmark = pytest.mark.skipif(shutil.which("tshark") is None,
                                reason="tshark is not installed (scripts/install-peers.sh installs it)")


def _frames(path: Path) -> list[bytes]:
    data = path.read_bytes()
    frames, offset = [], 24
    while offset + 16 <= len(data):
        _, _, incl, _ = struct.unpack_from("<IIII", data, offset)
        frames.append(data[offset + 16:offset + 16 + incl])
        offset += 16 + incl
    return frames


async def _captured_session(path: Path) -> int:
    from datamover_iser.transport import close_captures

    options = {"provider": "soft", "fabric": "inproc", "capture": str(path)}
    keys = {"TargetRecvDataSegmentLength": "8192", "InitialR2T": "Yes", "MaxBurstLength": "65536"}
    async with running_target("iser", transport_options=options, keys=keys) as (_, portal):
        session = make_session("iser", portal, transport_options=options, keys=keys)
        await session.login()
        rng = random.Random(6)
        buffer = session.alloc_buffer(256 * 1024)
        for lba, size in [(0, 4096), (64, 256 * 1024), (1024, 16384)]:
            buffer[:size] = rng.randbytes(size)
            await session.write_blocks(0, lba, buffer[:size])
            await session.read_blocks(0, lba, size // 512, buffer=buffer[:size])
        await session.logout()
    close_captures()
    return portal.port


def _tshark(path: Path, port: int, *args: str) -> str:
    result = subprocess.run(["tshark", "-r", str(path), "--disable-heuristic", "rpcrdma_infiniband",
                             "-o", f"iser.target_ports:{port}", *args],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout


async def test_capture_decodes_as_iser_and_iscsi(tmp_path: Path) -> None:
    from datamover_iser.verbs.pcap import check_icrc

    path = tmp_path / "iser.pcap"
    port = await _captured_session(path)
    frames = _frames(path)
    assert frames and all(check_icrc(frame) for frame in frames), "a frame's ICRC does not verify"

    rows = _tshark(path, port, "-T", "fields", "-E", "separator=|", "-e", "iscsi.opcode",
                   "-e", "iscsi.initiatortasktag", "-e", "iser.read_stag", "-e", "iser.write_stag",
                   "-e", "infiniband.reth.r_key", "-e", "infiniband.bth.opcode")
    commands: set[str] = set()
    responses: set[str] = set()
    advertised: set[int] = set()
    rdma_keys: list[int] = []
    for line in rows.splitlines():
        opcode, itt, read_stag, write_stag, rkey, bth = (line.split("|") + [""] * 6)[:6]
        if opcode in ("0x01", "1"):
            commands.add(itt)
        if opcode in ("0x21", "33"):
            responses.add(itt)
        for stag in (read_stag, write_stag):
            if stag:
                advertised.add(int(stag, 0))
        if rkey:
            rdma_keys.append(int(rkey, 0))
    assert len(commands) >= 6, rows
    assert commands <= responses, f"commands without a response: {commands - responses}"
    assert rdma_keys, "no RDMA Write/Read in the capture"
    advertised.discard(0)
    assert set(rdma_keys) <= advertised, f"RDMA with STags nobody advertised: {set(rdma_keys) - advertised}"

    expert = _tshark(path, port, "-q", "-z", "expert")
    assert "Malformed" not in expert and "Error" not in expert.split("Warnings")[0], expert

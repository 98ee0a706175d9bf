"""Capture: a scripted iSER-like exchange on the soft provider, written as RoCEv2 frames.

Checks every frame's ICRC against scapy's RoCE layer and the project's own implementation,
and (when tshark is installed) that tshark recognises every frame, finds no malformed
packet, and decodes iSER and iSCSI on top (with the CM handshake in the capture).
"""

from __future__ import annotations

import asyncio
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from datamover_iser.verbs import Access, ConnParam, MWBind, QPCap, RecvWR, SendWR, WROpcode, sge_of
from datamover_iser.verbs.pcap import PCAP_GLOBAL, PCAP_RECORD, PcapWriter, check_icrc, icrc
from datamover_iser.verbs.soft import SoftProvider
from datamover_iser.verbs.soft.inproc import InprocFabric

RW = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ
ISER = struct.Struct(">B3xIQIQ")


def scsi_cmd(itt: int, read: bool, length: int) -> bytes:
    cdb = struct.pack(">BBIBHB", 0x28 if read else 0x2A, 0, 0, 0, length // 512, 0).ljust(16, b"\0")
    flags = 0x80 | (0x40 if read else 0x20) | 0x01
    return struct.pack(">BBHB3s8sIIII", 0x01, flags, 0, 0, b"\0\0\0", bytes(8), itt, length, 1, 1) + cdb


def scsi_rsp(itt: int) -> bytes:
    return struct.pack(">BBBBB3s8sIIIIIIII", 0x21, 0x80, 0, 0, 0, b"\0\0\0", bytes(8), itt, 0, 1, 2, 2, 0, 0, 0)


def read_pcap(path: Path) -> list[bytes]:
    raw = path.read_bytes()
    out, off = [], PCAP_GLOBAL.size
    while off < len(raw):
        _, _, caplen, _ = PCAP_RECORD.unpack_from(raw, off)
        off += PCAP_RECORD.size
        out.append(raw[off:off + caplen])
        off += caplen
    return out


async def scripted_exchange(path: Path) -> None:
    fabric = InprocFabric()
    with PcapWriter(str(path)) as cap:
        tgt = SoftProvider(fabric, capture=cap)
        ini = SoftProvider(fabric, capture=cap)
        lis = await tgt.listen("192.0.2.2", 3260)

        async def target() -> None:
            cid = await lis.get_request(timeout=5)
            cq = cid.context.create_cq(64)
            qp = cid.create_qp(cq, cq, QPCap())
            rx = cid.pd.alloc_buffer(8192)
            rmr = cid.pd.reg_mr(rx, Access.LOCAL_WRITE)
            for i in range(2):
                qp.post_recv(RecvWR(i, [sge_of(rmr, i * 4096, 4096)]))
            await cid.accept(qp, ConnParam(private_data=b"\0" * 4))
            data = cid.pd.alloc_buffer(4096)
            dmr = cid.pd.reg_mr(data, RW)
            data[:] = b"T" * 4096
            tx = cid.pd.alloc_buffer(256)
            tmr = cid.pd.reg_mr(tx, Access.LOCAL_WRITE)
            # READ(10): the command, data-in by RDMA WRITE, then the response
            (wc,) = await cq.wait(1)
            flags, wstag, wva, rstag, rva = ISER.unpack_from(rx, 0)
            qp.post_send(SendWR(1, WROpcode.RDMA_WRITE, [sge_of(dmr)], remote_addr=rva, rkey=rstag))
            tx[:76] = ISER.pack(0x10, 0, 0, 0, 0) + scsi_rsp(1)
            qp.post_send(SendWR(2, WROpcode.SEND, [sge_of(tmr, 0, 76)]))
            await cq.wait(2)
            # WRITE(10): data-out by RDMA READ, then a response that invalidates the STag
            (wc,) = await cq.wait(1)
            flags, wstag, wva, rstag, rva = ISER.unpack_from(rx, 4096)
            qp.post_send(SendWR(3, WROpcode.RDMA_READ, [sge_of(dmr)], remote_addr=wva, rkey=wstag))
            tx[:76] = ISER.pack(0x10, 0, 0, 0, 0) + scsi_rsp(2)
            qp.post_send(SendWR(4, WROpcode.SEND_WITH_INV, [sge_of(tmr, 0, 76)], invalidate_rkey=wstag))
            await cq.wait(2)
            await cid.get_event()  # DISCONNECTED

        task = asyncio.create_task(target())
        cid = await ini.resolve("192.0.2.2", 3260)
        cq = cid.context.create_cq(64)
        qp = cid.create_qp(cq, cq, QPCap())
        rx = cid.pd.alloc_buffer(8192)
        rmr = cid.pd.reg_mr(rx, Access.LOCAL_WRITE)
        for i in range(2):
            qp.post_recv(RecvWR(100 + i, [sge_of(rmr, i * 4096, 4096)]))
        await cid.connect(qp, ConnParam(private_data=bytes([0x80, 0, 0, 0])))
        din = cid.pd.alloc_buffer(4096)
        dinmr = cid.pd.reg_mr(din, RW)
        dout = cid.pd.alloc_buffer(4096)
        dout[:] = b"I" * 4096
        doutmr = cid.pd.reg_mr(dout, RW | Access.MW_BIND)
        mw = cid.pd.alloc_mw()
        bind = SendWR(9, WROpcode.BIND_MW, bind=MWBind(mw, doutmr, doutmr.addr, 4096, Access.REMOTE_READ))
        qp.post_send(bind)
        await cq.wait(1)
        tx = cid.pd.alloc_buffer(256)
        tmr = cid.pd.reg_mr(tx, Access.LOCAL_WRITE)
        tx[:76] = ISER.pack(0x14, 0, 0, dinmr.rkey, dinmr.addr) + scsi_cmd(1, True, 4096)
        qp.post_send(SendWR(10, WROpcode.SEND, [sge_of(tmr, 0, 76)]))
        await cq.wait(2)  # our SEND and the response
        assert bytes(din) == b"T" * 4096
        tx[:76] = ISER.pack(0x18, bind.rkey, doutmr.addr, 0, 0) + scsi_cmd(2, False, 4096)
        qp.post_send(SendWR(11, WROpcode.SEND, [sge_of(tmr, 0, 76)]))
        wcs = await cq.wait(2)
        assert all(w.ok for w in wcs)
        await cid.disconnect()
        await asyncio.wait_for(task, 5)
        await tgt.close()
        await ini.close()


async def test_capture_icrc_matches_scapy(tmp_path: Path) -> None:
    roce = pytest.importorskip("scapy.contrib.roce", reason="scapy is not installed")
    from scapy.layers.l2 import Ether

    path = tmp_path / "exchange.pcap"
    await scripted_exchange(path)
    frames = read_pcap(path)
    assert len(frames) >= 14
    for fr in frames:
        assert check_icrc(fr)
        pkt = Ether(fr)
        bth = pkt[roce.BTH]
        ours = bth.icrc
        bth.icrc = None
        rebuilt = bytes(Ether(bytes(pkt)))  # scapy recomputes the ICRC on build
        assert rebuilt[-4:] == struct.pack("<I", ours) or rebuilt[-4:] == struct.pack(">I", ours)
        assert rebuilt[-4:] == fr[-4:]
    # and a damaged frame does not verify
    bad = bytearray(frames[5])
    bad[60] ^= 1
    assert not check_icrc(bytes(bad))
    assert icrc(frames[0][14:-4]) == frames[0][-4:]


@pytest.mark.interop
async def test_tshark_decodes_capture(tmp_path: Path) -> None:
    tshark = shutil.which("tshark")
    if tshark is None:
        pytest.skip("tshark is not installed (apt-get install tshark)")
    path = tmp_path / "exchange.pcap"
    await scripted_exchange(path)
    n = len(read_pcap(path))
    res = subprocess.run(
        [tshark, "-r", str(path), "--disable-heuristic", "rpcrdma_infiniband", "-T", "fields",
         "-e", "frame.number", "-e", "frame.protocols", "-e", "_ws.malformed", "-e", "_ws.expert.severity"],
        capture_output=True, text=True, timeout=60,
    )
    assert res.returncode == 0, res.stderr
    rows = [line.split("\t") for line in res.stdout.splitlines()]
    assert len(rows) == n
    for number, protos, malformed, _severity in rows:
        assert "infiniband" in protos, (number, protos)
        assert not malformed, (number, protos)
        assert "malformed" not in protos, (number, protos)
    assert sum("iser" in r[1] for r in rows) >= 4
    assert sum("iscsi" in r[1] for r in rows) >= 4
    text = subprocess.run([tshark, "-r", str(path), "--disable-heuristic", "rpcrdma_infiniband"],
                          capture_output=True, text=True, timeout=60).stdout
    for expect in ("ConnectRequest", "ConnectReply", "ReadyToUse", "RDMA Write Only", "RDMA Read Request",
                   "RDMA Read Response Only", "Read(10)", "Write(10)"):
        assert expect in text, (expect, text)

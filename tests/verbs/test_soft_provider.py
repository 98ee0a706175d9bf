"""Soft-provider-only behaviour: the fault seam, RNR counting, registration errors, the CQ fd."""

from __future__ import annotations

import asyncio
import errno

import pytest

from datamover_iser.verbs import (
    Access,
    CMEventType,
    ConnParam,
    QPState,
    SendWR,
    VerbsError,
    WCStatus,
    WROpcode,
    sge_of,
)
from datamover_iser.verbs.faults import Fault, FaultPoint
from datamover_iser.verbs.soft import SoftProvider
from verbs_harness import Env

RW = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ


async def test_rnr_retry_count_is_honoured(soft_env: Env) -> None:
    if soft_env.iwarp:
        pytest.skip("no RNR on iWARP")
    seen: list[FaultPoint] = []

    def count(p: FaultPoint) -> None:
        if p.kind == "SEND":
            seen.append(p)
        return None

    a, b = await soft_env.pair(accept=ConnParam(rnr_retry=2, min_rnr_timer=1))
    a.provider.fault_hook = count  # type: ignore[attr-defined]
    tx, mr = a.buffer(32)
    a.qp.post_send(SendWR(1, WROpcode.SEND, [sge_of(mr)]))
    (wc,) = await a.cq.wait(1)
    assert wc.status == WCStatus.RNR_RETRY_EXC_ERR
    assert len(seen) == 3  # the first try and two retries


@pytest.mark.parametrize("fault", ["drop", "corrupt", "delay"])
async def test_lost_packets_are_retransmitted(soft_env: Env, fault: str) -> None:
    hit = {"n": 0}

    def lossy(p: FaultPoint) -> Fault | None:
        if p.kind in ("RDMA_WRITE", "ACK", "READ_RESP") and hit["n"] < 2:
            hit["n"] += 1
            return {"drop": Fault.drop(), "corrupt": Fault.corrupt(), "delay": Fault.delay(0.02)}[fault]
        return None

    a, b = await soft_env.pair()
    a.provider.fault_hook = lossy  # type: ignore[attr-defined]
    b.provider.fault_hook = lossy  # type: ignore[attr-defined]
    remote, rmr = b.buffer(4096, RW)
    src, smr = a.buffer(4096, fill=b"z")
    sink, kmr = a.buffer(4096, RW)
    a.qp.post_send(SendWR(1, WROpcode.RDMA_WRITE, [sge_of(smr)], remote_addr=rmr.addr, rkey=rmr.rkey))
    a.qp.post_send(SendWR(2, WROpcode.RDMA_READ, [sge_of(kmr)], remote_addr=rmr.addr, rkey=rmr.rkey))
    wcs = await a.cq.wait(2)
    assert [w.status for w in wcs] == [WCStatus.SUCCESS] * 2
    assert bytes(sink) == b"z" * 4096 and hit["n"] == 2


async def test_retry_exhausted(soft_env: Env) -> None:
    a, b = await soft_env.pair(connect=ConnParam(retry_count=2))
    a.provider.fault_hook = lambda p: Fault.drop() if p.kind == "RDMA_WRITE" else None  # type: ignore[attr-defined]
    remote, rmr = b.buffer(64, RW)
    src, smr = a.buffer(64)
    a.qp.post_send(SendWR(1, WROpcode.RDMA_WRITE, [sge_of(smr)], remote_addr=rmr.addr, rkey=rmr.rkey))
    (wc,) = await a.cq.wait(1, timeout=5)
    assert wc.status == WCStatus.RETRY_EXC_ERR
    assert a.qp.state == QPState.ERR


async def test_break_disconnects_both(soft_env: Env) -> None:
    a, b = await soft_env.pair()
    a.provider.fault_hook = lambda p: Fault.broken()  # type: ignore[attr-defined]
    src, smr = a.buffer(64)
    a.qp.post_send(SendWR(1, WROpcode.SEND, [sge_of(smr)]))
    (wc,) = await a.cq.wait(1)
    assert wc.status == WCStatus.WR_FLUSH_ERR
    assert (await a.cid.get_event()).type == CMEventType.DISCONNECTED
    assert (await b.cid.get_event()).type == CMEventType.DISCONNECTED
    assert b.qp.state == QPState.ERR


async def test_cq_fd_works_with_add_reader(soft_env: Env) -> None:
    a, b = await soft_env.pair()
    remote, rmr = b.buffer(64, RW)
    src, smr = a.buffer(64)
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    a.cq.req_notify()
    loop.add_reader(a.cq.fileno(), ready.set)
    try:
        a.qp.post_send(SendWR(1, WROpcode.RDMA_WRITE, [sge_of(smr)], remote_addr=rmr.addr, rkey=rmr.rkey))
        await asyncio.wait_for(ready.wait(), 5)
    finally:
        loop.remove_reader(a.cq.fileno())
    assert a.cq.get_event() is True and a.cq.get_event() is False
    (wc,) = a.cq.poll()
    assert wc.ok


async def test_registration_errors() -> None:
    p = SoftProvider("inproc")
    with pytest.raises(VerbsError) as e1:
        p.pd.reg_mr(b"read-only bytes", Access.LOCAL_WRITE)
    assert e1.value.errno == errno.EACCES
    with pytest.raises(VerbsError):
        p.pd.reg_mr(object(), Access.LOCAL_WRITE)
    with pytest.raises(VerbsError) as e3:
        p.pd.reg_mr(bytearray(16), Access.REMOTE_WRITE)  # needs LOCAL_WRITE
    assert e3.value.errno == errno.EINVAL
    buf = bytearray(4096)
    mr = p.pd.reg_mr(memoryview(buf)[100:200], Access.LOCAL_WRITE)
    mr.buf[0:3] = b"abc"
    assert buf[100:103] == b"abc"  # zero copy: the MR is the caller's memory
    with pytest.raises(VerbsError):
        p.context.create_cq(0)
    with pytest.raises(ValueError):
        SoftProvider("carrier-pigeon")
    await p.close()


async def test_shm_buffers_are_shared_memory() -> None:
    from datamover_iser.verbs.soft.shm import ShmFabric

    p = SoftProvider(ShmFabric("t-alloc"))
    view = p.pd.alloc_buffer(1 << 20)
    mr = p.pd.reg_mr(view[4096:], RW)
    assert mr.seg is not None and mr.seg_offset == 4096  # type: ignore[attr-defined]
    await p.close()

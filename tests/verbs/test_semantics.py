"""The rdma_rxe semantics table (rdma-without-hardware.md §3), row by row, on every backend.

Each test drives only the public verbs interface, so the same code runs on the soft provider
(every fabric, both personalities) and on pyverbs with a real device.
"""

from __future__ import annotations

import asyncio
import errno

import pytest

from datamover_iser.verbs import (
    Access,
    CMEventType,
    ConnParam,
    MWBind,
    QPCap,
    QPState,
    SGE,
    RecvWR,
    SendFlags,
    SendWR,
    WCFlags,
    WCOpcode,
    WCStatus,
    WROpcode,
    sge_of,
)

from verbs_harness import Env, Side

RW = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ
INLINE = SendFlags.INLINE | SendFlags.SIGNALED


def post_recv(side: Side, wr_id: int, size: int = 4096) -> memoryview:
    view, mr = side.buffer(size)
    side.qp.post_recv(RecvWR(wr_id, [sge_of(mr)]))
    return view


async def greet(a: Side, b: Side) -> None:
    """The active side sends first (iWARP/MPA requires it before the passive side may send)."""
    post_recv(b, 0xFEED, 64)
    hello, hmr = a.buffer(16, fill=b"hi")
    a.qp.post_send(SendWR(0xFEED, WROpcode.SEND, [sge_of(hmr)]))
    assert (await a.cq.wait(1))[0].ok
    assert (await b.rcq.wait(1))[0].ok


async def no_more(cq, settle: float = 0.05) -> None:
    await asyncio.sleep(settle)
    assert cq.poll() == []


async def test_send_to_posted_recv(env: Env) -> None:
    """Row 1: SEND 76 B -> SEND ok / RECV byte_len 76 (GRH flag on RoCE); both RTS."""
    rx: dict[str, memoryview] = {}
    a, b = await env.pair(before_accept=lambda s: rx.setdefault("b", post_recv(s, 1)))
    tx, txmr = a.buffer(256, fill=b"iSER")
    a.qp.post_send(SendWR(10, WROpcode.SEND, [sge_of(txmr, 0, 76)]))
    (wc,) = await a.cq.wait(1)
    assert (wc.wr_id, wc.status, wc.opcode, wc.byte_len) == (10, WCStatus.SUCCESS, WCOpcode.SEND, 76)
    (rc,) = await b.rcq.wait(1)
    assert (rc.wr_id, rc.status, rc.opcode, rc.byte_len) == (1, WCStatus.SUCCESS, WCOpcode.RECV, 76)
    if not env.iwarp:
        assert rc.wc_flags & WCFlags.GRH
    assert bytes(rx["b"][:76]) == bytes(tx[:76])
    assert a.qp.state == QPState.RTS and b.qp.state == QPState.RTS


async def test_write_and_read_have_no_responder_cqe(env: Env) -> None:
    """Row 2: RDMA WRITE 4096 / READ 4096: requester opcodes 1 and 2, nothing at the responder."""
    a, b = await env.pair()
    remote, rmr = b.buffer(8192, RW)
    src, smr = a.buffer(4096, fill=b"W")
    sink, kmr = a.buffer(4096, Access.LOCAL_WRITE | Access.REMOTE_WRITE)
    remote[4096:8192] = b"R" * 4096
    a.qp.post_send(SendWR(1, WROpcode.RDMA_WRITE, [sge_of(smr)], remote_addr=rmr.addr, rkey=rmr.rkey))
    a.qp.post_send(SendWR(2, WROpcode.RDMA_READ, [sge_of(kmr)], remote_addr=rmr.addr + 4096, rkey=rmr.rkey))
    wcs = await a.cq.wait(2)
    assert [(w.wr_id, w.status, w.opcode, w.byte_len) for w in wcs] == [
        (1, WCStatus.SUCCESS, WCOpcode.RDMA_WRITE, 4096),
        (2, WCStatus.SUCCESS, WCOpcode.RDMA_READ, 4096),
    ]
    assert bytes(remote[:4096]) == b"W" * 4096
    assert bytes(sink) == b"R" * 4096
    await no_more(b.cq)
    await no_more(b.rcq)
    assert a.qp.state == QPState.RTS and b.qp.state == QPState.RTS


async def test_send_with_invalidate(env: Env) -> None:
    """Row 3: SEND_WITH_INV invalidates the named (MW) rkey at the receiver; RECV reports it."""
    holder: dict[str, object] = {}
    a, b = await env.pair(before_connect=lambda s: holder.setdefault("rx", post_recv(s, 7)))
    await greet(a, b)
    # The active side (an iSER initiator) binds a type-2 window over its data buffer and
    # advertises the window's key; the passive side RDMA WRITEs into it, then invalidates it.
    din, dmr = a.buffer(4096, RW | Access.MW_BIND)
    mw = a.pd.alloc_mw()
    bind = SendWR(50, WROpcode.BIND_MW, bind=MWBind(mw, dmr, dmr.addr, 4096, Access.REMOTE_WRITE | Access.REMOTE_READ))
    a.qp.post_send(bind)
    (bwc,) = await a.cq.wait(1)
    assert (bwc.status, bwc.opcode) == (WCStatus.SUCCESS, WCOpcode.BIND_MW)
    stag = bind.rkey
    data, damr = b.buffer(4096, fill=b"D")
    hdr, hmr = b.buffer(64, fill=b"H")
    b.qp.post_send(SendWR(1, WROpcode.RDMA_WRITE, [sge_of(damr)], remote_addr=dmr.addr, rkey=stag))
    b.qp.post_send(SendWR(2, WROpcode.SEND_WITH_INV, [sge_of(hmr, 0, 28)], invalidate_rkey=stag))
    wcs = await b.cq.wait(2)
    assert [(w.wr_id, w.status) for w in wcs] == [(1, WCStatus.SUCCESS), (2, WCStatus.SUCCESS)]
    (rc,) = await a.rcq.wait(1)
    assert (rc.wr_id, rc.status, rc.opcode, rc.byte_len) == (7, WCStatus.SUCCESS, WCOpcode.RECV, 28)
    assert rc.wc_flags & WCFlags.WITH_INV and rc.invalidated_rkey == stag
    assert bytes(din) == b"D" * 4096  # RC ordering: the WRITE landed before the SEND completed
    # The key is dead now: the next WRITE through it is a remote access error.
    b.qp.post_send(SendWR(3, WROpcode.RDMA_WRITE, [sge_of(damr)], remote_addr=dmr.addr, rkey=stag))
    (wc,) = await b.cq.wait(1)
    assert wc.status == WCStatus.REM_ACCESS_ERR


async def test_bad_rkey_access_error_then_flush(env: Env) -> None:
    """Row 4: WRITE with rkey 0xdeadbeef, 2 WRs: REM_ACCESS_ERR then WR_FLUSH_ERR; both ERR."""
    a, b = await env.pair()
    remote, rmr = b.buffer(4096, RW)
    src, smr = a.buffer(4096, fill=b"x")
    a.qp.post_send([
        SendWR(1, WROpcode.RDMA_WRITE, [sge_of(smr)], remote_addr=rmr.addr, rkey=0xDEADBEEF),
        SendWR(2, WROpcode.RDMA_WRITE, [sge_of(smr)], remote_addr=rmr.addr, rkey=rmr.rkey),
    ])
    wcs = await a.cq.wait(2)
    assert [(w.wr_id, w.status) for w in wcs] == [(1, WCStatus.REM_ACCESS_ERR), (2, WCStatus.WR_FLUSH_ERR)]
    await no_more(b.cq)
    await no_more(b.rcq)
    assert a.qp.state == QPState.ERR and b.qp.state == QPState.ERR
    assert bytes(remote) == bytes(4096)


async def test_missing_mr_access_is_access_error(env: Env) -> None:
    """An rkey whose MR lacks REMOTE_WRITE (or a range overrun) is REM_ACCESS_ERR too."""
    a, b = await env.pair()
    ro, romr = b.buffer(4096, Access.LOCAL_WRITE | Access.REMOTE_READ)
    src, smr = a.buffer(4096)
    a.qp.post_send(SendWR(1, WROpcode.RDMA_WRITE, [sge_of(smr)], remote_addr=romr.addr, rkey=romr.rkey))
    (wc,) = await a.cq.wait(1)
    assert wc.status == WCStatus.REM_ACCESS_ERR
    a2, b2 = await env.pair()
    r2, r2mr = b2.buffer(4096, RW)
    s2, s2mr = a2.buffer(4096, Access.LOCAL_WRITE | Access.REMOTE_WRITE)
    a2.qp.post_send(SendWR(1, WROpcode.RDMA_READ, [sge_of(s2mr)], remote_addr=r2mr.addr + 1, rkey=r2mr.rkey))
    (wc,) = await a2.cq.wait(1)
    assert wc.status == WCStatus.REM_ACCESS_ERR


async def test_qp_without_remote_access_is_invalid_request(env: Env) -> None:
    """Row 5: responder QP lacking REMOTE_* access: REM_INV_REQ_ERR, recv flushed, both ERR."""
    a, b = await env.pair(before_accept=lambda s: post_recv(s, 77))
    b.qp.modify(access=Access.LOCAL_WRITE)  # RTS -> RTS dropping remote access (rxe pitfall 1)
    remote, rmr = b.buffer(4096, RW)
    src, smr = a.buffer(4096)
    a.qp.post_send([
        SendWR(1, WROpcode.RDMA_WRITE, [sge_of(smr)], remote_addr=rmr.addr, rkey=rmr.rkey),
        SendWR(2, WROpcode.SEND, [sge_of(smr, 0, 16)]),
    ])
    wcs = await a.cq.wait(2)
    assert [(w.wr_id, w.status) for w in wcs] == [(1, WCStatus.REM_INV_REQ_ERR), (2, WCStatus.WR_FLUSH_ERR)]
    (rc,) = await b.rcq.wait(1)
    assert (rc.wr_id, rc.status) == (77, WCStatus.WR_FLUSH_ERR)
    assert a.qp.state == QPState.ERR and b.qp.state == QPState.ERR


async def test_rnr_retry_exhausted(env: Env) -> None:
    """Row 6: SEND with no recv and the accept's rnr_retry=0: RNR_RETRY_EXC_ERR on the
    requester (its posted recv flushed, ERR); the responder stays RTS.

    iWARP has no RNR: the stream is terminated instead, both QPs end in ERR and both CM ids
    see DISCONNECTED (siw's behaviour)."""
    a, b = await env.pair(
        before_connect=lambda s: post_recv(s, 99),
        accept=ConnParam(rnr_retry=0),
    )
    tx, txmr = a.buffer(64)
    a.qp.post_send(SendWR(5, WROpcode.SEND, [sge_of(txmr, 0, 64)]))
    if env.iwarp:
        (wc,) = await a.cq.wait(1)
        assert wc.wr_id == 5
        (rc,) = await a.rcq.wait(1)
        assert (rc.wr_id, rc.status) == (99, WCStatus.WR_FLUSH_ERR)
        assert (await a.cid.get_event()).type == CMEventType.DISCONNECTED
        assert (await b.cid.get_event()).type == CMEventType.DISCONNECTED
        assert a.qp.state == QPState.ERR and b.qp.state == QPState.ERR
        return
    (wc,) = await a.cq.wait(1)
    assert (wc.wr_id, wc.status) == (5, WCStatus.RNR_RETRY_EXC_ERR)
    (rc,) = await a.rcq.wait(1)
    assert (rc.wr_id, rc.status) == (99, WCStatus.WR_FLUSH_ERR)
    assert a.qp.state == QPState.ERR
    assert b.qp.state == QPState.RTS
    await no_more(b.rcq)


async def test_rnr_recovers_when_recv_arrives(env: Env) -> None:
    """rnr_retry=7 retries for ever: a SEND that finds no recv completes once one is posted."""
    if env.iwarp:
        pytest.skip("iWARP has no RNR retry (see test_rnr_retry_exhausted)")
    a, b = await env.pair(accept=ConnParam(rnr_retry=7, min_rnr_timer=1))
    tx, txmr = a.buffer(64, fill=b"late")
    a.qp.post_send(SendWR(5, WROpcode.SEND, [sge_of(txmr, 0, 64)]))
    await asyncio.sleep(0.03)
    assert a.cq.poll() == []
    rx = post_recv(b, 1)
    (wc,) = await a.cq.wait(1)
    assert wc.status == WCStatus.SUCCESS
    (rc,) = await b.rcq.wait(1)
    assert rc.byte_len == 64 and bytes(rx[:4]) == b"late"


async def test_rc_ordering_read_after_write(env: Env) -> None:
    """A READ posted right behind a WRITE to the same bytes returns the WRITE's data, and a
    SEND behind a WRITE is received only after the WRITE's data is in place."""
    rxh: dict[str, memoryview] = {}
    a, b = await env.pair(before_accept=lambda s: rxh.setdefault("rx", post_recv(s, 1)))
    remote, rmr = b.buffer(1 << 16, RW, fill=b"o")
    src, smr = a.buffer(1 << 16, fill=b"N")
    back, bmr = a.buffer(1 << 16, Access.LOCAL_WRITE | Access.REMOTE_WRITE)
    for i in range(4):
        src[:1] = bytes([i])
        # each WRITE is the same buffer; the READ behind it must see the new bytes
        a.qp.post_send(SendWR(10 + i, WROpcode.RDMA_WRITE, [sge_of(smr)], remote_addr=rmr.addr, rkey=rmr.rkey))
        a.qp.post_send(SendWR(20 + i, WROpcode.RDMA_READ, [sge_of(bmr)], remote_addr=rmr.addr, rkey=rmr.rkey))
        wcs = await a.cq.wait(2)
        assert all(w.ok for w in wcs)
        assert bytes(back) == bytes(src)
    a.qp.post_send(SendWR(30, WROpcode.RDMA_WRITE, [sge_of(smr, 0, 100)], remote_addr=rmr.addr + 500, rkey=rmr.rkey,
                          send_flags=SendFlags.NONE))  # unsignaled
    a.qp.post_send(SendWR(31, WROpcode.SEND, [sge_of(smr, 0, 8)]))
    (rc,) = await b.rcq.wait(1)
    assert rc.ok and bytes(remote[500:600]) == bytes(src[:100])
    (wc,) = await a.cq.wait(1)
    assert wc.wr_id == 31  # the unsignaled WRITE produced no completion


async def test_multi_sge(env: Env) -> None:
    """Gather on SEND / WRITE, scatter on RECV / READ, across several SGEs."""
    cap = QPCap(max_send_sge=4, max_recv_sge=4)
    holder: dict[str, list] = {}

    def recv3(s: Side) -> None:
        parts = [s.buffer(n) for n in (10, 20, 100)]
        holder["rx"] = parts
        s.qp.post_recv(RecvWR(1, [sge_of(mr) for _, mr in parts]))

    a, b = await env.pair(cap=cap, before_accept=recv3)
    bufs = [a.buffer(n, fill=bytes([65 + i])) for i, n in enumerate((7, 13, 25))]
    a.qp.post_send(SendWR(1, WROpcode.SEND, [sge_of(mr) for _, mr in bufs]))
    (wc,) = await a.cq.wait(1)
    assert wc.ok and wc.byte_len == 45
    (rc,) = await b.rcq.wait(1)
    assert rc.byte_len == 45
    got = b"".join(bytes(v) for v, _ in holder["rx"])[:45]
    assert got == b"A" * 7 + b"B" * 13 + b"C" * 25
    remote, rmr = b.buffer(64, RW)
    a.qp.post_send(SendWR(2, WROpcode.RDMA_WRITE, [sge_of(mr) for _, mr in bufs], remote_addr=rmr.addr + 3, rkey=rmr.rkey))
    sinks = [a.buffer(n, Access.LOCAL_WRITE | Access.REMOTE_WRITE) for n in (5, 40)]
    a.qp.post_send(SendWR(3, WROpcode.RDMA_READ, [sge_of(mr) for _, mr in sinks], remote_addr=rmr.addr + 3, rkey=rmr.rkey))
    wcs = await a.cq.wait(2)
    assert [(w.status, w.byte_len) for w in wcs] == [(WCStatus.SUCCESS, 45), (WCStatus.SUCCESS, 45)]
    assert bytes(remote[3:48]) == got
    assert bytes(sinks[0][0]) + bytes(sinks[1][0]) == got
    with pytest.raises(OSError) as exc:
        a.qp.post_send(SendWR(4, WROpcode.SEND, [sge_of(bufs[0][1])] * 5))
    assert exc.value.errno == errno.EINVAL


async def test_inline_send(env: Env) -> None:
    """INLINE copies at post time: the buffer may be reused at once; over the cap is EINVAL."""
    rxh: dict[str, memoryview] = {}
    a, b = await env.pair(cap=QPCap(max_inline_data=64), before_accept=lambda s: rxh.setdefault("rx", post_recv(s, 1)))
    tx, txmr = a.buffer(128, fill=b"I")
    a.qp.post_send(SendWR(1, WROpcode.SEND, [sge_of(txmr, 0, 48)], send_flags=INLINE))
    tx[:48] = b"Z" * 48  # reuse immediately
    (wc,) = await a.cq.wait(1)
    assert wc.ok
    (rc,) = await b.rcq.wait(1)
    assert rc.byte_len == 48 and bytes(rxh["rx"][:48]) == b"I" * 48
    with pytest.raises(OSError) as exc:
        a.qp.post_send(SendWR(2, WROpcode.SEND, [sge_of(txmr, 0, 128)], send_flags=INLINE))
    assert exc.value.errno == errno.EINVAL


async def test_cq_overflow(env: Env) -> None:
    """A full send CQ loses completions and raises CQ_ERR; the requester QP carries on (rxe)."""
    a, b = await env.pair(cqe=4)
    remote, rmr = b.buffer(4096, RW)
    src, smr = a.buffer(64)
    n = a.cq.cqe + 4
    for i in range(n):
        a.qp.post_send(SendWR(i, WROpcode.RDMA_WRITE, [sge_of(smr)], remote_addr=rmr.addr, rkey=rmr.rkey))
    await asyncio.sleep(0.1)
    got = a.cq.poll(100)
    assert len(got) == a.cq.cqe
    events: list[str] = []
    for _ in range(50):  # the device reports it asynchronously (slowly in the lab's TCG guest)
        while (ev := a.cid.context.poll_async_event()) is not None:
            events.append(ev.type.name)
        if "CQ_ERR" in events:
            break
        await asyncio.sleep(0.1)
    assert "CQ_ERR" in events


async def test_qp_state_errors(env: Env) -> None:
    """Posting in the wrong state is EINVAL; illegal transitions are EINVAL; ERR flushes."""
    lis = await env.listener()
    del lis
    cid = await env.a.resolve(env.host, 1)  # resolve only: gives context and PD
    cq = cid.context.create_cq(16)
    qp = cid.pd.create_qp(cq, cq, QPCap())
    assert qp.state == QPState.RESET
    buf, mr = Side(cid, cq, qp, cq, env.a).buffer(64)
    with pytest.raises(OSError) as e1:
        qp.post_recv(RecvWR(1, [sge_of(mr)]))
    assert e1.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e2:
        qp.modify(QPState.RTS)
    assert e2.value.errno == errno.EINVAL
    qp.modify(QPState.INIT, access=Access.LOCAL_WRITE)
    qp.post_recv(RecvWR(2, [sge_of(mr)]))
    with pytest.raises(OSError) as e3:
        qp.post_send(SendWR(3, WROpcode.SEND, [sge_of(mr)]))
    assert e3.value.errno == errno.EINVAL
    with pytest.raises(OSError) as e4:
        qp.modify(QPState.RTR)  # no remote QP: the CM connects QPs
    assert e4.value.errno == errno.EINVAL
    qp.modify(QPState.ERR)
    # rdma_rxe leaves the refused SEND on its ring (the doorbell failed, not the queueing),
    # so on RoCE ERR flushes it too; iWARP (siw) refuses it outright. Send and receive
    # flushes come from different queues: their order is not defined (nor, for an error
    # completion, its opcode).
    flushed = {(w.wr_id, w.status) for w in await cq.wait(1 if env.iwarp else 2)}
    expect = {(2, WCStatus.WR_FLUSH_ERR)}
    if not env.iwarp:
        expect.add((3, WCStatus.WR_FLUSH_ERR))
    assert flushed == expect
    qp.post_recv(RecvWR(4, [sge_of(mr)]))
    if env.iwarp:
        (wc,) = await cq.wait(1)
        assert (wc.wr_id, wc.status) == (4, WCStatus.WR_FLUSH_ERR)
    else:
        # rdma_rxe (kernel 6.1): a receive has no doorbell, and the responder flushes its
        # queue only when it runs, so a receive posted in ERR is accepted and never completes
        await asyncio.sleep(0.3)
    assert cq.poll(16) == []
    qp.modify(QPState.RESET)
    assert qp.state == QPState.RESET
    qp.close()
    cid.close()


async def test_disconnect_while_operations_posted(env: Env) -> None:
    """Receives posted on both sides and a SEND stuck in RNR: disconnect flushes them all and
    both CM ids see DISCONNECTED."""
    a, b = await env.pair(
        before_connect=lambda s: [post_recv(s, 100 + i) for i in range(3)],
        accept=ConnParam(rnr_retry=7, min_rnr_timer=1),
    )
    for i in range(2):
        post_recv(b, 200 + i)
    big, bmr = a.buffer(64)
    if not env.iwarp:
        # Three SENDs: two consume b's receives, the third waits in RNR retry.
        for i in range(3):
            a.qp.post_send(SendWR(i, WROpcode.SEND, [sge_of(bmr)]))
        got = await a.cq.wait(2)
        assert [w.status for w in got] == [WCStatus.SUCCESS] * 2
        await b.rcq.wait(2)
    await a.cid.disconnect()
    # IB CM (RoCE): the DREQ's receiver reports at once; the sender reports when the
    # receiver's application answers with its own disconnect (the DREP), as on rdma_rxe.
    ev_b = await b.cid.get_event()
    await b.cid.disconnect()
    ev_a = await a.cid.get_event()
    assert ev_a.type == ev_b.type == CMEventType.DISCONNECTED
    flushed_a = await a.rcq.wait(3)
    assert sorted(w.wr_id for w in flushed_a) == [100, 101, 102]
    assert all(w.status == WCStatus.WR_FLUSH_ERR for w in flushed_a)
    if not env.iwarp:
        (stuck,) = await a.cq.wait(1)
        assert (stuck.wr_id, stuck.status) == (2, WCStatus.WR_FLUSH_ERR)
    else:
        flushed_b = await b.rcq.wait(2)
        assert all(w.status == WCStatus.WR_FLUSH_ERR for w in flushed_b)
    assert a.qp.state == QPState.ERR and b.qp.state == QPState.ERR


async def test_recv_too_small(env: Env) -> None:
    """A SEND longer than the posted receive: REM_OP_ERR at the requester; at the responder
    LOC_QP_OP_ERR on RoCE (what rdma_rxe reports, interop lab), LOC_LEN_ERR on iWARP."""
    a, b = await env.pair(before_accept=lambda s: post_recv(s, 1, 16))
    tx, txmr = a.buffer(64)
    a.qp.post_send(SendWR(1, WROpcode.SEND, [sge_of(txmr)]))
    (wc,) = await a.cq.wait(1)
    assert wc.status == WCStatus.REM_OP_ERR
    (rc,) = await b.rcq.wait(1)
    want = WCStatus.LOC_LEN_ERR if env.iwarp else WCStatus.LOC_QP_OP_ERR
    assert (rc.wr_id, rc.status) == (1, want)


async def test_bad_local_key(env: Env) -> None:
    """An SGE whose lkey is wrong fails locally with LOC_QP_OP_ERR (as on rdma_rxe) and the QP
    goes to ERR."""
    a, b = await env.pair()
    tx, txmr = a.buffer(64)
    a.qp.post_send(SendWR(1, WROpcode.SEND, [SGE(txmr.addr, 64, txmr.lkey ^ 0xFF00)]))
    (wc,) = await a.cq.wait(1)
    assert wc.status == WCStatus.LOC_QP_OP_ERR
    assert a.qp.state == QPState.ERR

"""What changes for a consumer between the RoCEv2 and iWARP personalities."""

from __future__ import annotations

import pytest

from datamover_iser.verbs import Access, IwarpOrderError, Personality, SendWR, WCStatus, WROpcode, sge_of
from verbs_harness import Env

RW = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ


async def test_read_sink_needs_remote_write_on_iwarp(env: Env) -> None:
    """iWARP: an RDMA READ response is a tagged write into the sink, which therefore needs
    REMOTE_WRITE; RoCE does not care."""
    a, b = await env.pair()
    remote, rmr = b.buffer(4096, RW, fill=b"r")
    sink, smr = a.buffer(4096, Access.LOCAL_WRITE)
    a.qp.post_send(SendWR(1, WROpcode.RDMA_READ, [sge_of(smr)], remote_addr=rmr.addr, rkey=rmr.rkey))
    (wc,) = await a.cq.wait(1)
    if env.iwarp:
        assert wc.status == WCStatus.LOC_PROT_ERR
    else:
        assert wc.status == WCStatus.SUCCESS and bytes(sink) == b"r" * 4096


async def test_passive_may_not_send_first_on_iwarp(env: Env) -> None:
    a, b = await env.pair()
    buf, mr = b.buffer(64)
    wr = SendWR(1, WROpcode.RDMA_WRITE, [sge_of(mr)], remote_addr=0, rkey=0)
    if env.iwarp:
        with pytest.raises(IwarpOrderError):
            b.qp.post_send(wr)
    else:
        b.qp.post_send(wr)  # allowed (and fails remotely: rkey 0)
        (wc,) = await b.cq.wait(1)
        assert wc.status == WCStatus.REM_ACCESS_ERR


async def test_personality_properties() -> None:
    assert Personality.IWARP.cm_required and Personality.IWARP.read_sink_needs_remote_write
    assert not Personality.ROCE_V2.active_sends_first

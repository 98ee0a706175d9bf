"""Connection manager scenarios: private data both ways, limits, reject, no listener."""

from __future__ import annotations

import errno

import pytest

from datamover_iser.verbs import CMError, ConnectionRejected, ConnParam, QPState
from verbs_harness import Env


async def test_private_data_both_ways(env: Env) -> None:
    """The iSER CM header travels in the REQ; the REP carries the target's answer."""
    a, b = await env.pair(
        connect=ConnParam(private_data=bytes([0x80, 0, 0, 0])),
        accept=ConnParam(private_data=b"accepted"),
    )
    assert b.cid.private_data[:4] == bytes([0x80, 0, 0, 0])
    assert a.reply[:8] == b"accepted"  # type: ignore[attr-defined]
    assert a.qp.state == QPState.RTS and b.qp.state == QPState.RTS


async def test_private_data_limits(env: Env) -> None:
    """RoCE (IB CM): 56 bytes in connect; iWARP (MPA): 512."""
    limit = 56 if not env.iwarp else 512
    cid = await env.a.resolve(env.host, (await env.listener()).port)
    cq = cid.context.create_cq(8)
    qp = cid.create_qp(cq, cq)
    with pytest.raises(CMError) as exc:
        await cid.connect(qp, ConnParam(private_data=bytes(limit + 1)))
    assert exc.value.errno == errno.EINVAL
    cid.close()


async def test_reject_with_private_data(env: Env) -> None:
    lis = await env.listener()

    async def refuse() -> None:
        req = await lis.get_request(timeout=5)
        await req.reject(b"go away")

    import asyncio

    task = asyncio.create_task(refuse())
    cid = await env.a.resolve(env.host, lis.port)
    cq = cid.context.create_cq(8)
    qp = cid.create_qp(cq, cq)
    with pytest.raises(ConnectionRejected) as exc:
        await cid.connect(qp, ConnParam(private_data=b"hello"))
    assert exc.value.private_data[:7] == b"go away"
    await task
    cid.close()


async def test_connect_without_listener_is_rejected(env: Env) -> None:
    lis = await env.listener()
    cid = await env.a.resolve(env.host, lis.port + 1 if lis.port < 65535 else 1)
    cq = cid.context.create_cq(8)
    qp = cid.create_qp(cq, cq)
    with pytest.raises(ConnectionRejected):
        await cid.connect(qp, ConnParam(), timeout=3)
    cid.close()

"""The pyzmq fabric's own choices: tcp:// or ipc:// (never guessed), ipc naming, options.

The verbs scenarios run over both transports through the harness (``soft-zmq-*`` and
``soft-zmqipc-*``); the cross-process path is the bench smoke (test_bench_smoke.py).
"""

from __future__ import annotations

import errno
import sys
import uuid
from pathlib import Path

import pytest

from datamover_iser.verbs import Access, ConnectionRejected, ConnParam, SendWR, WCStatus, WROpcode, sge_of
from datamover_iser.verbs.soft import SoftProvider
from datamover_iser.verbs.soft.zmq import ZmqFabric, tune_glibc_malloc
from verbs_harness import Env

RW = Access.LOCAL_WRITE | Access.REMOTE_WRITE | Access.REMOTE_READ
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="abstract Unix sockets are Linux's")


def test_endpoints_name_the_transport() -> None:
    assert ZmqFabric().endpoint("127.0.0.1", 3260) == "tcp://127.0.0.1:3260"
    assert ZmqFabric().name == "zmq"
    ipc = ZmqFabric(transport="ipc", namespace="ns1")
    assert ipc.name == "zmq-ipc"
    assert ipc.endpoint("disk", 3260) == "ipc://@datamover-zmq/ns1/disk:3260"
    assert ZmqFabric(transport="ipc", ipc_dir="/run/x").endpoint("disk", 7) == "ipc:///run/x/disk:7"


def test_bad_options_are_value_errors() -> None:
    with pytest.raises(ValueError, match="transport"):
        ZmqFabric(transport="udp")
    with pytest.raises(ValueError, match="sndbuf"):
        ZmqFabric(sndbuf=0)
    with pytest.raises(ValueError, match="namespace"):
        ZmqFabric(transport="ipc", namespace="a/b")
    with pytest.raises(ValueError, match="host"):
        ZmqFabric(transport="ipc").endpoint("../etc", 1)


def test_tune_malloc_is_idempotent() -> None:
    first = tune_glibc_malloc()
    assert tune_glibc_malloc() is first


async def _write_read(env: Env) -> None:
    """A WRITE then a READ of the same remote bytes (RC order: the READ sees the WRITE)."""
    a, b = await env.pair()
    remote, rmr = b.buffer(1 << 20, RW)
    src, smr = a.buffer(1 << 20, fill=b"ipc!")
    sink, kmr = a.buffer(1 << 20, RW)
    a.qp.post_send(SendWR(1, WROpcode.RDMA_WRITE, [sge_of(smr)], remote_addr=rmr.addr, rkey=rmr.rkey))
    a.qp.post_send(SendWR(2, WROpcode.RDMA_READ, [sge_of(kmr)], remote_addr=rmr.addr, rkey=rmr.rkey))
    wcs = await a.cq.wait(2)
    assert [w.status for w in wcs] == [WCStatus.SUCCESS] * 2
    assert bytes(sink) == bytes(src) == bytes(remote)


@linux_only
async def test_ipc_abstract_names_in_use_and_free() -> None:
    ns = uuid.uuid4().hex
    prov = SoftProvider(ZmqFabric(transport="ipc", namespace=ns))
    other = SoftProvider(ZmqFabric(transport="ipc", namespace=ns))
    try:
        lis = await prov.listen("disk", 0)
        assert 49152 <= lis.port <= 65535
        with pytest.raises(OSError) as exc:
            await other.listen("disk", lis.port)
        assert exc.value.errno == errno.EADDRINUSE
        # another namespace is another name space
        third = SoftProvider(ZmqFabric(transport="ipc", namespace=ns + "x"))
        (await third.listen("disk", lis.port)).close()
        await third.close()
        assert "zmq-ipc fabric" in prov.describe()
    finally:
        await prov.close()
        await other.close()


@linux_only
async def test_ipc_connect_without_listener_is_rejected() -> None:
    prov = SoftProvider(ZmqFabric(transport="ipc", namespace=uuid.uuid4().hex))
    try:
        cid = await prov.resolve("nobody", 4242)
        cq = cid.context.create_cq(8)
        qp = cid.create_qp(cq, cq)
        with pytest.raises(ConnectionRejected):
            await cid.connect(qp, ConnParam(), timeout=3)
        cid.close()
    finally:
        await prov.close()


async def test_ipc_socket_files_in_a_directory(tmp_path: Path) -> None:
    """With ``ipc_dir`` the sockets are files; a live one is never taken over."""
    a = SoftProvider(ZmqFabric(transport="ipc", ipc_dir=str(tmp_path)))
    b = SoftProvider(ZmqFabric(transport="ipc", ipc_dir=str(tmp_path)))
    env = Env("soft-zmqipc-roce-v2", a, b, "disk")
    try:
        await _write_read(env)
        port = (await env.listener()).port
        assert (tmp_path / f"disk:{port}").exists()
        with pytest.raises(OSError) as exc:
            await a.listen("disk", port)
        assert exc.value.errno == errno.EADDRINUSE
    finally:
        await env.close()


async def test_tcp_is_still_tcp() -> None:
    """tcp:// keeps meaning TCP: a listener there is reachable on its port by a plain socket."""
    import asyncio

    prov = SoftProvider(ZmqFabric())
    try:
        lis = await prov.listen("127.0.0.1", 0)
        reader, writer = await asyncio.open_connection("127.0.0.1", lis.port)
        writer.close()
        await writer.wait_closed()
    finally:
        await prov.close()

"""Backends for the verbs scenario suite.

Every scenario runs once per backend: the soft provider over each fabric (inproc, shm, zmq
over tcp://, zmq over ipc://) and each personality (RoCEv2, iWARP), and pyverbs on a real device when there is one
(DATAMOVER_RDMA_IP names the address of its RoCE GID; otherwise it skips with the reason).
For shm and zmq the two ends are two providers in this process, each with its own device
context, talking through the real fabric (Unix socket + memfd, TCP, Unix socket); the cross-process path
is exercised by test_bench_smoke.py.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from datamover_iser.verbs import (
    Access,
    ConnParam,
    Personality,
    Provider,
    QPCap,
)
from datamover_iser.verbs.api import CQ, MR, PD, QP, CMId, Listener

SOFT_FABRICS = ("inproc", "shm", "zmq", "zmqipc")
PERSONALITIES = (Personality.ROCE_V2, Personality.IWARP)
BACKENDS = [f"soft-{f}-{p.value}" for f in SOFT_FABRICS for p in PERSONALITIES] + ["pyverbs"]


@dataclass
class Side:
    cid: CMId
    cq: CQ
    qp: QP
    rcq: CQ
    provider: Provider
    mrs: list[MR] = field(default_factory=list)

    @property
    def pd(self) -> PD:
        return self.cid.pd

    def buffer(self, size: int, access: Access = Access.LOCAL_WRITE, fill: bytes | None = None) -> tuple[memoryview, MR]:
        """A registered buffer from the provider's preferred memory."""
        view = self.pd.alloc_buffer(size)
        if fill is not None:
            view[:size] = (fill * (size // len(fill) + 1))[:size]
        mr = self.pd.reg_mr(view, access)
        self.mrs.append(mr)
        return view, mr


class Env:
    """Two providers (active ``a``, passive ``b``) and a way to connect QP pairs."""

    def __init__(self, name: str, a: Provider, b: Provider, host: str) -> None:
        self.name = name
        self.a = a
        self.b = b
        self.host = host
        self.personality = a.personality
        self.soft = a.name == "soft"
        self.fabric = name.split("-")[1] if self.soft else "device"
        self._listener: Listener | None = None
        self.sides: list[Side] = []

    @property
    def iwarp(self) -> bool:
        return self.personality is Personality.IWARP

    async def listener(self) -> Listener:
        if self._listener is None:
            self._listener = await self.b.listen(self.host, 0)
        return self._listener

    async def pair(
        self,
        cap: QPCap | None = None,
        connect: ConnParam | None = None,
        accept: ConnParam | None = None,
        before_accept: Callable[[Side], Any] | None = None,
        before_connect: Callable[[Side], Any] | None = None,
        cqe: int = 256,
        sq_sig_all: bool = False,
    ) -> tuple[Side, Side]:
        """A connected RC pair: (active, passive)."""
        lis = await self.listener()

        async def passive() -> Side:
            cid = await lis.get_request(timeout=5)
            cq = cid.context.create_cq(cqe)
            rcq = cid.context.create_cq(cqe)
            qp = cid.create_qp(cq, rcq, cap, sq_sig_all)
            side = Side(cid, cq, qp, rcq, self.b)
            if before_accept is not None:
                before_accept(side)
            await cid.accept(qp, accept or ConnParam())
            return side

        task = asyncio.create_task(passive())
        cid = await self.a.resolve(self.host, lis.port)
        cq = cid.context.create_cq(cqe)
        rcq = cid.context.create_cq(cqe)
        qp = cid.create_qp(cq, rcq, cap, sq_sig_all)
        side_a = Side(cid, cq, qp, rcq, self.a)
        if before_connect is not None:
            before_connect(side_a)
        side_a.reply = await cid.connect(qp, connect or ConnParam())  # type: ignore[attr-defined]
        side_b = await asyncio.wait_for(task, 5)
        self.sides += [side_a, side_b]
        return side_a, side_b

    async def close(self) -> None:
        for s in self.sides:
            s.cid.close()
        if self._listener is not None:
            self._listener.close()
        await self.a.close()
        if self.b is not self.a:
            await self.b.close()


def _soft_env(name: str) -> Env:
    from datamover_iser.verbs.soft import SoftProvider
    from datamover_iser.verbs.soft.inproc import InprocFabric
    from datamover_iser.verbs.soft.shm import ShmFabric

    _, fabric, pers = name.split("-", 2)
    personality = Personality(pers)
    if fabric == "inproc":
        fab = InprocFabric()
        return Env(name, SoftProvider(fab, personality), SoftProvider(fab, personality), "192.0.2.2")
    if fabric == "shm":
        ns = uuid.uuid4().hex
        return Env(name, SoftProvider(ShmFabric(ns), personality), SoftProvider(ShmFabric(ns), personality), "192.0.2.2")
    if fabric == "zmqipc":
        from datamover_iser.verbs.soft.zmq import ZmqFabric

        ns = uuid.uuid4().hex
        return Env(name, SoftProvider(ZmqFabric(transport="ipc", namespace=ns), personality),
                   SoftProvider(ZmqFabric(transport="ipc", namespace=ns), personality), "verbs-test")
    return Env(name, SoftProvider("zmq", personality), SoftProvider("zmq", personality), "127.0.0.1")


def _pyverbs_env() -> Env:
    from datamover_iser.verbs.select import open_provider

    ip = os.environ.get("DATAMOVER_RDMA_IP")
    sel = open_provider("pyverbs")
    if not sel.ok:
        pytest.skip(f"pyverbs backend unavailable: {sel.reason}")
    if not ip:
        pytest.skip("pyverbs device present but DATAMOVER_RDMA_IP (its RoCE address) is not set")
    assert sel.provider is not None
    return Env("pyverbs", sel.provider, sel.provider, ip)


@pytest.fixture(params=BACKENDS)
async def env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    name = request.param
    e = _pyverbs_env() if name == "pyverbs" else _soft_env(name)
    try:
        yield e
    finally:
        await e.close()


@pytest.fixture(params=[b for b in BACKENDS if b.startswith("soft-")])
async def soft_env(request: pytest.FixtureRequest) -> AsyncIterator[Env]:
    e = _soft_env(request.param)
    try:
        yield e
    finally:
        await e.close()

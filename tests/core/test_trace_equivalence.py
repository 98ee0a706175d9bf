"""The same workload gives the same normalised DI trace on every transport that realises the
DI faithfully (architecture: "Get_Data is Get_Data whether it became an R2T or an RDMA Read")."""

from __future__ import annotations

import random

import pytest

from datamover.di import NotImplementedTransport
from datamover.plugin import create_transport
from datamover.trace import DITrace, first_difference, normalise
from tests.conftest import make_session, running_target

# the same effective limits on every transport: TCP and loopback bound PDUs by
# MaxRecvDataSegmentLength, iSER by the two RecvDataSegmentLength keys (RFC 7145 6.4-6.5)
KEYS = {"InitialR2T": "No", "ImmediateData": "Yes", "FirstBurstLength": "65536", "MaxBurstLength": "131072",
        "MaxRecvDataSegmentLength": "16384", "TargetRecvDataSegmentLength": "16384",
        "InitiatorRecvDataSegmentLength": "16384", "MaxOutstandingR2T": "1"}


async def _workload_trace(transport: str) -> list[str]:
    trace = DITrace()
    async with running_target(transport, keys=KEYS, trace=trace) as (_, portal):
        session = make_session(transport, portal, keys=KEYS, trace=trace)
        await session.login()
        rng = random.Random(5)
        for size in (512, 8192, 65536, 300 * 1024, 1 << 20):
            data = rng.randbytes(size)
            await session.write_blocks(0, 16, data)
            assert bytes(await session.read_blocks(0, 16, size // 512)) == data
        await session.test_unit_ready()
        await session.logout()
    return normalise(trace.events)


def _available(name: str) -> bool:
    caps = create_transport(name).capabilities()
    return "not-implemented" not in caps.extra


@pytest.mark.parametrize("transport", ["tcp", "iser"])
async def test_trace_matches_loopback(transport: str) -> None:
    if not _available(transport):
        pytest.skip(f"{transport} is registered but not implemented yet")
    reference = await _workload_trace("loopback")
    try:
        other = await _workload_trace(transport)
    except NotImplementedTransport as exc:
        pytest.skip(str(exc))
    difference = first_difference(reference, other)
    assert difference is None, f"first diverging call at {difference[0]}: loopback {difference[1]!r} vs {transport} {difference[2]!r}"
    assert any("get_data" in line for line in reference)

"""Issue 2 acceptance: 64 MiB of random data in mixed sizes (512 B .. 1 MiB) reads back
byte-identical under every InitialR2T x ImmediateData combination and three
FirstBurstLength/MaxBurstLength settings, over loopback, with the DI trace showing
immediate, unsolicited and solicited (Get_Data) data each exercised."""

from __future__ import annotations

import asyncio
import random

import pytest

from datamover.trace import DITrace
from tests.conftest import make_session, running_target

TOTAL = 64 << 20
SIZES = (512, 1024, 4096, 8192, 65536, 131072, 262144, 1 << 20)
BURSTS = [  # (FirstBurstLength, MaxBurstLength, MaxRecvDataSegmentLength)
    ("4096", "16384", "8192"),
    ("65536", "262144", "16384"),
    ("262144", "1048576", "65536"),
]


def _workload(seed: int) -> list[tuple[int, int]]:
    """(lba, size) pairs covering TOTAL bytes of the 64 MiB LUN in mixed sizes."""
    rng = random.Random(seed)
    out, lba, done = [], 0, 0
    while done < TOTAL:
        size = min(rng.choice(SIZES), TOTAL - done)
        out.append((lba, size))
        lba += size // 512
        done += size
    return out


@pytest.mark.parametrize("initial_r2t", ["Yes", "No"])
@pytest.mark.parametrize("immediate_data", ["Yes", "No"])
@pytest.mark.parametrize("bursts", BURSTS, ids=lambda b: f"fb{b[0]}-mb{b[1]}")
async def test_64mib_mixed_sizes_read_back_identical(initial_r2t: str, immediate_data: str,
                                                     bursts: tuple[str, str, str]) -> None:
    first, max_burst, mrdsl = bursts
    keys = {"InitialR2T": initial_r2t, "ImmediateData": immediate_data, "FirstBurstLength": first,
            "MaxBurstLength": max_burst, "MaxRecvDataSegmentLength": mrdsl}
    trace = DITrace()
    async with running_target("loopback", keys=keys, trace=trace) as (_, portal):
        session = make_session("loopback", portal, keys=keys, trace=trace)
        await session.login()
        assert session.params is not None
        assert session.params.initial_r2t == (initial_r2t == "Yes")
        assert session.params.immediate_data == (immediate_data == "Yes")
        if not (initial_r2t == "Yes" and immediate_data == "No"):  # else irrelevant (RFC 7143 13.14)
            assert session.params.first_burst_length == int(first)
        assert session.params.max_burst_length == int(max_burst)
        rng = random.Random(7)
        payload = rng.randbytes(TOTAL)
        view = memoryview(payload)
        work = _workload(11)
        offsets = []
        offset = 0
        for lba, size in work:
            offsets.append(offset)
            offset += size
        sem = asyncio.Semaphore(8)

        async def write(index: int) -> None:
            lba, size = work[index]
            async with sem:
                await session.write_blocks(0, lba, view[offsets[index]:offsets[index] + size])

        await asyncio.gather(*(write(i) for i in range(len(work))))
        back = bytearray(TOTAL)
        back_view = memoryview(back)

        async def read(index: int) -> None:
            lba, size = work[index]
            async with sem:
                await session.read_blocks(0, lba, size // 512, buffer=back_view[offsets[index]:offsets[index] + size])

        await asyncio.gather(*(read(i) for i in range(len(work))))
        await session.logout()
    assert back == payload, "data read back differs from what was written"

    # the DI trace proves which data paths carried the writes
    sends = trace.calls("send_control", role="initiator")
    immediate = sum(dict(e.fields).get("imm", 0) for e in sends if dict(e.fields).get("pdu") == "ScsiCommand")
    unsolicited_pdus = [e for e in sends if dict(e.fields).get("pdu") == "DataOut"]
    get_data = trace.calls("get_data", role="target")
    assert get_data, "solicited data (Get_Data) never used"
    if immediate_data == "Yes":
        assert immediate > 0, "immediate data expected"
    else:
        assert immediate == 0, "immediate data sent although ImmediateData=No"
    if initial_r2t == "No" and (immediate_data == "No" or int(first) > int(mrdsl)):
        # the first burst does not fit in the command PDU: the rest goes as Data-Out
        assert unsolicited_pdus, "unsolicited Data-Out expected with InitialR2T=No"
    else:
        assert not unsolicited_pdus, "unsolicited Data-Out sent although InitialR2T=Yes"
    # every solicited burst respects MaxBurstLength; unsolicited PDUs the target's limit
    assert all(dict(e.fields)["length"] <= int(max_burst) for e in get_data)
    assert all(dict(e.fields)["length"] <= int(mrdsl) for e in unsolicited_pdus)

"""Our initiator (datamover.initiator, transport "tcp") against tgtd, the C reference target."""

from __future__ import annotations

import asyncio
import os
import time

import pytest

from datamover.di import Portal
from datamover.initiator import InitiatorConfig, InitiatorSession, discover
from datamover.plugin import create_transport
from datamover.session.errors import LoginError
from tests.interop.conftest import (CHAP_SECRET, CHAP_USER, INITIATOR_IQN, LUN_SIZE, MUTUAL_SECRET, MUTUAL_USER)
from tools.interop import Tgtd

BLOCK = 512


def _config(**kwargs: object) -> InitiatorConfig:
    return InitiatorConfig(name=INITIATOR_IQN, login_timeout=10.0, command_timeout=30.0, **kwargs)  # type: ignore[arg-type]


def _session(daemon: Tgtd, config: InitiatorConfig | None = None) -> InitiatorSession:
    return InitiatorSession(create_transport("tcp", {}), Portal(daemon.host, daemon.port), config or _config(),
                            daemon.iqn, recover=False)


def _nexus_count(daemon: Tgtd) -> int:
    """How many I_T nexuses tgtd shows (one per logged-in session)."""
    return daemon.show().count("I_T nexus: ")


async def test_discovery(tgtd: Tgtd) -> None:
    targets = await discover(create_transport("tcp", {}), Portal(tgtd.host, tgtd.port), _config())
    assert tgtd.iqn in targets, targets
    assert f"{tgtd.host}:{tgtd.port},1" in targets[tgtd.iqn], targets


async def test_login_without_chap_and_logout(tgtd: Tgtd) -> None:
    session = _session(tgtd)
    await session.login()
    try:
        assert session.is_up and session.tsih != 0
        assert _nexus_count(tgtd) == 1
        luns = await session.report_luns()
        assert tgtd.lun in luns, luns
        blocks, block_size = await session.read_capacity(tgtd.lun)
        assert (blocks * block_size, block_size) == (LUN_SIZE, BLOCK)
        await session.test_unit_ready(tgtd.lun)
    finally:
        await session.logout()
    assert not session.is_up
    deadline = time.monotonic() + 5
    while _nexus_count(tgtd) and time.monotonic() < deadline:  # tgtd tears the nexus down after logout
        await asyncio.sleep(0.1)
    assert _nexus_count(tgtd) == 0, tgtd.show()


async def test_login_with_chap(tgtd_chap: Tgtd) -> None:
    session = _session(tgtd_chap, _config(chap_user=CHAP_USER, chap_secret=CHAP_SECRET.encode()))
    await session.login()
    try:
        assert session.agreed.get("AuthMethod", "CHAP") in ("CHAP",)
        blocks, _ = await session.read_capacity(tgtd_chap.lun)
        assert blocks * BLOCK == LUN_SIZE
    finally:
        await session.logout()


async def test_login_with_mutual_chap(tgtd_chap: Tgtd) -> None:
    session = _session(tgtd_chap, _config(chap_user=CHAP_USER, chap_secret=CHAP_SECRET.encode(),
                                          mutual_user=MUTUAL_USER, mutual_secret=MUTUAL_SECRET.encode()))
    await session.login()
    try:
        await session.test_unit_ready(tgtd_chap.lun)
    finally:
        await session.logout()


async def test_chap_wrong_secret_and_missing_chap_are_refused(tgtd_chap: Tgtd) -> None:
    wrong = _session(tgtd_chap, _config(chap_user=CHAP_USER, chap_secret=b"not-the-secret-1"))
    with pytest.raises(LoginError) as info:
        await wrong.login()
    assert info.value.status >> 8 == 2, info.value  # initiator error class (0x0201 expected)
    none = _session(tgtd_chap)
    with pytest.raises(LoginError):
        await none.login()


@pytest.mark.parametrize("digests", ["None", "CRC32C"])
async def test_64mib_write_read_verify(tgtd: Tgtd, digests: str) -> None:
    keys = {"HeaderDigest": digests, "DataDigest": digests}
    session = _session(tgtd, _config(keys=keys))
    await session.login()
    size, chunk = 64 << 20, 1 << 20
    payload = os.urandom(size)
    try:
        assert session.agreed.get("HeaderDigest") == digests, session.agreed
        assert session.agreed.get("DataDigest") == digests, session.agreed
        view = memoryview(payload)
        # 8 writes in flight: tgtd answers them with R2Ts (InitialR2T and its 8 KiB MaxRecvDSL)
        sem = asyncio.Semaphore(8)

        async def write(offset: int) -> None:
            async with sem:
                await session.write_blocks(tgtd.lun, offset // BLOCK, view[offset:offset + chunk], BLOCK)

        await asyncio.gather(*(write(off) for off in range(0, size, chunk)))
        await session.synchronize_cache(tgtd.lun)
        back = bytearray(size)
        back_view = memoryview(back)

        async def read(offset: int) -> None:
            async with sem:
                await session.read_blocks(tgtd.lun, offset // BLOCK, chunk // BLOCK, BLOCK,
                                          buffer=back_view[offset:offset + chunk])

        await asyncio.gather(*(read(off) for off in range(0, size, chunk)))
        assert back == payload, "data read back differs from data written"
    finally:
        await session.logout()
    with open(tgtd.lun_path, "rb") as handle:  # and tgtd really stored it
        assert handle.read(size) == payload, "tgtd's backing file differs from what we wrote"


async def test_task_management(tgtd: Tgtd) -> None:
    session = _session(tgtd)
    await session.login()
    try:
        # ABORT TASK of a task that does not exist: "function complete" or "no such task"
        response = await session.abort_task(0x7654321, tgtd.lun)
        assert response in (0, 1), response
        assert (await session.lun_reset(tgtd.lun)) == 0
        # the reset leaves a unit attention; the LU must then work again
        first = await session.test_unit_ready(tgtd.lun)
        if not first.good:
            assert first.status == 0x02 and len(first.sense) > 2 and first.sense[2] & 0x0F == 0x06, first
        assert (await session.test_unit_ready(tgtd.lun)).good
        data = os.urandom(4096)
        await session.write_blocks(tgtd.lun, 100, data, BLOCK)
        assert bytes(await session.read_blocks(tgtd.lun, 100, len(data) // BLOCK, BLOCK)) == data
        # an abort racing a real command: either the command completes or it is aborted
        read = asyncio.ensure_future(session.read_blocks(tgtd.lun, 0, 2048, BLOCK))
        await asyncio.sleep(0)
        itts = [itt for itt, pending in session._pending.items() if pending.kind == "scsi"]
        if itts:
            assert (await session.abort_task(itts[0], tgtd.lun)) in (0, 1)
        try:
            await read
        except Exception as exc:  # aborted: the session must survive it
            assert "abort" in str(exc).lower(), exc
        assert (await session.test_unit_ready(tgtd.lun)).good
        await session.nop()
    finally:
        await session.logout()

"""The iSER datamover on the soft provider: STag invalidation, personalities, fabrics,
memory accounting, and what never travels (RFC 7145 7)."""

from __future__ import annotations

import random
import re

import pytest

from datamover.trace import DITrace
from tests.conftest import make_session, running_target


def _iser_stats(server):  # type: ignore[no-untyped-def]
    session = next(iter(server.sessions.values()))
    return session.conn.stats()


@pytest.mark.parametrize("stags", ["mw", "mr"])
@pytest.mark.parametrize("personality", ["roce-v2", "iwarp"])
async def test_reads_and_writes_with_each_stag_kind_and_personality(stags: str, personality: str) -> None:
    options = {"provider": "soft", "stags": stags, "personality": personality}
    async with running_target("iser", transport_options=options) as (server, portal):
        session = make_session("iser", portal, transport_options=options)
        await session.login()
        rng = random.Random(1)
        buffer = session.alloc_buffer(1 << 20)
        for lba, size in [(0, 4096), (100, 1 << 20), (5000, 65536 + 512)]:
            data = rng.randbytes(size)
            buffer[:size] = data
            await session.write_blocks(0, lba, buffer[:size])
            back = await session.read_blocks(0, lba, size // 512, buffer=session.alloc_buffer(size))
            assert bytes(back) == data
        initiator = session.conn.stats()  # type: ignore[union-attr]
        target = _iser_stats(server)
        await session.logout()
    assert target["rdma_writes"] >= 3 and target["rdma_reads"] >= 1
    if stags == "mw":
        # reads: the target invalidates the Read STag with the response (the initiator's
        # CM private data allowed it); writes: the initiator invalidates locally
        assert target["remote_invalidations"] >= 3
        assert initiator["remote_invalidations"] >= 3
        assert initiator["local_invalidations"] >= 1
    else:
        assert target["remote_invalidations"] == 0
        assert initiator["local_invalidations"] == 0


async def test_no_data_pdus_travel_and_one_copy_per_payload_byte() -> None:
    """RFC 7145 7: Data-In, R2T and solicited Data-Out never travel; with buffers from the
    datamover's pool every payload byte is moved once, by the RDMA operation itself."""
    options = {"provider": "soft"}
    trace = DITrace()
    async with running_target("iser", transport_options=options, trace=trace) as (server, portal):
        session = make_session("iser", portal, transport_options=options, trace=trace)
        await session.login()
        size = 1 << 20
        out = session.alloc_buffer(size)
        out[:] = random.Random(2).randbytes(size)
        before_i = session.conn.stats()  # type: ignore[union-attr]
        before_t = _iser_stats(server)
        for i in range(8):
            await session.write_blocks(0, i * 2048, out)
            assert bytes(await session.read_blocks(0, i * 2048, 2048, buffer=session.alloc_buffer(size))) == bytes(out)
        after_i = session.conn.stats()  # type: ignore[union-attr]
        after_t = _iser_stats(server)
        await session.logout()
    payload = 2 * 8 * size
    target_rdma = after_t["rdma_bytes"] - before_t["rdma_bytes"]
    bounce = (after_t["bounce_bytes"] - before_t["bounce_bytes"]) + (after_i["bounce_bytes"] - before_i["bounce_bytes"])
    immediate = after_i["send_payload_bytes"] - before_i["send_payload_bytes"]
    assert bounce == 0
    # every payload byte crossed exactly once: RDMA for solicited data, the Send for immediate
    assert target_rdma + immediate == payload
    # the initiator's receives were control PDUs only: commands' responses, no data PDUs
    received = [e for e in trace.calls("control_notify", role="initiator")]
    assert {dict(e.fields)["pdu"] for e in received} <= {"ScsiResponse", "LogoutResponse", "NopIn"}


async def test_hello_is_exchanged_only_when_required() -> None:
    options = {"provider": "soft"}
    keys = {"iSERHelloRequired": "Yes"}
    async with running_target("iser", transport_options=options) as (server, portal):
        session = make_session("iser", portal, transport_options=options, keys=keys)
        await session.login()
        assert session.agreed.get("iSERHelloRequired") == "Yes"
        assert (await session.test_unit_ready()).good
        assert _iser_stats(server)["hello_messages"] == 1  # the target got our Hello
        assert session.conn.stats()["hello_messages"] == 1  # type: ignore[union-attr]  # and we its HelloReply
        await session.logout()
    async with running_target("iser", transport_options=options) as (server, portal):
        session = make_session("iser", portal, transport_options=options)
        await session.login()
        assert (await session.test_unit_ready()).good
        assert _iser_stats(server)["hello_messages"] == 0  # never sent unless required
        await session.logout()


@pytest.mark.parametrize("fabric", ["shm", "zmq"])
async def test_fabrics_in_one_process(fabric: str) -> None:
    options = {"provider": "soft", "fabric": fabric}
    async with running_target("iser", transport_options=options) as (server, portal):
        session = make_session("iser", portal, transport_options=options)
        await session.login()
        data = random.Random(3).randbytes(256 * 1024)
        await session.write_blocks(0, 0, data)
        assert bytes(await session.read_blocks(0, 0, 512)) == data
        await session.logout()


@pytest.mark.parametrize("allocation", [255, 511, 512])
async def test_short_data_in_reports_underflow_and_residual(allocation: int) -> None:
    """Interop lab finding 9: libiscsi over iSER takes the whole allocation length as data-in.
    Our side must carry the truth in the SCSI Response: UNDERFLOW with residual = EDTL minus
    what was RDMA-written (RFC 7143 11.4.5), exactly as over TCP."""
    options = {"provider": "soft"}
    inquiry = bytes([0x12, 0, 0, allocation >> 8, allocation & 0xFF, 0])
    block_limits = bytes([0x12, 1, 0xB0, allocation >> 8, allocation & 0xFF, 0])
    async with running_target("iser", transport_options=options) as (server, portal):
        session = make_session("iser", portal, transport_options=options)
        await session.login()
        for cdb, expect in ((inquiry, None), (block_limits, 64)):
            outcome = await session.execute(0, cdb, read_length=allocation)
            assert outcome.good
            sent = len(outcome.data)
            if expect is not None:
                assert sent == expect  # the Block Limits page is 64 bytes
            assert sent < allocation
            assert outcome.underflow and not outcome.overflow
            assert outcome.residual == allocation - sent
        await session.logout()


async def test_max_command_bytes_splits_io_into_commands_the_peer_can_take() -> None:
    """``max_command_bytes`` (tgtd's iSER driver takes 512 KiB per command and drops the
    connection beyond, interop lab scenario 4): larger reads and writes go as several
    commands, and the data is the same."""
    options = {"provider": "soft", "max_command_bytes": 65536}
    async with running_target("iser", transport_options={"provider": "soft"}) as (_server, portal):
        session = make_session("iser", portal, transport_options=options)
        await session.login()
        sizes: list[int] = []
        real = session.execute

        async def counting(lun, cdb, **kw):  # type: ignore[no-untyped-def]
            if cdb[0] in (0x88, 0x8A):
                sizes.append(int.from_bytes(cdb[10:14], "big") * 512)
            return await real(lun, cdb, **kw)

        session.execute = counting  # type: ignore[method-assign]
        data = random.Random(3).randbytes(1 << 20)
        await session.write_blocks(0, 0, data)
        back = await session.read_blocks(0, 0, len(data) // 512)
        await session.logout()
    assert bytes(back) == data
    assert sizes == [65536] * 32


def test_max_command_bytes_must_be_a_byte_count() -> None:
    from datamover.plugin import PluginError, create_transport

    with pytest.raises(PluginError, match="transport 'iser': max_command_bytes must be 0"):
        create_transport("iser", {"provider": "soft", "max_command_bytes": -1})
    assert create_transport("iser", {"provider": "soft"}).max_command_bytes() is None
    assert create_transport("iser", {"provider": "soft", "max_command_bytes": 65536}).max_command_bytes() == 65536


@pytest.mark.parametrize("options,expected", [
    ({"provider": "verbs"}, "provider must be one of auto, pyverbs, soft, not 'verbs'"),
    ({"fabric": "tcp"}, "fabric must be one of inproc, shm, zmq, zmq-ipc, not 'tcp'"),
    ({"personality": "infiniband"}, "personality must be one of roce-v2, iwarp, not 'infiniband'"),
    ({"stags": "keys"}, "stags must be one of mw, mr, none, not 'keys'"),
    ({"ring": 0}, "ring must be an integer from 1 to 2040, not 0"),
    ({"ring": 2041}, "ring must be an integer from 1 to 2040, not 2041"),
    ({"capture": "/nonexistent-dm-dir/x.pcap"}, "capture: folder /nonexistent-dm-dir does not exist"),
])
def test_option_values_are_checked_when_the_transport_is_made(options: dict[str, object], expected: str) -> None:
    """A value the transport cannot use is one PluginError from create_transport, before any
    provider is opened (it used to surface as a traceback from the first listen, or not at
    all: a ring of 0 posted no receive buffers)."""
    from datamover.plugin import PluginError, create_transport

    with pytest.raises(PluginError, match=re.escape(f"transport 'iser': transport.iser option {expected}")):
        create_transport("iser", options)
    create_transport("iser", {"provider": "soft", "fabric": "zmq-ipc", "personality": "iwarp", "stags": "mr",
                              "ring": 2040})  # the bounds themselves are fine

"""WRITE (immediate + solicited data through R2Ts) and READ (Data-In bursts, phase collapse)
between two TcpConnections, with and without digests."""

from __future__ import annotations

import os

import pytest

from datamover.pdu.model import DataIn, DataOut, R2T, ScsiCommand, ScsiResponse
from datamover_tcp.wire import decode_data_in

from .conftest import Pair

DIGESTS = [pytest.param({}, id="plain"),
           pytest.param({"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}, id="digests")]


def spy_data_out(pair: Pair) -> list[DataOut]:
    """Record the Data-Out PDUs the target receives (headers only)."""
    seen: list[DataOut] = []
    dispatch = pair.tgt._dispatch

    def recording(pdu, bhs):  # type: ignore[no-untyped-def]
        if isinstance(pdu, DataOut):
            seen.append(DataOut(itt=pdu.itt, final=pdu.final, lun=pdu.lun, ttt=pdu.ttt,
                                exp_stat_sn=pdu.exp_stat_sn, data_sn=pdu.data_sn,
                                buffer_offset=pdu.buffer_offset, data=bytes(pdu.data)))
        dispatch(pdu, bhs)

    pair.tgt._dispatch = recording  # type: ignore[method-assign]
    return seen


def spy_data_in(pair: Pair) -> list[DataIn]:
    seen: list[DataIn] = []
    base = type(pair.ini._initiator)

    class Recording(base):  # type: ignore[valid-type, misc]
        """Every Data-In the connection hands its initiator side, whichever receive path
        decoded it (the generic codec or the direct one)."""

        __slots__ = ()

        def on_data_in(self, bhs, data, placed=-1):  # type: ignore[no-untyped-def]
            pdu = decode_data_in(bhs, data)
            seen.append(DataIn(itt=pdu.itt, final=pdu.final, status_present=pdu.status_present,
                               data_sn=pdu.data_sn, buffer_offset=pdu.buffer_offset, data=bytes(pdu.data)))
            return super().on_data_in(bhs, data, placed)

    pair.ini._initiator.__class__ = Recording
    return seen


@pytest.mark.parametrize("digests", DIGESTS)
async def test_write_immediate_and_solicited(pair_factory, digests) -> None:
    pair: Pair = await pair_factory(**{"MaxRecvDataSegmentLength.target": "4096",
                                       "MaxRecvDataSegmentLength.initiator": "65536", **digests})
    pair.ini.exp_stat_sn_source = lambda: 77
    seen = spy_data_out(pair)
    payload = os.urandom(40_000)
    # The write buffer in two elements, so that one Data-Out spans both.
    source = [memoryview(payload[:10_001]), memoryview(payload[10_001:])]
    immediate = 4096
    r2ts = [R2T(itt=0x10, lun=1 << 48, ttt=0x100, r2t_sn=0, stat_sn=2, exp_cmd_sn=3, max_cmd_sn=30,
                buffer_offset=immediate, desired_data_transfer_length=16_000),
            R2T(itt=0x10, lun=1 << 48, ttt=0x101, r2t_sn=1, stat_sn=2, exp_cmd_sn=4, max_cmd_sn=31,
                buffer_offset=immediate + 16_000, desired_data_transfer_length=40_000 - immediate - 16_000)]
    sinks = [bytearray(r2t.desired_data_transfer_length) for r2t in r2ts]
    immediate_seen: list[bytes] = []

    def target_core(conn, pdu) -> None:  # type: ignore[no-untyped-def]
        if isinstance(pdu, ScsiCommand):
            immediate_seen.append(bytes(pdu.data))
            for r2t, sink in zip(r2ts, sinks):  # both outstanding at once
                conn.get_data(r2t, [memoryview(sink)], True)

    pair.tgt_core.on_control = target_core
    command = ScsiCommand(itt=0x10, write=True, lun=1 << 48, expected_data_transfer_length=40_000, cmd_sn=3,
                          exp_stat_sn=2, cdb=bytes([0x2A]) + bytes(9), data=memoryview(payload)[:immediate])
    pair.ini.send_control(command, data_out=source, immediate_data_size=immediate, unsolicited_data_size=immediate)
    await pair.tgt_core.wait(lambda: len(pair.tgt_core.completions) == 2)

    assert pair.tgt_core.completions == [(0x10, 0), (0x10, 1)]
    assert immediate_seen == [payload[:immediate]]
    assert bytes(sinks[0]) == payload[immediate:immediate + 16_000]
    assert bytes(sinks[1]) == payload[immediate + 16_000:]
    for r2t in r2ts:
        pdus = [p for p in seen if p.ttt == r2t.ttt]
        want = r2t.desired_data_transfer_length
        assert len(pdus) == -(-want // 4096)
        assert [p.data_sn for p in pdus] == list(range(len(pdus)))
        assert [p.final for p in pdus] == [False] * (len(pdus) - 1) + [True]
        assert all(len(p.data) <= 4096 for p in pdus)
        assert [p.buffer_offset for p in pdus] == [r2t.buffer_offset + 4096 * i for i in range(len(pdus))]
        assert {p.exp_stat_sn for p in pdus} == {77} and {p.lun for p in pdus} == {1 << 48}
    # ExpCmdSN/MaxCmdSN of both R2Ts went to the initiator's core.
    assert pair.ini_core.sn_updates == [(3, 30, None), (4, 31, None)]
    assert not pair.ini_core.errors and not pair.tgt_core.errors
    assert pair.ini.stats()["payload_copies"] == 0  # Data-Out is sent from the caller's buffer


async def test_write_exp_stat_sn_falls_back_to_last_control_pdu(pair_factory) -> None:
    pair: Pair = await pair_factory()
    seen = spy_data_out(pair)
    payload = os.urandom(1000)
    sink = bytearray(1000)
    pair.tgt_core.on_control = lambda conn, pdu: conn.get_data(
        R2T(itt=1, ttt=9, r2t_sn=0, desired_data_transfer_length=1000), [memoryview(sink)], True)
    pair.ini.send_control(ScsiCommand(itt=1, write=True, expected_data_transfer_length=1000, exp_stat_sn=1234),
                          data_out=[memoryview(payload)])
    await pair.tgt_core.wait(lambda: pair.tgt_core.completions)
    assert [p.exp_stat_sn for p in seen] == [1234] and bytes(sink) == payload


@pytest.mark.parametrize("digests", DIGESTS)
async def test_read_in_bursts_then_response(pair_factory, digests) -> None:
    pair: Pair = await pair_factory(**{"MaxRecvDataSegmentLength.initiator": "4096", **digests})
    seen = spy_data_in(pair)
    payload = os.urandom(25_000)
    # The read buffer in three uneven elements.
    buf = bytearray(25_000)
    view = memoryview(buf)
    data_in = [view[:3000], view[3000:17_777], view[17_777:]]
    pair.ini.send_control(ScsiCommand(itt=0x22, read=True, expected_data_transfer_length=25_000, cmd_sn=5),
                          data_in=data_in)
    await pair.tgt_core.wait(lambda: pair.tgt_core.controls)
    bursts = [(0, 10_000), (10_000, 10_000), (20_000, 5_000)]
    for offset, length in bursts:
        header = DataIn(itt=0x22, lun=0, buffer_offset=offset, exp_cmd_sn=6, max_cmd_sn=37, data_sn=999)
        pair.tgt.put_data(header, [memoryview(payload)[offset:offset + length]], True)
    pair.tgt.send_control(ScsiResponse(itt=0x22, status=0, stat_sn=3, exp_cmd_sn=6, max_cmd_sn=37))
    await pair.ini_core.wait(lambda: pair.ini_core.controls)

    response = pair.ini_core.controls[0]
    assert isinstance(response, ScsiResponse) and response.itt == 0x22
    assert response.exp_data_sn == 8  # 3 + 3 + 2 Data-In PDUs
    assert bytes(buf) == payload
    assert [p.data_sn for p in seen] == list(range(8))
    assert [p.final for p in seen] == [False, False, True, False, False, True, False, True]
    assert all(len(p.data) <= 4096 for p in seen) and not any(p.status_present for p in seen)
    await pair.tgt_core.wait(lambda: len(pair.tgt_core.completions) == 3)
    assert pair.tgt_core.completions == [(0x22, 2), (0x22, 5), (0x22, 7)]
    assert pair.ini_core.sn_updates == [(6, 37, None)] * 8
    assert pair.ini.stats()["payload_bytes_copied"] == 25_000
    # The task is gone on both ends.
    assert not pair.ini._initiator.tasks and not pair.tgt._target.tasks
    # Batching: the 8 Data-In PDUs and the response left in far fewer writes.
    stats = pair.tgt.stats()
    assert stats["write_calls"] < stats["pdus_sent"]


async def test_phase_collapse_becomes_scsi_response(pair_factory) -> None:
    pair: Pair = await pair_factory(**{"MaxRecvDataSegmentLength.initiator": "1024"})
    seen = spy_data_in(pair)
    buf = bytearray(4096)
    pair.ini.send_control(ScsiCommand(itt=7, read=True, expected_data_transfer_length=4096),
                          data_in=[memoryview(buf)])
    await pair.tgt_core.wait(lambda: pair.tgt_core.controls)
    payload = os.urandom(3000)
    pair.tgt.put_data(DataIn(itt=7, final=True, status_present=True, status=0, underflow=True, residual=1096,
                             stat_sn=11, exp_cmd_sn=12, max_cmd_sn=40), [memoryview(payload)], False)
    await pair.ini_core.wait(lambda: pair.ini_core.controls)
    response = pair.ini_core.controls[0]
    assert isinstance(response, ScsiResponse)
    assert (response.itt, response.status, response.underflow, response.overflow, response.residual) == \
        (7, 0, True, False, 1096)
    assert (response.stat_sn, response.exp_cmd_sn, response.max_cmd_sn, response.exp_data_sn) == (11, 12, 40, 3)
    assert bytes(buf[:3000]) == payload
    assert [p.status_present for p in seen] == [False, False, True]
    assert [p.final for p in seen] == [False, False, True]
    # the first two Data-In went through sn_update; the third (S) came up as the response
    assert pair.ini_core.sn_updates == [(12, 40, None)] * 2
    assert not pair.ini._initiator.tasks and not pair.tgt._target.tasks


async def test_data_in_outside_buffer_is_reported_not_raised(pair_factory) -> None:
    pair: Pair = await pair_factory()
    buf = bytearray(100)
    pair.ini.send_control(ScsiCommand(itt=3, read=True, expected_data_transfer_length=100),
                          data_in=[memoryview(buf)])
    await pair.tgt_core.wait(lambda: pair.tgt_core.controls)
    pair.tgt.put_data(DataIn(itt=3, buffer_offset=90), [memoryview(b"x" * 20)], False)
    pair.tgt.put_data(DataIn(itt=4), [memoryview(b"y" * 4)], False)  # unknown task
    await pair.ini_core.wait(lambda: len(pair.ini_core.errors) == 2)
    messages = [str(error) for error, _header in pair.ini_core.errors]
    assert "outside" in messages[0] and "unknown ITT" in messages[1]
    assert all(len(header) == 48 for _error, header in pair.ini_core.errors)
    assert bytes(buf) == bytes(100) and pair.ini_core.terminated == 0


async def test_data_out_checks_on_target(pair_factory) -> None:
    """A Data-Out beyond its burst, or one whose TTT is unknown, is reported."""
    pair: Pair = await pair_factory()
    sink = bytearray(100)
    pair.tgt_core.on_control = None
    pair.ini.send_control(ScsiCommand(itt=1, write=True, expected_data_transfer_length=100),
                          data_out=[memoryview(bytes(200))])
    await pair.tgt_core.wait(lambda: pair.tgt_core.controls)
    pair.tgt.get_data(R2T(itt=1, ttt=5, r2t_sn=0, desired_data_transfer_length=100), [memoryview(sink)], True)
    # Solicited Data-Out for a TTT the target never issued:
    pair.ini.send_control(DataOut(itt=1, ttt=6, data=b"z" * 10))
    # Unsolicited Data-Out is a control PDU for the core:
    pair.ini.send_control(DataOut(itt=1, data=b"u" * 10))
    await pair.tgt_core.wait(lambda: pair.tgt_core.completions and pair.tgt_core.errors
                             and len(pair.tgt_core.controls) == 2)
    assert "unknown ITT" in str(pair.tgt_core.errors[0][0])
    assert isinstance(pair.tgt_core.controls[1], DataOut) and pair.tgt_core.controls[1].data == b"u" * 10
    assert pair.tgt_core.completions == [(1, 0)]


async def test_abort_forgets_task(pair_factory) -> None:
    pair: Pair = await pair_factory()
    pair.ini.send_control(ScsiCommand(itt=9, read=True, expected_data_transfer_length=10),
                          data_in=[memoryview(bytearray(10))])
    pair.ini.deallocate_task_resources(9)
    await pair.tgt_core.wait(lambda: pair.tgt_core.controls)
    pair.tgt.put_data(DataIn(itt=9), [memoryview(b"abc")], False)
    await pair.ini_core.wait(lambda: pair.ini_core.errors)
    assert "unknown ITT" in str(pair.ini_core.errors[0][0])


async def test_put_data_longer_than_max_burst_ends_a_sequence_per_burst(pair_factory) -> None:
    pair: Pair = await pair_factory(**{"MaxRecvDataSegmentLength.initiator": "4096", "MaxBurstLength": "8192"})
    seen = spy_data_in(pair)
    buf = bytearray(20_000)
    pair.ini.send_control(ScsiCommand(itt=2, read=True, expected_data_transfer_length=20_000),
                          data_in=[memoryview(buf)])
    await pair.tgt_core.wait(lambda: pair.tgt_core.controls)
    payload = os.urandom(20_000)
    pair.tgt.put_data(DataIn(itt=2), [memoryview(payload)], True)
    await pair.tgt_core.wait(lambda: pair.tgt_core.completions)
    pair.tgt.send_control(ScsiResponse(itt=2))
    await pair.ini_core.wait(lambda: pair.ini_core.controls)
    assert [len(p.data) for p in seen] == [4096, 4096, 4096, 4096, 3616]
    assert [p.final for p in seen] == [False, True, False, True, True]
    assert pair.tgt_core.completions == [(2, 4)] and bytes(buf) == payload

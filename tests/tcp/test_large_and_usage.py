"""Bursts larger than the socket buffers (the writer's backpressure path), both write paths,
and down-calls the connection must refuse with a typed error."""

from __future__ import annotations

import os

import pytest

from datamover.buffers import FileSlice
from datamover.di import ConnectionClosed
from datamover.pdu.model import DataIn, R2T, ScsiCommand, ScsiResponse

import datamover_tcp.sender as sender
from datamover_tcp.errors import DatamoverUsageError
from datamover_tcp.negotiated import KeyValueError, NegotiatedKeys

from .conftest import Pair, keys, login_pair

BIG = 12 << 20


@pytest.mark.parametrize("path", ["writev", "writelines"])
async def test_big_read_and_write_bursts(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    if path == "writelines":
        monkeypatch.setattr(sender, "_uses_selector_transport", lambda transport: False)
    pair: Pair = await login_pair(keys(**{"MaxRecvDataSegmentLength.initiator": "262144",
                                          "MaxRecvDataSegmentLength.target": "262144",
                                          "MaxBurstLength": str(BIG), "DataDigest": "CRC32C"}))
    try:
        payload = os.urandom(BIG)
        # READ: one put_data of 12 MiB, notified when the kernel has every byte.
        buf = bytearray(BIG)
        pair.ini.send_control(ScsiCommand(itt=1, read=True, expected_data_transfer_length=BIG),
                              data_in=[memoryview(buf)])
        await pair.tgt_core.wait(lambda: pair.tgt_core.controls)
        pair.tgt.put_data(DataIn(itt=1), [memoryview(payload)], True)
        pair.tgt.send_control(ScsiResponse(itt=1))
        await pair.ini_core.wait(lambda: pair.ini_core.controls, timeout=10)
        assert bytes(buf) == payload
        assert pair.ini_core.controls[0].exp_data_sn == BIG // 262144
        assert pair.tgt_core.completions == [(1, BIG // 262144 - 1)]
        # WRITE: one R2T for everything.
        sink = bytearray(BIG)
        pair.tgt_core.on_control = lambda conn, pdu: conn.get_data(
            R2T(itt=2, ttt=1, desired_data_transfer_length=BIG), [memoryview(sink)], True)
        pair.ini.send_control(ScsiCommand(itt=2, write=True, expected_data_transfer_length=BIG),
                              data_out=[memoryview(payload)])
        await pair.tgt_core.wait(lambda: len(pair.tgt_core.completions) == 2, timeout=10)
        assert bytes(sink) == payload
        assert not pair.ini_core.errors and not pair.tgt_core.errors
        for conn in (pair.ini, pair.tgt):
            stats = conn.stats()
            # Each payload byte was either received straight into the caller's buffer or
            # copied once from the receive buffer; the sender never copies payload.
            assert stats["payload_bytes_copied"] + stats["direct_bytes"] == BIG
            assert stats["close_bytes_copied"] == 0
            assert stats["stall_bytes_copied"] <= stats["write_calls"]
    finally:
        pair.ini.connection_terminate()
        pair.tgt.connection_terminate()


async def test_wrong_role_and_phase_calls(pair_factory) -> None:
    pair: Pair = await pair_factory()
    with pytest.raises(DatamoverUsageError, match="target-side"):
        pair.ini.put_data(DataIn(itt=1), [memoryview(b"x")], False)
    with pytest.raises(DatamoverUsageError, match="shorter"):
        pair.tgt.get_data(R2T(itt=1, ttt=1, desired_data_transfer_length=10), [memoryview(bytearray(5))], True)
    with pytest.raises(DatamoverUsageError, match="read-only"):
        pair.tgt.get_data(R2T(itt=1, ttt=1, desired_data_transfer_length=3), [memoryview(b"abc")], True)
    pair.tgt.get_data(R2T(itt=1, ttt=1, desired_data_transfer_length=3), [memoryview(bytearray(3))], True)
    with pytest.raises(DatamoverUsageError, match="already outstanding"):
        pair.tgt.get_data(R2T(itt=1, ttt=1, desired_data_transfer_length=3), [memoryview(bytearray(3))], True)
    with pytest.raises(DatamoverUsageError, match="after enable"):
        await pair.ini.login_recv(timeout=0.1)
    pair.tgt.connection_terminate()
    with pytest.raises(ConnectionClosed):
        pair.tgt.send_control(ScsiResponse(itt=1))


def test_key_values_are_checked() -> None:
    parsed = NegotiatedKeys.from_keys(keys(HeaderDigest="CRC32C", MaxBurstLength="0x10000"))
    assert parsed.header_digest and not parsed.data_digest and parsed.max_burst_length == 65536
    with pytest.raises(KeyValueError, match="MaxRecvDataSegmentLength.target"):
        NegotiatedKeys.from_keys(keys(**{"MaxRecvDataSegmentLength.target": "lots"}))
    with pytest.raises(KeyValueError, match="HeaderDigest"):
        NegotiatedKeys.from_keys(keys(HeaderDigest="CRC32C,None"))


async def test_small_receive_buffer_grows_only_to_one_pdu() -> None:
    limit = 20_000
    pair: Pair = await login_pair(keys(**{"MaxRecvDataSegmentLength.initiator": str(limit),
                                          "HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}),
                                  options={"recv_buffer": 4096})
    try:
        payload = os.urandom(300_000)
        buf = bytearray(len(payload))
        pair.ini.send_control(ScsiCommand(itt=1, read=True, expected_data_transfer_length=len(payload)),
                              data_in=[memoryview(buf)])
        await pair.tgt_core.wait(lambda: pair.tgt_core.controls)
        for offset in range(0, len(payload), 100_000):
            pair.tgt.put_data(DataIn(itt=1, buffer_offset=offset),
                              [memoryview(payload)[offset:offset + 100_000]], False)
        pair.tgt.send_control(ScsiResponse(itt=1))
        await pair.ini_core.wait(lambda: pair.ini_core.controls)
        assert bytes(buf) == payload and pair.ini_core.controls[0].exp_data_sn == 3 * 5
        # 48 BHS + 4 HD + segment + pad + 4 DD, and the buffer never needed more
        assert pair.ini._rx.capacity <= 48 + 4 + limit + 4
        assert not pair.ini_core.errors
    finally:
        pair.ini.connection_terminate()
        pair.tgt.connection_terminate()


@pytest.mark.parametrize("digest", ["None", "CRC32C"])
async def test_file_slices_go_out_with_sendfile_or_read_when_a_digest_needs_them(digest: str,
                                                                                tmp_path) -> None:
    """The sendfile option: a 12 MiB Put_Data of one FileSlice (bigger than the socket
    buffers, so sendfile stalls and resumes) between ordinary PDUs arrives intact; with a
    DataDigest the slice is read into memory instead (the digest needs the bytes)."""
    payload = os.urandom(BIG)
    path = tmp_path / "lun.img"
    path.write_bytes(payload)
    pair: Pair = await login_pair(keys(**{"MaxRecvDataSegmentLength.initiator": "262144",
                                          "MaxBurstLength": str(BIG), "DataDigest": digest}),
                                  {"sendfile": True})
    fd = os.open(path, os.O_RDONLY)
    try:
        assert pair.tgt.min_file_slice() == (65536 if digest == "None" else None)
        assert pair.ini.min_file_slice() is None  # initiators never send Data-In
        buf = bytearray(BIG + 4096)
        pair.ini.send_control(ScsiCommand(itt=1, read=True, expected_data_transfer_length=BIG + 4096),
                              data_in=[memoryview(buf)])
        await pair.tgt_core.wait(lambda: pair.tgt_core.controls)
        pair.tgt.put_data(DataIn(itt=1), [memoryview(payload[:4096])], False)
        pair.tgt.put_data(DataIn(itt=1, buffer_offset=4096), [FileSlice(fd, 0, BIG)], True)
        pair.tgt.send_control(ScsiResponse(itt=1))
        await pair.ini_core.wait(lambda: pair.ini_core.controls, timeout=10)
        assert bytes(buf[:4096]) == payload[:4096] and bytes(buf[4096:]) == payload
        assert pair.tgt_core.completions and not pair.ini_core.errors
        stats = pair.tgt.stats()
        assert stats["close_bytes_copied"] == 0 and stats["stall_bytes_copied"] <= stats["write_calls"]
    finally:
        os.close(fd)
        pair.ini.connection_terminate()
        pair.tgt.connection_terminate()


async def test_headers_before_file_slices_go_with_msg_more_on_a_dup_closed_with_the_connection(
        tmp_path) -> None:
    """Each Data-In header before a file slice is written with sendmsg(MSG_MORE) on a
    socket made on a dup of the connection's fd: eight READs arrive intact, interleaved
    with their responses, and the dup is closed when the connection ends (no fd leak)."""
    payload = os.urandom(8 * 65536)
    path = tmp_path / "lun.img"
    path.write_bytes(payload)
    pair: Pair = await login_pair(keys(**{"MaxRecvDataSegmentLength.initiator": "262144"}), {"sendfile": True})
    fd = os.open(path, os.O_RDONLY)
    writer = pair.tgt._writer
    open_fds = len(os.listdir("/proc/self/fd"))
    try:
        buffers = [bytearray(65536) for _ in range(8)]
        for i, buf in enumerate(buffers):
            pair.ini.send_control(ScsiCommand(itt=i + 1, read=True, expected_data_transfer_length=65536),
                                  data_in=[memoryview(buf)])
        await pair.tgt_core.wait(lambda: len(pair.tgt_core.controls) == 8)
        for i in range(8):
            pair.tgt.put_data(DataIn(itt=i + 1), [FileSlice(fd, i * 65536, 65536)], False)
            pair.tgt.send_control(ScsiResponse(itt=i + 1))
        await pair.ini_core.wait(lambda: len(pair.ini_core.controls) == 8, timeout=10)
        assert b"".join(buffers) == payload and not pair.ini_core.errors
        assert writer._more_socket is not None and len(os.listdir("/proc/self/fd")) == open_fds + 1
    finally:
        os.close(fd)
        pair.ini.connection_terminate()
        pair.tgt.connection_terminate()
    assert writer._more_socket is None and len(os.listdir("/proc/self/fd")) <= open_fds - 1


async def test_a_file_that_ends_early_drops_the_connection(tmp_path) -> None:
    """A file slice the file no longer covers (the file shrank) is never sent short: the
    connection ends and both cores hear of it, nothing hangs."""
    path = tmp_path / "short.img"
    path.write_bytes(os.urandom(8192))
    pair: Pair = await login_pair(keys(**{"MaxRecvDataSegmentLength.initiator": "262144"}), {"sendfile": True})
    fd = os.open(path, os.O_RDONLY)
    try:
        buf = bytearray(65536)
        pair.ini.send_control(ScsiCommand(itt=1, read=True, expected_data_transfer_length=65536),
                              data_in=[memoryview(buf)])
        await pair.tgt_core.wait(lambda: pair.tgt_core.controls)
        pair.tgt.put_data(DataIn(itt=1), [FileSlice(fd, 0, 65536)], True)
        pair.tgt.send_control(ScsiResponse(itt=1))
        await pair.ini_core.wait(lambda: pair.ini_core.terminated, timeout=5)
        await pair.tgt_core.wait(lambda: pair.tgt_core.terminated, timeout=5)
        assert not pair.ini_core.controls  # no response: the read never completed
    finally:
        os.close(fd)
        pair.ini.connection_terminate()
        pair.tgt.connection_terminate()


def test_file_slice_parts_are_memoryview_like(tmp_path) -> None:
    path = tmp_path / "f"
    path.write_bytes(bytes(range(256)) * 4)
    fd = os.open(path, os.O_RDONLY)
    try:
        whole = FileSlice(fd, 100, 900)
        assert len(whole) == whole.nbytes == 900
        for part in (whole[0:900], whole[10:20], whole[:5], whole[850:], whole[899:2000], whole.tail(7)):
            assert part.read() == (bytes(range(256)) * 4)[100:1000][slice(part.offset - 100, part.offset - 100
                                                                            + part.length)]
        assert whole[10:20].length == 10 and whole[899:2000].length == 1 and whole[5:2].length == 0
        with pytest.raises(ValueError):
            whole[::2]
    finally:
        os.close(fd)


async def test_the_initiator_writes_early_within_a_turn_and_the_target_does_not() -> None:
    """The initiator's writer writes as soon as INITIATOR_EARLY_FLUSH buffers wait, within
    the turn that queued them (so a target can start on them); the target's writes once per
    turn. Every command still arrives, in order."""
    from datamover_tcp.connection import INITIATOR_EARLY_FLUSH

    pair: Pair = await login_pair(keys())
    try:
        count = 3 * INITIATOR_EARLY_FLUSH
        writes = pair.ini.stats()["write_calls"]
        for itt in range(1, count + 1):
            pair.ini.send_control(ScsiCommand(itt=itt, cmd_sn=itt, read=False))
        # no await yet: only early flushes can have written anything
        assert pair.ini.stats()["write_calls"] - writes == count // INITIATOR_EARLY_FLUSH
        await pair.tgt_core.wait(lambda: len(pair.tgt_core.controls) == count)
        assert [pdu.itt for pdu in pair.tgt_core.controls] == list(range(1, count + 1))
        writes = pair.tgt.stats()["write_calls"]
        for itt in range(1, count + 1):
            pair.tgt.send_control(ScsiResponse(itt=itt, stat_sn=itt))
        assert pair.tgt.stats()["write_calls"] == writes  # the target waits for the end of the turn
        await pair.ini_core.wait(lambda: len(pair.ini_core.controls) == count)
        assert pair.tgt.stats()["write_calls"] == writes + 1
    finally:
        pair.ini.connection_terminate()
        pair.tgt.connection_terminate()

"""The TCP datamover's hot-path shortcuts produce exactly what the codec would.

(These test plugins/tcp code added for the performance work; they belong beside
tests/tcp and live here until that directory's owner moves them.)

The shortcuts pack Data-In, Data-Out, SCSI Response and SCSI Command headers without PDU
objects or the generic encoder, add the status to a queued Data-In (phase collapse), and
reuse data buffers. Each is checked against the codec on randomised fields, and phase
collapse end to end against a real target and initiator.
"""

from __future__ import annotations

import random

import pytest

from datamover.pdu.codec import decode, encode, encode_header
from datamover.pdu.model import DataIn, DataOut, ScsiCommand, ScsiResponse
from datamover_tcp.connection import _response_bhs
from datamover.buffers import MAX_BUFFER, BufferPool
from datamover_tcp.wire import (collapse_status, command_buffers, data_in_buffers, data_out_buffers,
                                data_out_run, data_pdu_buffers, decode_command, decode_data_in,
                                decode_response)

RNG = random.Random(20261124)


def _u32() -> int:
    return RNG.getrandbits(32)


def _joined(buffers: list) -> bytes:  # type: ignore[type-arg]
    return b"".join(bytes(b) for b in buffers)


@pytest.mark.parametrize("digests", [(False, False), (True, False), (False, True), (True, True)])
def test_data_in_and_out_headers_match_the_codec(digests: tuple[bool, bool]) -> None:
    hd, dd = digests
    for _ in range(300):
        length = RNG.choice([0, 1, 3, 4096, 8191])
        pieces = [memoryview(RNG.randbytes(length))] if length else []
        final = RNG.random() < 0.5
        pdu = DataIn(itt=_u32(), final=final, lun=RNG.getrandbits(64), exp_cmd_sn=_u32(), max_cmd_sn=_u32(),
                     data_sn=_u32(), buffer_offset=_u32())
        out: list = []  # type: ignore[type-arg]
        header = data_in_buffers(out, 0x80 if final else 0, 0, pdu.lun, pdu.itt, 0, pdu.exp_cmd_sn, pdu.max_cmd_sn,
                                 pdu.data_sn, pdu.buffer_offset, 0, pieces, length, hd, dd)
        assert _joined(out) == _joined(data_pdu_buffers(pdu, pieces, length, header_digest=hd, data_digest=dd))
        assert out[0] is header
        dout = DataOut(itt=_u32(), final=final, lun=RNG.getrandbits(64), ttt=_u32(), exp_stat_sn=_u32(),
                       data_sn=_u32(), buffer_offset=_u32())
        out = []
        data_out_buffers(out, final, dout.lun, dout.itt, dout.ttt, dout.exp_stat_sn, dout.data_sn,
                         dout.buffer_offset, pieces, length, hd, dd)
        assert _joined(out) == _joined(data_pdu_buffers(dout, pieces, length, header_digest=hd, data_digest=dd))


def test_data_out_run_is_the_codecs_data_out_sequence() -> None:
    """An R2T's answer from one buffer (data_out_run) is, byte for byte, the codec's
    Data-Out PDUs: DataSN from 0, offsets, F on the last, padding of odd lengths."""
    payload = bytes(RNG.getrandbits(8) for _ in range(70_000))
    view = memoryview(payload)
    for _ in range(200):
        offset = RNG.randrange(0, 1000)
        wanted = RNG.randrange(1, len(payload) - offset + 1)
        limit = RNG.choice([512, 8192, 8191, 65536, 3])
        lun, itt, ttt, exp_stat_sn = _u32() << 32 | _u32(), _u32(), _u32(), _u32()
        out: list = []  # type: ignore[type-arg]
        count = data_out_run(out, view, offset, wanted, limit, lun, itt, ttt, exp_stat_sn)
        expected = b""
        done = data_sn = 0
        while done < wanted:
            take = min(limit, wanted - done)
            pdu = DataOut(final=done + take == wanted, lun=lun, itt=itt, ttt=ttt, exp_stat_sn=exp_stat_sn,
                          data_sn=data_sn, buffer_offset=offset + done, data=payload[offset + done:offset + done + take])
            expected += b"".join(bytes(b) for b in encode(pdu))
            done += take
            data_sn += 1
        assert count == data_sn and _joined(out) == expected


def test_collapsed_status_is_the_codecs_status_carrying_data_in() -> None:
    for header_digest in (False, True):
        for _ in range(200):
            base = DataIn(itt=_u32(), final=True, lun=RNG.getrandbits(64), exp_cmd_sn=_u32(), max_cmd_sn=_u32(),
                          data_sn=_u32(), buffer_offset=_u32())
            out: list = []  # type: ignore[type-arg]
            header = data_in_buffers(out, 0x80, 0, base.lun, base.itt, 0, base.exp_cmd_sn, base.max_cmd_sn,
                                     base.data_sn, base.buffer_offset, 0, [], 0, header_digest, False)
            over = RNG.random() < 0.3
            under = not over and RNG.random() < 0.5
            stat_sn, exp, mx, residual = _u32(), _u32(), _u32(), _u32()
            collapse_status(header, 0, over, under, residual, stat_sn, exp, mx)
            want = DataIn(itt=base.itt, final=True, status_present=True, overflow=over, underflow=under,
                          status=0, residual=residual, stat_sn=stat_sn, lun=base.lun, exp_cmd_sn=exp,
                          max_cmd_sn=mx, data_sn=base.data_sn, buffer_offset=base.buffer_offset)
            encoded = encode(want, header_digest=header_digest)
            assert bytes(header) == _joined(encoded)


def test_scsi_response_and_command_headers_match_the_codec() -> None:
    for _ in range(500):
        rsp = ScsiResponse(itt=_u32(), response=RNG.getrandbits(8), status=RNG.getrandbits(8),
                           overflow=RNG.random() < 0.5, underflow=RNG.random() < 0.5,
                           bidi_overflow=RNG.random() < 0.5, bidi_underflow=RNG.random() < 0.5,
                           stat_sn=_u32(), exp_cmd_sn=_u32(), max_cmd_sn=_u32(), exp_data_sn=_u32(),
                           residual=_u32(), bidi_read_residual=_u32(), snack_tag=_u32())
        assert _response_bhs(rsp) == encode_header(rsp)
    fast = 0
    for _ in range(500):
        hd, dd = RNG.random() < 0.5, RNG.random() < 0.5
        length = RNG.choice([0, 5, 4096])
        data = RNG.choice([bytes(length), memoryview(bytearray(RNG.randbytes(length)))])
        cmd = ScsiCommand(itt=_u32(), immediate=RNG.random() < 0.2, final=RNG.random() < 0.8,
                          read=RNG.random() < 0.5, write=RNG.random() < 0.5, attr=RNG.randrange(8),
                          lun=RNG.getrandbits(64), expected_data_transfer_length=_u32(), cmd_sn=_u32(),
                          exp_stat_sn=_u32(), cdb=RNG.randbytes(RNG.choice([6, 10, 16, 32])), data=data)
        buffers = command_buffers(cmd, hd, dd)
        if buffers is None:
            assert len(cmd.cdb) > 16  # only what needs an AHS goes to the codec
            continue
        fast += 1
        assert _joined(buffers) == _joined(encode(cmd, header_digest=hd, data_digest=dd))
    assert fast > 300


def test_scsi_command_decoded_directly_is_the_codecs() -> None:
    """What the receive loop builds for a SCSI Command without AHS (decode_command) equals
    the codec's decode, flags, fields, CDB and data included."""
    for _ in range(500):
        length = RNG.choice([0, 1, 5, 4096])
        cmd = ScsiCommand(itt=_u32(), immediate=RNG.random() < 0.2, final=RNG.random() < 0.8,
                          read=RNG.random() < 0.5, write=RNG.random() < 0.5, attr=RNG.randrange(8),
                          lun=RNG.getrandbits(64), expected_data_transfer_length=_u32(), cmd_sn=_u32(),
                          exp_stat_sn=_u32(), cdb=RNG.randbytes(16), data=RNG.randbytes(length))
        wire = memoryview(_joined(encode(cmd)))
        expected = decode(wire[:48], wire[48:48 + length])
        got = decode_command(wire[:48], wire[48:48 + length] if length else b"")
        assert got == expected
        assert bytes(got.data) == bytes(cmd.data)


def test_data_in_decoded_directly_is_the_codecs() -> None:
    """As above for what an initiator receives most: a Data-In (decode_data_in)."""
    for _ in range(500):
        length = RNG.choice([0, 1, 5, 4096])
        status_present = RNG.random() < 0.5
        pdu = DataIn(itt=_u32(), final=status_present or RNG.random() < 0.5, ack=RNG.random() < 0.2,
                     overflow=RNG.random() < 0.3, underflow=RNG.random() < 0.3, status_present=status_present,
                     status=RNG.getrandbits(8) if status_present else 0, lun=RNG.getrandbits(64), ttt=_u32(),
                     stat_sn=_u32() if status_present else 0, exp_cmd_sn=_u32(), max_cmd_sn=_u32(),
                     data_sn=_u32(), buffer_offset=_u32(), residual=_u32() if status_present else 0,
                     data=RNG.randbytes(length))
        wire = memoryview(_joined(encode(pdu)))
        expected = decode(wire[:48], wire[48:48 + length])
        got = decode_data_in(wire[:48], wire[48:48 + length] if length else b"")
        assert got == expected


def test_scsi_response_decoded_directly_is_the_codecs() -> None:
    for _ in range(500):
        sense = RNG.choice([b"", b"\x00\x12" + RNG.randbytes(18)])
        rsp = ScsiResponse(itt=_u32(), immediate=RNG.random() < 0.1, response=RNG.getrandbits(8),
                           status=RNG.getrandbits(8), overflow=RNG.random() < 0.5, underflow=RNG.random() < 0.5,
                           bidi_overflow=RNG.random() < 0.5, bidi_underflow=RNG.random() < 0.5,
                           stat_sn=_u32(), exp_cmd_sn=_u32(), max_cmd_sn=_u32(), exp_data_sn=_u32(),
                           residual=_u32(), bidi_read_residual=_u32(), snack_tag=_u32(), data=sense)
        wire = memoryview(_joined(encode(rsp)))
        expected = decode(wire[:48], wire[48:48 + len(sense)])
        assert decode_response(wire[:48], wire[48:48 + len(sense)] if sense else b"") == expected


def test_buffer_pool_reuses_and_stays_bounded() -> None:
    pool = BufferPool()
    a = pool.take(4096)
    assert len(a) == 4096 and not a.readonly
    pool.give(a)
    b = pool.take(3000)
    assert len(b) == 3000 and b.obj is a.obj and pool.reused == 1
    c = pool.take(1 << 20)
    assert c.nbytes == 1 << 20 and pool.allocated == 2
    pool.give(memoryview(bytearray(5000)))  # not a pool size class: ignored
    assert pool.take(5000).obj is not None and pool.allocated == 3
    huge = pool.take(MAX_BUFFER + 1)
    pool.give(huge)  # above the bound: never kept
    assert pool.take(MAX_BUFFER + 1).obj is not huge.obj
    kept = [pool.take(8 << 20) for _ in range(12)]
    for buf in kept:
        pool.give(buf)
    again = {id(pool.take(8 << 20).obj) for _ in range(12)}
    assert len(again & {id(b.obj) for b in kept}) == 8  # 64 MiB of 8 MiB buffers kept, no more


@pytest.mark.parametrize("collapse", [None, True, False])
async def test_phase_collapse_end_to_end(collapse: bool | None) -> None:
    """Reads against a target with phase_collapse on (the default, None) and off: right
    data, responses collapsed or not."""
    from datamover.di import Portal
    from datamover.initiator import InitiatorConfig, InitiatorSession
    from datamover.plugin import create_transport
    from datamover.target import LunConfig, TargetConfig, TargetServer, TargetServerConfig

    iqn = "iqn.2026-11.org.datamover.test:collapse"
    server = TargetServer(TargetServerConfig(
        targets=[TargetConfig(iqn, [LunConfig("memory", 1 << 20)], power_on_ua=False)],
        portals=[Portal("127.0.0.1", 0)], transport="tcp",
        transport_options={} if collapse is None else {"phase_collapse": collapse}))
    portal = (await server.start())[0]
    session = InitiatorSession(create_transport("tcp", {}), portal, InitiatorConfig(), iqn)
    try:
        await session.login()
        payload = RNG.randbytes(64 * 1024)
        await session.write_blocks(0, 8, payload)
        for _ in range(3):
            assert bytes(await session.read_blocks(0, 8, 128)) == payload
        outcome = await session.execute(0, bytes([0x88, 0]) + (8).to_bytes(8, "big") + (4).to_bytes(4, "big") + b"\0\0",
                                        read_length=4096)  # EDTL above the transfer: underflow residual
        assert outcome.good and outcome.underflow and outcome.residual == 2048
        assert bytes(outcome.data) == payload[:2048]
        stats = next(iter(server.sessions.values())).conn.stats()
        if collapse is False:
            assert stats["responses_collapsed"] == 0
        else:
            assert stats["responses_collapsed"] >= 4
    finally:
        await session.logout()
        await server.stop()

"""Broken input on the wire and the end of a connection."""

from __future__ import annotations

import asyncio

from datamover.pdu.codec import DigestError, encode_bytes
from datamover.pdu.model import LogoutResponse, NopOut, ScsiCommand

from datamover_tcp.errors import SegmentTooLongError

from .conftest import Pair, keys

DIGESTS = {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C"}


def nop(itt: int, data: bytes = b"", digests: bool = True) -> bytes:
    return encode_bytes(NopOut(itt=itt, cmd_sn=itt, data=data), header_digest=digests, data_digest=digests)


async def test_corrupted_data_digest_is_reported_and_connection_goes_on(raw_target) -> None:
    peer, tgt, core = await raw_target(keys(**DIGESTS))
    bad = bytearray(nop(1, b"hello world!"))
    bad[-1] ^= 0xFF  # the data digest
    peer.send(bytes(bad) + nop(2, b"fine"))
    await core.wait(lambda: core.controls)
    assert len(core.errors) == 1
    error, header = core.errors[0]
    assert isinstance(error, DigestError) and error.which == "data" and header[:1] == bad[:1]
    assert [p.itt for p in core.controls] == [2] and core.controls[0].data == b"fine"
    assert core.terminated == 0
    await peer.close()
    await core.wait(lambda: core.terminated)


async def test_scsi_command_with_a_bad_data_digest_is_reported_not_delivered(raw_target) -> None:
    """SCSI Commands take the receive loop's direct decode: its digest check must catch a
    corrupted immediate-data digest as the codec does."""
    peer, tgt, core = await raw_target(keys(**DIGESTS))

    def command(itt: int, data: bytes) -> bytes:
        return encode_bytes(ScsiCommand(itt=itt, cmd_sn=itt, write=True, expected_data_transfer_length=len(data),
                                        data=data), header_digest=True, data_digest=True)

    bad = bytearray(command(1, b"x" * 512))
    bad[48 + 4 + 100] ^= 0x01  # a data byte: the digest no longer matches
    peer.send(bytes(bad) + command(2, b"y" * 512))
    await core.wait(lambda: core.controls)
    assert len(core.errors) == 1
    error, header = core.errors[0]
    assert isinstance(error, DigestError) and error.which == "data"
    assert [p.itt for p in core.controls] == [2] and bytes(core.controls[0].data) == b"y" * 512
    await peer.close()
    await core.wait(lambda: core.terminated)


async def test_corrupted_header_digest_terminates_once(raw_target) -> None:
    peer, tgt, core = await raw_target(keys(**DIGESTS))
    bad = bytearray(nop(1, b"abc"))
    bad[48] ^= 0x01  # the header digest
    peer.send(nop(3) + bytes(bad) + nop(4))
    await core.wait(lambda: core.terminated)
    assert [p.itt for p in core.controls] == [3]  # nothing after the bad header is trusted
    assert isinstance(core.errors[0][0], DigestError) and core.errors[0][0].which == "header"
    # The connection is really closed: the raw peer sees EOF.
    assert await asyncio.wait_for(peer.reader.read(), 2) == b""
    await asyncio.sleep(0.02)
    assert core.terminated == 1


async def test_header_digest_checked_before_data_arrives(raw_target) -> None:
    """A corrupted header announcing a huge segment is a digest error, not a wait."""
    peer, tgt, core = await raw_target(keys(**DIGESTS))
    bad = bytearray(nop(1, b"abcd"))
    bad[5:8] = (5000).to_bytes(3, "big")  # length changed, digest not recomputed
    peer.send(bytes(bad[:52]))
    await core.wait(lambda: core.terminated)
    assert isinstance(core.errors[0][0], DigestError)


async def test_oversized_data_segment(raw_target) -> None:
    peer, tgt, core = await raw_target(keys(**{"MaxRecvDataSegmentLength.target": "1024"}))
    peer.send(nop(1, b"a" * 1024, digests=False))  # exactly the limit: fine
    peer.send(nop(2, b"b" * 1025, digests=False))
    await core.wait(lambda: core.terminated)
    assert [p.itt for p in core.controls] == [1]
    error = core.errors[0][0]
    assert isinstance(error, SegmentTooLongError) and (error.length, error.limit) == (1025, 1024)
    assert tgt._rx.capacity < 1 << 20  # nothing grew to hold it


async def test_pdu_split_in_small_pieces(raw_target) -> None:
    peer, tgt, core = await raw_target(keys(**DIGESTS))
    wire = nop(1, bytes(range(200))) + nop(2) + nop(3, b"q" * 7)
    for i in range(0, len(wire), 5):
        peer.send(wire[i:i + 5])
        await peer.writer.drain()
        await asyncio.sleep(0)
    await core.wait(lambda: len(core.controls) == 3)
    assert core.controls[0].data == bytes(range(200)) and core.controls[2].data == b"q" * 7
    assert not core.errors
    await peer.close()


async def test_half_sent_pdu_then_close(raw_target) -> None:
    peer, tgt, core = await raw_target(keys())
    wire = nop(1, b"x" * 100, digests=False)
    peer.send(nop(5, digests=False) + wire[:70])
    await core.wait(lambda: core.controls)
    await peer.close()
    await core.wait(lambda: core.terminated)
    await asyncio.sleep(0.02)
    assert core.terminated == 1 and [p.itt for p in core.controls] == [5]


async def test_peer_close_notifies_once_and_never_after_own_terminate(pair_factory) -> None:
    pair: Pair = await pair_factory()
    pair.ini.connection_terminate()  # the core's own call: no notify on this side
    await pair.tgt_core.wait(lambda: pair.tgt_core.terminated)
    await asyncio.sleep(0.02)
    assert pair.tgt_core.terminated == 1 and pair.ini_core.terminated == 0
    pair.tgt.connection_terminate()  # after the notify: harmless, no second notify
    await asyncio.sleep(0.01)
    assert pair.tgt_core.terminated == 1


async def test_terminate_flushes_queued_response(pair_factory) -> None:
    """Logout: the target sends its last PDU and terminates at once; the PDU still arrives."""
    pair: Pair = await pair_factory()
    pair.tgt.send_control(LogoutResponse(itt=1, stat_sn=5))
    pair.tgt.connection_terminate()
    await pair.ini_core.wait(lambda: pair.ini_core.terminated)
    assert [type(p).__name__ for p in pair.ini_core.controls] == ["LogoutResponse"]


async def test_core_without_side_channel(raw_target, caplog) -> None:  # type: ignore[no-untyped-def]
    """An upcalls object with only the four RFC up-calls still works; errors are logged."""

    class Plain:
        def __init__(self) -> None:
            self.controls: list[int] = []

        def control_notify(self, conn, pdu) -> None:  # type: ignore[no-untyped-def]
            self.controls.append(pdu.itt)

        def connection_terminate_notify(self, conn) -> None: ...  # type: ignore[no-untyped-def]
        def data_completion_notify(self, conn, itt, sn) -> None: ...  # type: ignore[no-untyped-def]
        def data_ack_notify(self, conn, itt, data_sn) -> None: ...  # type: ignore[no-untyped-def]

    plain = Plain()
    peer, tgt, _core = await raw_target(keys(**DIGESTS), plain)
    bad = bytearray(nop(1, b"data"))
    bad[-1] ^= 1
    peer.send(bytes(bad) + nop(2))
    async with asyncio.timeout(2):
        while not plain.controls:
            await asyncio.sleep(0.005)
    assert plain.controls == [2]
    assert "digest" in caplog.text

"""Direct placement: large data segments received straight into the task's buffer."""

from __future__ import annotations

import asyncio
import os

from datamover.pdu.codec import DigestError, encode_bytes
from datamover.pdu.model import DataOut, NopOut, R2T

from datamover_tcp.direct import DIRECT_MIN

from .conftest import keys

DIGESTS = {"HeaderDigest": "CRC32C", "DataDigest": "CRC32C", "MaxRecvDataSegmentLength.target": "262144"}


def data_out(offset: int, data: bytes, data_sn: int, final: bool, digests: bool = True) -> bytes:
    return encode_bytes(DataOut(itt=1, ttt=7, data_sn=data_sn, buffer_offset=offset, final=final, data=data),
                        header_digest=digests, data_digest=digests)


async def send_in_pieces(peer, wire: bytes, piece: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(0, len(wire), piece):
        peer.send(wire[i:i + piece])
        await peer.writer.drain()
        await asyncio.sleep(0)


async def test_data_out_received_in_place_with_digests(raw_target) -> None:
    peer, tgt, core = await raw_target(keys(**DIGESTS))
    payload = os.urandom(200_002)  # odd length: padding behind the last segment
    sink = bytearray(200_002)
    tgt.get_data(R2T(itt=1, ttt=7, r2t_sn=3, desired_data_transfer_length=len(payload)), [memoryview(sink)], True)
    cuts = [0, 65_536, 131_072, len(payload)]
    wire = b"".join(data_out(a, payload[a:b], i, b == len(payload)) for i, (a, b) in enumerate(zip(cuts, cuts[1:])))
    await send_in_pieces(peer, wire, 3001)
    await core.wait(lambda: core.completions)
    assert core.completions == [(1, 3)] and not core.errors
    assert bytes(sink) == payload
    stats = tgt.stats()
    assert stats["direct_bytes"] > len(payload) // 2
    assert stats["direct_bytes"] + stats["payload_bytes_copied"] == len(payload)


async def test_corrupted_data_digest_in_place_is_reported(raw_target) -> None:
    peer, tgt, core = await raw_target(keys(**DIGESTS))
    sink = bytearray(DIRECT_MIN * 2)
    tgt.get_data(R2T(itt=1, ttt=7, desired_data_transfer_length=len(sink)), [memoryview(sink)], True)
    bad = bytearray(data_out(0, os.urandom(len(sink)), 0, True))
    bad[-2] ^= 0x10
    await send_in_pieces(peer, bytes(bad), 8192)
    peer.send(encode_bytes(NopOut(itt=2, data=b"after"), header_digest=True, data_digest=True))
    await core.wait(lambda: core.controls)
    assert isinstance(core.errors[0][0], DigestError) and core.errors[0][0].which == "data"
    assert core.controls[0].data == b"after" and not core.completions and core.terminated == 0


async def test_digest_computed_as_data_lands_across_pieces_catches_a_flipped_data_byte(raw_target) -> None:
    """The data digest is computed one receive at a time into a sink of several pieces: a
    clean segment passes, and one flipped payload byte (not the digest) is caught."""
    peer, tgt, core = await raw_target(keys(**DIGESTS))
    size = 3 * DIRECT_MIN + 5
    for itt, flip in ((1, False), (2, True)):
        payload = os.urandom(size)
        sink = bytearray(size)
        pieces = [memoryview(sink)[:1000], memoryview(sink)[1000:DIRECT_MIN + 7], memoryview(sink)[DIRECT_MIN + 7:]]
        tgt.get_data(R2T(itt=itt, ttt=7, desired_data_transfer_length=size), pieces, True)
        wire = bytearray(encode_bytes(DataOut(itt=itt, ttt=7, data_sn=0, buffer_offset=0, final=True, data=payload),
                                      header_digest=True, data_digest=True))
        if flip:
            wire[52 + DIRECT_MIN + 100] ^= 0x01  # inside the second piece, well after the header
        await send_in_pieces(peer, bytes(wire), 4093)
        if not flip:
            await core.wait(lambda: core.completions)
            assert core.completions == [(1, 0)] and not core.errors and bytes(sink) == payload
    await core.wait(lambda: core.errors)
    assert isinstance(core.errors[0][0], DigestError) and core.errors[0][0].which == "data"
    assert core.completions == [(1, 0)]
    assert tgt.stats()["direct_bytes"] > size  # both segments went in place


async def test_task_freed_mid_segment_stops_writing_its_buffer(raw_target) -> None:
    peer, tgt, core = await raw_target(keys(**{"MaxRecvDataSegmentLength.target": "262144"}))
    size = 4 * DIRECT_MIN
    sink = bytearray(size)
    tgt.get_data(R2T(itt=1, ttt=7, desired_data_transfer_length=size), [memoryview(sink)], True)
    wire = data_out(0, b"\x11" * size, 0, True, digests=False)
    peer.send(wire[:48 + size // 2])
    async with asyncio.timeout(2):
        while tgt.stats()["direct_bytes"] + tgt.stats()["payload_bytes_copied"] < size // 4:
            await asyncio.sleep(0.005)
    tgt.deallocate_task_resources(1)  # abort: the core owns the buffer again ...
    sink[:] = b"\xAA" * size  # ... and reuses it
    peer.send(wire[48 + size // 2:])
    peer.send(encode_bytes(NopOut(itt=2)))
    await core.wait(lambda: core.controls)
    assert bytes(sink) == b"\xAA" * size
    assert "freed" in str(core.errors[0][0]) and not core.completions and core.terminated == 0

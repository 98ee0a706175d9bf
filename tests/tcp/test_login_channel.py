"""Login channel and enabling: PDUs before enable_datamover travel without digests."""

from __future__ import annotations

import asyncio
import socket

import pytest

from datamover.di import ConnectionClosed, Portal, Role
from datamover.pdu.codec import PduFormatError, encode_bytes
from datamover.pdu.model import LoginRequest, LoginResponse, NopIn, NopOut
from datamover.plugin import build_registry

from datamover_tcp import TcpTransport
from datamover_tcp.errors import SegmentTooLongError

from .conftest import Recorder, keys, listen_one, login_pair


def test_registered_through_entry_point() -> None:
    info = build_registry().get("tcp")
    assert info.cls is TcpTransport
    caps = info.capabilities
    assert caps.header_digest and caps.data_digest and caps.phase_collapse and caps.data_pdus_on_wire
    assert not caps.multi_connection and caps.error_recovery_levels == frozenset({0})


def test_bad_options_are_typed_errors() -> None:
    with pytest.raises(ValueError, match="recv_buffer"):
        TcpTransport({"recv_buffer": "big"})
    with pytest.raises(ValueError, match="congestion must be the name"):
        TcpTransport({"congestion": "reno; rm"})
    with pytest.raises(ValueError, match="congestion"):
        TcpTransport({"congestion": "nosuchcc0"})  # refused by the kernel (or the platform)


def _a_congestion_control_not_the_default() -> str | None:
    try:
        with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
            default = f.read().strip()
        with open("/proc/sys/net/ipv4/tcp_available_congestion_control") as f:
            available = f.read().split()
    except OSError:
        return None
    return next((name for name in available if name != default), None)


@pytest.mark.skipif(not hasattr(socket, "TCP_CONGESTION") or _a_congestion_control_not_the_default() is None,
                    reason="choosing TCP congestion control needs Linux with two algorithms loaded")
async def test_congestion_option_applies_to_both_ends() -> None:
    """``congestion`` sets TCP_CONGESTION on the initiator's socket and on every accepted one
    (an algorithm that is not the system's default, so the test sees the option at work)."""
    wanted = _a_congestion_control_not_the_default()
    assert wanted is not None
    pair = await login_pair(keys(), {"congestion": wanted})
    try:
        for conn in (pair.ini, pair.tgt):
            sock = conn._transport.get_extra_info("socket")  # type: ignore[union-attr]
            name = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()
            assert name == wanted, (conn.role, name)
    finally:
        pair.ini.connection_terminate()
        pair.tgt.connection_terminate()


def test_describe_names_the_congestion_control_in_force() -> None:
    """Reports (the serve banner, compare's summary) say which congestion control the
    sockets use: the option's, or the system's default, read when described."""
    assert TcpTransport({"congestion": "reno"}).describe().endswith("; congestion control reno)")
    try:
        with open("/proc/sys/net/ipv4/tcp_congestion_control") as f:
            system = f.read().strip()
    except OSError:
        pytest.skip("no /proc/sys/net/ipv4/tcp_congestion_control here")
    assert TcpTransport({}).describe().endswith(f"; congestion control {system}, the system's)")


async def test_login_exchange_and_enable_with_digests() -> None:
    pair = await login_pair(keys(HeaderDigest="CRC32C", DataDigest="CRC32C"))
    try:
        assert pair.ini.role is Role.INITIATOR and pair.tgt.role is Role.TARGET
        assert pair.ini.header_digest and pair.tgt.data_digest
        # First full-feature PDUs, with digests on both ends.
        pair.ini.send_control(NopOut(itt=5, cmd_sn=1, exp_stat_sn=2, data=b"ping-data"))
        await pair.tgt_core.wait(lambda: pair.tgt_core.controls)
        got = pair.tgt_core.controls[0]
        assert isinstance(got, NopOut) and got.itt == 5 and got.data == b"ping-data"
        pair.tgt.send_control(NopIn(itt=5, stat_sn=2, exp_cmd_sn=2, max_cmd_sn=40, data=b"ping-data"))
        await pair.ini_core.wait(lambda: pair.ini_core.controls)
        assert pair.ini_core.controls[0].data == b"ping-data"
        assert not pair.ini_core.errors and not pair.tgt_core.errors
    finally:
        pair.ini.connection_terminate()
        pair.tgt.connection_terminate()


async def test_login_recv_timeout_and_closed() -> None:
    transport, listener, accepted = await listen_one()
    ini = await transport.connect(listener.portal, timeout=2)
    tgt = await asyncio.wait_for(accepted, 2)
    await listener.close()
    with pytest.raises(TimeoutError):
        await tgt.login_recv(timeout=0.05)
    ini.connection_terminate()
    with pytest.raises(ConnectionClosed):
        await tgt.login_recv(timeout=2)


async def test_login_pdu_split_across_reads() -> None:
    _transport, listener, accepted = await listen_one()
    reader, writer = await asyncio.open_connection(listener.portal.host, listener.portal.port)
    tgt = await asyncio.wait_for(accepted, 2)
    await listener.close()
    wire = encode_bytes(LoginRequest(transit=True, csg=0, nsg=1, cmd_sn=9, data=b"AuthMethod=None\0"))
    receive = asyncio.ensure_future(tgt.login_recv(timeout=2))
    for i in range(0, len(wire), 7):
        writer.write(wire[i:i + 7])
        await writer.drain()
        await asyncio.sleep(0.001)
    pdu = await receive
    assert isinstance(pdu, LoginRequest) and pdu.cmd_sn == 9 and bytes(pdu.data) == b"AuthMethod=None\0"
    writer.close()
    await writer.wait_closed()
    tgt.connection_terminate()


async def test_login_garbage_and_oversized_segment() -> None:
    _transport, listener, accepted = await listen_one()
    reader, writer = await asyncio.open_connection(listener.portal.host, listener.portal.port)
    tgt = await asyncio.wait_for(accepted, 2)
    await listener.close()
    # A header whose AHS chain is broken: a format error, framing still intact.
    bad = bytearray(encode_bytes(LoginRequest(cmd_sn=1)))
    bad[4] = 1  # TotalAHSLength = 1 word ...
    writer.write(bytes(bad[:48]) + b"\x00\x09\x01\x00")  # ... holding an AHS that overflows it
    with pytest.raises(PduFormatError):
        await tgt.login_recv(timeout=2)
    # Next: a login PDU announcing 1 MiB of text. Refused, never buffered.
    huge = bytearray(encode_bytes(LoginRequest(cmd_sn=1)))
    huge[5:8] = (1 << 20).to_bytes(3, "big")
    writer.write(bytes(huge))
    with pytest.raises(SegmentTooLongError):
        await tgt.login_recv(timeout=2)
    writer.close()
    await writer.wait_closed()
    tgt.connection_terminate()


async def test_bytes_behind_final_login_response_wait_for_enable() -> None:
    """The target may send a full-feature PDU (with digests) right behind the final Login
    Response; the initiator must not frame it with login rules."""
    pair_keys = keys(HeaderDigest="CRC32C", DataDigest="CRC32C")
    transport, listener, accepted = await listen_one()
    ini = await transport.connect(listener.portal, timeout=2)
    tgt = await asyncio.wait_for(accepted, 2)
    await listener.close()
    await ini.login_send(LoginRequest(transit=True, csg=1, nsg=3))
    await tgt.login_recv(timeout=2)
    for conn in (ini, tgt):
        conn.notice_key_values(pair_keys)
    tgt_core, ini_core = Recorder(), Recorder()
    await tgt.enable_datamover(tgt_core, LoginResponse(transit=True, csg=1, nsg=3, tsih=3))
    tgt.send_control(NopIn(itt=0xFFFFFFFF, ttt=0x55, stat_sn=1, data=b"x" * 5))
    await asyncio.sleep(0.05)  # both PDUs are in the initiator's buffer now
    response = await ini.login_recv(timeout=2)
    assert isinstance(response, LoginResponse)
    await ini.enable_datamover(ini_core)
    await ini_core.wait(lambda: ini_core.controls)
    assert ini_core.controls[0].ttt == 0x55 and ini_core.controls[0].data == b"xxxxx"
    assert not ini_core.errors
    ini.connection_terminate()
    tgt.connection_terminate()


async def test_connect_refused_is_connection_closed() -> None:
    transport, listener, _accepted = await listen_one()
    port = listener.portal.port
    await listener.close()
    await asyncio.sleep(0.01)
    with pytest.raises(ConnectionClosed, match="cannot connect"):
        await transport.connect(Portal("127.0.0.1", port), timeout=2)

"""Fixtures for the TCP transport tests: a recording fake core and connected pairs.

Two real TcpConnections talk over 127.0.0.1; each side's "core" is a :class:`Recorder`
that keeps every up-call. Raw-socket peers are used where a test must put broken bytes on
the wire.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import pytest

from datamover.di import DatamoverConnection, Portal
from datamover.pdu.codec import encode_bytes
from datamover.pdu.model import LoginRequest, LoginResponse, Pdu

from datamover_tcp import TcpConnection, TcpTransport


class Recorder:
    """A fake core: records the four up-calls plus the side channel."""

    def __init__(self) -> None:
        self.controls: list[Pdu] = []
        self.completions: list[tuple[int, int]] = []
        self.acks: list[tuple[int, int]] = []
        self.errors: list[tuple[Exception, bytes]] = []
        self.sn_updates: list[tuple[int, int, int | None]] = []
        self.terminated = 0
        self.on_control: Callable[[DatamoverConnection, Pdu], None] | None = None
        self._changed = asyncio.Event()

    def _poke(self) -> None:
        self._changed.set()

    def control_notify(self, conn: DatamoverConnection, pdu: Pdu) -> None:
        # The data may alias the receive buffer: keep a copy, as a real core must.
        self.controls.append(dataclasses.replace(pdu, data=bytes(pdu.data)))
        if self.on_control is not None:
            self.on_control(conn, pdu)
        self._poke()

    def connection_terminate_notify(self, conn: DatamoverConnection) -> None:
        self.terminated += 1
        self._poke()

    def data_completion_notify(self, conn: DatamoverConnection, itt: int, sn: int) -> None:
        self.completions.append((itt, sn))
        self._poke()

    def data_ack_notify(self, conn: DatamoverConnection, itt: int, data_sn: int) -> None:
        self.acks.append((itt, data_sn))
        self._poke()

    def sn_update(self, conn: DatamoverConnection, exp_cmd_sn: int, max_cmd_sn: int,
                  stat_sn: int | None = None) -> None:
        self.sn_updates.append((exp_cmd_sn, max_cmd_sn, stat_sn))

    def protocol_error_notify(self, conn: DatamoverConnection, error: Exception, header: bytes = b"") -> None:
        self.errors.append((error, header))
        self._poke()

    async def wait(self, predicate: Callable[[], bool], timeout: float = 3.0) -> None:
        """Wait until ``predicate()`` holds (checked after every up-call)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                self._changed.clear()
                await self._changed.wait()


@dataclass
class Pair:
    ini: TcpConnection
    tgt: TcpConnection
    ini_core: Recorder
    tgt_core: Recorder
    closers: list = field(default_factory=list)


def keys(**overrides: str) -> dict[str, str]:
    base = {
        "HeaderDigest": "None",
        "DataDigest": "None",
        "MaxRecvDataSegmentLength.initiator": "8192",
        "MaxRecvDataSegmentLength.target": "8192",
        "MaxBurstLength": "262144",
        "FirstBurstLength": "65536",
        "MaxOutstandingR2T": "4",
        "ErrorRecoveryLevel": "0",
    }
    base.update(overrides)
    return base


async def listen_one(options: Mapping[str, object] | None = None):
    """A listener on 127.0.0.1:0 and a future for its first accepted connection."""
    transport = TcpTransport(dict(options or {}))
    loop = asyncio.get_running_loop()
    accepted: asyncio.Future[TcpConnection] = loop.create_future()

    async def on_accept(conn: DatamoverConnection) -> None:
        if not accepted.done():
            accepted.set_result(conn)  # type: ignore[arg-type]

    listener = await transport.listen(Portal("127.0.0.1", 0), on_accept)
    return transport, listener, accepted


async def login_pair(negotiated: Mapping[str, str], options: Mapping[str, object] | None = None) -> Pair:
    """Connect, exchange one Login Request/Response, notice keys, enable both ends."""
    transport, listener, accepted = await listen_one(options)
    ini = await transport.connect(listener.portal, timeout=2)
    tgt = await asyncio.wait_for(accepted, 2)
    await listener.close()
    await ini.login_send(LoginRequest(transit=True, csg=1, nsg=3, isid=0x80_1234_5678_9A, cmd_sn=1,
                                      data=b"InitiatorName=iqn.test:i\0"))
    request = await tgt.login_recv(timeout=2)
    assert isinstance(request, LoginRequest)
    for conn in (ini, tgt):
        conn.notice_key_values(negotiated)
        assert await conn.allocate_connection_resources()
    ini_core, tgt_core = Recorder(), Recorder()
    final = LoginResponse(transit=True, csg=1, nsg=3, tsih=7, itt=request.itt, stat_sn=1, exp_cmd_sn=1,
                          max_cmd_sn=32, data=b"HeaderDigest=" + negotiated["HeaderDigest"].encode() + b"\0")
    await tgt.enable_datamover(tgt_core, final)
    response = await ini.login_recv(timeout=2)
    assert isinstance(response, LoginResponse) and response.tsih == 7
    await ini.enable_datamover(ini_core)
    return Pair(ini, tgt, ini_core, tgt_core)


@pytest.fixture
async def pair_factory():
    """Make logged-in pairs; tear every connection down at the end."""
    made: list[Pair] = []

    async def make(**overrides: str) -> Pair:
        # phase collapse off: these tests check each Put_Data and Send_Control as sent
        # (test_tcp_fast_paths covers the collapsed stream, the transport's default)
        pair = await login_pair(keys(**overrides), {"phase_collapse": False})
        made.append(pair)
        return pair

    yield make
    for pair in made:
        pair.ini.connection_terminate()
        pair.tgt.connection_terminate()
    await asyncio.sleep(0)


class RawPeer:
    """An initiator made of a plain asyncio stream, to put any bytes on the wire."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def close(self) -> None:
        self.writer.close()
        try:
            await self.writer.wait_closed()
        except OSError:
            pass


@pytest.fixture
async def raw_target():
    """Make (raw peer, target connection, core) triples; close them all at the end."""
    made: list[tuple[RawPeer, TcpConnection]] = []

    async def make(negotiated: Mapping[str, str], core: object | None = None) -> tuple[RawPeer, TcpConnection, Recorder]:
        peer, tgt, core = await raw_initiator_to_target(negotiated, core)
        made.append((peer, tgt))
        return peer, tgt, core

    yield make
    for peer, tgt in made:
        tgt.connection_terminate()
        await peer.close()


async def raw_initiator_to_target(negotiated: Mapping[str, str],
                                  core: object | None = None) -> tuple[RawPeer, TcpConnection, Recorder]:
    """A raw client logged in to an enabled target-side TcpConnection (``core``: the
    upcalls object, a fresh :class:`Recorder` by default)."""
    _transport, listener, accepted = await listen_one()
    reader, writer = await asyncio.open_connection(listener.portal.host, listener.portal.port)
    peer = RawPeer(reader, writer)
    tgt = await asyncio.wait_for(accepted, 2)
    await listener.close()
    peer.send(encode_bytes(LoginRequest(transit=True, csg=1, nsg=3, cmd_sn=1, data=b"A=B\0")))
    await tgt.login_recv(timeout=2)
    tgt.notice_key_values(negotiated)
    core = core if core is not None else Recorder()
    await tgt.enable_datamover(core, LoginResponse(transit=True, csg=1, nsg=3, tsih=1))
    head = await asyncio.wait_for(reader.readexactly(48), 2)
    assert head[0] & 0x3F == 0x23
    return peer, tgt, core

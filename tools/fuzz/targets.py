"""Fuzz targets: each takes arbitrary bytes and returns normally unless it finds a bug.

A target fails (raises :class:`FuzzFailure` or lets an unexpected exception escape) only
when the code under test breaks its contract: bad input must end in the module's own typed
error, and whatever decodes must survive an encode/decode round trip unchanged.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from collections.abc import Callable, Mapping

from datamover.di import ConnectionClosed, DatamoverConnection, Portal, Role
from datamover.pdu import LoginRequest, Pdu, PduFormatError, decode_pdu, encode_bytes
from datamover.pdu.codec import PduEncodeError
from datamover.pdu.text import TextFormatError, decode_text, encode_text


class FuzzFailure(AssertionError):
    """A fuzz input broke a contract."""


def fuzz_pdu(data: bytes) -> None:
    """PDU codec: any bytes decode to a PDU or raise PduFormatError; a decoded PDU
    re-encodes to bytes that decode to the same PDU."""
    for hd, dd in ((False, False), (True, True)):
        try:
            pdu, used = decode_pdu(data, header_digest=hd, data_digest=dd)
        except PduFormatError:
            continue
        if used > len(data):
            raise FuzzFailure(f"consumed {used} of {len(data)} bytes")
        try:
            again = encode_bytes(pdu, header_digest=hd, data_digest=dd)
        except (PduEncodeError, ValueError):
            continue  # a decodable field combination that we refuse to emit is allowed
        pdu2, _ = decode_pdu(again, header_digest=hd, data_digest=dd)
        if _fields(pdu2) != _fields(pdu):
            raise FuzzFailure(f"round trip changed {type(pdu).__name__}: {_fields(pdu)} != {_fields(pdu2)}")


def _fields(pdu: Pdu) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in dataclasses.fields(pdu):  # type: ignore[arg-type]
        name = item.name
        value = getattr(pdu, name)
        out[name] = bytes(value) if isinstance(value, (memoryview, bytearray)) else value
    return out


def fuzz_text(data: bytes) -> None:
    """Text/key codec: decode gives pairs or TextFormatError; pairs survive a round trip."""
    try:
        pairs = decode_text(data)
    except TextFormatError:
        return
    try:
        encoded = encode_text(pairs)
    except (TextFormatError, ValueError):
        return
    if decode_text(encoded) != pairs:
        raise FuzzFailure(f"text round trip changed {pairs!r}")


def fuzz_iser_header(data: bytes) -> None:
    """iSER header: any bytes give a header or IserFormatError; a header re-encodes to a
    prefix that decodes the same."""
    from datamover_iser.header import IserFormatError, decode_header

    try:
        header = decode_header(data)
    except IserFormatError:
        return
    encoded = header.encode()
    if decode_header(encoded) != header:
        raise FuzzFailure(f"iSER round trip changed {header!r}")


# ------------------------------------------------------------------ login state machine
class _ScriptedConn(DatamoverConnection):
    """A login channel fed from a list of PDUs; records what the target sends."""

    def __init__(self, pdus: list[Pdu]) -> None:
        super().__init__(Role.TARGET, Portal("fuzz", 0), "fuzz")
        self.inbox: deque[Pdu] = deque(pdus)
        self.sent: list[Pdu] = []

    async def login_send(self, pdu: Pdu) -> None:
        self.sent.append(pdu)

    async def login_recv(self, timeout: float | None = None) -> Pdu:
        if not self.inbox:
            raise ConnectionClosed("script exhausted")
        return self.inbox.popleft()

    def notice_key_values(self, keys: Mapping[str, str]) -> None: ...
    async def allocate_connection_resources(self, resource_descriptor: object | None = None) -> bool:
        return True
    def deallocate_connection_resources(self) -> None: ...
    async def enable_datamover(self, upcalls: object, final_login_response: Pdu | None = None) -> None: ...  # type: ignore[override]
    def send_control(self, pdu: Pdu, **kwargs: object) -> None: ...  # type: ignore[override]
    def put_data(self, header: object, descriptor: object, notify: bool) -> None: ...  # type: ignore[override]
    def get_data(self, r2t: object, descriptor: object, notify: bool) -> None: ...  # type: ignore[override]
    def connection_terminate(self) -> None: ...
    def deallocate_task_resources(self, itt: int) -> None: ...


_SERVERS: dict[bool, object] = {}


def login_server(chap: bool) -> object:
    """A target server (never started) for driving TargetLogin: one target, CHAP or not."""
    if chap not in _SERVERS:
        from datamover.target import LunConfig, TargetConfig, TargetServer, TargetServerConfig
        from datamover.target.config import ChapConfig

        target = TargetConfig(FUZZ_TARGET, [LunConfig("memory", 65536)],
                              chap=ChapConfig("alice", b"fuzz-secret-123456") if chap else None)
        _SERVERS[chap] = TargetServer(TargetServerConfig(targets=[target], transport="loopback"))
    return _SERVERS[chap]


FUZZ_TARGET = "iqn.2026-11.org.datamover.fuzz:disk"


def run_login(pdus: list[Pdu], chap: bool) -> tuple[str, list[Pdu]]:
    """Drive one target login over ``pdus``. Returns ("ok"|"refused", PDUs sent). Raises
    FuzzFailure if the login reached full feature phase without CHAP where CHAP is
    required, or anything but LoginError escaped."""
    from datamover.session.errors import LoginError
    from datamover.target.login import TargetLogin

    server = login_server(chap)
    conn = _ScriptedConn(pdus)
    login = TargetLogin(server, conn, 1)  # type: ignore[arg-type]

    async def drive() -> str:
        try:
            await login.run()
        except LoginError:
            return "refused"
        if chap and not login.auth_done:
            raise FuzzFailure("full feature phase without the required CHAP")
        return "ok"

    return asyncio.run(drive()), conn.sent


def fuzz_login(data: bytes) -> None:
    """Login state machine over PDUs cut from ``data``: each chunk's first byte gives the
    flags and stages, the rest is the text (the target named, so deeper states are reached)."""
    pdus: list[Pdu] = []
    chunks = data.split(b"\xff\xfe")
    for i, chunk in enumerate(chunks[:8]):
        flags = chunk[0] if chunk else 0
        text = chunk[1:]
        if i == 0:
            text = b"InitiatorName=iqn.2026-11.org.datamover.fuzz:host\0TargetName=" + FUZZ_TARGET.encode() + b"\0" + text
        pdus.append(LoginRequest(itt=1, transit=bool(flags & 0x80), cont=bool(flags & 0x40), csg=(flags >> 2) & 3,
                                 nsg=flags & 3, isid=0x80_0000_0001, cmd_sn=1, data=text))
    run_login(pdus, chap=bool(data[:1] and data[0] & 1))


TARGETS: dict[str, Callable[[bytes], None]] = {
    "pdu": fuzz_pdu, "text": fuzz_text, "iser": fuzz_iser_header, "login": fuzz_login,
}

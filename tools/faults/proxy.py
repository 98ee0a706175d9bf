"""A PDU-aware TCP fault proxy: sits between an initiator and a target and breaks the
stream exactly where a :class:`~tools.faults.plan.Fault` says.

It frames both directions into iSCSI PDUs (BHS, AHS, padded data segment, digests once the
login has settled them), so a fault can land in the middle of a PDU, inside a solicited
burst, on the SCSI Response of a command the target has already executed, or during login.
Everything else is forwarded unchanged and in order ("reorder-free").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import struct

from tools.faults.plan import Action, Fault, FaultPlan

log = logging.getLogger("tools.faults.proxy")

_BHS = 48
_LENGTHS = struct.Struct(">B3s")  # TotalAHSLength, DataSegmentLength at byte 4
_TTT = struct.Struct(">I")  # Target Transfer Tag at byte 20
LOGIN_REQUEST, LOGIN_RESPONSE = 0x03, 0x23


class _Link:
    """State shared by the two directions of one proxied connection."""

    def __init__(self, number: int, fault: Fault | None) -> None:
        self.number = number
        self.fault = fault
        self.seen = 0  # PDUs that matched the fault's point so far
        self.skip = 0  # PDUs to carry before drawing the next random fault
        self.login = True
        self.header_digest = False
        self.data_digest = False
        self.pending_hd = False
        self.pending_dd = False
        self.writers: list[asyncio.StreamWriter] = []
        self.done = asyncio.Event()


class FaultProxy:
    """Listen on ``host:port``; carry every connection to ``upstream`` through ``plan``."""

    def __init__(self, upstream: tuple[str, int], plan: FaultPlan | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.upstream = upstream
        self.plan = plan or FaultPlan()
        self.host = host
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self._links: set[asyncio.Task[None]] = set()
        self._count = 0
        self.bytes = {"i2t": 0, "t2i": 0}

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._links):
            task.cancel()
        for task in list(self._links):
            with contextlib.suppress(BaseException):
                await task

    async def __aenter__(self) -> FaultProxy:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ connections
    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._links.add(task)
        self._count += 1
        link = _Link(self._count, self.plan.for_connection())
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            self._links.discard(task)
            return
        link.writers = [writer, up_writer]
        pumps = [asyncio.create_task(self._pump(link, "i2t", reader, up_writer)),
                 asyncio.create_task(self._pump(link, "t2i", up_reader, writer))]
        try:
            await link.done.wait()
        finally:
            if link.fault is not None:
                # the connection ended (for another reason) before its scripted fault's
                # turn came: give it to the next connection so no scripted fault is lost
                self.plan.unfired(link.fault)
                link.fault = None
            for pump in pumps:
                pump.cancel()
            for w in link.writers:
                with contextlib.suppress(Exception):
                    w.close()
            self._links.discard(task)

    async def _pump(self, link: _Link, direction: str, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        silent = False
        try:
            while True:
                pdu = await self._read_pdu(link, reader)
                if pdu is None:
                    break
                opcode = pdu[0] & 0x3F
                if opcode == LOGIN_RESPONSE:
                    self._watch_login(link, pdu)
                action = self._fault_here(link, direction, pdu, opcode)
                if silent:
                    continue
                if action is None:
                    await self._forward(writer, pdu, direction)
                    continue
                fault, offset = action
                if fault.action is Action.DELAY:
                    await asyncio.sleep(fault.seconds)
                    await self._forward(writer, pdu, direction)
                elif fault.action is Action.CORRUPT:
                    damaged = bytearray(pdu)
                    damaged[offset] ^= 1 << (offset % 8)
                    await self._forward(writer, bytes(damaged), direction)
                elif fault.action is Action.DROP:
                    await self._forward(writer, pdu[:offset], direction)
                    silent = True  # the link goes quiet; only a keepalive can tell
                else:  # TRUNCATE, RESET
                    await self._forward(writer, pdu[:offset], direction)
                    self._end(link, reset=fault.action is Action.RESET)
                    return
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        if silent:
            await asyncio.Event().wait()  # hold the socket open, say nothing, until cancelled
        self._end(link, reset=False)

    async def _forward(self, writer: asyncio.StreamWriter, data: bytes, direction: str) -> None:
        if data:
            writer.write(data)
            self.bytes[direction] += len(data)
            await writer.drain()

    def _fault_here(self, link: _Link, direction: str, pdu: bytes, opcode: int) -> tuple[Fault, int] | None:
        fault = link.fault
        if fault is None:
            if link.skip > 0:
                link.skip -= 1
                return None
            fault = link.fault = self.plan.draw()
            link.seen = 0
            if fault is None:
                link.skip = self.plan.spread
                return None
        ttt = _TTT.unpack_from(pdu, 20)[0]
        login = opcode in (LOGIN_REQUEST, LOGIN_RESPONSE) and link.login
        if not fault.matches(direction, opcode, ttt, login):
            return None
        link.seen += 1
        if link.seen != fault.nth:
            return None
        link.fault = None  # the next one is drawn later, if the connection survives
        link.skip = self.plan.spread
        offset = fault.offset(len(pdu))
        self.plan.record(link.number, fault, opcode, offset, len(pdu))
        return fault, offset

    def _watch_login(self, link: _Link, pdu: bytes) -> None:
        """Learn the digests from the target's login answers; switch at the final one."""
        ahs, dsl = _lengths(pdu)
        text = pdu[_BHS + ahs:_BHS + ahs + dsl]
        if b"HeaderDigest=CRC32C" in text:
            link.pending_hd = True
        if b"DataDigest=CRC32C" in text:
            link.pending_dd = True
        transit, nsg, status = pdu[1] & 0x80, pdu[1] & 0x03, pdu[36]
        if transit and nsg == 3 and status == 0:
            # set before the response is forwarded: the initiator's first full-feature
            # PDU cannot arrive before it has this response
            link.login = False
            link.header_digest, link.data_digest = link.pending_hd, link.pending_dd

    @staticmethod
    async def _read_pdu(link: _Link, reader: asyncio.StreamReader) -> bytes | None:
        try:
            bhs = await reader.readexactly(_BHS)
        except asyncio.IncompleteReadError as exc:
            return exc.partial or None
        ahs, dsl = _lengths(bhs)
        opcode = bhs[0] & 0x3F
        in_login = link.login or opcode in (LOGIN_REQUEST, LOGIN_RESPONSE)
        rest = ahs + ((dsl + 3) & ~3)
        if not in_login:
            rest += 4 if link.header_digest else 0
            rest += 4 if (link.data_digest and dsl) else 0
        try:
            return bhs + (await reader.readexactly(rest) if rest else b"")
        except asyncio.IncompleteReadError as exc:
            return bhs + exc.partial

    @staticmethod
    def _end(link: _Link, *, reset: bool) -> None:
        for w in link.writers:
            if reset:
                sock = w.get_extra_info("socket")
                if sock is not None:
                    with contextlib.suppress(OSError):
                        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                w.transport.abort()
            else:
                with contextlib.suppress(Exception):
                    w.close()
        link.done.set()

    def summary(self) -> dict[str, object]:
        return {**self.plan.summary(), "bytes": dict(self.bytes)}


def _lengths(bhs: bytes) -> tuple[int, int]:
    ahs_words, dsl = _LENGTHS.unpack_from(bhs, 4)
    return ahs_words * 4, int.from_bytes(dsl, "big")

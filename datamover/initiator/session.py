"""The initiator session: an async iSCSI API over any transport.

It speaks only the RFC 5047 DI: Send_Control for every request (a SCSI Command carries its
read and write descriptors; the datamover answers R2Ts and places Data-In on its own), and
Control_Notify for every response. Unsolicited Data-Out PDUs are built here, as RFC 5047
10.3 says the iSCSI layer does.

ERL 0 recovery (RFC 7143 7.1.4.1, 6.3.5): when the connection is lost, the session logs in
again with the same ISID and TSIH 0 (the target implicitly logs out the old session),
with bounded exponential backoff, and re-issues every command that had no response. A
write is acknowledged to the caller only by its SCSI Response, so none is lost.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

from datamover.capabilities import TransportCapabilities
from datamover.di import ConnectionClosed, DatamoverConnection, Portal, Transport
from datamover.initiator.config import InitiatorConfig
from datamover.initiator.login import LoginResult, initiator_login
from datamover.pdu import (
    RESERVED_TAG,
    AsyncMessage,
    DataOut,
    LoginStatus,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Pdu,
    Reject,
    ScsiCommand,
    ScsiResponse,
    TextRequest,
    TextResponse,
    TmfRequest,
    TmfResponse,
    encode_lun,
)
from datamover.pdu.text import decode_text, encode_text
from datamover.session.errors import CommandFailed, LoginError, SessionClosed, TaskAborted
from datamover.session.params import SessionParams
from datamover.session.serial import sn_add, sn_gt, sn_le
from datamover.session.text_login import TextAssembler
from datamover.trace import DITrace

log = logging.getLogger("datamover.initiator")

GOOD = 0x00
CHECK_CONDITION = 0x02
TASK_ABORTED = 0x40
#: transfers up to this size never ask the LU's Block Limits first
SMALL_TRANSFER = 1 << 20
_NO_DATA = memoryview(b"")  # the data of a command without a read buffer
_READ16 = struct.Struct(">BBQIBB")  # READ (16) / WRITE (16): opcode, flags, LBA, blocks, group, control
#: seconds a closed command window may stay closed before a NOP-Out asks for a new one
WINDOW_STALL = 0.5


class RejectedError(Exception):
    """The target answered a request with a Reject PDU (``reason`` per RFC 7143 11.17.1)."""

    def __init__(self, reason: int) -> None:
        super().__init__(f"target rejected the PDU (reason {reason:#04x})")
        self.reason = reason


@dataclass(slots=True)
class ScsiOutcome:
    """What a SCSI command ended with."""

    status: int
    sense: bytes = b""
    data: memoryview = field(default_factory=lambda: memoryview(b""))
    residual: int = 0
    overflow: bool = False
    underflow: bool = False
    response: int = 0

    @property
    def good(self) -> bool:
        return self.status == GOOD and self.response == 0

    def check(self) -> ScsiOutcome:
        """Raise CommandFailed unless the command succeeded."""
        if self.status != GOOD or self.response != 0:  # (not self.good, without the property's call)
            raise CommandFailed(self.status, self.sense)
        return self

    @property
    def not_run(self) -> bool:
        """The device did not run the command and it may simply be sent again: refused
        with a UNIT ATTENTION (power on, reset, ...) or ended with TASK ABORTED by another
        nexus's reset (TAS). ``execute`` and the block helpers retry these themselves."""
        return self.status == TASK_ABORTED or (self.status == CHECK_CONDITION and _sense_key(self.sense) == 0x06)


@dataclass(slots=True)
class _Pending:
    """A request in flight, with everything needed to re-issue it after recovery."""

    kind: str  # "scsi", "tmf", "text", "nop", "logout"
    future: asyncio.Future[object]
    build: Callable[[int, int], Pdu] | None = None  # (itt, cmd_sn) -> PDU, for re-issue
    data_out: memoryview | None = None
    data_in: memoryview | None = None
    lun: int = 0
    immediate: bool = False
    pdu: Pdu | None = None
    issued: int = 0  # times sent (re-issued after each session reinstatement)
    #: loop time after which the command counts as lost (command_timeout); 0: not watched
    deadline: float = 0.0
    watched: bool = False  # a SCSI command waited on without a caller's own timeout


class InitiatorSession:
    """One iSCSI session (one connection) to one target, or a Discovery session."""

    def __init__(self, transport: Transport, portal: Portal, config: InitiatorConfig | None = None,
                 target_name: str | None = None, *, session_type: str = "Normal",
                 trace: DITrace | None = None, recover: bool = True) -> None:
        self.transport = transport
        self.portal = portal
        self.config = config or InitiatorConfig()
        self.target_name = target_name
        self.session_type = session_type
        self.trace = trace
        self.recover = recover and session_type == "Normal"
        self.caps: TransportCapabilities = transport.capabilities()
        self.conn: DatamoverConnection | None = None
        self.params: SessionParams | None = None
        self.agreed: dict[str, str] = {}
        self.tsih = 0
        self.cmd_sn = 1
        self.exp_cmd_sn = 1
        self.max_cmd_sn = 1
        self.exp_stat_sn = 0
        self._itt = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._window = asyncio.Event()
        self._state = "new"  # new, up, recovering, closing, closed
        self._up = asyncio.Event()
        self._terminated = asyncio.Event()
        self._recovery_task: asyncio.Task[None] | None = None
        self._nop_task: asyncio.Task[None] | None = None
        self.recoveries = 0
        self.last_error: str | None = None
        self._chap_algorithms: tuple[int, ...] | None = None
        self._max_transfer: dict[int, int | None] = {}  # LUN -> MAXIMUM TRANSFER LENGTH
        #: the one timer that checks command_timeout for every command in flight (a timer
        #: per command cost more than the rest of its bookkeeping); None while nothing is
        #: watched
        self._watchdog: asyncio.TimerHandle | None = None
        #: the loop the session logged in on, for the per-command futures and timers
        #: (asyncio.get_running_loop() also makes a getpid() system call in Python 3.11)
        self._loop: asyncio.AbstractEventLoop | None = None
        #: busy polling (InitiatorConfig.busy_poll_us): seconds to poll after a send, the
        #: time.monotonic() until which the poller runs, and whether it is scheduled
        self._poll_for = self.config.busy_poll_us / 1e6
        self._poll_until = 0.0
        self._polling = False

    # ================================================================= lifecycle
    async def login(self) -> None:
        """Connect and log in; raises LoginError or ConnectionError."""
        await self._connect_and_login()
        if self.config.nop_interval > 0 and self._nop_task is None:
            self._nop_task = asyncio.get_running_loop().create_task(self._nop_loop())

    async def _connect_and_login(self) -> None:
        self._loop = asyncio.get_running_loop()
        conn = await self.transport.connect(self.portal, timeout=self.config.login_timeout)
        try:
            result = await self._login_on(conn)
        except LoginError as exc:
            conn.connection_terminate()
            # RFC 7143 / protocol-digest 4.11: old targets refuse a CHAP_A list with
            # anything but MD5 (auth failure), and some pick an algorithm they then cannot
            # verify (tgtd 1.0.85 answers "initiator error"): retry once offering MD5 alone
            if (exc.status in (LoginStatus.AUTHENTICATION_FAILURE, LoginStatus.INITIATOR_ERROR)
                    and self.config.chap_user
                    and self._chap_algorithms is None and tuple(self.config.chap_algorithms) != (5,)):
                log.info("authentication failed with CHAP_A=%s; retrying with MD5 only",
                         ",".join(map(str, self.config.chap_algorithms)))
                self._chap_algorithms = (5,)
                conn = await self.transport.connect(self.portal, timeout=self.config.login_timeout)
                try:
                    result = await self._login_on(conn)
                except BaseException:
                    conn.connection_terminate()
                    raise
            else:
                raise
        except BaseException:
            conn.connection_terminate()
            raise
        self.conn = conn
        self.tsih = result.tsih
        self.exp_stat_sn = sn_add(result.stat_sn, 1)
        self._update_window(result.exp_cmd_sn, result.max_cmd_sn)
        self.agreed = result.agreed
        self.params = SessionParams.from_agreed(result.agreed, self.caps)
        self._record("notice_key_values")
        conn.notice_key_values(result.agreed)
        if hasattr(conn, "exp_stat_sn_source"):
            # the TCP datamover stamps ExpStatSN into the Data-Out PDUs it builds
            conn.exp_stat_sn_source = lambda: self.exp_stat_sn
        self._record("enable_datamover")
        await conn.enable_datamover(self)
        self._state = "up"
        self._up.set()

    async def _login_on(self, conn: DatamoverConnection) -> LoginResult:
        return await initiator_login(
            conn, self.config, self.caps, target_name=self.target_name,
            session_type=self.session_type, tsih=0, cid=0, cmd_sn=self.cmd_sn, itt=next(self._itt),
            chap_algorithms=self._chap_algorithms,
        )

    async def logout(self, timeout: float = 10.0) -> None:
        """Logout (close the session) and wait for the connection to end."""
        if self._state in ("closed", "closing"):
            return
        if self._state != "up":
            await self.close()
            return
        self._state = "closing"
        try:
            # Immediate, as Linux and libiscsi send it: a target may leave the window shut
            # once its last command is answered (tgtd's iSER discovery keeps MaxCmdSN at
            # the login's CmdSN; interop lab finding 11), and a logout must still get through.
            pending = self._new_request("logout", lambda itt, sn: LogoutRequest(
                itt=itt, immediate=True, reason=0, cid=0, cmd_sn=sn, exp_stat_sn=self.exp_stat_sn),
                immediate=True)
            await self._send_ordered(pending)
            await asyncio.wait_for(pending.future, timeout)
            # RFC 5047 11.1: after the Logout Response the target terminates the connection
            # and we learn it through Connection_Terminate_Notify; wait a little for that
            # so every transport ends the same way, then close ourselves if it did not come
            if self.conn is not None:
                self._terminated.clear()
                try:
                    await asyncio.wait_for(self._terminated.wait(), 2.0)
                except asyncio.TimeoutError:
                    pass
        except (asyncio.TimeoutError, SessionClosed, ConnectionError, RejectedError) as exc:
            log.info("logout did not complete cleanly: %s", exc)
        finally:
            await self.close()

    async def close(self) -> None:
        """Drop the connection without logging out; fail everything in flight."""
        self._state = "closed"
        for task in (self._recovery_task, self._nop_task):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        conn, self.conn = self.conn, None
        if conn is not None:
            self._record("connection_terminate")
            conn.connection_terminate()
        self._fail_all(SessionClosed("session closed"))
        self._up.set()
        self._window.set()

    async def __aenter__(self) -> InitiatorSession:
        await self.login()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.logout()

    @property
    def is_up(self) -> bool:
        return self._state == "up"

    # ================================================================= SCSI
    async def execute(self, lun: int, cdb: bytes, *, data_out: bytes | bytearray | memoryview | None = None,
                      read_length: int = 0, read_buffer: memoryview | bytearray | None = None,
                      attr: int = 1, timeout: float | None = None, ua_retries: int = 3) -> ScsiOutcome:
        """Run one SCSI command; returns its outcome (any status, with sense).

        ``data_out`` is the write payload (its length is the Expected Data Transfer
        Length); ``read_length`` or ``read_buffer`` sizes the read descriptor. A command
        refused with a UNIT ATTENTION (power on, reset, ...) or ended with TASK ABORTED by
        another initiator's reset was not executed by the device, so it is retried up to
        ``ua_retries`` times, as operating-system initiators do.
        """
        out_view = memoryview(data_out).cast("B") if data_out is not None else None
        if read_buffer is not None:
            in_view: memoryview | None = memoryview(read_buffer).cast("B")
        elif read_length:
            in_view = memoryview(bytearray(read_length))
        else:
            in_view = None
        if out_view is not None and in_view is not None:
            raise ValueError("bidirectional commands are not supported")
        cdb = bytes(cdb)
        while True:
            # One attempt, inline rather than in a coroutine of its own (one frame less).
            pending = self._issue(lun, cdb, out_view, in_view, attr, timeout is None)
            if pending.pdu is None:
                await self._send_ordered(pending)
            if timeout is not None:
                outcome = await asyncio.wait_for(pending.future, timeout)
            else:
                # Cancelling the caller cancels the future; a response that still comes finds
                # it done and is dropped (the target has run the command regardless).
                outcome = await pending.future
            assert isinstance(outcome, ScsiOutcome)
            if ua_retries <= 0 or not self._worth_retrying(outcome, lun):
                return outcome
            ua_retries -= 1

    def submit(self, lun: int, cdb: bytes, *, data_out: bytes | bytearray | memoryview | None = None,
               read_buffer: memoryview | bytearray | None = None, attr: int = 1) -> asyncio.Future[ScsiOutcome]:
        """Issue one SCSI command now and return the future of its outcome: ``execute``'s
        lower level, without a coroutine per command, for callers that keep many commands
        in flight with callbacks (libiscsi's async API does the same; ``bench/ourload.py``
        uses it). A coroutine and its task cost about 1.3 us of the 11 that a 4 KiB read
        takes here.

        Unlike ``execute``: a command the device did not run (``ScsiOutcome.not_run``) is
        not retried, there is no timeout but ``command_timeout`` (which drops a dead
        connection and re-issues the command after recovery), and the command is sent as
        given, however large. When the command window is closed it is sent as soon as it
        opens. The future fails with SessionClosed if the session ends first; cancelling
        it drops the answer, not the command.
        """
        out_view = in_view = None
        if data_out is not None:
            out_view = data_out if _flat(data_out) else memoryview(data_out).cast("B")
            if read_buffer is not None:
                raise ValueError("bidirectional commands are not supported")
        elif read_buffer is not None:
            in_view = read_buffer if _flat(read_buffer) else memoryview(read_buffer).cast("B")
        pending = self._issue(lun, cdb if type(cdb) is bytes else bytes(cdb), out_view, in_view, attr, True)
        if pending.pdu is None:
            # the window is closed (or the session recovering): a task waits for it
            waiter = (self._loop or asyncio.get_running_loop()).create_task(self._send_ordered(pending))
            waiter.add_done_callback(partial(_relay_failure, pending.future))
        return pending.future  # type: ignore[return-value]

    def _issue(self, lun: int, cdb: bytes, out_view: memoryview | None, in_view: memoryview | None,
               attr: int, watched: bool) -> _Pending:
        """A SCSI command's request, sent at once when the window is open (``pdu`` set);
        with ``pdu`` still None the caller awaits ``_send_ordered`` for it. Not a coroutine:
        the command's caller awaits the future itself (one frame less per command)."""
        edtl = len(out_view) if out_view is not None else (len(in_view) if in_view is not None else 0)
        raw_lun = lun << 48 if 0 <= lun < 256 else encode_lun(lun)  # (encode_lun's common case, inline)
        # (a partial rather than a closure: one object instead of a function and its cells)
        build = partial(self._command_pdu, raw_lun, cdb, in_view is not None, out_view is not None, attr, edtl)
        pending = _Pending("scsi", (self._loop or asyncio.get_running_loop()).create_future(), build,
                           out_view, in_view, raw_lun)
        # without a timeout of the caller's, command_timeout applies (see _check_overdue)
        pending.watched = watched and self.config.command_timeout > 0
        if (self._state == "up" and self.conn is not None
                and ((self.max_cmd_sn - self.cmd_sn) & 0xFFFFFFFF) < 0x80000000):  # sn_le, inline
            self._transmit(pending)  # the window is open: what _send_ordered would do at once
        return pending

    def _command_pdu(self, raw_lun: int, cdb: bytes, reading: bool, writing: bool, attr: int, edtl: int,
                     itt: int, cmd_sn: int) -> Pdu:
        """The SCSI Command of an issued request (again on each re-issue, with a new ITT and CmdSN)."""
        return ScsiCommand(itt=itt, final=True, read=reading, write=writing, attr=attr, lun=raw_lun,
                           expected_data_transfer_length=edtl, cmd_sn=cmd_sn, exp_stat_sn=self.exp_stat_sn,
                           cdb=cdb)

    @staticmethod
    def _worth_retrying(outcome: ScsiOutcome, lun: int) -> bool:
        """``outcome.not_run``, logged: the retry it leads to is worth a line."""
        if not outcome.not_run:
            return False
        if outcome.status == TASK_ABORTED:
            log.info("command on LUN %d aborted by another nexus: retrying", lun)
        else:
            log.info("unit attention on LUN %d (ASC/ASCQ %s): retrying", lun, outcome.sense[12:14].hex())
        return True

    def _check_overdue(self) -> None:
        """The command_timeout check, every eighth of it: a command without a response
        for longer than ``command_timeout`` means a dead connection (ERL 0: the session is
        reinstated and the command re-issued, a bounded number of times)."""
        self._watchdog = None
        limit = self.config.command_timeout
        loop = asyncio.get_running_loop()
        now = loop.time()
        watched = overdue = None
        for pending in self._pending.values():
            if pending.watched and not pending.future.done():
                watched = pending
                if pending.deadline <= now:
                    overdue = pending
                    break
        if watched is None:
            return  # nothing in flight is watched: _transmit arms the check again
        self._watchdog = loop.call_later(max(limit / 8, 0.01), self._check_overdue)
        conn = self.conn
        if overdue is None or conn is None or self._state != "up":
            return  # recovery is already under way, or all is well
        log.warning("no response to ITT %#x in %.0f s: dropping the connection",
                    overdue.pdu.itt if overdue.pdu is not None else -1, limit)
        self.last_error = f"command timed out after {limit:.0f} s"
        conn.connection_terminate()
        self.connection_terminate_notify(conn)

    def _send_scsi(self, pending: _Pending, itt: int, pdu: ScsiCommand) -> None:
        """Send_Control(SCSI Command) plus the unsolicited Data-Out PDUs (RFC 7143 4.3.5)."""
        assert self.params is not None and self.conn is not None
        params = self.params
        out = pending.data_out
        edtl = pdu.expected_data_transfer_length
        immediate = unsolicited_total = 0
        if out is not None and edtl:
            send_limit = params.send_limit(self.conn.role)
            if params.immediate_data:
                immediate = min(params.first_burst_length, send_limit, edtl)
            unsolicited_total = immediate if params.initial_r2t else min(params.first_burst_length, edtl)
            pdu.data = out[:immediate]
            pdu.final = unsolicited_total <= immediate
        if self.trace is not None:  # (the arguments alone cost a microsecond per command)
            self._record("send_control", pdu="ScsiCommand", itt=itt, cdb=bytes(pdu.cdb[:1]).hex(), edtl=edtl,
                         imm=immediate, unsol=unsolicited_total)
        if out is None:
            # a read, or no data at all (the keyword arguments left out are 0 / None)
            self.conn.send_control(pdu, data_in=[pending.data_in] if pending.data_in is not None else None)
            return
        self.conn.send_control(pdu, data_out=[out], immediate_data_size=immediate,
                               unsolicited_data_size=unsolicited_total)
        if unsolicited_total <= immediate:
            return
        offset, data_sn = immediate, 0
        limit = params.send_limit(self.conn.role)
        while offset < unsolicited_total:
            length = min(limit, unsolicited_total - offset)
            last = offset + length >= unsolicited_total
            data_pdu = DataOut(itt=itt, final=last, lun=pdu.lun, ttt=RESERVED_TAG,
                               exp_stat_sn=self.exp_stat_sn, data_sn=data_sn, buffer_offset=offset,
                               data=out[offset:offset + length])
            self._record("send_control", pdu="DataOut", itt=itt, offset=offset, length=length, final=last)
            self.conn.send_control(data_pdu, data_out=[out[offset:offset + length]])
            offset += length
            data_sn += 1

    # convenience wrappers ------------------------------------------------------
    async def test_unit_ready(self, lun: int = 0) -> ScsiOutcome:
        return await self.execute(lun, bytes(6))

    async def inquiry(self, lun: int = 0, *, page: int | None = None, length: int = 255) -> bytes:
        cdb = struct.pack(">BBBHB", 0x12, 1 if page is not None else 0, page or 0, length, 0)
        outcome = (await self.execute(lun, cdb, read_length=length)).check()
        return bytes(outcome.data)

    async def read_capacity(self, lun: int = 0) -> tuple[int, int]:
        """(number of blocks, block size) from READ CAPACITY (16)."""
        cdb = struct.pack(">BBQIBB", 0x9E, 0x10, 0, 32, 0, 0)
        outcome = (await self.execute(lun, cdb, read_length=32)).check()
        last_lba, block_size = struct.unpack_from(">QI", outcome.data)
        return last_lba + 1, block_size

    async def report_luns(self) -> list[int]:
        cdb = struct.pack(">BBBBBBIBB", 0xA0, 0, 0, 0, 0, 0, 4096, 0, 0)
        outcome = (await self.execute(0, cdb, read_length=4096)).check()
        data = bytes(outcome.data)
        (length,) = struct.unpack_from(">I", data)
        from datamover.pdu import decode_lun

        return [decode_lun(int.from_bytes(data[8 + i:16 + i], "big")) for i in range(0, min(length, len(data) - 8), 8)]

    async def max_transfer_blocks(self, lun: int) -> int | None:
        """The LU's MAXIMUM TRANSFER LENGTH in blocks (Block Limits VPD page 0xB0), or
        None when it sets none; asked once per LUN and remembered."""
        if lun not in self._max_transfer:
            limit: int | None = None
            try:
                page = await self.inquiry(lun, page=0xB0, length=64)
                if len(page) >= 12:
                    limit = int.from_bytes(page[8:12], "big") or None
            except CommandFailed:
                limit = None  # no Block Limits page: no limit announced
            self._max_transfer[lun] = limit
        return self._max_transfer[lun]

    async def _chunk_blocks(self, lun: int, count: int, block_size: int) -> int:
        """Blocks per command: all of them, unless that exceeds the LU's limit (a 64 MiB
        file to LIO's fileio LUN, which takes 8 MiB per command, docs/interop.md)."""
        transport_limit = self.transport.max_command_bytes()
        if count * block_size <= SMALL_TRANSFER and (transport_limit is None or count * block_size <= transport_limit):
            return count  # far below any sane limit: no need to ask
        limit = await self.max_transfer_blocks(lun)
        if transport_limit is not None:
            by_transport = max(1, transport_limit // block_size)
            limit = by_transport if limit is None else min(limit, by_transport)
        return count if limit is None else max(1, min(count, limit))

    async def read_blocks(self, lun: int, lba: int, count: int, block_size: int = 512,
                          buffer: memoryview | bytearray | None = None) -> memoryview:
        if 0 < count * block_size <= SMALL_TRANSFER and self.transport.max_command_bytes() is None:
            # The common read: far below any transfer limit, so one command, issued here
            # rather than through execute (a coroutine frame less per command).
            view = memoryview(buffer if buffer is not None else bytearray(count * block_size)).cast("B")
            cdb = _READ16.pack(0x88, 0, lba, count, 0, 0)
            pending = self._issue(lun, cdb, None, view, 1, True)
            if pending.pdu is None:
                await self._send_ordered(pending)
            outcome: ScsiOutcome = await pending.future  # type: ignore[assignment]
            if outcome.status and self._worth_retrying(outcome, lun):
                # execute's retries, this first attempt counted (3 in all, as execute's default)
                outcome = await self.execute(lun, cdb, read_buffer=view, ua_retries=2)
            return outcome.check().data
        chunk = await self._chunk_blocks(lun, count, block_size)
        if chunk >= count:
            cdb = _READ16.pack(0x88, 0, lba, count, 0, 0)
            if buffer is None:
                outcome = await self.execute(lun, cdb, read_length=count * block_size)
            else:
                outcome = await self.execute(lun, cdb, read_buffer=buffer)
            return outcome.check().data
        out = memoryview(buffer if buffer is not None else bytearray(count * block_size)).cast("B")
        for first in range(0, count, chunk):
            n = min(chunk, count - first)
            await self.read_blocks(lun, lba + first, n, block_size,
                                   buffer=out[first * block_size:(first + n) * block_size])
        return out[:count * block_size]

    async def write_blocks(self, lun: int, lba: int, data: bytes | bytearray | memoryview,
                           block_size: int = 512, fua: bool = False) -> ScsiOutcome:
        count = len(data) // block_size
        if 0 < count * block_size <= SMALL_TRANSFER and self.transport.max_command_bytes() is None:
            # the common write: one command, issued here (see read_blocks)
            cdb = _READ16.pack(0x8A, 0x08 if fua else 0, lba, count, 0, 0)
            view = memoryview(data).cast("B")
            pending = self._issue(lun, cdb, view, None, 1, True)
            if pending.pdu is None:
                await self._send_ordered(pending)
            written: ScsiOutcome = await pending.future  # type: ignore[assignment]
            if written.status and self._worth_retrying(written, lun):
                written = await self.execute(lun, cdb, data_out=view, ua_retries=2)  # (see read_blocks)
            return written.check()
        chunk = await self._chunk_blocks(lun, count, block_size)
        if chunk < count:
            view = memoryview(data).cast("B")
            outcome: ScsiOutcome | None = None
            for first in range(0, count, chunk):
                n = min(chunk, count - first)
                outcome = await self.write_blocks(lun, lba + first, view[first * block_size:(first + n) * block_size],
                                                  block_size, fua)
            assert outcome is not None
            return outcome
        cdb = _READ16.pack(0x8A, 0x08 if fua else 0, lba, count, 0, 0)
        return (await self.execute(lun, cdb, data_out=data)).check()

    async def synchronize_cache(self, lun: int = 0) -> ScsiOutcome:
        return (await self.execute(lun, bytes([0x35]) + bytes(9))).check()

    # ================================================================= NOP / TMF / Text
    async def nop(self, data: bytes = b"", timeout: float = 10.0) -> float:
        """NOP-Out ping; returns the round-trip time in seconds."""
        start = time.perf_counter()
        pending = self._new_request("nop", lambda itt, sn: NopOut(
            itt=itt, immediate=True, lun=0, ttt=RESERVED_TAG, cmd_sn=sn, exp_stat_sn=self.exp_stat_sn,
            data=data), immediate=True)
        await self._send_ordered(pending)
        await asyncio.wait_for(pending.future, timeout)
        return time.perf_counter() - start

    async def task_management(self, function: int, lun: int = 0, referenced_itt: int = RESERVED_TAG,
                              timeout: float = 30.0) -> int:
        """Send a TMF request (immediate); returns the TMF response code."""
        raw_lun = encode_lun(lun)
        ref = self._pending.get(referenced_itt)
        ref_cmd_sn = getattr(ref.pdu, "cmd_sn", self.cmd_sn) if ref is not None else self.cmd_sn

        def build(itt: int, cmd_sn: int) -> Pdu:
            return TmfRequest(itt=itt, immediate=True, function=function, lun=raw_lun,
                              referenced_task_tag=referenced_itt, cmd_sn=cmd_sn,
                              exp_stat_sn=self.exp_stat_sn, ref_cmd_sn=ref_cmd_sn, exp_data_sn=0)

        pending = self._new_request("tmf", build, immediate=True)
        await self._send_ordered(pending)
        response = await asyncio.wait_for(pending.future, timeout)
        assert isinstance(response, int)
        if response == 0:
            self._after_tmf(function, raw_lun, referenced_itt)
        return response

    def _after_tmf(self, function: int, raw_lun: int, referenced_itt: int) -> None:
        """The target ended tasks without SCSI Responses: fail them here (RFC 7143 4.2.3.5)."""
        if function == 1:
            victims = [referenced_itt]
        elif function in (2, 4, 5):
            victims = [itt for itt, p in self._pending.items() if p.kind == "scsi" and p.lun == raw_lun]
        elif function in (6, 7):
            victims = [itt for itt, p in self._pending.items() if p.kind == "scsi"]
        else:
            victims = []
        for itt in victims:
            pending = self._pending.pop(itt, None)
            if pending is None:
                continue
            if self.conn is not None:
                self._record("deallocate_task_resources", itt=itt)
                self.conn.deallocate_task_resources(itt)
            if not pending.future.done():
                pending.future.set_exception(TaskAborted(f"task {itt:#x} aborted by TMF {function}"))

    async def abort_task(self, itt: int, lun: int = 0) -> int:
        return await self.task_management(1, lun, itt)

    async def lun_reset(self, lun: int = 0) -> int:
        return await self.task_management(5, lun)

    async def text(self, pairs: list[tuple[str, str]], timeout: float = 30.0) -> list[tuple[str, str]]:
        """A Text Request/Response exchange, following C=1 continuations (RFC 7143 11.10)."""
        assembler = TextAssembler()
        data = encode_text(pairs)
        ttt = RESERVED_TAG
        while True:
            pending = self._new_request("text", lambda itt, sn, d=data, t=ttt: TextRequest(
                itt=itt, final=True, cont=False, lun=0, ttt=t, cmd_sn=sn, exp_stat_sn=self.exp_stat_sn, data=d))
            await self._send_ordered(pending)
            response = await asyncio.wait_for(pending.future, timeout)
            assert isinstance(response, TextResponse)
            try:
                assembler.add(response.data)
            except OverflowError:
                raise SessionClosed("text response too long") from None
            if response.final and not response.cont:
                return decode_text(assembler.take())
            data, ttt = b"", response.ttt

    async def send_targets(self, value: str = "All") -> dict[str, list[str]]:
        """SendTargets: {target name: [TargetAddress, ...]}."""
        targets: dict[str, list[str]] = {}
        current: list[str] | None = None
        for key, val in await self.text([("SendTargets", value)]):
            if key == "TargetName":
                current = targets.setdefault(val, [])
            elif key == "TargetAddress" and current is not None:
                current.append(val)
        return targets

    # ================================================================= plumbing
    def _new_request(self, kind: str, build: Callable[[int, int], Pdu], *, lun: int = 0,
                     immediate: bool = False) -> _Pending:
        future: asyncio.Future[object] = (self._loop or asyncio.get_running_loop()).create_future()
        return _Pending(kind=kind, future=future, build=build, lun=lun, immediate=immediate)

    def _allocate_itt(self) -> int:
        while True:
            itt = next(self._itt) & 0xFFFFFFFF
            if itt != RESERVED_TAG and itt not in self._pending:
                return itt

    async def _send_ordered(self, pending: _Pending) -> None:
        """Assign ITT and CmdSN (waiting for the window) and send the request."""
        while True:
            if self._state in ("closed",):
                raise SessionClosed(self.last_error or "session closed")
            if self._state == "recovering" or self.conn is None:
                self._up.clear()
                await self._up.wait()
                continue
            # The window's upper edge is what holds a command back (RFC 7143 4.2.2.1). Our
            # next CmdSN is never below a correct target's ExpCmdSN, but tgtd's iSER login
            # answers ExpCmdSN = CmdSN + 1 while its session still expects CmdSN (interop
            # lab finding 11); like Linux, do not let that stale lower edge stall us.
            if pending.immediate or sn_le(self.cmd_sn, self.max_cmd_sn):
                break
            self._window.clear()
            try:
                await asyncio.wait_for(self._window.wait(), WINDOW_STALL)
            except asyncio.TimeoutError:
                self._refresh_window()
        self._transmit(pending)

    def _refresh_window(self) -> None:
        """The command window stayed closed: ask for fresh ExpCmdSN/MaxCmdSN with an
        immediate NOP-Out (on iSER, Data-In and R2T never carry them; RFC 7145 7.3.5)."""
        if self._state != "up" or self.conn is None:
            return
        if any(p.kind == "nop" for p in self._pending.values()):
            return
        pending = self._new_request("nop", lambda itt, sn: NopOut(
            itt=itt, immediate=True, lun=0, ttt=RESERVED_TAG, cmd_sn=sn, exp_stat_sn=self.exp_stat_sn),
            immediate=True)
        pending.future.add_done_callback(lambda f: f.exception() if not f.cancelled() else None)
        self._transmit(pending)

    def alloc_buffer(self, size: int) -> memoryview:
        """A data buffer the transport moves best (registered memory on iSER); use it for
        the payload of repeated I/O to avoid registrations and bounce copies."""
        if self.conn is not None:
            return self.conn.alloc_buffer(size)
        return memoryview(bytearray(size))

    def _transmit(self, pending: _Pending) -> None:
        assert self.conn is not None and pending.build is not None
        itt = next(self._itt) & 0xFFFFFFFF
        if itt == RESERVED_TAG or itt in self._pending:
            itt = self._allocate_itt()  # (the wrap, or a tag still in use: rare)
        cmd_sn = self.cmd_sn
        if not pending.immediate:
            self.cmd_sn = (cmd_sn + 1) & 0xFFFFFFFF
        pdu = pending.build(itt, cmd_sn)
        pending.pdu = pdu
        pending.issued += 1
        self._pending[itt] = pending
        if pending.watched:
            loop = self._loop or asyncio.get_running_loop()
            limit = self.config.command_timeout
            pending.deadline = loop.time() + limit
            if self._watchdog is None:
                self._watchdog = loop.call_later(max(limit / 8, 0.01), self._check_overdue)
        if isinstance(pdu, ScsiCommand):
            self._send_scsi(pending, itt, pdu)
        else:
            self._record("send_control", pdu=type(pdu).__name__, itt=itt, length=len(pdu.data))
            self.conn.send_control(pdu)
        if self._poll_for:
            self._poll_until = time.monotonic() + self._poll_for
            if not self._polling:
                self._polling = True
                (self._loop or asyncio.get_running_loop()).call_soon(self._poll)

    def _poll(self) -> None:
        """Busy polling: a callback that schedules itself again keeps the loop's next wait
        for I/O at a zero timeout, so an answer is read as soon as it arrives, without a
        sleep, a wake-up and cold caches. It stops when nothing is in flight, when the
        session is not up, or ``busy_poll_us`` after the last send (a slow target: back to
        sleeping until the next send). time.monotonic, not loop.time: uvloop's clock ticks
        in milliseconds."""
        if self._pending and self._state == "up" and time.monotonic() < self._poll_until:
            (self._loop or asyncio.get_running_loop()).call_soon(self._poll)
        else:
            self._polling = False

    def _update_window(self, exp_cmd_sn: int, max_cmd_sn: int) -> None:
        if exp_cmd_sn == self.exp_cmd_sn and max_cmd_sn == self.max_cmd_sn:
            # the window we have (most responses): the checks below would change nothing
            self._window.set()
            return
        # RFC 7143 4.2.2.1: ignore a window with MaxCmdSN < ExpCmdSN - 1, never go backwards
        # (sn_lt / sn_gt written out: this runs for most responses)
        if 0 < ((exp_cmd_sn - 1 - max_cmd_sn) & 0xFFFFFFFF) < 0x80000000:
            return
        if 0 < ((exp_cmd_sn - self.exp_cmd_sn) & 0xFFFFFFFF) < 0x80000000:
            self.exp_cmd_sn = exp_cmd_sn
        if 0 < ((max_cmd_sn - self.max_cmd_sn) & 0xFFFFFFFF) < 0x80000000 or self._state == "new":
            self.max_cmd_sn = max_cmd_sn
        self._window.set()

    def _record(self, call: str, **fields: object) -> None:
        if self.trace is not None:
            self.trace.record("initiator", call, **fields)

    # ================================================================= up-calls
    def control_notify(self, conn: DatamoverConnection, pdu: Pdu) -> None:
        if conn is not self.conn:
            return  # a late PDU from a connection we already replaced
        if self.trace is not None:
            self._record("control_notify", pdu=type(pdu).__name__, itt=pdu.itt, length=len(pdu.data),
                         **({"status": pdu.status} if isinstance(pdu, ScsiResponse) else {}))
        if type(pdu) is ScsiResponse:
            # most of what arrives: the steps below for it, without the lookups by name
            if pdu.exp_cmd_sn != self.exp_cmd_sn or pdu.max_cmd_sn != self.max_cmd_sn:
                # (an unchanged window opens nothing: a command waiting in _send_ordered
                # would find it as closed as before)
                self._update_window(pdu.exp_cmd_sn, pdu.max_cmd_sn)
            next_stat_sn = (pdu.stat_sn + 1) & 0xFFFFFFFF
            if 0 < ((next_stat_sn - self.exp_stat_sn) & 0xFFFFFFFF) < 0x80000000:  # sn_gt, inline
                self.exp_stat_sn = next_stat_sn
            pending = self._pending.pop(pdu.itt, None)
            if pending is None:
                log.debug("ScsiResponse for unknown ITT %#x ignored", pdu.itt)
            elif not pending.future.done():
                try:
                    pending.future.set_result(self._outcome(pending, pdu))
                except Exception:
                    log.exception("error handling ScsiResponse")
            return
        exp = getattr(pdu, "exp_cmd_sn", None)
        if exp is not None:
            self._update_window(exp, pdu.max_cmd_sn)  # type: ignore[attr-defined]
        stat_sn = getattr(pdu, "stat_sn", None)
        if stat_sn is not None and not (isinstance(pdu, NopIn) and pdu.itt == RESERVED_TAG):
            if sn_gt(sn_add(stat_sn, 1), self.exp_stat_sn):
                self.exp_stat_sn = sn_add(stat_sn, 1)
        try:
            self._dispatch(pdu)
        except Exception:
            log.exception("error handling %s", type(pdu).__name__)

    def _dispatch(self, pdu: Pdu) -> None:
        if isinstance(pdu, NopIn) and pdu.itt == RESERVED_TAG:
            if pdu.ttt != RESERVED_TAG and self.conn is not None:
                # a target ping: answer at once (RFC 7143 11.18), immediate, ITT reserved
                reply = NopOut(itt=RESERVED_TAG, immediate=True, lun=pdu.lun, ttt=pdu.ttt,
                               cmd_sn=self.cmd_sn, exp_stat_sn=self.exp_stat_sn, data=bytes(pdu.data))
                self._record("send_control", pdu="NopOut", itt=RESERVED_TAG, length=len(reply.data))
                self.conn.send_control(reply)
            return
        if isinstance(pdu, AsyncMessage):
            self._async_message(pdu)
            return
        if isinstance(pdu, Reject):
            self._reject(pdu)
            return
        pending = self._pending.pop(pdu.itt, None)
        if pending is None:
            log.debug("%s for unknown ITT %#x ignored", type(pdu).__name__, pdu.itt)
            return
        future = pending.future
        if future.done():
            return
        if isinstance(pdu, ScsiResponse):
            future.set_result(self._outcome(pending, pdu))
        elif isinstance(pdu, TmfResponse):
            future.set_result(pdu.response)
        elif isinstance(pdu, (TextResponse, NopIn, LogoutResponse)):
            future.set_result(pdu)
            if isinstance(pdu, LogoutResponse):
                self._state = "closing"
        else:
            future.set_exception(SessionClosed(f"unexpected {type(pdu).__name__} for ITT {pdu.itt:#x}"))

    def _outcome(self, pending: _Pending, rsp: ScsiResponse) -> ScsiOutcome:
        sense = b""
        if len(rsp.data) >= 2:
            (sense_len,) = struct.unpack_from(">H", rsp.data)
            sense = bytes(rsp.data[2:2 + sense_len])
        data = pending.data_in
        if data is None:
            data = _NO_DATA
        elif rsp.underflow:
            data = data[:max(0, len(data) - rsp.residual)]
        return ScsiOutcome(rsp.status, sense, data, rsp.residual, rsp.overflow, rsp.underflow, rsp.response)

    def _reject(self, pdu: Reject) -> None:
        header = bytes(pdu.data[:48])
        itt = int.from_bytes(header[16:20], "big") if len(header) >= 20 else RESERVED_TAG
        log.warning("target rejected ITT %#x, reason %#04x", itt, pdu.reason)
        pending = self._pending.pop(itt, None)
        if pending is not None and not pending.future.done():
            pending.future.set_exception(RejectedError(pdu.reason))

    def _async_message(self, pdu: AsyncMessage) -> None:
        log.info("async event %d from the target", pdu.async_event)
        if pdu.async_event == 1 and self._state == "up":
            # the target requests a logout (RFC 7143 11.9.1)
            asyncio.get_running_loop().create_task(self.logout())
        elif pdu.async_event in (2, 3) and self.conn is not None:
            self.connection_terminate_notify(self.conn)

    def connection_terminate_notify(self, conn: DatamoverConnection) -> None:
        if conn is not self.conn:
            return
        self._record("connection_terminate_notify")
        self.conn = None
        self._terminated.set()
        if self._state == "closing":
            self._state = "closed"
            self._fail_all(SessionClosed("connection closed after logout"))
            self._up.set()
            return
        if self._state != "up":
            return
        if not self.recover:
            self._state = "closed"
            self._fail_all(SessionClosed("connection lost"))
            self._up.set()
            return
        self._state = "recovering"
        self._up.clear()
        self._recovery_task = asyncio.get_running_loop().create_task(self._recover())

    def data_completion_notify(self, conn: DatamoverConnection, itt: int, sn: int) -> None:
        return None  # target-side up-call

    def data_ack_notify(self, conn: DatamoverConnection, itt: int, data_sn: int) -> None:
        return None  # target-side up-call

    def sn_update(self, conn: DatamoverConnection, exp_cmd_sn: int, max_cmd_sn: int,
                  stat_sn: int | None = None) -> None:
        if conn is self.conn and (exp_cmd_sn != self.exp_cmd_sn or max_cmd_sn != self.max_cmd_sn):
            self._update_window(exp_cmd_sn, max_cmd_sn)  # (an unchanged window opens nothing)

    def protocol_error_notify(self, conn: DatamoverConnection, error: Exception, header: bytes = b"") -> None:
        header = header or getattr(error, "header", b"") or b""
        if len(header) >= 20:
            itt = int.from_bytes(header[16:20], "big")
            if itt != RESERVED_TAG and itt not in self._pending:
                # data for a task we no longer have (aborted, reset): harmless, drop it
                log.debug("stray PDU for finished task %#x ignored: %s", itt, error)
                return
        # ERL 0: any other protocol error from the target ends the connection; recovery follows
        log.warning("protocol error from the target: %s", error)
        self.last_error = str(error)
        if conn is self.conn:
            conn.connection_terminate()
            self.connection_terminate_notify(conn)

    # ================================================================= recovery
    async def _recover(self) -> None:
        """ERL 0 session reinstatement with bounded exponential backoff."""
        low, high = self.config.recovery_backoff
        delay = low
        for attempt in range(1, self.config.recovery_attempts + 1):
            try:
                await asyncio.sleep(delay)
                # the old session is gone: everything not answered is re-sent from scratch
                self._window_reset()
                await self._connect_and_login()
            except LoginError as exc:
                self.last_error = str(exc)
                if exc.status >> 8 == 2:
                    break  # an initiator error class will not heal by retrying
            except (ConnectionError, OSError, asyncio.TimeoutError) as exc:
                self.last_error = f"reconnect attempt {attempt}: {exc}"
            else:
                self.recoveries += 1
                log.info("session reinstated after %d attempt(s); re-issuing %d task(s)",
                         attempt, len(self._pending))
                self._reissue()
                return
            delay = min(high, delay * 2)
        log.error("session recovery failed: %s", self.last_error)
        self._state = "closed"
        self._fail_all(SessionClosed(f"recovery failed: {self.last_error}"))
        self._up.set()

    def _window_reset(self) -> None:
        self._state = "recovering"
        self.cmd_sn = self.exp_cmd_sn = self.max_cmd_sn = 1

    def _reissue(self) -> None:
        old = list(self._pending.values())
        self._pending.clear()
        for pending in old:
            if pending.kind in ("scsi", "nop", "text") and not pending.future.done():
                asyncio.get_running_loop().create_task(self._resend(pending))
            elif not pending.future.done():
                pending.future.set_exception(SessionClosed("connection lost; request not re-issued"))

    async def _resend(self, pending: _Pending) -> None:
        if pending.issued > self.config.recovery_attempts:
            # the command itself keeps killing the connection: report it, do not loop
            pending.future.set_exception(SessionClosed(
                f"command re-issued {pending.issued - 1} times without a response; giving up"))
            return
        try:
            await self._send_ordered(pending)
        except Exception as exc:
            if not pending.future.done():
                pending.future.set_exception(exc)

    def _fail_all(self, error: Exception) -> None:
        pending, self._pending = self._pending, {}
        for item in pending.values():
            if not item.future.done():
                item.future.set_exception(error)

    async def _nop_loop(self) -> None:
        interval = self.config.nop_interval
        while self._state not in ("closed",):
            await asyncio.sleep(interval)
            if self._state == "up":
                try:
                    await self.nop(timeout=max(1.0, interval * 2))
                except (asyncio.TimeoutError, SessionClosed, ConnectionError, RejectedError):
                    if self.conn is not None and self._state == "up":
                        log.warning("NOP-Out ping unanswered: dropping the connection")
                        conn = self.conn
                        conn.connection_terminate()
                        self.connection_terminate_notify(conn)


def _flat(buffer: object) -> bool:
    """A contiguous one-dimensional byte view (the usual buffer), usable as it is: a cast
    per command would cost more than this test."""
    return (type(buffer) is memoryview and buffer.format == "B" and buffer.ndim == 1  # type: ignore[union-attr]
            and buffer.c_contiguous)  # type: ignore[union-attr]


def _relay_failure(future: asyncio.Future[object], waiter: asyncio.Task[None]) -> None:
    """A submitted command's wait for the window failed (the session closed): its caller
    learns it from the command's future."""
    if waiter.cancelled():
        if not future.done():
            future.cancel()
        return
    error = waiter.exception()
    if error is not None and not future.done():
        future.set_exception(error)


def _sense_key(sense: bytes) -> int:
    if len(sense) >= 3 and sense[0] & 0x7F in (0x70, 0x71):
        return sense[2] & 0x0F
    if len(sense) >= 2 and sense[0] & 0x7F in (0x72, 0x73):
        return sense[1] & 0x0F
    return -1


async def discover(transport: Transport, portal: Portal, config: InitiatorConfig | None = None,
                   value: str = "All") -> dict[str, list[str]]:
    """SendTargets discovery in a Discovery session (RFC 7143 App. C)."""
    session = InitiatorSession(transport, portal, config, None, session_type="Discovery", recover=False)
    await session.login()
    try:
        return await session.send_targets(value)
    finally:
        await session.logout()


__all__ = ["ConnectionClosed", "InitiatorSession", "RejectedError", "ScsiOutcome", "discover"]

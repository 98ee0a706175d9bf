"""One iSCSI-over-TCP connection: an asyncio ``BufferedProtocol`` that is a DI connection.

Life of a connection:

1. *Login*: ``login_send`` writes a PDU without digests; ``login_recv`` frames the next PDU
   out of the receive buffer only when asked (so bytes that follow the final Login Response
   are never framed with login-phase rules). Login data segments above
   :data:`~datamover_tcp.negotiated.LOGIN_DATA_LIMIT` are refused with a
   :class:`~datamover_tcp.errors.SegmentTooLongError` and the stream is not read further.
2. ``notice_key_values`` keeps the keys; ``enable_datamover`` sends the target's final
   Login Response *without* digests, then switches digests and the negotiated receive limit
   on. From then on every complete PDU is framed as it arrives and dispatched: Data-In and
   R2T (initiator) and solicited Data-Out (target) to :mod:`~datamover_tcp.initiator_data` /
   :mod:`~datamover_tcp.target_data`, everything else to ``control_notify``. A PDU's
   ``data`` handed to ``control_notify`` aliases the receive buffer.
3. The end: ``connection_terminate`` (the core's; no notify) flushes what is queued and
   closes. Anything else (EOF, reset, a stream that cannot be framed any more) frees the
   task state and raises ``connection_terminate_notify`` exactly once.

Errors in received PDUs (protocol-digest 1.6, DatamoverSideChannel):

* header digest mismatch: framing cannot be trusted; ``protocol_error_notify`` with the
  :class:`~datamover.pdu.codec.DigestError`, then close and ``connection_terminate_notify``;
* data digest mismatch: ``protocol_error_notify`` (DigestError, which="data") and the PDU
  is skipped; the connection goes on (the core decides on a Reject);
* data segment above our MaxRecvDataSegmentLength: ``protocol_error_notify``
  (SegmentTooLongError), close, ``connection_terminate_notify``;
* other format errors and data PDUs that fit no task: ``protocol_error_notify``, skipped.

Receiving payload: a large Data-In (initiator) or solicited Data-Out (target) whose task
is known is received straight into the task's buffer (:mod:`~datamover_tcp.direct`);
other data segments are copied once out of the receive buffer. ``stats()`` counts both
(``direct_bytes``, ``payload_bytes_copied``); sending never copies payload.

ExpStatSN used by Data-Out PDUs: see :meth:`TcpConnection.current_exp_stat_sn`.
ExpDataSN of the target's SCSI Responses: see :mod:`~datamover_tcp.target_data`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import struct
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from datamover.di import ConnectionClosed, DatamoverConnection, Portal, Role
from datamover.pdu.codec import DigestError, PduFormatError, decode, decode_pdu, encode, peek_lengths, wire_length
from datamover.pdu.digest import ISAL_MIN, crc32c, crc32c_short
from datamover.pdu.model import DataIn, DataOut, R2T, ScsiCommand, ScsiResponse
from datamover.pdu.opcodes import BHS_LENGTH, RESERVED_TAG, Opcode

from datamover_tcp.direct import DIRECT_MIN, DirectSegment
from datamover_tcp.errors import DataPduError, DatamoverUsageError, SegmentTooLongError
from datamover_tcp.framing import ReceiveBuffer
from datamover_tcp.initiator_data import InitiatorData
from datamover_tcp.negotiated import LOGIN_DATA_LIMIT, NegotiatedKeys
from datamover.buffers import BufferPool
from datamover_tcp.sender import BatchedWriter, Buffer
from datamover_tcp.target_data import TargetData
from datamover_tcp.wire import (FLAG_F, command_buffers, decode_command, decode_response,
                                FLAG_O, FLAG_O_BIDI, FLAG_U, FLAG_U_BIDI, OP_SCSI_RESPONSE,
                                SCSI_RESPONSE_BHS)

if TYPE_CHECKING:
    from datamover.di import DataDescriptor, DatamoverUpcalls
    from datamover.pdu.model import Pdu

log = logging.getLogger(__name__)

#: Default size of the receive buffer (the ``recv_buffer`` option).
DEFAULT_RECV_BUFFER = 256 * 1024
#: the initiator writes once a turn has queued this many buffers (sender.py, early flushes)
INITIATOR_EARLY_FLUSH = 16
#: How long a closing connection may take to drain before it is aborted.
CLOSE_DRAIN_SECONDS = 5.0
#: The smallest read sent with os.sendfile (the sendfile option). Measured here: 64 KiB
#: reads 1.2x faster than through a buffer, 4 KiB reads slower (two syscalls per PDU).
SENDFILE_MIN = 64 * 1024


_LE32 = struct.Struct("<I")
#: bytes 4-7 of a BHS: TotalAHSLength (words) << 24 | DataSegmentLength
_LENGTHS = struct.Struct(">I")


def _response_bhs(p: ScsiResponse) -> bytes:
    """The BHS of a SCSI Response without data or AHS (the codec's layout and flags)."""
    b1 = FLAG_F
    if p.overflow:
        b1 |= FLAG_O
    if p.underflow:
        b1 |= FLAG_U
    if p.bidi_overflow:
        b1 |= FLAG_O_BIDI
    if p.bidi_underflow:
        b1 |= FLAG_U_BIDI
    return SCSI_RESPONSE_BHS.pack(OP_SCSI_RESPONSE | (0x40 if p.immediate else 0), b1, p.response, p.status, 0,
                                  p.itt, p.snack_tag, p.stat_sn, p.exp_cmd_sn, p.max_cmd_sn, p.exp_data_sn,
                                  p.bidi_read_residual, p.residual)


class TcpConnection(DatamoverConnection, asyncio.BufferedProtocol):
    """A DI connection over one TCP socket (both roles)."""

    def __init__(self, role: Role, *, local: Portal | None = None, nodelay: bool = True,
                 recv_buffer: int = DEFAULT_RECV_BUFFER, phase_collapse: bool = True,
                 sendfile: bool = False, congestion: str | None = None) -> None:
        DatamoverConnection.__init__(self, role, local, "")
        #: Set by the core (initiator): returns the connection's current ExpStatSN.
        self.exp_stat_sn_source: Callable[[], int] | None = None
        self.keys: NegotiatedKeys = NegotiatedKeys()
        #: digests in force now (off during login)
        self.header_digest: bool = False
        self.data_digest: bool = False
        # counters for stats()
        self.pdus_sent = 0
        self.pdus_received = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self.payload_copies = 0
        self.payload_bytes_copied = 0
        self.protocol_errors = 0
        #: payload bytes received straight into the caller's buffers (see direct.py)
        self.direct_bytes = 0
        #: SCSI Responses sent as the status of a read's last Data-In (target)
        self.pdus_collapsed = 0
        self._phase_collapse = phase_collapse
        self._sendfile = sendfile

        self._loop = asyncio.get_running_loop()
        self._nodelay = nodelay
        #: TCP congestion control for this socket (the ``congestion`` option); None: the system's
        self._congestion = congestion
        self._transport: asyncio.Transport | None = None
        self._rx = ReceiveBuffer(recv_buffer)
        self._pool = BufferPool()
        self._writer = BatchedWriter(self._loop, self._write_failed,
                                     INITIATOR_EARLY_FLUSH if role is Role.INITIATOR else 0)
        self._rx_limit = LOGIN_DATA_LIMIT
        self._allocated = False
        self._enabled = False
        self._upcalls: DatamoverUpcalls | None = None
        self._sn_update_cb: Callable[..., None] | None = None
        self._protocol_error_cb: Callable[..., None] | None = None
        self._closed = False  # the transport is gone (connection_lost ran)
        self._reading = True  # False once the stream can no longer be framed or we ended it
        self._paused_reading = False
        self._terminated = False  # the core called connection_terminate
        self._notified = False  # connection_terminate_notify was raised
        self._eof = False
        self._login_waiter: asyncio.Future[None] | None = None
        self._login_error: PduFormatError | None = None
        self._header_checked = False  # header digest of the PDU at the buffer head verified
        self._last_exp_stat_sn = 0
        self._drain_timer: asyncio.TimerHandle | None = None
        self._direct: DirectSegment | None = None
        self._expect_large = False  # read the next header alone (see get_buffer)
        self._small_run = 0  # PDUs since the last large data PDU
        self._initiator: InitiatorData | None = InitiatorData(self) if role is Role.INITIATOR else None
        self._target: TargetData | None = TargetData(self) if role is Role.TARGET else None
        self.connected: asyncio.Future[None] = self._loop.create_future()

    # ================================================================ asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport
        assert self._transport is not None
        self._writer.attach(self._transport)
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1 if self._nodelay else 0)
            except OSError:  # pragma: no cover - not every socket takes it
                pass
            if self._congestion is not None:
                try:
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, self._congestion.encode("ascii"))
                except OSError as exc:  # checked at start-up (check_congestion); a module unloaded since
                    log.warning("TCP congestion control %r refused on %s (%s); the system's default stays",
                                self._congestion, transport.get_extra_info("peername"), exc.strerror)
        peer = transport.get_extra_info("peername")
        if peer:
            host, port = peer[0], peer[1]
            self.peer = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        if not self.connected.done():
            self.connected.set_result(None)

    def get_buffer(self, sizehint: int) -> memoryview:
        direct = self._direct
        if not self._reading:
            # Closing or unframeable: whatever still arrives is read and dropped.
            return self._rx.write_area()[:65536] or bytearray(4096)
        if direct is not None and direct.remaining:
            if direct.discard:
                # The task went away: read into the receive buffer's free space, drop it.
                return self._rx.write_area()[:direct.remaining]
            return direct.area()
        area = self._rx.write_area()
        if self._expect_large:
            # The last PDU was a large data PDU and the next one likely is too: read up to
            # the end of its header only (plus what is left of the previous PDU's padding
            # and digest), so that its data segment can go straight to its buffer.
            wanted = (BHS_LENGTH + 4) if self.header_digest else BHS_LENGTH
            if direct is not None:
                wanted += direct.trailer
            missing = wanted - self._rx.available
            if missing > 0:
                return area[:missing]
        if not area:
            # Reading is paused whenever the buffer fills, so this is a last resort: make
            # a little room rather than fail the transport.
            self._rx.reserve(self._rx.capacity - self._rx.start + 4096)
            area = self._rx.write_area()
        return area

    def buffer_updated(self, nbytes: int) -> None:
        if not self._reading:
            self.bytes_received += nbytes
            return
        direct = self._direct
        if direct is not None and direct.remaining:
            self.bytes_received += nbytes
            if not direct.discard:
                self.direct_bytes += nbytes
            direct.advance(nbytes)
            if not direct.remaining and self._reading:
                self._process()
            return
        self._rx.commit(nbytes)
        self.bytes_received += nbytes
        if self._enabled:
            if self._reading:
                self._process()
        else:
            self._wake_login()
        if self._reading and not self._rx.free:
            self._rx.compact()
            if not self._rx.free:
                self._pause_reading()

    def eof_received(self) -> bool:
        self._eof = True
        self._wake_login()
        return False  # let the transport close; connection_lost follows

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        self._reading = False
        self._writer.abandon()
        if self._drain_timer is not None:
            self._drain_timer.cancel()
            self._drain_timer = None
        if not self.connected.done():
            self.connected.set_exception(ConnectionClosed(f"connection lost: {exc}"))
        self._wake_login()
        self._rx.release()
        if self._enabled and not self._terminated:
            self._end(notify=True)
        else:
            self._free_tasks()

    def pause_writing(self) -> None:
        self._writer.pause_writing()

    def resume_writing(self) -> None:
        self._writer.resume_writing()

    # ================================================================ login channel
    async def login_send(self, pdu: Pdu) -> None:
        if self._closed or self._terminated:
            raise ConnectionClosed("connection is closed")
        if self._enabled:
            raise DatamoverUsageError("login_send after enable_datamover")
        self._emit(encode(pdu), 1)

    async def login_recv(self, timeout: float | None = None) -> Pdu:
        if self._enabled:
            raise DatamoverUsageError("login_recv after enable_datamover")
        async with asyncio.timeout(timeout):
            while True:
                pdu = self._next_login_pdu()
                if pdu is not None:
                    return pdu
                if self._closed or self._eof or self._terminated:
                    raise ConnectionClosed("peer closed the connection during login")
                if self._login_waiter is not None:
                    raise DatamoverUsageError("login_recv is already waiting on this connection")
                self._login_waiter = self._loop.create_future()
                try:
                    await self._login_waiter
                finally:
                    self._login_waiter = None

    def _next_login_pdu(self) -> Pdu | None:
        if self._login_error is not None:
            raise self._login_error
        rx = self._rx
        if rx.available < BHS_LENGTH:
            return None
        bhs = rx.view(0, BHS_LENGTH)
        _ahs, dsl = peek_lengths(bhs)
        if dsl > LOGIN_DATA_LIMIT:
            self._login_error = SegmentTooLongError(dsl, LOGIN_DATA_LIMIT, bytes(bhs))
            self._reading = False
            self._pause_reading()
            raise self._login_error
        total = wire_length(bhs)
        if rx.available < total:
            rx.reserve(total)
            self._resume_reading()
            return None
        raw = bytes(rx.view(0, total))  # login PDUs outlive the buffer: copy (not payload)
        rx.consume(total)
        self._resume_reading()
        self.pdus_received += 1
        pdu, _ = decode_pdu(raw)
        return pdu

    def _wake_login(self) -> None:
        waiter = self._login_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ================================================================ DI down-calls
    def notice_key_values(self, keys: Mapping[str, str]) -> None:
        self.keys = NegotiatedKeys.from_keys(keys)
        k = self.keys
        # one INFO line per login: what a benchmark or an operator needs to read PDU sizes off
        log.info("%s negotiated: MaxRecvDataSegmentLength initiator=%d target=%d MaxBurstLength=%d "
                 "FirstBurstLength=%d InitialR2T=%s ImmediateData=%s HeaderDigest=%s DataDigest=%s",
                 self.peer, k.max_recv_dsl_initiator, k.max_recv_dsl_target, k.max_burst_length,
                 k.first_burst_length, keys.get("InitialR2T", "Yes"), keys.get("ImmediateData", "Yes"),
                 "CRC32C" if k.header_digest else "None", "CRC32C" if k.data_digest else "None")

    async def allocate_connection_resources(self, resource_descriptor: object | None = None) -> bool:
        if self._closed:
            return False
        self._allocated = True
        return True

    def deallocate_connection_resources(self) -> None:
        self._allocated = False
        self._free_tasks()

    async def enable_datamover(self, upcalls: DatamoverUpcalls, final_login_response: Pdu | None = None) -> None:
        if self._closed or self._terminated:
            raise ConnectionClosed("connection is closed")
        if self._enabled:
            return
        if final_login_response is not None:
            # Native mode, digests still off (RFC 5047 8.6).
            self._emit(encode(final_login_response), 1)
        self._upcalls = upcalls
        self._sn_update_cb = getattr(upcalls, "sn_update", None)
        self._protocol_error_cb = getattr(upcalls, "protocol_error_notify", None)
        self.header_digest = self.keys.header_digest
        self.data_digest = self.keys.data_digest
        own_limit = (self.keys.max_recv_dsl_initiator if self.role is Role.INITIATOR
                     else self.keys.max_recv_dsl_target)
        self._rx_limit = own_limit
        self._enabled = True
        if self._login_error is None:
            self._reading = True
            if self._rx.available:
                # Bytes that arrived behind the final Login Response: deliver them after
                # this call returns (upcalls start "from return on").
                self._loop.call_soon(self._process_if_reading)
            self._resume_reading()
        else:
            self._loop.call_soon(self._fatal, self._login_error)

    def send_control(self, pdu: Pdu, *, data_out: DataDescriptor | None = None,
                     data_in: DataDescriptor | None = None, immediate_data_size: int = 0,
                     unsolicited_data_size: int = 0) -> None:
        if not self._enabled:
            raise DatamoverUsageError("send_control before enable_datamover")
        if self._closed or self._terminated or self._notified:
            raise ConnectionClosed("connection is closed")
        initiator = self._initiator
        if initiator is not None:
            if type(pdu) is ScsiCommand:
                self._last_exp_stat_sn = pdu.exp_stat_sn
                initiator.register(pdu, data_out, data_in)
                buffers = command_buffers(pdu, self.header_digest, self.data_digest)  # type: ignore[arg-type]
                if buffers is not None:  # the common command, packed without the generic codec
                    self._emit(buffers, 1)
                    return
            else:
                exp_stat_sn = getattr(pdu, "exp_stat_sn", None)
                if exp_stat_sn is not None:
                    self._last_exp_stat_sn = exp_stat_sn
        elif type(pdu) is ScsiResponse:
            if self._phase_collapse and self._target.collapse(pdu):  # type: ignore[union-attr]
                # the status rides in the read's last Data-In, still queued (see collapse)
                self.pdus_collapsed += 1
                return
            self._target.finish(pdu)  # type: ignore[union-attr]
            if not pdu.data and not pdu.ahs:
                # every command ends with one: packed here without the codec's generic
                # dispatch (same bytes; anything unusual takes the codec's path below)
                try:
                    bhs = _response_bhs(pdu)  # type: ignore[arg-type]
                except struct.error:
                    pass
                else:
                    self._emit([bhs + _LE32.pack(crc32c_short(bhs)) if self.header_digest else bhs], 1)
                    return
        self._emit(encode(pdu, header_digest=self.header_digest, data_digest=self.data_digest), 1)

    def put_data(self, header: DataIn, descriptor: DataDescriptor, notify: bool) -> None:
        target = self._target
        if target is None or not self._enabled or self._closed or self._terminated or self._notified:
            target = self._ready_target("put_data")  # raises what is wrong
        target.put_data(header, descriptor, notify)

    def get_data(self, r2t: R2T, descriptor: DataDescriptor, notify: bool) -> None:
        target = self._ready_target("get_data")
        target.get_data(r2t, descriptor, notify)

    def connection_terminate(self) -> None:
        if self._terminated:
            return
        self._terminated = True
        self._reading = False
        self._free_tasks()
        if self._closed or self._transport is None:
            return
        self._writer.close_after_flush()
        # A peer that stops reading must not keep the socket forever.
        self._drain_timer = self._loop.call_later(CLOSE_DRAIN_SECONDS, self._abort)

    def deallocate_task_resources(self, itt: int) -> None:
        if self._initiator is not None:
            self._initiator.free(itt)
        if self._target is not None:
            self._target.free(itt)

    def min_file_slice(self) -> int | None:
        """With the ``sendfile`` option, on a target connection without DataDigest whose
        writes go through ``os.writev``: file slices of :data:`SENDFILE_MIN` bytes and up
        are sent with ``os.sendfile`` (a smaller one costs more as its own syscall than
        its copy through a buffer)."""
        if self._sendfile and self._target is not None and not self.data_digest and self._writer.can_send_files():
            return SENDFILE_MIN
        return None

    def alloc_buffer(self, size: int) -> memoryview:
        """A data buffer from this connection's pool (see :class:`~datamover.buffers.BufferPool`)."""
        return self._pool.take(size)

    def release_buffer(self, buf: memoryview) -> None:
        self._pool.give(buf)

    def stats(self) -> dict[str, int]:
        return {
            "pdus_sent": self.pdus_sent,
            "pdus_received": self.pdus_received,
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "payload_copies": self.payload_copies,
            "payload_bytes_copied": self.payload_bytes_copied,
            "direct_bytes": self.direct_bytes,
            "buffer_bytes_moved": self._rx.moved_bytes,
            "write_calls": self._writer.writes,
            "stall_bytes_copied": self._writer.stall_bytes_copied,
            "close_bytes_copied": self._writer.close_bytes_copied,
            "protocol_errors": self.protocol_errors,
            "responses_collapsed": self.pdus_collapsed,
            "buffers_allocated": self._pool.allocated,
            "buffers_reused": self._pool.reused,
        }

    # ====================================================================== helpers
    def current_exp_stat_sn(self) -> int:
        """ExpStatSN for datamover-built PDUs (Data-Out).

        Contract: the core sets :attr:`exp_stat_sn_source` to a callable returning the
        connection's ExpStatSN; if it has not, the ExpStatSN of the last PDU the core sent
        on this connection through ``send_control`` is used.
        """
        source = self.exp_stat_sn_source
        if source is not None:
            return source() & 0xFFFFFFFF
        return self._last_exp_stat_sn

    def _ready_target(self, what: str) -> TargetData:
        if self._target is None:
            raise DatamoverUsageError(f"{what} is a target-side call; this is an initiator connection")
        if not self._enabled:
            raise DatamoverUsageError(f"{what} before enable_datamover")
        if self._closed or self._terminated or self._notified:
            raise ConnectionClosed("connection is closed")
        return self._target

    def _emit(self, buffers: list[Buffer], pdus: int, on_sent: Callable[[], None] | None = None) -> None:
        """Queue ``buffers`` (``pdus`` PDUs) for this loop turn's gather write."""
        self.bytes_sent += self._writer.queue(buffers, on_sent)
        self.pdus_sent += pdus

    def _process_if_reading(self) -> None:
        if self._reading and not self._closed:
            self._process()

    def _process(self) -> None:
        """Frame and dispatch every complete PDU in the receive buffer (full feature phase)."""
        rx = self._rx
        hd = self.header_digest
        dd = self.data_digest
        limit = self._rx_limit
        while self._reading:
            direct = self._direct
            if direct is not None:
                if direct.remaining or rx.available < direct.trailer:
                    break
                self._finish_direct(direct)
                continue
            available = rx.available
            if available < BHS_LENGTH:
                break
            bhs = rx.view(0, BHS_LENGTH)
            lens = _LENGTHS.unpack_from(bhs, 4)[0]  # what peek_lengths reads, without its checks
            ahs_bytes, dsl = (lens >> 24) << 2, lens & 0xFFFFFF
            if hd and not self._header_checked:
                header_end = BHS_LENGTH + ahs_bytes
                if available < header_end + 4:
                    rx.reserve(header_end + 4)
                    break
                if not rx.digest_ok(0, header_end):
                    self._fatal(DigestError("header", "header digest mismatch", bytes(bhs)))
                    return
                self._header_checked = True
            if dsl > limit:
                self._fatal(SegmentTooLongError(dsl, limit, bytes(bhs)))
                return
            # wire_length(bhs, hd, dd) from the lengths already read
            total = BHS_LENGTH + ahs_bytes + ((dsl + 3) & ~3) + (4 if hd else 0) + (4 if dd and dsl else 0)
            if dsl >= DIRECT_MIN:
                self._expect_large = True
                self._small_run = 0
            if available < total:
                if dsl >= DIRECT_MIN and self._start_direct(bhs, ahs_bytes, dsl, total):
                    continue
                rx.reserve(total)
                break
            if dsl < DIRECT_MIN and self._expect_large:
                # A response or two between bursts is normal; a run of small PDUs means
                # the large ones are over.
                self._small_run += 1
                if self._small_run > 2:
                    self._expect_large = False
            self._header_checked = False
            opcode = bhs[0] & 0x3F
            initiator = self._initiator
            data_start = BHS_LENGTH + 4 if hd else BHS_LENGTH  # the header digest is checked above
            if (not ahs_bytes and (opcode == 0x01 or initiator is not None and (opcode == 0x25 or opcode == 0x21))
                    and (not dd or not dsl
                         or rx.digest_ok(data_start, (dsl + 3) & ~3, crc32c_short if dsl < ISAL_MIN else crc32c))):
                # A SCSI Command (most of what a target receives), a Data-In or a SCSI
                # Response (most of what an initiator receives), digests verified: decoded
                # without the codec's generic checks, which these PDUs cannot fail, and
                # handed on as _dispatch would. (A bad data digest takes the codec's path,
                # which reports it; other PDUs go there without being digested here.)
                if opcode == 0x01:
                    self.pdus_received += 1
                    self._control(decode_command(bhs, rx.view(data_start, dsl) if dsl else b""))
                    if not self._reading:
                        return
                    rx.consume(total)
                    continue
                assert initiator is not None
                self.pdus_received += 1
                data = rx.view(data_start, dsl) if dsl else b""
                if opcode == 0x25:
                    initiator.on_data_in(bhs, data)
                else:
                    response = decode_response(bhs, data)
                    initiator.free(response.itt)
                    self._control(response)
                if not self._reading:
                    return
                rx.consume(total)
                continue
            try:
                pdu, _ = decode_pdu(rx.view(0, total), header_digest=hd, data_digest=dd)
            except PduFormatError as exc:
                # Framing is intact (the lengths were usable): report and skip this PDU.
                self._report(exc)
                rx.consume(total)
                continue
            self.pdus_received += 1
            self._dispatch(pdu, bhs)
            if not self._reading:  # the core terminated the connection from an up-call
                return
            rx.consume(total)

    def _start_direct(self, bhs: memoryview, ahs_bytes: int, dsl: int, total: int) -> bool:
        """Receive the rest of this data PDU's segment into its task's buffer, if it fits."""
        opcode = bhs[0] & 0x3F
        if self._initiator is not None and opcode == Opcode.DATA_IN:
            placement = self._initiator.placement(bhs, dsl)
        elif self._target is not None and opcode == Opcode.DATA_OUT:
            placement = self._target.placement(bhs, dsl)
        else:
            return False
        rx = self._rx
        header_end = BHS_LENGTH + ahs_bytes
        data_start = header_end + 4 if self.header_digest else header_end
        if placement is None or rx.available < data_start:
            return False
        itt, pieces = placement
        direct = DirectSegment(bytes(rx.view(0, header_end)), itt, pieces, dsl, total - data_start - dsl,
                               crc32c if self.data_digest else None)
        prefix = min(rx.available - data_start, dsl)
        if prefix:
            self.payload_copies += direct.fill_prefix(rx.view(data_start, prefix))
            self.payload_bytes_copied += prefix
        rx.consume(data_start + prefix)
        self._header_checked = False
        self._direct = direct
        return True

    def _finish_direct(self, direct: DirectSegment) -> None:
        """The directly received segment and its trailer are in: check, then dispatch."""
        self._direct = None
        rx = self._rx
        trailer = rx.view(0, direct.trailer)
        bhs = memoryview(direct.header)[:BHS_LENGTH]
        error: PduFormatError | None = None
        if direct.discard:
            error = DataPduError(f"data PDU of task {direct.itt:#x} arrived after the task was freed",
                                 bytes(bhs))
        elif self.data_digest:
            pad = direct.trailer - 4
            value = direct.crc  # computed as the data arrived
            if pad:
                value = crc32c_short(trailer[:pad], value)
            if value != int.from_bytes(trailer[pad:], "little"):
                error = DigestError("data", "data digest mismatch", bytes(bhs))
        rx.consume(direct.trailer)
        self.pdus_received += 1
        if error is None and self._initiator is not None and len(direct.header) == BHS_LENGTH:
            # a Data-In without AHS (every one): decoded directly, as in _process
            self._initiator.on_data_in(bhs, b"", direct.length)
            return
        if error is None:
            header = bytearray(direct.header)
            header[5:8] = b"\0\0\0"  # the data is placed already; decode the header alone
            try:
                pdu = decode(bytes(header))
            except PduFormatError as exc:
                error = exc
        if error is not None:
            self._report(error)
            return
        if self._initiator is not None:
            self._initiator.on_data_in(bhs, b"", direct.length)
        else:
            self._target.on_data_out(pdu, bhs, direct.length)  # type: ignore[union-attr, arg-type]

    def _forget_direct(self, itt: int | None) -> None:
        """A task (or every task, ``None``) was freed: stop writing its buffer."""
        direct = self._direct
        if direct is not None and (itt is None or direct.itt == itt):
            direct.discard = True

    def _dispatch(self, pdu: Pdu, bhs: memoryview) -> None:
        kind = type(pdu)
        initiator = self._initiator
        if initiator is not None:
            if kind is DataIn:
                initiator.on_data_in(bhs, pdu.data)
                return
            if kind is R2T:
                initiator.on_r2t(pdu, bhs)  # type: ignore[arg-type]
                return
            if kind is ScsiResponse:
                initiator.free(pdu.itt)
        elif kind is DataOut and pdu.ttt != RESERVED_TAG:  # type: ignore[attr-defined]
            self._target.on_data_out(pdu, bhs)  # type: ignore[union-attr, arg-type]
            return
        self._control(pdu)

    # up-calls, guarded so that nothing is raised after the connection ended
    def _control(self, pdu: Pdu) -> None:
        upcalls = self._upcalls
        if upcalls is not None and not self._terminated and not self._notified:
            upcalls.control_notify(self, pdu)

    def _sn_update(self, exp_cmd_sn: int, max_cmd_sn: int, stat_sn: int | None) -> None:
        callback = self._sn_update_cb
        if callback is not None and not self._terminated and not self._notified:
            callback(self, exp_cmd_sn, max_cmd_sn, stat_sn)

    def _report(self, error: PduFormatError) -> None:
        self.protocol_errors += 1
        callback = self._protocol_error_cb
        if callback is not None and not self._terminated and not self._notified:
            callback(self, error, error.header)
        else:
            log.warning("%s: %s (no protocol_error_notify to report it to)", self.peer, error)

    def _data_completion(self, itt: int, sn: int) -> None:
        upcalls = self._upcalls
        if upcalls is not None and not self._terminated and not self._notified:
            upcalls.data_completion_notify(self, itt, sn)

    def _fatal(self, error: PduFormatError) -> None:
        """The stream cannot be framed any more: report, close, notify termination."""
        self._reading = False
        self._report(error)
        self._abort()  # the socket is closed before the core hears of it
        self._end(notify=True)

    def _end(self, notify: bool) -> None:
        """Free everything and raise connection_terminate_notify (at most once)."""
        self._free_tasks()
        if notify and not self._notified and not self._terminated and self._upcalls is not None:
            self._notified = True
            self._upcalls.connection_terminate_notify(self)

    def _write_failed(self, exc: BaseException) -> None:
        log.debug("%s: write failed: %s", self.peer, exc)
        self._abort()

    def _abort(self) -> None:
        transport = self._transport
        if transport is not None and not self._closed:
            transport.abort()

    def _free_tasks(self) -> None:
        if self._initiator is not None:
            self._initiator.clear()
        if self._target is not None:
            self._target.clear()

    def _pause_reading(self) -> None:
        if not self._paused_reading and self._transport is not None and not self._closed:
            self._paused_reading = True
            self._transport.pause_reading()

    def _resume_reading(self) -> None:
        if self._paused_reading and self._transport is not None and not self._closed and self._reading:
            self._paused_reading = False
            self._transport.resume_reading()

    def __repr__(self) -> str:
        return f"<TcpConnection {self.role.value} #{self.handle} {self.peer or 'unconnected'}>"

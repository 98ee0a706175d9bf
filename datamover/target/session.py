"""A target session in full feature phase: the core's side of the DI up-calls.

One :class:`TargetSession` per iSCSI session (sessions have one connection here:
MaxConnections=1). It receives control PDUs through ``control_notify``, orders commands by
CmdSN (RFC 7143 4.2.2.1), drives SCSI tasks through Put_Data / Get_Data, and answers every
bad PDU with the Reject, SCSI sense or TMF response the RFC requires. No exception raised
while handling one PDU escapes to the datamover: it is logged and the PDU is rejected.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from datamover.buffers import FileSlice
from datamover.di import DatamoverConnection
from datamover.pdu import (
    RESERVED_TAG,
    AsyncMessage,
    DataIn,
    DataOut,
    LoginRequest,
    LogoutRequest,
    LogoutResponse,
    NopIn,
    NopOut,
    Pdu,
    Reject,
    RejectReason,
    ScsiCommand,
    ScsiResponse,
    SnackRequest,
    TextRequest,
    TextResponse,
    TmfRequest,
    TmfResponse,
    UnknownPdu,
    encode_header,
)
from datamover.pdu.opcodes import LogoutReason, LogoutResponseCode, TmfFunction, TmfResponseCode
from datamover.scsi.backend import BackendError
from datamover.session.params import SessionParams
from datamover.session.serial import sn_add, sn_in_window, sn_lt
from datamover.target.discovery import TextExchange
from datamover.target.task import LUN_NUMBERS, MAX_TRANSFER, TargetTask

if TYPE_CHECKING:
    from datamover.scsi.lunmap import LunMap
    from datamover.target.config import TargetConfig
    from datamover.target.server import TargetServer
    from datamover.trace import DITrace

log = logging.getLogger("datamover.target.session")

#: Fast-path READs up to this size get a bytes object of their own instead of a pooled
#: buffer: no Put_Data completion to wait for and no buffer to hand back (4 KiB reads
#: 1.5 us cheaper here); larger ones borrow from the datamover's pool. The same on every
#: transport, so that their DI traces stay comparable: on iSER such a READ is bounced
#: through registered memory (one 16 KiB copy at most, beside a round trip).
SMALL_READ = 16 * 1024

#: PDUs that carry a CmdSN and take part in command ordering
_ORDERED = (ScsiCommand, TmfRequest, TextRequest, LogoutRequest, NopOut)


class TargetSession:
    """Session state plus the handler of its (single) connection."""

    def __init__(
        self,
        server: TargetServer,
        conn: DatamoverConnection,
        *,
        initiator_name: str,
        target: TargetConfig | None,
        isid: int,
        tsih: int,
        cid: int,
        params: SessionParams,
        exp_cmd_sn: int,
        stat_sn: int,
        lunmap: LunMap | None,
        trace: DITrace | None = None,
    ) -> None:
        self.server = server
        self.conn = conn
        self.initiator_name = initiator_name
        self.target = target
        self.isid = isid
        self.tsih = tsih
        self.cid = cid
        self.params = params
        self.exp_cmd_sn = exp_cmd_sn
        self.stat_sn = stat_sn
        self.exp_stat_sn = stat_sn
        self.lunmap = lunmap
        self.trace = trace
        self.depth = server.config.queue_depth
        self.tasks: dict[int, TargetTask] = {}
        self._held: dict[int, Pdu] = {}  # CmdSN -> PDU that arrived ahead of ExpCmdSN
        #: read buffers of answered tasks, until their last Put_Data completes
        self._read_buffers: dict[int, memoryview] = {}
        self._next_ttt = 1
        self._text: TextExchange | None = None
        self.closed = False
        self.logged_out = False
        self.on_close: Callable[[TargetSession], None] | None = None
        #: I_T nexus identifier (SAM): initiator port = name + ISID, target port = name + TPGT
        self.nexus = f"{initiator_name},i,0x{isid:012x}|{target.iqn if target else 'discovery'}"
        #: ``fast_path``: the commands of ``commands`` that _fast_command ran
        self.counters = {"commands": 0, "rejects": 0, "bytes_in": 0, "bytes_out": 0, "fast_path": 0}
        self.last_heard = 0.0  # loop time of the last PDU from the initiator
        #: _now() without its per-call loop lookup (one call per PDU received)
        self._clock: Callable[[], float] = _loop_clock()
        self.ping_outstanding: float | None = None  # loop time of an unanswered NOP-In ping
        #: the smallest READ answered with a FileSlice (asked on the first read); -1: none
        self._min_file_slice: int | None = None

    # ---------------------------------------------------------------- numbers
    @property
    def max_cmd_sn(self) -> int:
        """MaxCmdSN: the window shrinks with the tasks in flight, so a session never holds
        more than ``queue_depth`` tasks (a bound against a flooding initiator)."""
        room = self.depth - len(self.tasks) - len(self._held)
        # sn_add(exp_cmd_sn, max(0, room) - 1), inlined: three calls per command
        return (self.exp_cmd_sn + (room if room > 0 else 0) - 1) & 0xFFFFFFFF

    def next_stat_sn(self) -> int:
        sn = self.stat_sn
        self.stat_sn = sn_add(sn, 1)
        return sn

    def new_ttt(self) -> int:
        ttt = self._next_ttt
        self._next_ttt = (ttt + 1) & 0x7FFFFFFF or 1
        return ttt

    # ------------------------------------------------------------ DI plumbing
    def send(self, pdu: Pdu, **kwargs: object) -> None:
        if self.closed:
            return
        if self.trace is not None:
            self.trace.record("target", "send_control", pdu=type(pdu).__name__, itt=pdu.itt,
                              **_pdu_fields(pdu))
        self.conn.send_control(pdu, **kwargs)  # type: ignore[arg-type]

    def reject(self, reason: int, header: bytes) -> None:
        self.counters["rejects"] += 1
        self.send(Reject(reason=reason, stat_sn=self.next_stat_sn(), exp_cmd_sn=self.exp_cmd_sn,
                         max_cmd_sn=self.max_cmd_sn, data_sn=0, data=bytes(header[:48])))

    # ------------------------------------------------------------ up-calls
    def control_notify(self, conn: DatamoverConnection, pdu: Pdu) -> None:
        if self.closed:
            return
        if self.trace is not None:
            self.trace.record("target", "control_notify", pdu=type(pdu).__name__, itt=pdu.itt,
                              **_pdu_fields(pdu))
        self.last_heard = self._clock()
        self.ping_outstanding = None  # any PDU proves the initiator is alive
        try:
            self._receive(pdu)
        except Exception:  # a handler bug must not kill the connection's reader
            log.exception("error handling %s from %s", type(pdu).__name__, self.initiator_name)
            self.reject(RejectReason.PROTOCOL_ERROR, _header_of(pdu))

    def connection_terminate_notify(self, conn: DatamoverConnection) -> None:
        if self.trace is not None:
            self.trace.record("target", "connection_terminate_notify")
        self._shutdown(notify_datamover=False)

    def data_completion_notify(self, conn: DatamoverConnection, itt: int, sn: int) -> None:
        task = self.tasks.get(itt)
        if self.trace is not None:
            # an R2TSN is the core's number; a Put_Data's DataSN depends on how the
            # transport split the burst, so it stays out of the comparable trace
            if task is not None and sn in task.outstanding:
                self.trace.record("target", "data_completion_notify", itt=itt, kind="get_data", sn=sn)
            else:
                self.trace.record("target", "data_completion_notify", itt=itt, kind="put_data")
        released = self._read_buffers.pop(itt, None)
        if released is not None:
            conn.release_buffer(released)  # the last Put_Data of a finished read is done
        if task is not None:
            try:
                task.data_complete(sn)
            except Exception:
                log.exception("error completing data of task %#x", itt)
                self.finish_task(task)

    def data_ack_notify(self, conn: DatamoverConnection, itt: int, data_sn: int) -> None:
        # ERL 0 only: the A bit is never set, so this is never raised.
        log.debug("unexpected DataACK for %#x", itt)

    # side channel (datamover.di.DatamoverSideChannel)
    def sn_update(self, conn: DatamoverConnection, exp_cmd_sn: int, max_cmd_sn: int,
                  stat_sn: int | None = None) -> None:
        return None  # initiator-side only

    def protocol_error_notify(self, conn: DatamoverConnection, error: Exception, header: bytes = b"") -> None:
        reason = getattr(error, "reject_reason", RejectReason.PROTOCOL_ERROR)
        log.warning("protocol error from %s: %s", self.initiator_name, error)
        header = header or getattr(error, "header", b"")
        self.reject(int(reason), header)
        if len(header) >= 20 and header[0] & 0x3F == 0x05:
            # A Data-Out of an active task went wrong (digest, DataSN, offset): ERL 0 has no
            # recovery R2T, so the burst will never complete; end the task now instead of
            # holding it, its buffer and a slot of the command window until the session
            # ends. A digest error is CHECK CONDITION, protocol service CRC error (RFC 7143
            # 7.8); any other data error is ABORTED COMMAND, data phase error.
            task = self.tasks.get(int.from_bytes(header[16:20], "big"))
            if task is not None and not task.done:
                from datamover.scsi.sense import Sense
                from datamover.target.task import DATA_PHASE_ERROR

                crc = reason == RejectReason.DATA_DIGEST_ERROR
                task.fail(Sense(0x0B, 0x47, 0x05) if crc else DATA_PHASE_ERROR)

    # ------------------------------------------------------------ ordering
    def _receive(self, pdu: Pdu) -> None:
        if (type(pdu) is ScsiCommand and pdu.cmd_sn == self.exp_cmd_sn and not pdu.immediate and not pdu.ahs
                and not self._held and len(self.tasks) < self.depth
                and len(pdu.data) <= self.params.target_recv_limit):
            # The common case, a command arriving in order inside an open window: the
            # steps below for it, without the general checks it cannot fail.
            if pdu.exp_stat_sn > self.exp_stat_sn:
                self.exp_stat_sn = pdu.exp_stat_sn
            self.exp_cmd_sn = (pdu.cmd_sn + 1) & 0xFFFFFFFF
            if (self.lunmap is not None and not self.params.discovery and pdu.itt not in self.tasks
                    and len(self.tasks) < self.server.config.max_tasks_per_session and self._fast_command(pdu)):
                return  # (what _scsi_command checks before its fast path, one call less)
            self._scsi_command(pdu, try_fast=False)
            return
        if pdu.ahs:
            # only the Extended CDB and Bidirectional Read Length AHS exist (RFC 7143
            # 11.2.1.2); the codec folds those into the command, so anything left over is
            # a reserved or vendor AHS type we do not accept
            self.reject(RejectReason.INVALID_PDU_FIELD, _header_of(pdu))
            return
        if len(pdu.data) > self.params.target_recv_limit:
            # RFC 7143 7.1.1 / 11.2.1: a data segment above our declared limit is a
            # protocol error; whatever transport let it through, the core refuses it
            self.reject(RejectReason.PROTOCOL_ERROR, _header_of(pdu))
            return
        if isinstance(pdu, _ORDERED):
            self.exp_stat_sn = max(self.exp_stat_sn, getattr(pdu, "exp_stat_sn", 0))
            if isinstance(pdu, NopOut) and pdu.itt == RESERVED_TAG:
                return  # the answer to our NOP-In ping: nothing to do
            if pdu.immediate:
                self._dispatch(pdu)
                return
            cmd_sn = pdu.cmd_sn  # type: ignore[attr-defined]
            if not sn_in_window(cmd_sn, self.exp_cmd_sn, self.max_cmd_sn):
                # RFC 7143 4.2.2.1: outside the window -> silently ignored
                log.debug("CmdSN %d outside [%d, %d]: ignored", cmd_sn, self.exp_cmd_sn, self.max_cmd_sn)
                return
            if cmd_sn != self.exp_cmd_sn:
                self._held.setdefault(cmd_sn, pdu)
                return
            self.exp_cmd_sn = sn_add(self.exp_cmd_sn, 1)
            self._dispatch(pdu)
            while self.exp_cmd_sn in self._held and not self.closed:
                held = self._held.pop(self.exp_cmd_sn)
                self.exp_cmd_sn = sn_add(self.exp_cmd_sn, 1)
                self._dispatch(held)
            return
        self._dispatch(pdu)

    def _dispatch(self, pdu: Pdu) -> None:
        if isinstance(pdu, ScsiCommand):
            self._scsi_command(pdu)
        elif isinstance(pdu, DataOut):
            self._unsolicited_data(pdu)
        elif isinstance(pdu, NopOut):
            self._nop_out(pdu)
        elif isinstance(pdu, TmfRequest):
            self._tmf(pdu)
        elif isinstance(pdu, TextRequest):
            self._text_request(pdu)
        elif isinstance(pdu, LogoutRequest):
            self._logout(pdu)
        elif isinstance(pdu, LoginRequest):
            # RFC 7143 6.1 / RFC 5047 10.3.10: a Login in full feature phase is a protocol error
            self.reject(RejectReason.PROTOCOL_ERROR, _header_of(pdu))
        elif isinstance(pdu, SnackRequest):
            # ERL 0 has no SNACK support (RFC 7143 7.1.4.1)
            self.reject(RejectReason.PROTOCOL_ERROR, _header_of(pdu))
        elif isinstance(pdu, UnknownPdu):
            self.reject(RejectReason.COMMAND_NOT_SUPPORTED, pdu.raw_bhs)
        else:
            # a target-to-initiator opcode sent to us
            self.reject(RejectReason.PROTOCOL_ERROR, _header_of(pdu))

    # ------------------------------------------------------------ SCSI
    def _scsi_command(self, cmd: ScsiCommand, try_fast: bool = True) -> None:
        if self.params.discovery or self.lunmap is None:
            # RFC 7143 4.3: a Discovery session accepts only Text (SendTargets) and Logout
            self.reject(RejectReason.PROTOCOL_ERROR, _header_of(cmd))
            return
        if cmd.itt in self.tasks:
            self.reject(RejectReason.TASK_IN_PROGRESS, _header_of(cmd))
            return
        if len(self.tasks) >= self.server.config.max_tasks_per_session:
            self.send(ScsiResponse(itt=cmd.itt, response=0, status=0x28,  # TASK SET FULL
                                   stat_sn=self.next_stat_sn(), exp_cmd_sn=self.exp_cmd_sn,
                                   max_cmd_sn=self.max_cmd_sn))
            return
        if try_fast and self._fast_command(cmd):
            return
        self.counters["commands"] += 1
        task = TargetTask(self, cmd)
        self.tasks[cmd.itt] = task
        task.start()

    def _fast_command(self, cmd: ScsiCommand) -> bool:
        """Run a plain READ or WRITE (10)/(16) in one pass, without a task; False (and
        nothing done) for anything else, which then takes the general path.

        What qualifies (``LogicalUnit.fast_rw``): no unit attention, reservation or
        NOT READY condition, every CDB field valid, the transfer inside the medium, and
        here an Expected Data Transfer Length equal to it (no residual) with the
        direction bits to match; a write must have all its data in the command
        (immediate data, F set). The answer is what the general path would give: the
        same Put_Data bursts and SCSI Response, the same counters. A backend error
        leaves the command to the general path, which tries once more and reports it.
        """
        lun = LUN_NUMBERS.get(cmd.lun)  # filled by the general path's first command per LUN
        lu = self.lunmap.get(lun) if lun is not None and self.lunmap is not None else None
        if lu is None:
            return False
        plan = lu.fast_rw(cmd.cdb, self.nexus)
        if plan is None:
            return False
        offset, nbytes, write, flush = plan
        if nbytes != cmd.expected_data_transfer_length or nbytes > MAX_TRANSFER:
            return False
        itt = cmd.itt
        counters = self.counters
        if write:
            data = cmd.data
            if not cmd.write or cmd.read or not cmd.final or len(data) != nbytes:
                return False
            try:
                lu.backend.write_from(offset, data)
                if flush:
                    lu.backend.flush()
            except BackendError:
                return False
            counters["commands"] += 1
            counters["fast_path"] += 1
            counters["bytes_in"] += nbytes
        else:
            if not cmd.read or cmd.write:
                return False
            conn = self.conn
            min_slice = self._min_file_slice
            if min_slice is None:
                answer = conn.min_file_slice()
                min_slice = self._min_file_slice = -1 if answer is None else answer
            piece = lu.backend.file_slice(offset, nbytes) if 0 <= min_slice <= nbytes else None
            if piece is not None:
                self._answer_read(cmd, piece, False)  # no buffer: nothing to release after
                return True
            if nbytes <= SMALL_READ:
                # its own bytes object: nothing to release, so no completion to wait for
                try:
                    data = memoryview(lu.backend.read(offset, nbytes))
                except BackendError:
                    return False
                self._answer_read(cmd, data, False)
                return True
            buf = conn.alloc_buffer(nbytes)
            try:
                lu.backend.read_into(offset, buf)
            except BackendError:
                conn.release_buffer(buf)
                return False
            self._read_buffers[itt] = buf  # released when the last Put_Data completes
            self._answer_read(cmd, buf, True)
            return True
        response = ScsiResponse(itt=itt, stat_sn=self.next_stat_sn(), exp_cmd_sn=self.exp_cmd_sn,
                                max_cmd_sn=self.max_cmd_sn)
        if self.trace is None and not self.closed:
            self.conn.send_control(response)  # untraced: straight to the datamover, as _answer_read
        else:
            self.send(response)
        return True

    def _answer_read(self, cmd: ScsiCommand, data: memoryview | FileSlice, notify: bool) -> None:
        """A fast-path READ's Put_Data bursts (of at most MaxBurstLength) and its SCSI
        Response. ``data`` is a buffer, or the file's bytes themselves where the datamover
        sends from files (DatamoverConnection.min_file_slice: no copy at all)."""
        counters = self.counters
        counters["commands"] += 1
        counters["fast_path"] += 1
        nbytes = len(data)
        burst = self.params.max_burst_length
        # no task comes or goes here, so one window serves every PDU of the answer
        exp_cmd_sn = self.exp_cmd_sn
        room = self.depth - len(self.tasks) - len(self._held)
        max_cmd_sn = (exp_cmd_sn + (room if room > 0 else 0) - 1) & 0xFFFFFFFF  # (max_cmd_sn, inline)
        if self.trace is not None or self.closed:
            put_data, send = self.put_data, self.send  # traced, or nothing to send to
        else:
            # untraced: straight to the datamover, as put_data and send would after their checks
            counters["bytes_out"] += nbytes
            put_data, send = self.conn.put_data, self.conn.send_control
        if nbytes <= burst:
            put_data(DataIn(itt=cmd.itt, lun=cmd.lun, ttt=RESERVED_TAG, exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn),
                     [data], notify)  # type: ignore[list-item]
        else:
            for start in range(0, nbytes, burst):
                end = start + burst if start + burst < nbytes else nbytes
                put_data(DataIn(itt=cmd.itt, lun=cmd.lun, final=True, ttt=RESERVED_TAG, exp_cmd_sn=exp_cmd_sn,
                                max_cmd_sn=max_cmd_sn, buffer_offset=start),
                         [data[start:end]], notify and end == nbytes)  # type: ignore[list-item]
        stat_sn = self.stat_sn
        self.stat_sn = (stat_sn + 1) & 0xFFFFFFFF  # (next_stat_sn, inline)
        send(ScsiResponse(itt=cmd.itt, stat_sn=stat_sn, exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn))

    def _unsolicited_data(self, pdu: DataOut) -> None:
        task = self.tasks.get(pdu.itt)
        if task is None:
            # data for a task that already ended (error response sent early, or aborted)
            log.debug("Data-Out for unknown task %#x dropped", pdu.itt)
            return
        task.unsolicited_data(pdu)

    def finish_task(self, task: TargetTask) -> None:
        self.tasks.pop(task.itt, None)

    def put_data(self, header: DataIn, descriptor: list[memoryview], notify: bool) -> None:
        if self.trace is not None:
            self.trace.record("target", "put_data", itt=header.itt, offset=header.buffer_offset,
                              length=sum(len(m) for m in descriptor), final=header.final, notify=notify)
        self.counters["bytes_out"] += (len(descriptor[0]) if len(descriptor) == 1
                                       else sum(len(m) for m in descriptor))
        self.conn.put_data(header, descriptor, notify)

    def get_data(self, r2t: object, descriptor: list[memoryview], notify: bool) -> None:
        if self.trace is not None:
            self.trace.record("target", "get_data", itt=r2t.itt, r2t_sn=r2t.r2t_sn,  # type: ignore[attr-defined]
                              offset=r2t.buffer_offset,  # type: ignore[attr-defined]
                              length=r2t.desired_data_transfer_length, notify=notify)  # type: ignore[attr-defined]
        self.conn.get_data(r2t, descriptor, notify)  # type: ignore[arg-type]

    def deallocate_task(self, itt: int) -> None:
        if self.trace is not None:
            self.trace.record("target", "deallocate_task_resources", itt=itt)
        self.conn.deallocate_task_resources(itt)

    # ------------------------------------------------------------ NOP
    def _nop_out(self, pdu: NopOut) -> None:
        data = bytes(pdu.data[: self.params.initiator_recv_limit])
        self.send(NopIn(itt=pdu.itt, lun=pdu.lun, ttt=RESERVED_TAG, stat_sn=self.next_stat_sn(),
                        exp_cmd_sn=self.exp_cmd_sn, max_cmd_sn=self.max_cmd_sn, data=data))

    def keepalive(self, interval: float, timeout: float) -> None:
        """Called periodically: ping an idle initiator; drop one that stays silent."""
        if self.closed:
            return
        now = _now()
        if self.ping_outstanding is not None:
            if now - self.ping_outstanding > timeout:
                log.warning("session %#x: no answer to NOP-In for %.1f s; closing", self.tsih, timeout)
                self.close()
            return
        if now - self.last_heard >= interval:
            self.ping_outstanding = now
            self.ping()

    def ping(self) -> None:
        """Send a NOP-In ping (TTT != 0xffffffff) that the initiator must answer."""
        self.send(NopIn(itt=RESERVED_TAG, lun=0, ttt=self.new_ttt(), stat_sn=self.stat_sn,
                        exp_cmd_sn=self.exp_cmd_sn, max_cmd_sn=self.max_cmd_sn))

    # ------------------------------------------------------------ TMF
    def _tmf(self, req: TmfRequest) -> None:
        function = req.function
        response = TmfResponseCode.FUNCTION_COMPLETE
        if self.params.discovery or self.lunmap is None:
            self.reject(RejectReason.PROTOCOL_ERROR, _header_of(req))
            return
        if function == TmfFunction.ABORT_TASK:
            task = self.tasks.get(req.referenced_task_tag)
            if task is not None and task.cmd.lun == req.lun:
                self._abort(task)
            elif (task is None and sn_in_window(req.ref_cmd_sn, self.exp_cmd_sn, self.max_cmd_sn)
                  and sn_lt(req.ref_cmd_sn, req.cmd_sn)):
                # RFC 7143 11.5.1: a RefCmdSN inside the window that has not arrived yet is
                # considered received (and so aborted): "function complete"; a task that
                # already completed, or never existed, is "task does not exist"
                response = TmfResponseCode.FUNCTION_COMPLETE
            else:
                response = TmfResponseCode.TASK_DOES_NOT_EXIST
        elif function in (TmfFunction.ABORT_TASK_SET, TmfFunction.CLEAR_TASK_SET):
            for task in [t for t in self.tasks.values() if t.cmd.lun == req.lun]:
                self._abort(task)
        elif function == TmfFunction.LOGICAL_UNIT_RESET:
            lun = req.lun
            if _lun_number(lun) not in self.lunmap:
                response = TmfResponseCode.LUN_DOES_NOT_EXIST
            else:
                self.server.lu_reset(self, lun)
        elif function in (TmfFunction.TARGET_WARM_RESET, TmfFunction.TARGET_COLD_RESET):
            if self.target is not None and not self.target.allow_target_reset:
                # RFC 7143 11.6.1: a target may refuse resets that hit other initiators
                response = TmfResponseCode.AUTHORIZATION_FAILED
            else:
                self.server.target_reset(self, cold=function == TmfFunction.TARGET_COLD_RESET)
        elif function == TmfFunction.TASK_REASSIGN:
            response = TmfResponseCode.REASSIGN_NOT_SUPPORTED
        else:
            response = TmfResponseCode.FUNCTION_NOT_SUPPORTED
        self.send(TmfResponse(itt=req.itt, response=int(response), stat_sn=self.next_stat_sn(),
                              exp_cmd_sn=self.exp_cmd_sn, max_cmd_sn=self.max_cmd_sn))
        if function == TmfFunction.TARGET_COLD_RESET and response == TmfResponseCode.FUNCTION_COMPLETE:
            # SAM: a cold reset drops every connection after the response
            self.close()

    def _abort(self, task: TargetTask) -> None:
        """End a task without a SCSI Response (RFC 5047: Deallocate_Task_Resources)."""
        task.abort()
        self.finish_task(task)
        self.deallocate_task(task.itt)

    def abort_all(self, lun: int | None = None, *, by_other_nexus: bool = False) -> None:
        """Abort tasks (of one LUN, or all). Tasks of the nexus that asked end silently:
        its TMF response tells it. Tasks of other nexuses end with status TASK ABORTED
        (SAM-5 TAS=1, the control page's TAS bit), so their initiators learn at once and
        can retry, instead of waiting for a response that never comes."""
        for task in list(self.tasks.values()):
            if lun is None or task.cmd.lun == lun:
                if by_other_nexus and not task.done:
                    task.outstanding.clear()
                    self.deallocate_task(task.itt)
                    task._respond(0x40, None, None)  # TASK ABORTED
                else:
                    self._abort(task)

    # ------------------------------------------------------------ Text
    def _text_request(self, req: TextRequest) -> None:
        if self._text is None or req.ttt == RESERVED_TAG:
            self._text = TextExchange(self)
        try:
            rsp = self._text.handle(req)
        except ValueError as exc:
            log.warning("bad Text Request from %s: %s", self.initiator_name, exc)
            self._text = None
            self.reject(RejectReason.PROTOCOL_ERROR, _header_of(req))
            return
        if rsp.final and not rsp.cont:
            self._text = None
        self.send(rsp)

    def text_response(self, req: TextRequest, *, data: bytes, final: bool, cont: bool, ttt: int) -> TextResponse:
        return TextResponse(itt=req.itt, final=final, cont=cont, lun=req.lun, ttt=ttt,
                            stat_sn=self.next_stat_sn(), exp_cmd_sn=self.exp_cmd_sn,
                            max_cmd_sn=self.max_cmd_sn, data=data)

    # ------------------------------------------------------------ Logout
    def _logout(self, req: LogoutRequest) -> None:
        if req.reason == LogoutReason.REMOVE_CONNECTION_FOR_RECOVERY:
            code = LogoutResponseCode.RECOVERY_NOT_SUPPORTED
        elif req.reason == LogoutReason.CLOSE_CONNECTION and req.cid != self.cid:
            code = LogoutResponseCode.CID_NOT_FOUND
        elif req.reason in (LogoutReason.CLOSE_SESSION, LogoutReason.CLOSE_CONNECTION):
            code = LogoutResponseCode.SUCCESS
        else:
            self.reject(RejectReason.INVALID_PDU_FIELD, _header_of(req))
            return
        self.send(LogoutResponse(itt=req.itt, response=int(code), stat_sn=self.next_stat_sn(),
                                 exp_cmd_sn=self.exp_cmd_sn, max_cmd_sn=self.max_cmd_sn,
                                 time2wait=self.params.default_time2wait,
                                 time2retain=self.params.default_time2retain))
        if code == LogoutResponseCode.SUCCESS:
            self.logged_out = True
            # RFC 5047 11.1: the target terminates the connection after the Logout Response
            self.close()

    # ------------------------------------------------------------ Async
    def async_logout_request(self, within_seconds: int = 10) -> None:
        self.send(AsyncMessage(lun=0, stat_sn=self.next_stat_sn(), exp_cmd_sn=self.exp_cmd_sn,
                               max_cmd_sn=self.max_cmd_sn, async_event=1, async_vcode=0,
                               parameter1=0, parameter2=0, parameter3=within_seconds))

    # ------------------------------------------------------------ teardown
    def close(self) -> None:
        """End the session from our side (logout, reinstatement, reset, shutdown)."""
        self._shutdown(notify_datamover=True)

    def _shutdown(self, *, notify_datamover: bool) -> None:
        if self.closed:
            return
        for task in list(self.tasks.values()):
            task.abort()
        self.tasks.clear()
        self._held.clear()
        if notify_datamover:
            if self.trace is not None:
                self.trace.record("target", "connection_terminate")
            try:
                self.conn.connection_terminate()
            except Exception:
                log.exception("connection_terminate failed")
        self.closed = True
        if self.on_close is not None:
            self.on_close(self)


def _now() -> float:
    import asyncio

    try:
        return asyncio.get_running_loop().time()
    except RuntimeError:
        import time

        return time.monotonic()


def _loop_clock() -> Callable[[], float]:
    """The running loop's ``time`` (what :func:`_now` returns inside it), else :func:`_now`."""
    import asyncio

    try:
        return asyncio.get_running_loop().time
    except RuntimeError:
        return _now


def _header_of(pdu: Pdu) -> bytes:
    """The 48-byte BHS of a received PDU, for the data segment of a Reject."""
    if isinstance(pdu, UnknownPdu):
        return bytes(pdu.raw_bhs[:48])
    try:
        return encode_header(pdu)[:48]
    except Exception:
        return bytes(48)


def _lun_number(raw: int) -> int:
    from datamover.pdu import decode_lun

    return decode_lun(raw)


def _pdu_fields(pdu: Pdu) -> dict[str, object]:
    """The transport-neutral fields of a PDU for DI traces."""
    if isinstance(pdu, ScsiCommand):
        return {"cdb": bytes(pdu.cdb[:1]).hex(), "edtl": pdu.expected_data_transfer_length,
                "imm": len(pdu.data), "r": pdu.read, "w": pdu.write}
    if isinstance(pdu, ScsiResponse):
        return {"status": pdu.status, "response": pdu.response, "residual": pdu.residual,
                "sense": len(pdu.data)}
    if isinstance(pdu, DataOut):
        return {"offset": pdu.buffer_offset, "length": len(pdu.data), "final": pdu.final}
    if isinstance(pdu, (TmfRequest, TmfResponse)):
        return {"f": getattr(pdu, "function", getattr(pdu, "response", 0))}
    return {"length": len(pdu.data)}

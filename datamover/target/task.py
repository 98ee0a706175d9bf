"""One SCSI task on the target: collect write data, execute, return read data and status.

Write data arrives three ways (RFC 7143 4.3.5 / protocol-digest 3.6): immediate data in the
command PDU, unsolicited Data-Out PDUs (InitialR2T=No) up to FirstBurstLength, and solicited
bursts fetched with Get_Data (each at most MaxBurstLength, at most MaxOutstandingR2T at a
time). Read data leaves through Put_Data in bursts of at most MaxBurstLength, then the SCSI
Response goes through Send_Control; the datamover guarantees the data is placed before the
response is delivered.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from datamover.pdu import RESERVED_TAG, R2T, DataIn, DataOut, ScsiCommand, ScsiResponse, decode_lun
from datamover.scsi.command import ScsiRequest, ScsiResult
from datamover.scsi.sense import Sense

if TYPE_CHECKING:
    from concurrent.futures import Future

    from datamover.target.session import TargetSession

log = logging.getLogger("datamover.target.task")

#: SCSI status codes used here (SAM-5)
GOOD, CHECK_CONDITION = 0x00, 0x02

#: Largest transfer a single command may ask for; bounds the buffer a peer can make us
#: allocate (issue: limits against abuse). 64 MiB is far above any sane MaxTransferLength.
MAX_TRANSFER = 64 * 1024 * 1024

_INVALID_FIELD_IN_CDB = Sense(0x05, 0x24, 0x00)
#: ABORTED COMMAND, DATA PHASE ERROR (SPC-5): the data of the command did not arrive right
DATA_PHASE_ERROR = Sense(0x0B, 0x4B, 0x00)


#: raw 8-byte LUN field -> LUN number (decode_lun once per LUN, not once per command)
LUN_NUMBERS: dict[int, int] = {}


def _header(pdu: DataOut) -> bytes:
    from datamover.pdu import encode_header

    return encode_header(pdu)[:48]


class TargetTask:
    """State of one SCSI command at the target."""

    __slots__ = ("session", "cmd", "itt", "lun_number", "edtl", "fetch_len", "buffer",
                 "unsolicited_expected", "unsolicited_received", "next_r2t_offset",
                 "outstanding", "r2t_sn", "received", "aborted", "overflow", "underflow",
                 "residual", "early_sense", "done", "read_buffer", "next_data_sn")

    def __init__(self, session: TargetSession, cmd: ScsiCommand) -> None:
        self.session = session
        self.cmd = cmd
        self.itt = cmd.itt
        lun = LUN_NUMBERS.get(cmd.lun)
        if lun is None:
            lun = decode_lun(cmd.lun)  # raises for a LUN it cannot decode: never cached
            if len(LUN_NUMBERS) < 1024:
                LUN_NUMBERS[cmd.lun] = lun
        self.lun_number = lun
        self.edtl = cmd.expected_data_transfer_length
        self.fetch_len = 0
        self.buffer: memoryview | None = None  # write data, from the datamover's allocator
        self.unsolicited_expected = 0
        self.unsolicited_received = 0
        self.next_r2t_offset = 0
        self.outstanding: dict[int, tuple[int, int]] = {}  # R2TSN -> (offset, length)
        self.r2t_sn = 0
        self.received = 0
        self.aborted = False
        self.overflow = False
        self.underflow = False
        self.residual = 0
        self.early_sense: Sense | None = None
        self.done = False
        self.read_buffer: memoryview | None = None
        self.next_data_sn = 0  # DataSN expected on the next unsolicited Data-Out

    # ---------------------------------------------------------------- start
    def start(self) -> None:
        session = self.session
        assert session.lunmap is not None
        cmd = self.cmd
        plan = session.lunmap.prepare(self.lun_number, bytes(cmd.cdb))
        if plan.error is not None:
            self._absorb_then(plan.error)
            return
        if plan.direction == "bidi":
            self._absorb_then(_INVALID_FIELD_IN_CDB)
            return
        if plan.direction == "write":
            if not cmd.write and plan.data_out_length > 0:
                # a write CDB without the W bit: the initiator sends no data (SAM-5 5.3)
                self.overflow = True
                self.residual = plan.data_out_length
                self._absorb_then(_INVALID_FIELD_IN_CDB)
                return
            needed = plan.data_out_length
            if self.edtl < needed:
                # fewer bytes expected than the CDB names (SAM-5 5.3.4, RFC 7143 11.4.5.2):
                # only EDTL bytes come; the LU writes the whole blocks among them and the
                # response reports the overflow residual (what libiscsi and tgtd expect)
                self.overflow, self.residual = True, needed - self.edtl
                needed = self.edtl
            elif self.edtl > needed:
                self.underflow, self.residual = True, self.edtl - needed
            if needed > MAX_TRANSFER:
                self._absorb_then(_INVALID_FIELD_IN_CDB)
                return
            self.fetch_len = needed
            self.buffer = session.conn.alloc_buffer(needed) if needed else memoryview(bytearray(0))
            self._collect_write_data()
            return
        # read or no data: the LU reads straight into a datamover buffer when it can
        self._execute(None, plan.data_in_length if plan.direction == "read" else 0)

    def _unsolicited_budget(self) -> int:
        """Bytes of unsolicited data the initiator will send (immediate included)."""
        params = self.session.params
        if not self.cmd.write or self.edtl == 0:
            return len(self.cmd.data)
        if params.initial_r2t:
            return len(self.cmd.data)
        return min(params.first_burst_length, self.edtl)

    def _absorb_then(self, sense: Sense) -> None:
        """Fail the command, but first let the unsolicited data the initiator is already
        sending arrive, so none of it lands on a later task with a reused ITT."""
        self.early_sense = sense
        budget = self._unsolicited_budget() if self.cmd.write else 0
        self.unsolicited_expected = budget
        self.unsolicited_received = len(self.cmd.data)
        if self.unsolicited_received >= budget or self.cmd.final:
            self._respond(CHECK_CONDITION, sense, None)
        # else: respond when the final unsolicited Data-Out arrives

    # ---------------------------------------------------------------- writes
    def _collect_write_data(self) -> None:
        assert self.buffer is not None
        immediate = self.cmd.data
        n = min(len(immediate), self.fetch_len)
        if n:
            self.buffer[:n] = immediate[:n]
        self.received = n
        self.unsolicited_received = len(immediate)
        self.unsolicited_expected = self._unsolicited_budget()
        # solicited data starts where the unsolicited data ends (RFC 7143 13.14)
        self.next_r2t_offset = min(self.unsolicited_expected, self.fetch_len)
        if self.cmd.final:
            # F=1 on the command: no unsolicited Data-Out follows
            self.unsolicited_expected = self.unsolicited_received
            self.next_r2t_offset = min(self.unsolicited_received, self.fetch_len)
        self._issue_r2ts()
        self._maybe_execute()

    def unsolicited_data(self, pdu: DataOut) -> None:
        if self.done or self.aborted:
            return
        if pdu.ttt != RESERVED_TAG:
            # solicited data is the datamover's business; a stray one is a protocol error
            self.session.reject(0x04, b"")
            return
        length = len(pdu.data)
        offset = pdu.buffer_offset
        if pdu.data_sn != self.next_data_sn:
            # RFC 7143 11.7.5: DataSN counts the PDUs of the unsolicited sequence from 0;
            # at ERL 0 there is no recovery: refuse the PDU and fail the command
            self.session.reject(0x04, _header(pdu))
            self.fail(DATA_PHASE_ERROR)
            return
        self.next_data_sn += 1
        if offset + length > self.unsolicited_expected or offset < len(self.cmd.data) and length:
            self.session.reject(0x04, _header(pdu))
            self.fail(DATA_PHASE_ERROR)
            return
        self.unsolicited_received += length
        if self.buffer is not None and offset < self.fetch_len:
            end = min(offset + length, self.fetch_len)
            self.buffer[offset:end] = pdu.data[: end - offset]
            self.received += end - offset
        if pdu.final:
            # end of the unsolicited burst, whatever its size
            self.unsolicited_expected = self.unsolicited_received
            if self.buffer is not None and self.next_r2t_offset > self.unsolicited_received:
                self.next_r2t_offset = min(self.unsolicited_received, self.fetch_len)
                self._issue_r2ts()
        if self.early_sense is not None:
            if self.unsolicited_received >= self.unsolicited_expected:
                self._respond(CHECK_CONDITION, self.early_sense, None)
            return
        self._maybe_execute()

    def _issue_r2ts(self) -> None:
        session = self.session
        params = session.params
        assert self.buffer is not None
        view = memoryview(self.buffer)
        while self.next_r2t_offset < self.fetch_len and len(self.outstanding) < params.max_outstanding_r2t:
            offset = self.next_r2t_offset
            length = min(params.max_burst_length, self.fetch_len - offset)
            r2t = R2T(itt=self.itt, lun=self.cmd.lun, ttt=session.new_ttt(), stat_sn=session.stat_sn,
                      exp_cmd_sn=session.exp_cmd_sn, max_cmd_sn=session.max_cmd_sn,
                      r2t_sn=self.r2t_sn, buffer_offset=offset, desired_data_transfer_length=length)
            self.outstanding[self.r2t_sn] = (offset, length)
            self.r2t_sn += 1
            self.next_r2t_offset += length
            session.get_data(r2t, [view[offset:offset + length]], True)

    def data_complete(self, sn: int) -> None:
        """Data_Completion_Notify for a Get_Data (sn = R2TSN) or the last Put_Data."""
        if self.done or self.aborted:
            return
        burst = self.outstanding.pop(sn, None)
        if burst is None:
            return
        self.received += burst[1]
        self._issue_r2ts()
        self._maybe_execute()

    def _maybe_execute(self) -> None:
        if self.done or self.outstanding or self.next_r2t_offset < self.fetch_len:
            return
        if self.unsolicited_received < self.unsolicited_expected:
            return
        self._execute(self.buffer)

    # ---------------------------------------------------------------- execute
    def _execute(self, data_out: memoryview | None, read_length: int = 0) -> None:
        session = self.session
        assert session.lunmap is not None
        conn = session.conn
        read_buffer = None
        if 0 < read_length <= MAX_TRANSFER and self.cmd.read:
            read_buffer = self.read_buffer = conn.alloc_buffer(read_length)
        request = ScsiRequest(cdb=bytes(self.cmd.cdb), data_out=data_out, nexus=session.nexus,
                              data_in_buffer=read_buffer, expected_length=self.edtl)
        try:
            result = session.lunmap.execute(self.lun_number, request)
        except Exception:
            log.exception("SCSI command %s failed", bytes(self.cmd.cdb[:1]).hex())
            result = ScsiResult(status=CHECK_CONDITION, sense=Sense(0x04, 0x44, 0x00))  # internal target failure
        if self.buffer is not None and len(self.buffer):
            conn.release_buffer(self.buffer)  # the LU has consumed the write data
            self.buffer = None
        if self.aborted:
            return
        session.counters["bytes_in"] += len(data_out) if data_out is not None else 0
        if result.pending is not None:
            self._respond_later(result.pending)
            return
        self._respond(result.status, result.sense, result.data_in)

    def _respond_later(self, pending: Future[ScsiResult]) -> None:
        """The LU finishes this command in the background (SANITIZE with IMMED=0): answer
        when it does, on the session's event loop. The task keeps its slot meanwhile, so
        ABORT TASK and resets find it; once it is aborted, or the session is gone, the
        outcome is dropped (the operation itself is the LU's business)."""

        def finished(future: Future[ScsiResult]) -> None:
            if self.done or self.aborted or self.session.closed:
                return
            try:
                result = future.result()
            except Exception:
                log.exception("SCSI command %s failed", bytes(self.cmd.cdb[:1]).hex())
                result = ScsiResult(status=CHECK_CONDITION, sense=Sense(0x04, 0x44, 0x00))
            self._respond(result.status, result.sense, result.data_in)

        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # driven without an event loop: answer from the LU's thread
            pending.add_done_callback(finished)
            return

        def hand_over(future: Future[ScsiResult]) -> None:
            try:
                loop.call_soon_threadsafe(finished, future)
            except RuntimeError:  # the loop closed first: nobody is left to answer
                pass

        pending.add_done_callback(hand_over)

    def _respond(self, status: int, sense: Sense | None, data_in: object) -> None:
        if self.done:
            return
        self.done = True
        session = self.session
        params = session.params
        sent_data = False
        if data_in is not None and self.cmd.read and status == GOOD:
            view = memoryview(data_in).cast("B") if not isinstance(data_in, memoryview) else data_in  # type: ignore[arg-type]
            available = len(view)
            send = min(available, self.edtl)
            if available < self.edtl:
                self.underflow, self.residual = True, self.edtl - available
            elif available > self.edtl:
                self.overflow, self.residual = True, available - self.edtl
            offset = 0
            while offset < send:
                length = min(params.max_burst_length, send - offset)
                last = offset + length >= send
                header = DataIn(itt=self.itt, lun=self.cmd.lun, final=True, ttt=RESERVED_TAG,
                                exp_cmd_sn=session.exp_cmd_sn, max_cmd_sn=session.max_cmd_sn,
                                buffer_offset=offset)
                session.put_data(header, [view[offset:offset + length]], last)
                sent_data = True
                offset += length
        elif self.cmd.read and not self.cmd.write and self.edtl and not (self.overflow or self.underflow):
            # a read that returned nothing: everything is residual
            self.underflow, self.residual = True, self.edtl
        if self.read_buffer is not None:
            if sent_data:
                # released when the last Put_Data completes (it asked for notification)
                session._read_buffers[self.itt] = self.read_buffer
            else:
                session.conn.release_buffer(self.read_buffer)
            self.read_buffer = None
        session.finish_task(self)
        sense_bytes = sense.encode() if sense is not None else b""
        data = (len(sense_bytes).to_bytes(2, "big") + sense_bytes) if sense_bytes else b""
        session.send(ScsiResponse(
            itt=self.itt, response=0, status=status, overflow=self.overflow, underflow=self.underflow,
            residual=self.residual, stat_sn=session.next_stat_sn(), exp_cmd_sn=session.exp_cmd_sn,
            max_cmd_sn=session.max_cmd_sn, data=data,
        ))

    def fail(self, sense: Sense) -> None:
        """End the task now with CHECK CONDITION (a data transfer went wrong); any data
        still in flight for it is dropped (its ITT is no longer active)."""
        if self.done:
            return
        self.outstanding.clear()
        if self.buffer is not None and len(self.buffer):
            self.session.conn.release_buffer(self.buffer)
            self.buffer = None
        self.session.deallocate_task(self.itt)
        self._respond(CHECK_CONDITION, sense, None)

    def abort(self) -> None:
        self.aborted = True
        self.done = True
        self.outstanding.clear()

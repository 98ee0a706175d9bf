"""Initiator side of the data PDUs (protocol-digest 1.6, "Initiator side of the data PDUs").

The core only calls ``send_control(ScsiCommand, data_out=, data_in=)`` and later sees
``control_notify(ScsiResponse)``; everything between is done here:

* a Data-In's data segment is copied into the task's ``data_in`` descriptor at its
  BufferOffset (the one copy of a TCP read: receive buffer -> caller's buffer);
* a Data-In with the S bit (phase collapse) becomes a :class:`ScsiResponse` delivered by
  ``control_notify`` (status, O/U flags, residual, StatSN/ExpCmdSN/MaxCmdSN copied;
  ExpDataSN = the final Data-In's DataSN + 1; Response = 0, command completed at target);
* an R2T is answered with Data-Out PDUs cut from ``data_out`` (no copy), each at most the
  target's MaxRecvDataSegmentLength, DataSN from 0 per R2T, F on the last, the TTT echoed;
* ExpCmdSN/MaxCmdSN of every Data-In without S and of every R2T go to the core's
  ``sn_update`` side channel (when the upcalls object has one); a Data-In with S needs no
  side channel: its numbers and StatSN reach the core in the SCSI Response it becomes;
* a SCSI Response, a Data-In with S, ``deallocate_task_resources`` or the end of the
  connection forget the task.

ExpStatSN of the Data-Out PDUs (contract with the core): the connection's
``exp_stat_sn_source`` callable, when the core set one, is asked once per R2T; otherwise the
ExpStatSN of the last PDU the core sent through ``send_control`` on this connection is used.
The core maintains ExpStatSN; the datamover never computes it.

Anything wrong with a received data PDU (unknown ITT, range outside the buffer, DataSN out
of order, an R2T for a task without write data) is reported with ``protocol_error_notify``
and the PDU is dropped; nothing is raised into the event loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from datamover.pdu.model import R2T, ScsiCommand, ScsiResponse
from datamover.pdu.opcodes import BHS_LENGTH

from datamover_tcp.descriptor import DescriptorMap
from datamover_tcp.direct import data_pdu_fields
from datamover_tcp.errors import DataPduError, DatamoverUsageError
from datamover_tcp.wire import DATA_IN_BHS, FLAG_O, FLAG_S, FLAG_U, Buffer, data_out_buffers, data_out_run

if TYPE_CHECKING:
    from datamover.di import DataDescriptor
    from datamover_tcp.connection import TcpConnection


class InitiatorTask:
    """What the datamover holds for one outstanding command (by ITT)."""

    __slots__ = ("itt", "lun", "data_out", "data_in", "next_data_sn")

    def __init__(self, itt: int, lun: int, data_out: DescriptorMap | None, data_in: DescriptorMap | None) -> None:
        self.itt = itt
        self.lun = lun
        self.data_out = data_out
        self.data_in = data_in
        #: the DataSN the next Data-In must carry (per task, from 0)
        self.next_data_sn = 0


class InitiatorData:
    """The initiator's task table and its Data-In / R2T handling."""

    __slots__ = ("_conn", "tasks")

    def __init__(self, conn: TcpConnection) -> None:
        self._conn = conn
        self.tasks: dict[int, InitiatorTask] = {}

    # --------------------------------------------------------------- from the core
    def register(self, cmd: ScsiCommand, data_out: DataDescriptor | None, data_in: DataDescriptor | None) -> None:
        """Remember a SCSI Command's buffers until its response."""
        out_map = DescriptorMap(data_out) if data_out else None
        in_map = DescriptorMap(data_in) if data_in else None
        if in_map is not None:
            for view in in_map.views:
                if view.readonly:
                    raise DatamoverUsageError(f"data_in of task {cmd.itt:#x} holds a read-only buffer")
        self.tasks[cmd.itt] = InitiatorTask(cmd.itt, cmd.lun, out_map, in_map)

    def free(self, itt: int) -> None:
        if self.tasks.pop(itt, None) is not None:
            self._conn._forget_direct(itt)

    def clear(self) -> None:
        self.tasks.clear()
        self._conn._forget_direct(None)

    def placement(self, bhs: memoryview, length: int) -> tuple[int, list[memoryview]] | None:
        """Where a Data-In's data segment goes, if the PDU fits its task (direct.py)."""
        itt, _ttt, data_sn, offset = data_pdu_fields(bhs)
        task = self.tasks.get(itt)
        if task is None or task.data_in is None or data_sn != task.next_data_sn:
            return None
        if offset + length > task.data_in.length:
            return None
        return itt, task.data_in.slices(offset, length)

    # --------------------------------------------------------------- from the wire
    def on_data_in(self, bhs: memoryview, data: Buffer, placed: int = -1) -> None:
        """Place read data; turn a status-carrying Data-In into a SCSI Response.

        ``bhs`` is the Data-In's header, read here with one unpack (a Data-In never goes up
        to the core, so no DataIn object is made for it); ``data`` its data segment.
        ``placed`` >= 0: the data segment (that many bytes) was received straight into the
        read buffer already (direct placement); only the bookkeeping is left.
        """
        (_b0, flags, status, _lengths, _lun, itt, _ttt, stat_sn, exp_cmd_sn, max_cmd_sn, data_sn, offset,
         residual) = DATA_IN_BHS.unpack_from(bhs)
        conn = self._conn
        status_present = flags & FLAG_S
        if not status_present:
            # (with S the numbers reach the core in the SCSI Response this Data-In becomes)
            conn._sn_update(exp_cmd_sn, max_cmd_sn, None)
        task = self.tasks.get(itt)
        if task is None:
            conn._report(DataPduError(f"Data-In for unknown ITT {itt:#x}", bytes(bhs[:BHS_LENGTH])))
            return
        length = len(data) if placed < 0 else placed
        if length:
            sink = task.data_in
            if sink is None or offset + length > sink.length:
                size = sink.length if sink is not None else 0
                conn._report(DataPduError(
                    f"Data-In of task {itt:#x} at offset {offset}+{length} is outside the "
                    f"{size}-byte read buffer", bytes(bhs[:BHS_LENGTH])))
                return
            if placed < 0:
                view = data if isinstance(data, memoryview) else memoryview(data)
                conn.payload_copies += sink.scatter(offset, view)
                conn.payload_bytes_copied += length
        if data_sn != task.next_data_sn:
            # The data is placed (TCP cannot lose a PDU, so this is a peer bug); the core
            # decides what a numbering error costs.
            conn._report(DataPduError(
                f"Data-In of task {itt:#x} has DataSN {data_sn}, expected {task.next_data_sn}",
                bytes(bhs[:BHS_LENGTH])))
        task.next_data_sn = (data_sn + 1) & 0xFFFFFFFF
        if status_present:
            response = ScsiResponse(itt=itt, overflow=flags & FLAG_O != 0, underflow=flags & FLAG_U != 0,
                                    status=status, stat_sn=stat_sn, exp_cmd_sn=exp_cmd_sn, max_cmd_sn=max_cmd_sn,
                                    exp_data_sn=task.next_data_sn, residual=residual)  # (Response 0)
            del self.tasks[itt]
            conn._control(response)

    def on_r2t(self, r2t: R2T, header: memoryview) -> None:
        """Answer an R2T with Data-Out PDUs taken from the task's write buffer."""
        conn = self._conn
        conn._sn_update(r2t.exp_cmd_sn, r2t.max_cmd_sn, None)
        task = self.tasks.get(r2t.itt)
        if task is None:
            conn._report(DataPduError(f"R2T for unknown ITT {r2t.itt:#x}", bytes(header[:BHS_LENGTH])))
            return
        source = task.data_out
        offset = r2t.buffer_offset
        wanted = r2t.desired_data_transfer_length
        if source is None or wanted == 0 or offset + wanted > source.length:
            size = source.length if source is not None else 0
            conn._report(DataPduError(
                f"R2T of task {r2t.itt:#x} asks for {offset}+{wanted}, outside the {size}-byte write buffer",
                bytes(header[:BHS_LENGTH])))
            return
        limit = conn.keys.max_recv_dsl_target
        exp_stat_sn = conn.current_exp_stat_sn()
        hd, dd = conn.header_digest, conn.data_digest
        buffers: list[Buffer] = []
        data_sn = 0
        done = 0
        itt, ttt, lun = r2t.itt, r2t.ttt, task.lun
        if not hd and not dd and len(source.views) == 1:
            # one flat write buffer, no digests (the usual case): the loop below, unrolled
            conn._emit(buffers, data_out_run(buffers, source.views[0], offset, wanted, limit, lun, itt, ttt,
                                             exp_stat_sn))
            return
        while done < wanted:
            take = min(limit, wanted - done)
            data_out_buffers(buffers, done + take == wanted, lun, itt, ttt, exp_stat_sn, data_sn, offset + done,
                             source.slices(offset + done, take), take, hd, dd)
            data_sn += 1
            done += take
        conn._emit(buffers, data_sn)

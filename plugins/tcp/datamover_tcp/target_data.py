"""Target side of the data PDUs: Put_Data as Data-In PDUs, Get_Data as R2T + Data-Out.

Put_Data (``put_data(header, descriptor, notify)``): the burst is cut into Data-In PDUs of
at most the initiator's MaxRecvDataSegmentLength, without copying the descriptor. DataSN is
numbered per task from 0 by the datamover (``header.data_sn`` is ignored). One put_data is
one data sequence, so F is set on its last PDU (and additionally at every MaxBurstLength
boundary should the core hand over a longer burst). S (with status, O/U flags, residual and
StatSN from the header) is set only when the core set ``status_present`` and only on the
last PDU; the task then ends here. A is never set (ERL 0). ``notify`` raises
``data_completion_notify(itt, DataSN of the last Data-In)`` once the PDUs have been written
to the socket, which is also when the descriptor is no longer referenced.

Get_Data (``get_data(r2t, descriptor, notify)``): the R2T PDU is sent with the core's
fields; Data-Out PDUs carrying that (ITT, TTT) are copied into the descriptor at
``BufferOffset - r2t.buffer_offset``; offsets, lengths and DataSN order (from 0 per R2T) are
checked. When the PDU with F arrives and every byte is in, ``data_completion_notify(itt,
r2t_sn)`` follows (with notify). Unsolicited Data-Out (TTT 0xffffffff) is a control PDU and
never reaches this module.

ExpDataSN contract with the core: when the core sends a SCSI Response through
``send_control``, the datamover overwrites its ``exp_data_sn`` with the number of Data-In
and R2T PDUs it sent for that ITT (RFC 7143 11.4.8), because only the datamover knows how
many PDUs a burst became. It then forgets the task. The core must not count them itself.

Ownership: a put_data descriptor is referenced until its PDUs are in the kernel (the notify
moment); without notify the core must not reuse it before the task's SCSI Response has
been sent.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from datamover.buffers import FileSlice
from datamover.pdu.codec import encode
from datamover.pdu.model import DataIn, DataOut, R2T, ScsiResponse
from datamover.pdu.opcodes import BHS_LENGTH, RESERVED_TAG

from datamover_tcp.descriptor import DescriptorMap
from datamover_tcp.direct import data_pdu_fields
from datamover_tcp.errors import DataPduError, DatamoverUsageError
from datamover_tcp.wire import FLAG_F, FLAG_O, FLAG_S, FLAG_U, Buffer, collapse_status, data_in_buffers

if TYPE_CHECKING:
    from datamover.di import DataDescriptor
    from datamover_tcp.connection import TcpConnection


class TargetTask:
    """Per-ITT counters: the next Data-In DataSN and the PDUs sent (for ExpDataSN), and
    the header of the last final Data-In while it is still queued (for phase collapse)."""

    __slots__ = ("next_data_sn", "pdus_sent", "last_header", "header_at")

    def __init__(self) -> None:
        self.next_data_sn = 0
        self.pdus_sent = 0
        self.last_header: bytearray | None = None
        #: the writer's byte count when last_header was queued: unsent while not reached
        self.header_at = 0


class _SingleView:
    """The :class:`DescriptorMap` interface over one flat, non-empty view, cheaper to build."""

    __slots__ = ("views", "length", "_map")

    def __init__(self, view: memoryview) -> None:
        self.views = [view]
        self.length = view.nbytes
        self._map: DescriptorMap | None = None

    def slices(self, offset: int, length: int) -> list[memoryview]:
        if self._map is None:
            self._map = DescriptorMap(self.views)
        return self._map.slices(offset, length)


class _FileSource:
    """The :class:`DescriptorMap` interface over one file slice (``os.sendfile``)."""

    __slots__ = ("views", "length")

    def __init__(self, piece: FileSlice) -> None:
        self.views = [piece]
        self.length = piece.length

    def slices(self, offset: int, length: int) -> list[FileSlice]:
        return [self.views[0][offset:offset + length]]


class WriteBurst:
    """One outstanding Get_Data: where its Data-Out PDUs go and how far they got."""

    __slots__ = ("itt", "ttt", "r2t_sn", "base", "length", "sink", "notify", "received", "next_data_sn")

    def __init__(self, r2t: R2T, sink: DescriptorMap, notify: bool) -> None:
        self.itt = r2t.itt
        self.ttt = r2t.ttt
        self.r2t_sn = r2t.r2t_sn
        self.base = r2t.buffer_offset
        self.length = r2t.desired_data_transfer_length
        self.sink = sink
        self.notify = notify
        self.received = 0
        self.next_data_sn = 0


class TargetData:
    """The target's per-task counters and outstanding write bursts."""

    __slots__ = ("_conn", "tasks", "bursts")

    def __init__(self, conn: TcpConnection) -> None:
        self._conn = conn
        self.tasks: dict[int, TargetTask] = {}
        #: outstanding Get_Data by (ITT, TTT), the pair every Data-Out carries
        self.bursts: dict[tuple[int, int], WriteBurst] = {}

    def _task(self, itt: int) -> TargetTask:
        task = self.tasks.get(itt)
        if task is None:
            task = self.tasks[itt] = TargetTask()
        return task

    # --------------------------------------------------------------- from the core
    def put_data(self, header: DataIn, descriptor: DataDescriptor, notify: bool) -> None:
        conn = self._conn
        itt = header.itt
        if len(descriptor) == 1 and not header.status_present and itt not in self.tasks:
            view = descriptor[0]
            length = view.nbytes
            keys = conn.keys
            if (0 < length <= keys.max_recv_dsl_initiator and length <= keys.max_burst_length
                    and (type(view) is FileSlice and conn.min_file_slice() is not None
                         or type(view) is not FileSlice and view.format == "B" and view.ndim == 1)):
                # A read's only burst, one PDU: what the general branch below does for it,
                # without its loop and bookkeeping objects (DataSN 0, one PDU, F set).
                buffers: list[Buffer] = []
                task = self.tasks[itt] = TargetTask()
                task.last_header = data_in_buffers(buffers, FLAG_F, 0, header.lun, itt, 0, header.exp_cmd_sn,
                                                   header.max_cmd_sn, 0, header.buffer_offset, 0, [view], length,
                                                   conn.header_digest, conn.data_digest)
                task.header_at = conn._writer.pending_base()
                task.next_data_sn = task.pdus_sent = 1
                if notify:
                    def sent() -> None:
                        conn._data_completion(itt, 0)
                    conn._emit(buffers, 1, sent)
                else:
                    conn._emit(buffers, 1)
                return
        task = self._task(itt)
        if any(type(element) is FileSlice for element in descriptor):
            descriptor = self._file_elements(descriptor)
        if len(descriptor) == 1 and type(descriptor[0]) is FileSlice:
            source: _SingleView | _FileSource | DescriptorMap = _FileSource(descriptor[0])
        elif len(descriptor) == 1 and descriptor[0].format == "B" and descriptor[0].ndim == 1 and descriptor[0].nbytes:
            # one flat buffer (every read the core answers): no map needed for one PDU
            source = _SingleView(descriptor[0])
        else:
            source = DescriptorMap(descriptor)
        length = source.length
        limit = conn.keys.max_recv_dsl_initiator
        burst_limit = conn.keys.max_burst_length
        hd, dd = conn.header_digest, conn.data_digest
        status = header.status_present
        lun, offset0 = header.lun, header.buffer_offset
        exp_cmd_sn, max_cmd_sn = header.exp_cmd_sn, header.max_cmd_sn
        buffers: list[Buffer] = []
        done = 0
        sequence_start = 0
        count = 0
        data_sn = task.next_data_sn
        last_header: bytearray | None = None
        if length <= limit and length <= burst_limit and len(source.views) == 1:
            # the common case, one PDU from one buffer: no slicing, no loop
            b1 = FLAG_F
            if status:
                b1 |= FLAG_S | (FLAG_O if header.overflow else 0) | (FLAG_U if header.underflow else 0)
                data_in_buffers(buffers, b1, header.status, lun, itt, header.stat_sn, exp_cmd_sn, max_cmd_sn,
                                data_sn, offset0, header.residual, source.views, length, hd, dd)
            else:
                last_header = data_in_buffers(buffers, b1, 0, lun, itt, 0, exp_cmd_sn, max_cmd_sn, data_sn,
                                              offset0, 0, source.views, length, hd, dd)
            data_sn = (data_sn + 1) & 0xFFFFFFFF
            count = 1
        else:
            while True:
                take = min(limit, length - done, sequence_start + burst_limit - done)
                end = done + take
                last = end >= length
                sequence_end = last or end - sequence_start >= burst_limit
                b1 = FLAG_F if sequence_end else 0
                if status and last:
                    b1 |= FLAG_S | (FLAG_O if header.overflow else 0) | (FLAG_U if header.underflow else 0)
                    data_in_buffers(buffers, b1, header.status, lun, itt, header.stat_sn, exp_cmd_sn, max_cmd_sn,
                                    data_sn, offset0 + done, header.residual, source.slices(done, take), take, hd, dd)
                else:
                    last_header = data_in_buffers(buffers, b1, 0, lun, itt, 0, exp_cmd_sn, max_cmd_sn, data_sn,
                                                  offset0 + done, 0, source.slices(done, take), take, hd, dd)
                data_sn = (data_sn + 1) & 0xFFFFFFFF
                count += 1
                done = end
                if sequence_end:
                    sequence_start = end
                if last:
                    break
        task.next_data_sn = data_sn
        if last_header is not None and not status:
            # where the last header will sit in the stream, for collapse()
            before = 0
            for buf in buffers:
                if buf is last_header:
                    break
                before += len(buf)
            task.last_header = last_header
            task.header_at = conn._writer.pending_base() + before
        else:
            task.last_header = None
        task.pdus_sent += count
        last_data_sn = (task.next_data_sn - 1) & 0xFFFFFFFF
        if status:
            # Phase collapse: this Data-In is the task's status; no SCSI Response follows.
            self.tasks.pop(itt, None)
        on_sent = None
        if notify:
            def on_sent() -> None:
                conn._data_completion(itt, last_data_sn)
        conn._emit(buffers, count, on_sent)

    def _file_elements(self, descriptor: DataDescriptor) -> list:  # type: ignore[type-arg]
        """A descriptor holding file slices, as this connection can send it: one slice
        as it is (sent with os.sendfile), anything else with the slices read into memory
        (more than one element, a data digest to compute, or no sendfile path)."""
        if len(descriptor) == 1 and self._conn.min_file_slice() is not None and descriptor[0].nbytes:
            return list(descriptor)
        out: list[memoryview] = []
        for element in descriptor:
            if type(element) is FileSlice:
                data = element.read()
                if len(data) != element.length:
                    raise DatamoverUsageError(f"file slice of {element.length} bytes: the file ended after "
                                              f"{len(data)}")
                out.append(memoryview(data))
            else:
                out.append(element)
        return out

    def get_data(self, r2t: R2T, descriptor: DataDescriptor, notify: bool) -> None:
        conn = self._conn
        sink = DescriptorMap(descriptor)
        wanted = r2t.desired_data_transfer_length
        if wanted <= 0:
            raise DatamoverUsageError(f"R2T of task {r2t.itt:#x} asks for {wanted} bytes")
        if sink.length < wanted:
            raise DatamoverUsageError(
                f"get_data descriptor of {sink.length} bytes is shorter than the R2T's {wanted}")
        if any(view.readonly for view in sink.views):
            raise DatamoverUsageError("get_data descriptor holds a read-only buffer")
        if r2t.ttt == RESERVED_TAG:
            raise DatamoverUsageError("an R2T cannot use the reserved TTT 0xffffffff")
        key = (r2t.itt, r2t.ttt)
        if key in self.bursts:
            raise DatamoverUsageError(f"TTT {r2t.ttt:#x} of task {r2t.itt:#x} is already outstanding")
        self.bursts[key] = WriteBurst(r2t, sink, notify)
        self._task(r2t.itt).pdus_sent += 1
        wire_r2t = r2t if not len(r2t.data) else _without_data(r2t)
        conn._emit(encode(wire_r2t, header_digest=conn.header_digest, data_digest=conn.data_digest), 1)

    def finish(self, response: ScsiResponse) -> ScsiResponse:
        """A SCSI Response is about to go out: fill ExpDataSN, forget the task."""
        task = self.tasks.pop(response.itt, None)
        response.exp_data_sn = task.pdus_sent if task is not None else 0
        self._drop_bursts(response.itt)
        return response

    def collapse(self, response: ScsiResponse) -> bool:
        """Put ``response`` into the task's last Data-In instead of sending it (phase
        collapse, RFC 7143 11.7.4), when that is allowed and the Data-In is still queued:
        status GOOD, no sense or response data, no bidirectional residuals. True when done
        (the task is then finished here, as :meth:`finish` would)."""
        task = self.tasks.get(response.itt)
        if (task is None or task.last_header is None or response.status or response.response
                or response.data or response.ahs or response.bidi_overflow or response.bidi_underflow
                or response.immediate):
            return False
        writer = self._conn._writer
        if not writer.unsent(task.header_at):
            return False
        collapse_status(task.last_header, response.status, response.overflow, response.underflow,
                        response.residual, response.stat_sn, response.exp_cmd_sn, response.max_cmd_sn)
        del self.tasks[response.itt]
        self._drop_bursts(response.itt)
        return True

    def free(self, itt: int) -> None:
        self.tasks.pop(itt, None)
        self._drop_bursts(itt)

    def clear(self) -> None:
        self.tasks.clear()
        self.bursts.clear()
        self._conn._forget_direct(None)

    def _drop_bursts(self, itt: int) -> None:
        if self.bursts:
            for key in [key for key in self.bursts if key[0] == itt]:
                del self.bursts[key]
            self._conn._forget_direct(itt)

    def placement(self, bhs: memoryview, length: int) -> tuple[int, list[memoryview]] | None:
        """Where a solicited Data-Out's data segment goes, if it fits its burst (direct.py)."""
        itt, ttt, data_sn, offset = data_pdu_fields(bhs)
        burst = self.bursts.get((itt, ttt))
        if burst is None or data_sn != burst.next_data_sn:
            return None
        relative = offset - burst.base
        if relative < 0 or relative + length > burst.length:
            return None
        if self._conn.keys.data_pdu_in_order and relative != burst.received:
            return None
        return itt, burst.sink.slices(relative, length)

    # --------------------------------------------------------------- from the wire
    def on_data_out(self, pdu: DataOut, header: memoryview, placed: int = -1) -> None:
        """Collect one solicited Data-Out into its burst's descriptor.

        ``placed`` >= 0: the data segment (that many bytes) was received straight into the
        descriptor already (direct placement); only the bookkeeping is left.
        """
        conn = self._conn
        burst = self.bursts.get((pdu.itt, pdu.ttt))
        if burst is None:
            conn._report(DataPduError(
                f"Data-Out for unknown ITT {pdu.itt:#x} / TTT {pdu.ttt:#x}", bytes(header[:BHS_LENGTH])))
            return
        data = pdu.data
        length = len(data) if placed < 0 else placed
        relative = pdu.buffer_offset - burst.base
        problem = ""
        if pdu.data_sn != burst.next_data_sn:
            problem = f"DataSN {pdu.data_sn}, expected {burst.next_data_sn}"
        elif relative < 0 or relative + length > burst.length:
            problem = (f"offset {pdu.buffer_offset}+{length} outside the burst "
                       f"{burst.base}+{burst.length}")
        elif conn.keys.data_pdu_in_order and relative != burst.received:
            problem = f"offset {pdu.buffer_offset}, expected {burst.base + burst.received} (DataPDUInOrder)"
        if problem:
            conn._report(DataPduError(
                f"Data-Out of task {pdu.itt:#x} R2TSN {burst.r2t_sn}: {problem}", bytes(header[:BHS_LENGTH])))
            return
        if length and placed < 0:
            view = data if isinstance(data, memoryview) else memoryview(data)
            conn.payload_copies += burst.sink.scatter(relative, view)
            conn.payload_bytes_copied += length
        burst.received += length
        burst.next_data_sn += 1
        if not pdu.final:
            return
        del self.bursts[(pdu.itt, pdu.ttt)]
        if burst.received != burst.length:
            conn._report(DataPduError(
                f"Data-Out burst of task {pdu.itt:#x} R2TSN {burst.r2t_sn} ended (F) after "
                f"{burst.received} of {burst.length} bytes", bytes(header[:BHS_LENGTH])))
            return
        if burst.notify:
            conn._data_completion(burst.itt, burst.r2t_sn)


def _without_data(r2t: R2T) -> R2T:
    """An R2T never carries a data segment; drop one the core left in by mistake."""
    return dataclasses.replace(r2t, data=b"")

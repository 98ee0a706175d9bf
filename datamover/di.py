"""The Datamover Interface of RFC 5047, in Python.

This module is the contract between the iSCSI core and a transport plugin. The names are
the RFC's (section 8 for the down-calls, section 9 for the up-calls), in snake case, so that
a plugin author can read the RFC beside the code.

The boundary is message-shaped: the core hands the datamover whole PDUs and data
descriptors; the datamover never hands the core a byte stream. Data-type PDUs (Data-In and
R2T) and solicited Data-Out never cross the boundary: the datamover realises Put_Data and
Get_Data itself (Data-In/R2T/Data-Out PDUs on TCP, RDMA Write/Read on iSER, a memcpy on
loopback).

Beyond the RFC a plugin provides:

* connection establishment (:meth:`Transport.listen`, :meth:`Transport.connect`);
* the login channel (:meth:`DatamoverConnection.login_send` /
  :meth:`DatamoverConnection.login_recv`), used *before* ``enable_datamover`` because a
  datamover protocol may forbid DI primitives during login (RFC 5047 10.3.10, RFC 7145 7.3.9);
* a typed :class:`~datamover.capabilities.TransportCapabilities`.

Ownership of buffers: a descriptor handed to ``put_data``/``get_data``/``send_control``
belongs to the datamover until the matching completion (``data_completion_notify`` when
notify was asked for, otherwise the SCSI Response or ``deallocate_task_resources`` that ends
the task, or ``connection_terminate``). Datamovers never copy payload "just in case".
"""

from __future__ import annotations

import abc
import enum
import itertools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from datamover.buffers import FileSlice

if TYPE_CHECKING:
    from datamover.capabilities import TransportCapabilities
    from datamover.pdu.model import DataIn, Pdu, R2T

#: A data descriptor (RFC 5047 "Data_Descriptor"): a scatter-gather list of memoryviews.
#: Sinks (the initiator's read buffer, the target's Get_Data buffer) must be writable. A
#: Put_Data descriptor may also hold FileSlice elements where the connection accepts them
#: (DatamoverConnection.min_file_slice).
DataDescriptor = Sequence[memoryview]


class Role(enum.Enum):
    """Which end of an iSCSI connection a datamover serves."""

    INITIATOR = "initiator"
    TARGET = "target"


@dataclass(frozen=True, slots=True)
class Portal:
    """A network portal: host and port (and, on the target, a portal group tag)."""

    host: str
    port: int = 3260
    tpgt: int = 1

    @classmethod
    def parse(cls, text: str, default_port: int = 3260) -> Portal:
        """Parse ``HOST[:PORT][,TPGT]`` (IPv6 hosts in brackets)."""
        tpgt = 1
        if "," in text:
            text, tag = text.rsplit(",", 1)
            tpgt = int(tag)
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else default_port
        elif text.count(":") == 1:
            host, port_text = text.split(":")
            port = int(port_text)
        else:
            host, port = text, default_port
        if not host:
            raise ValueError(f"portal {text!r} has no host")
        if not 0 <= port <= 65535:
            raise ValueError(f"portal port {port} is out of range")
        return cls(host, port, tpgt)

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


_handle_counter = itertools.count(1)


def new_connection_handle() -> int:
    """A Connection_Handle: unique within this process, across sessions (RFC 5047 5)."""
    return next(_handle_counter)


@runtime_checkable
class DatamoverUpcalls(Protocol):
    """The four up-calls of RFC 5047 section 9 (datamover -> iSCSI layer).

    The core implements these; a datamover calls them from its event loop (never from
    another thread) after ``enable_datamover``.
    """

    def control_notify(self, conn: DatamoverConnection, pdu: Pdu) -> None:
        """Control_Notify (RFC 5047 9.1): a control-type PDU arrived from the peer.

        Raised for every PDU except Data-In, R2T and solicited Data-Out, which the
        datamover consumes itself. On the initiator a phase-collapsed final Data-In
        (S bit) is turned into a SCSI Response before this call. The PDU's data segment
        may alias a receive buffer: the core must consume or copy it before returning.
        """

    def connection_terminate_notify(self, conn: DatamoverConnection) -> None:
        """Connection_Terminate_Notify (RFC 5047 9.2): the connection ended unasked.

        Raised after the datamover has freed its connection and task resources (peer
        closed, reset, transport or format error). Not raised after the core's own
        ``connection_terminate``. The handle is invalid afterwards.
        """

    def data_completion_notify(self, conn: DatamoverConnection, itt: int, sn: int) -> None:
        """Data_Completion_Notify (RFC 5047 9.3), target only.

        A ``put_data`` (sn = DataSN of the last Data-In of the burst) or ``get_data``
        (sn = the R2TSN) that asked for notification has finished; for ``get_data`` the
        descriptor now holds the burst.
        """

    def data_ack_notify(self, conn: DatamoverConnection, itt: int, data_sn: int) -> None:
        """Data_ACK_Notify (RFC 5047 9.4), target only: the initiator acknowledged read
        data up to ``data_sn`` (the DataSN after the A-bit PDU). Never raised at ERL 0."""


@runtime_checkable
class DatamoverSideChannel(Protocol):
    """Extensions to the up-calls that RFC 5047 leaves undefined (implemented by the core).

    * ``sn_update``: on the initiator, a data-type PDU (Data-In, R2T) carried ExpCmdSN /
      MaxCmdSN that the core must see although the PDU itself is consumed by the
      datamover (RFC 5047 leaves this side channel open, protocol-digest 1.6). A Data-In
      with S (phase collapse) is not consumed: it reaches the core as the SCSI Response
      it stands for, with those numbers and its StatSN, so it needs no ``sn_update``.
    * ``protocol_error_notify``: a received PDU could not be accepted (bad format, digest
      error, data segment above the negotiated limit, a data PDU for an unknown task).
      The core decides between a Reject PDU and terminating the connection; the datamover
      does neither on its own, except that it stops reading a stream it can no longer
      frame (then it raises ``connection_terminate_notify`` right after).
    """

    def sn_update(self, conn: DatamoverConnection, exp_cmd_sn: int, max_cmd_sn: int,
                  stat_sn: int | None = None) -> None: ...

    def protocol_error_notify(self, conn: DatamoverConnection, error: Exception,
                              header: bytes = b"") -> None: ...


class DatamoverConnection(abc.ABC):
    """One transport connection, identified by its Connection_Handle.

    A plugin subclasses this. Its life: created by :meth:`Transport.connect` or by a
    listener; login PDUs travel over the login channel; then ``notice_key_values``,
    ``allocate_connection_resources`` and ``enable_datamover`` switch it to full feature
    phase, where only the nine RFC 5047 down-calls are used.
    """

    def __init__(self, role: Role, local: Portal | None = None, peer: str = "") -> None:
        self.handle: int = new_connection_handle()
        self.role: Role = role
        #: where this connection was accepted or which portal it reached
        self.local_portal: Portal | None = local
        #: a printable peer address, for logs
        self.peer: str = peer
        #: optional DI call tracer (see datamover.trace); set by the core
        self.tracer: object | None = None

    # ----------------------------------------------------------------- login channel
    @abc.abstractmethod
    async def login_send(self, pdu: Pdu) -> None:
        """Send one Login (or, in a Discovery session before full feature phase, Text)
        PDU in the transport's native mode. Used only before ``enable_datamover``."""

    @abc.abstractmethod
    async def login_recv(self, timeout: float | None = None) -> Pdu:
        """Receive the next login-phase PDU from the peer.

        Raises :class:`ConnectionClosed` if the peer went away, :class:`TimeoutError`
        after ``timeout`` seconds, and :class:`datamover.pdu.PduFormatError` for a PDU
        that cannot be parsed (the core answers with a login failure status).
        """

    # ----------------------------------------------------------- RFC 5047 down-calls
    @abc.abstractmethod
    def notice_key_values(self, keys: Mapping[str, str]) -> None:
        """Notice_Key_Values (RFC 5047 8.8): the keys negotiated for this connection.

        Called once the login's operational stage has settled the keys, before
        ``allocate_connection_resources``. ``keys`` holds every negotiated key (with
        defaults applied) plus the declarative receive limits as
        ``MaxRecvDataSegmentLength.initiator`` / ``MaxRecvDataSegmentLength.target``.
        """

    @abc.abstractmethod
    async def allocate_connection_resources(self, resource_descriptor: object | None = None) -> bool:
        """Allocate_Connection_Resources (RFC 5047 8.4): reserve per-connection resources.

        Returns True on success. Idempotent for a handle that already succeeded. Called
        during the operational stage (never during security negotiation, to resist DoS);
        the initiator calls it before sending the Login Request with NSG=3.
        """

    @abc.abstractmethod
    def deallocate_connection_resources(self) -> None:
        """Deallocate_Connection_Resources (RFC 5047 8.5): release what allocate reserved,
        on login failure or a connection lost before ``enable_datamover``."""

    @abc.abstractmethod
    async def enable_datamover(self, upcalls: DatamoverUpcalls, final_login_response: Pdu | None = None) -> None:
        """Enable_Datamover (RFC 5047 8.6): switch to full feature phase.

        On the target the datamover first sends ``final_login_response`` in native mode,
        then enables (atomically for transports that need it). From return on, received
        PDUs are delivered through ``upcalls``.
        """

    @abc.abstractmethod
    def send_control(
        self,
        pdu: Pdu,
        *,
        data_out: DataDescriptor | None = None,
        data_in: DataDescriptor | None = None,
        immediate_data_size: int = 0,
        unsolicited_data_size: int = 0,
    ) -> None:
        """Send_Control (RFC 5047 8.1): send one control-type PDU to the peer.

        For a SCSI Command, ``data_out`` is the whole write buffer (immediate, then
        unsolicited, then solicited data) and ``data_in`` the read buffer; the PDU's
        ``data`` already holds the immediate data. The initiator's datamover answers R2Ts
        from ``data_out`` and places read data into ``data_in`` on its own. Unsolicited
        Data-Out PDUs are separate ``send_control`` calls made by the core. PDUs reach the
        peer in call order, after any data of an earlier ``put_data`` on this connection.
        """

    @abc.abstractmethod
    def put_data(self, header: DataIn, descriptor: DataDescriptor, notify: bool) -> None:
        """Put_Data (RFC 5047 8.2), target only: move one read burst to the initiator.

        ``header`` holds the Data-In fields of the burst (ITT, LUN, BufferOffset,
        ExpCmdSN/MaxCmdSN; F set: each burst is one data sequence, RFC 7143 11.7.1);
        ``descriptor`` holds the burst's bytes. The datamover splits it as its transport
        needs and numbers DataSN per task from 0 (the core does not). With ``notify`` it
        raises ``data_completion_notify(itt, last DataSN)``.
        """

    @abc.abstractmethod
    def get_data(self, r2t: R2T, descriptor: DataDescriptor, notify: bool) -> None:
        """Get_Data (RFC 5047 8.3), target only: fetch one write burst from the initiator.

        ``r2t`` holds the R2T fields (ITT, TTT, R2TSN, BufferOffset,
        DesiredDataTransferLength); ``descriptor`` is the writable sink of that length.
        Completion is ``data_completion_notify(itt, r2t_sn)``; matching is by
        (ITT, R2TSN), never by TTT.
        """

    @abc.abstractmethod
    def connection_terminate(self) -> None:
        """Connection_Terminate (RFC 5047 8.7): tear the connection down now.

        Frees all connection and task resources; on return the core owns every buffer
        again. Does not raise ``connection_terminate_notify``. PDUs already handed to
        ``send_control`` are still delivered when the transport can (a Logout Response
        precedes the close). Also valid during login, to close a refused connection.
        """

    @abc.abstractmethod
    def deallocate_task_resources(self, itt: int) -> None:
        """Deallocate_Task_Resources (RFC 5047 8.9): a task ended without a SCSI Response
        (abort, LU reset, ...); forget everything held for ``itt``. Never called for a
        task that a SCSI Response ended: the datamover frees those itself."""

    # ------------------------------------------------------------------ optional
    def alloc_buffer(self, size: int) -> memoryview:
        """A writable data buffer this datamover moves best (registered memory on RDMA).

        Beyond RFC 5047, optional: the core takes task buffers from here so that Put_Data
        and Get_Data work on memory the transport can use directly (no bounce copy, no
        per-I/O registration). The default is ordinary memory.
        """
        return memoryview(bytearray(size))

    def release_buffer(self, buf: memoryview) -> None:
        """Give back a buffer from :meth:`alloc_buffer` once no transfer uses it."""
        return None

    def min_file_slice(self) -> int | None:
        """The smallest Put_Data, in bytes, this datamover wants as one :class:`FileSlice`
        rather than in a buffer; None (the default) when it takes no file slices.

        Beyond RFC 5047, optional: a file-backed READ then needs no buffer and no copy
        through user space. Asked after ``enable_datamover``.
        """
        return None

    def stats(self) -> dict[str, int]:
        """Counters for reports: PDUs or verbs operations, payload bytes and copies."""
        return {}


class ConnectionClosed(ConnectionError):
    """The peer closed or reset the connection."""


class NotImplementedTransport(RuntimeError):
    """A registered transport whose implementation has not landed yet."""


#: What a listener calls for every accepted connection.
AcceptCallback = Callable[[DatamoverConnection], Awaitable[None]]


class Listener(abc.ABC):
    """A listening endpoint returned by :meth:`Transport.listen`."""

    #: the portal really bound (port 0 resolved)
    portal: Portal

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop accepting; existing connections are left to their sessions."""


class Transport(abc.ABC):
    """A transport plugin's factory: one instance per configured transport.

    Registered through ``datamover_register_transports`` (see :mod:`datamover.plugin`).
    """

    #: the name users write in configs and on the command line
    name: str = ""

    def __init__(self, options: Mapping[str, object] | None = None) -> None:
        """Keep ``options``; a subclass raises ValueError for a value it cannot use (the
        registry reports it as a one-line configuration error)."""
        self.options: dict[str, object] = dict(options or {})

    @classmethod
    @abc.abstractmethod
    def capabilities(cls) -> TransportCapabilities:
        """What this transport can do; the core obeys it and the kit gates tests on it."""

    @classmethod
    def option_names(cls) -> Mapping[str, type]:
        """Options accepted in ``[transport.<name>]`` of a config file, with their types."""
        return {}

    @abc.abstractmethod
    async def listen(self, portal: Portal, on_accept: AcceptCallback) -> Listener:
        """Listen on ``portal`` (target side); call ``on_accept`` for each connection."""

    @abc.abstractmethod
    async def connect(self, portal: Portal, timeout: float | None = None) -> DatamoverConnection:
        """Open a connection to ``portal`` (initiator side), ready for login."""

    def describe(self) -> str:
        """One line for reports: which provider moves the bytes and how."""
        return self.name

    def max_command_bytes(self) -> int | None:
        """The most data one SCSI command may carry over this transport instance, or None
        for no limit. The initiator splits larger I/O, as it does for the LU's MAXIMUM
        TRANSFER LENGTH (a peer may take less than its Block Limits page says: tgtd's iSER
        driver, one 512 KiB RDMA buffer per command)."""
        return None

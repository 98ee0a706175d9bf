"""A deliberately broken variant, ``uds-broken``: its Put_Data drops one byte per burst.

It exists to show what the conformance kit says about a datamover that corrupts read
data. The byte at offset 100 of every read burst of 512 bytes or more is dropped and the
burst padded with a zero at its end, so the PDU framing stays valid and the fault shows up
as wrong data, not as a broken connection.
"""

from __future__ import annotations

from datamover.di import DataDescriptor
from datamover.pdu import DataIn
from datamover.plugin import TransportRegistry, hookimpl
from datamover_tcp.connection import TcpConnection

from datamover_uds.transport import UdsTransport

DROPPED_OFFSET = 100


class DroppingConnection(TcpConnection):
    def put_data(self, header: DataIn, descriptor: DataDescriptor, notify: bool) -> None:
        burst = b"".join(bytes(segment) for segment in descriptor)
        if len(burst) >= 512:
            burst = burst[:DROPPED_OFFSET] + burst[DROPPED_OFFSET + 1:] + b"\0"
        super().put_data(header, [memoryview(burst)], notify)


class BrokenUdsTransport(UdsTransport):
    name = "uds-broken"
    connection_class = DroppingConnection


@hookimpl
def datamover_register_transports(registry: TransportRegistry) -> None:
    registry.add_transport(BrokenUdsTransport)

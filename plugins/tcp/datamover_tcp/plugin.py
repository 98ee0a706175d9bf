"""Registers the TCP transport with datamover (entry point ``tcp = "datamover_tcp.plugin"``)."""

from __future__ import annotations

from datamover.plugin import TransportRegistry, hookimpl

from datamover_tcp.transport import TcpTransport


@hookimpl
def datamover_register_transports(registry: TransportRegistry) -> None:
    registry.add_transport(TcpTransport)

"""Registers the loopback transport (through the same entry-point hook as third parties)."""

from __future__ import annotations

from datamover.plugin import TransportRegistry, hookimpl


@hookimpl
def datamover_register_transports(registry: TransportRegistry) -> None:
    from datamover_loopback.transport import LoopbackTransport

    registry.add_transport(LoopbackTransport)

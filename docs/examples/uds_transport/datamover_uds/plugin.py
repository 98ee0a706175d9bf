"""Registers the ``uds`` transport (entry point ``uds = "datamover_uds.plugin"``)."""

from __future__ import annotations

from datamover.plugin import TransportRegistry, hookimpl


@hookimpl
def datamover_register_transports(registry: TransportRegistry) -> None:
    from datamover_uds.transport import UdsTransport

    registry.add_transport(UdsTransport)

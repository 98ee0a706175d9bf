"""Registers the iSER transport (same entry-point hook as any third-party plugin)."""

from __future__ import annotations

from datamover.plugin import TransportRegistry, hookimpl


@hookimpl
def datamover_register_transports(registry: TransportRegistry) -> None:
    from datamover_iser.transport import IserTransport

    registry.add_transport(IserTransport)

"""Fake transports for comparative-run tests: loopback variants that behave differently in
one precise, known way, so a test can check the runner notices and names it."""

from __future__ import annotations

from datamover.capabilities import TransportCapabilities
from datamover.di import (
    AcceptCallback,
    DataDescriptor,
    DatamoverConnection,
    Listener,
    NotImplementedTransport,
    Portal,
)
from datamover.pdu import DataIn
from datamover.plugin import TransportRegistry, build_registry, hookimpl
from datamover_loopback.transport import LoopbackConnection, LoopbackTransport


class TwinLoopbackTransport(LoopbackTransport):
    """Loopback under another name: must agree with loopback in everything."""

    name = "twin"


class NoImmediateTransport(LoopbackTransport):
    """Forces ImmediateData=No: same data and statuses, different DI calls for writes."""

    name = "noimmediate"

    @classmethod
    def capabilities(cls) -> TransportCapabilities:
        base = LoopbackTransport.capabilities()
        return TransportCapabilities(cross_process=False, records_trace=True, provider="in-process",
                                     forced_keys=(("ImmediateData", "No"),), error_recovery_levels=base.error_recovery_levels)


class CorruptReadTransport(LoopbackTransport):
    """Flips one byte of the third Put_Data burst: a datamover that damages read data."""

    name = "corruptread"

    async def connect(self, portal: Portal, timeout: float | None = None) -> DatamoverConnection:
        conn = await super().connect(portal, timeout)
        assert isinstance(conn, LoopbackConnection) and conn.peer_conn is not None
        target = conn.peer_conn
        original = target.put_data
        calls = 0

        def put_data(header: DataIn, descriptor: DataDescriptor, notify: bool) -> None:
            nonlocal calls
            calls += 1
            if calls == 3:
                damaged = bytearray(b"".join(bytes(m) for m in descriptor))
                damaged[0] ^= 0xFF
                descriptor = [memoryview(damaged)]
            original(header, descriptor, notify)

        target.put_data = put_data  # type: ignore[method-assign]
        return conn


class CrossLoopbackTransport(LoopbackTransport):
    """Claims cross_process although it only reaches targets in its own process (like a
    transport whose configured fabric is in-process)."""

    name = "crossloop"

    @classmethod
    def capabilities(cls) -> TransportCapabilities:
        return TransportCapabilities(cross_process=True, records_trace=True, provider="in-process")


class NotYetTransport(LoopbackTransport):
    """Registered but not implemented yet: listen and connect refuse."""

    name = "notyet"

    async def listen(self, portal: Portal, on_accept: AcceptCallback) -> Listener:
        raise NotImplementedTransport("the notyet transport is registered but not implemented yet")

    async def connect(self, portal: Portal, timeout: float | None = None) -> DatamoverConnection:
        raise NotImplementedTransport("the notyet transport is registered but not implemented yet")


class _Plugin:
    @staticmethod
    @hookimpl
    def datamover_register_transports(registry: TransportRegistry) -> None:
        for cls in (TwinLoopbackTransport, NoImmediateTransport, CorruptReadTransport, CrossLoopbackTransport,
                    NotYetTransport):
            registry.add_transport(cls)


def registry_with_fakes() -> TransportRegistry:
    """The real registry (entry points) plus the fakes above."""
    return build_registry(extra_plugins=(_Plugin(),))

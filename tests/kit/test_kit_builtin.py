"""The conformance kit against the built-in transports: loopback, tcp and iSER (on the soft
provider's shared-memory fabric) when registered and implemented (checked at run time), and
whatever --datamover-transport names."""

from __future__ import annotations

import pytest

from datamover.di import NotImplementedTransport, Portal
from datamover.plugin import create_transport, get_registry
from datamover.testing import KitHarness, TransportConformance


class TestLoopbackConformance(TransportConformance):
    @pytest.fixture
    def transport_name(self) -> str:
        return "loopback"


class TestTcpConformance(TransportConformance):
    @pytest.fixture
    def transport_name(self) -> str:
        if "tcp" not in get_registry():
            pytest.skip("the tcp transport is not registered")
        try:
            KitHarness(lambda: create_transport("tcp")).run(
                KitHarness(lambda: create_transport("tcp"), Portal("127.0.0.1", 0)).check_implemented)
        except NotImplementedTransport as exc:
            pytest.skip(f"the tcp transport is not implemented yet: {exc}")
        return "tcp"


class TestIserSoftConformance(TransportConformance):
    """iSER over the software RDMA provider: the same kit, gated by iSER's capabilities
    (no digests, no phase collapse)."""

    @pytest.fixture
    def transport_factory(self):  # type: ignore[no-untyped-def]
        if "iser" not in get_registry():
            pytest.skip("the iser transport is not registered")
        return lambda: create_transport("iser", {"provider": "soft", "fabric": "shm"})


class TestSelectedConformance(TransportConformance):
    """Parametrized by the datamover pytest plugin over --datamover-transport (default loopback)."""

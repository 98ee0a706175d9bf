"""The plugin's own conformance run: subclass the kit and name the transport."""

from __future__ import annotations

import pytest

from datamover.testing import TransportConformance


class TestUdsConformance(TransportConformance):
    @pytest.fixture
    def transport_name(self) -> str:
        return "uds"

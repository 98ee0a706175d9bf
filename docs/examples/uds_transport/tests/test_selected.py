"""The kit over whatever ``--datamover-transport`` names (needs the datamover pytest plugin)."""

from __future__ import annotations

from datamover.testing import TransportConformance


class TestSelectedConformance(TransportConformance):
    pass

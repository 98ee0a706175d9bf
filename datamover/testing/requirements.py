"""Capability requirements of conformance tests (the SQLAlchemy "requirements" pattern).

A kit test that only makes sense for some transports is marked::

    @requires("data_digest")
    def test_data_digest_session(self, kit): ...

and is skipped, naming the capability, for a transport whose
:meth:`~datamover.di.Transport.capabilities` lacks it. Names are those of
:meth:`datamover.capabilities.TransportCapabilities.has`: boolean attributes
(``header_digest``, ``records_trace``, ...), ``erlN``, or free-form ``extra`` tags.
"""

from __future__ import annotations

from collections.abc import Iterable

import pytest

from datamover.capabilities import TransportCapabilities

MARKER = "datamover_requires"


def requires(*capabilities: str) -> pytest.MarkDecorator:
    """Mark a kit test as needing every capability in ``capabilities``."""
    if not capabilities:
        raise ValueError("requires() needs at least one capability name")
    return getattr(pytest.mark, MARKER)(*capabilities)


def missing(capabilities: TransportCapabilities, needed: Iterable[str]) -> list[str]:
    """The capabilities in ``needed`` that ``capabilities`` lacks, in order."""
    return [name for name in needed if not capabilities.has(name)]


def needed_by(item: pytest.Item) -> list[str]:
    """Every capability the ``requires`` markers on a test item ask for."""
    names: list[str] = []
    for mark in item.iter_markers(MARKER):
        names.extend(str(arg) for arg in mark.args)
    return names

"""Scenario 6: the kernel iSER initiator (open-iscsi with the ``iser`` iface, ib_iser) against
our iSER target on pyverbs: login, the block device appears, 64 MiB dd write then read with
checksums (and against our LUN file), logout. Discovery over the iser iface is checked apart.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.scenarios.kernel import KernelInitiator, kernel_initiator, login_write_read_logout
from lab.scenarios.support import OurTarget, start_our_target

SIZE = 64 << 20


@pytest.fixture(scope="module")
def target() -> Iterator[OurTarget]:
    t = start_our_target("iser", name="our-iser-target")
    try:
        yield t
    finally:
        t.stop()


@pytest.fixture(scope="module")
def initiator() -> Iterator[KernelInitiator]:
    with kernel_initiator("ib_iser") as ki:
        yield ki


def test_login_dd_logout(target: OurTarget, initiator: KernelInitiator) -> None:
    login_write_read_logout(initiator, target, "iser", SIZE, "s6")


def test_discovery_over_iser(target: OurTarget, initiator: KernelInitiator) -> None:
    found = initiator.discover(f"{target.host}:{target.port}", "iser")
    assert target.iqn in found, found

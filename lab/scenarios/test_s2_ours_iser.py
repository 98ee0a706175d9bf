"""Scenario 2: our iSER initiator against our iSER target, both on pyverbs over rdma_rxe.

Two processes (``datamover target serve`` and the initiator commands), one rxe device; the
config pins ``provider = "pyverbs"``, so a fallback to the soft provider fails the run.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.scenarios.support import OurTarget, chunked_write_read, our_initiator, start_our_target, verify_stored


@pytest.fixture(scope="module")
def target() -> Iterator[OurTarget]:
    t = start_our_target("iser")
    try:
        yield t
    finally:
        t.stop()


def test_target_serves_on_pyverbs(target: OurTarget) -> None:
    text = target.daemon.text()
    assert "verbs provider: pyverbs" in text or "pyverbs" in text, text[-2000:]
    assert "soft provider" not in text.split("serving", 1)[-1].splitlines()[0]


def test_discover(target: OurTarget) -> None:
    out = our_initiator("discover", "iser", target.host, target.port, None).stdout
    assert target.iqn in out


def test_login(target: OurTarget) -> None:
    out = our_initiator("login", "iser", target.host, target.port, target.iqn).stdout
    assert "RDMAExtensions" in out or "iser" in out.lower(), out


def test_verify_64m(target: OurTarget) -> None:
    verify_stored("iser", target.host, target.port, target.iqn, target.lun_path)


def test_write_read_checksums(target: OurTarget) -> None:
    chunked_write_read("iser", target.host, target.port, target.iqn, target.lun_path, name="s2")

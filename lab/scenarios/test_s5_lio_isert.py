"""Scenario 5: our iSER initiator (pyverbs) against the kernel LIO target with ib_isert.

targetcli configures a fileio LUN and a portal on the rxe address with ``enable_iser``; LIO
then takes iSER logins on that portal through rdma_cm (ib_isert) on rxe0.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.scenarios.kernel import Lio, lio_target
from lab.scenarios.support import chunked_write_read, our_initiator, rdma_ip, verify_stored

LIO_PORT = 3264


@pytest.fixture(scope="module")
def lio() -> Iterator[Lio]:
    with lio_target(rdma_ip(), LIO_PORT, iser=True, name="lio-iser") as t:
        yield t


def test_portal_is_iser(lio: Lio) -> None:
    attr = Path(f"/sys/kernel/config/target/iscsi/{lio.iqn}/tpgt_1/np/{lio.host}:{lio.port}/iser")
    assert attr.exists(), f"{attr} missing: ib_isert not loaded?"
    assert attr.read_text().strip() == "1"


def test_discover(lio: Lio) -> None:
    out = our_initiator("discover", "iser", lio.host, lio.port, None).stdout
    assert lio.iqn in out, out


def test_login(lio: Lio) -> None:
    our_initiator("login", "iser", lio.host, lio.port, lio.iqn)


def test_verify_64m(lio: Lio) -> None:
    verify_stored("iser", lio.host, lio.port, lio.iqn, lio.backing)


def test_write_read_checksums(lio: Lio) -> None:
    chunked_write_read("iser", lio.host, lio.port, lio.iqn, lio.backing, name="s5")

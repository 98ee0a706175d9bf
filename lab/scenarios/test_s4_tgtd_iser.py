"""Scenario 4: our iSER initiator (pyverbs) against tgtd's iSER driver (``tgtadm --lld iser``).

tgtd listens for iSER on its own rdma_cm port (``--iser port=``) on rxe0; the target is
created with the iser LLD, so it forces InitialR2T=Yes and ImmediateData=No as tgt does.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.scenarios.support import chunked_write_read, our_initiator, rdma_ip, verify_stored
from lab.scenarios.tgt import TgtdIser, tgtd_iser

ISER_PORT = 3260


@pytest.fixture(scope="module")
def tgtd() -> Iterator[TgtdIser]:
    with tgtd_iser(rdma_ip(), ISER_PORT) as t:
        yield t


def test_discover(tgtd: TgtdIser) -> None:
    out = our_initiator("discover", "iser", tgtd.host, tgtd.port, None).stdout
    assert tgtd.iqn in out, out


def test_login(tgtd: TgtdIser) -> None:
    out = our_initiator("login", "iser", tgtd.host, tgtd.port, tgtd.iqn).stdout
    assert "LUN 1" in out, out


def test_verify_64m(tgtd: TgtdIser) -> None:
    verify_stored("iser", tgtd.host, tgtd.port, tgtd.iqn, tgtd.backing, lun=tgtd.lun)


def test_write_read_checksums(tgtd: TgtdIser) -> None:
    chunked_write_read("iser", tgtd.host, tgtd.port, tgtd.iqn, tgtd.backing, lun=tgtd.lun, name="s4")

"""Scenario 4: our iSER initiator (pyverbs) against tgtd's iSER driver (``tgtadm --lld iser``).

tgtd listens for iSER through rdma_cm on port 3260 on rxe0; the target is created with the
iser LLD, so it forces InitialR2T=Yes and ImmediateData=No as tgt does. What it takes to work
with tgt 1.0.85 (docs/interop.md findings 10 and 11): an initiator-name ACL, commands of at
most 512 KiB, an initiator that does not trust its login's ExpCmdSN and logs out immediate.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from lab.scenarios import support
from lab.scenarios.support import chunked_write_read, our_initiator, rdma_ip, verify_stored
from lab.scenarios.tgt import TgtdIser, tgtd_iser

ISER_PORT = 3260
#: before finding 11 was fixed our initiator waited for ever after tgtd's login (a window it
#: read as shut): a regression fails in two minutes rather than in the default five
LOGIN_TIMEOUT = 120.0


# tgt 1.0.85's iSER driver gives a command one RDMA buffer (512 KiB) and closes the
# connection on a larger one (err -E2BIG in iser_task_alloc_rdma_bufs); Linux's ib_iser sends
# at most that by default (max_sectors = 1024)
support.INITIATOR_ISER_OPTIONS["max_command_bytes"] = 512 << 10


@pytest.fixture(scope="module")
def tgtd() -> Iterator[TgtdIser]:
    with tgtd_iser(rdma_ip(), ISER_PORT) as t:
        yield t


def test_discover(tgtd: TgtdIser) -> None:
    out = our_initiator("discover", "iser", tgtd.host, tgtd.port, None, timeout=LOGIN_TIMEOUT).stdout
    assert tgtd.iqn in out, out


@pytest.fixture(scope="module")
def login(tgtd: TgtdIser) -> str:
    """One login (with its output); the data tests need it and skip when it failed."""
    proc = our_initiator("login", "iser", tgtd.host, tgtd.port, tgtd.iqn, timeout=LOGIN_TIMEOUT, check=False)
    return "" if proc.returncode else proc.stdout


def test_login(tgtd: TgtdIser, login: str) -> None:
    assert login, "login to tgtd's iSER target failed (see commands.log and tgtd.log)"
    assert "LUN 1" in login, login


def test_verify_64m(tgtd: TgtdIser, login: str) -> None:
    if not login:
        pytest.skip("no login to tgtd (test_login failed)")
    verify_stored("iser", tgtd.host, tgtd.port, tgtd.iqn, tgtd.backing, lun=tgtd.lun)


def test_write_read_checksums(tgtd: TgtdIser, login: str) -> None:
    if not login:
        pytest.skip("no login to tgtd (test_login failed)")
    chunked_write_read("iser", tgtd.host, tgtd.port, tgtd.iqn, tgtd.backing, lun=tgtd.lun, name="s4")

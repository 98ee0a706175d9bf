"""Interop fixtures: real peers (libiscsi, tgtd, tshark) against datamover.

Every test here is marked ``interop``. A test whose peer is not installed skips and names
the missing binary and package (install them with scripts/install-peers.sh).
Processes are started per module and always stopped, even when a test fails.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # tools/ is not installed; it lives beside the tests
    sys.path.insert(0, str(REPO))

from tools.interop import OurTarget, PeerMissing, Tgtd, require, start_our_target, start_tgtd  # noqa: E402
from tools.interop.peers import require_root  # noqa: E402

LUN_SIZE = 256 << 20
INITIATOR_IQN = "iqn.2026-11.org.datamover.interop:host"
CHAP_USER, CHAP_SECRET = "interopuser", "interopsecret12"
MUTUAL_USER, MUTUAL_SECRET = "interoptarget", "targetsecret123"

T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.interop)


def needs(*binaries: str) -> dict[str, str]:
    """Paths of the binaries, or skip the test saying which are missing."""
    try:
        return require(*binaries)
    except PeerMissing as exc:
        pytest.skip(str(exc))


def peer_or_skip(start: Callable[[], T]) -> T:
    try:
        return start()
    except PeerMissing as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def our_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OurTarget]:
    """``datamover target serve --transport tcp`` with a 256 MiB file LUN (LUN 0)."""
    work = tmp_path_factory.mktemp("ours")
    target = start_our_target(work / "lun.img", LUN_SIZE, 0, "tcp", log_dir=work)
    try:
        yield target
    finally:
        target.stop()


@pytest.fixture(scope="module")
def our_chap_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OurTarget]:
    """Our target requiring one-way CHAP."""
    work = tmp_path_factory.mktemp("ours-chap")
    target = start_our_target(work / "lun.img", 64 << 20, 0, "tcp", chap=f"{CHAP_USER}:{CHAP_SECRET}", log_dir=work)
    try:
        yield target
    finally:
        target.stop()


def _tgtd(tmp_path_factory: pytest.TempPathFactory, name: str, chap: str | None) -> Tgtd:
    work = tmp_path_factory.mktemp(name)
    try:
        require("tgtd", "tgtadm")
        require_root("tgtd")
    except PeerMissing as exc:
        pytest.skip(str(exc))
    # tgtd answers HeaderDigest=None to an offer of CRC32C alone unless told it may use CRC32C;
    # with "CRC32C,None" it follows the initiator's preference (None offers still get None)
    digests = {"HeaderDigest": "CRC32C,None", "DataDigest": "CRC32C,None"}
    return start_tgtd(work / "lun.img", 0, f"iqn.2026-11.org.datamover.interop:{name}", chap=chap, size=LUN_SIZE,
                      log_dir=work, params=digests)


@pytest.fixture(scope="module")
def tgtd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tgtd]:
    """A private tgtd on a free port with a 256 MiB file LUN (LUN 1), no authentication."""
    daemon = _tgtd(tmp_path_factory, "tgtd", None)
    try:
        yield daemon
    finally:
        daemon.stop()


@pytest.fixture(scope="module")
def tgtd_chap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tgtd]:
    """A private tgtd requiring CHAP, with an outgoing account for mutual CHAP."""
    daemon = _tgtd(tmp_path_factory, "tgtdchap", f"{CHAP_USER}:{CHAP_SECRET}:{MUTUAL_USER}:{MUTUAL_SECRET}")
    try:
        yield daemon
    finally:
        daemon.stop()

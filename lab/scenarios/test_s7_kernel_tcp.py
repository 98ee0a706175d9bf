"""Scenario 7: the kernel's TCP peers against ours.

(a) the kernel initiator (open-iscsi, iscsi_tcp) against our TCP target: discovery, login,
    the block device appears, 64 MiB dd write then read with checksums, logout;
(b) our TCP initiator against the kernel LIO target over TCP (configured by targetcli):
    discovery, login, verify 64 MiB, write/read with checksums.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from lab.scenarios.kernel import KernelInitiator, Lio, kernel_initiator, lio_target, login_write_read_logout
from lab.scenarios.support import (OurTarget, chunked_write_read, our_initiator, rdma_ip, sha256_of,
                                   start_our_target, verify_stored)

SIZE = 64 << 20
OUR_PORT, LIO_PORT = 3260, 3262


@pytest.fixture(scope="module")
def target() -> Iterator[OurTarget]:
    t = start_our_target("tcp", port=OUR_PORT, name="our-tcp-target")
    try:
        yield t
    finally:
        t.stop()


@pytest.fixture(scope="module")
def initiator() -> Iterator[KernelInitiator]:
    with kernel_initiator("iscsi_tcp") as ki:
        yield ki


def test_a_kernel_tcp_initiator_against_our_target(target: OurTarget, initiator: KernelInitiator) -> None:
    found = initiator.discover(f"{target.host}:{target.port}", "default")
    assert target.iqn in found, found
    login_write_read_logout(initiator, target, "default", SIZE, "s7a")


@pytest.fixture(scope="module")
def lio() -> Iterator[Lio]:
    with lio_target(rdma_ip(), LIO_PORT, iser=False, name="lio-tcp") as t:
        yield t


def test_b_our_tcp_initiator_against_lio(lio: Lio) -> None:
    out = our_initiator("discover", "tcp", lio.host, lio.port, None).stdout
    assert lio.iqn in out, out
    our_initiator("login", "tcp", lio.host, lio.port, lio.iqn)
    verify_stored("tcp", lio.host, lio.port, lio.iqn, lio.backing)


def test_b_write_read_in_8m_commands(lio: Lio) -> None:
    """64 MiB in commands LIO's fileio backstore takes (8 MiB: FD_MAX_BYTES), checksummed."""
    chunked_write_read("tcp", lio.host, lio.port, lio.iqn, lio.backing, size=SIZE, name="s7b")


def test_b_single_64m_write_and_read(lio: Lio) -> None:
    """``datamover write``/``read`` of a 64 MiB file: the initiator must keep each command
    within the target's Block Limits (LIO fileio: 8 MiB), not send one 64 MiB command
    (docs/interop.md finding 1; reproduced outside the guest in tests/vm/test_lab_findings.py)."""
    src, dst = Path("/var/tmp/s7c-src.bin"), Path("/var/tmp/s7c-dst.bin")
    src.write_bytes(os.urandom(SIZE))
    our_initiator("write", "tcp", lio.host, lio.port, lio.iqn, "-i", str(src), timeout=600)
    our_initiator("read", "tcp", lio.host, lio.port, lio.iqn, "--count", str(SIZE // 512), "-o", str(dst), timeout=600)
    assert sha256_of(dst) == sha256_of(src)

"""libiscsi's tools (a C initiator we did not write) against ``datamover target serve --transport tcp``."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench.anchors import build_iscsi_load
from tests.interop.conftest import CHAP_SECRET, CHAP_USER, LUN_SIZE, needs
from tools.interop import OurTarget
from tools.interop.libiscsi import iscsi_inq, iscsi_ls, iscsi_perf, iscsi_readcapacity16
from tools.interop.ours import start_our_target


def test_iscsi_ls_discovers_target_and_lun(our_target: OurTarget) -> None:
    needs("iscsi-ls")
    run, targets = iscsi_ls(our_target.host, our_target.port, show_luns=True)
    assert run.ok, run.describe()
    assert [t.name for t in targets] == [our_target.iqn], run.describe()
    assert targets[0].portal == f"{our_target.portal},1"
    assert set(targets[0].luns) == {0}, run.describe()
    assert "DIRECT_ACCESS" in targets[0].luns[0], run.describe()


def test_iscsi_inq_standard_and_vpd(our_target: OurTarget) -> None:
    needs("iscsi-inq")
    run, fields = iscsi_inq(our_target.url())
    assert run.ok, run.describe()
    assert fields.get("Peripheral Device Type") == "DIRECT_ACCESS", run.describe()
    assert fields.get("Peripheral Qualifier") == "CONNECTED"
    assert fields.get("Vendor") and fields.get("Product"), run.describe()
    # VPD page 0x00 (supported pages) must list 0x80 and 0x83, which libiscsi decodes
    run, fields = iscsi_inq(our_target.url(), evpd=1, page=0)
    assert run.ok, run.describe()
    run, fields = iscsi_inq(our_target.url(), evpd=1, page=0x83)
    assert run.ok, run.describe()


def test_iscsi_readcapacity16_reports_lun_size(our_target: OurTarget) -> None:
    needs("iscsi-readcapacity16")
    run, capacity = iscsi_readcapacity16(our_target.url())
    assert run.ok and capacity is not None, run.describe()
    assert capacity.block_size == 512
    assert capacity.size == LUN_SIZE


def test_iscsi_perf_ten_seconds_without_errors(our_target: OurTarget) -> None:
    needs("iscsi-perf")
    run, perf = iscsi_perf(our_target.url(), seconds=10, blocks=128, max_requests=16)
    assert run.ok, run.describe()
    assert perf.finished, run.describe()
    assert not perf.errors, run.describe()
    assert perf.iops_average and perf.iops_average > 0, run.describe()


def test_chap_login_with_libiscsi(our_chap_target: OurTarget) -> None:
    needs("iscsi-inq")
    run, fields = iscsi_inq(our_chap_target.url(CHAP_USER, CHAP_SECRET))
    assert run.ok, run.describe()
    assert fields.get("Peripheral Device Type") == "DIRECT_ACCESS"
    run, _ = iscsi_inq(our_chap_target.url(CHAP_USER, "wrong-secret-123"))
    assert not run.ok, "a wrong CHAP secret was accepted"
    run, _ = iscsi_inq(our_chap_target.url())
    assert not run.ok, "a login without CHAP was accepted by a target that requires it"


def test_libiscsi_with_header_digests_writes_and_reads_back(tmp_path: Path) -> None:
    """libiscsi's async API (bench/iscsi_load.c, -H: HeaderDigest=CRC32C; libiscsi has no
    data digests) fills a LUN with stamped blocks, then reads every block back and checks
    its stamp: our target checks the digest of every header it receives, large Data-Outs
    included, and libiscsi checks the ones it sends."""
    needs("iscsi-perf")  # the libiscsi tools package; the headers are checked by the build
    try:
        binary = build_iscsi_load()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    target = start_our_target(tmp_path / "lun.img", 16 << 20, 0, "tcp", log_dir=tmp_path,
                              keys={"HeaderDigest": "CRC32C,None"}, debug=True)
    try:
        for argv in (["-F", "-b", "256", "-m", "8"], ["-V", "-b", "2048", "-m", "4", "-t", "2"]):
            run = subprocess.run([binary, "-H", *argv, target.url()], capture_output=True, text=True, timeout=120)
            assert run.returncode == 0, run.stdout + run.stderr
            result = dict(item.split("=") for item in run.stdout.split("RESULT", 1)[1].split())
            assert int(result["ios"]) > 0 and result["errors"] == "0" and result["verify_errors"] == "0", run.stdout
    finally:
        target.stop()
    # both logins really had header digests on (the TCP datamover logs what was negotiated)
    log = (tmp_path / "datamover-target.log").read_text()
    negotiated = [line for line in log.splitlines() if " negotiated: " in line]
    assert len(negotiated) == 2 and all("HeaderDigest=CRC32C" in line for line in negotiated), log[-2000:]

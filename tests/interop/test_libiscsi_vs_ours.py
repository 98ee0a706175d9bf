"""libiscsi's tools (a C initiator we did not write) against ``datamover target serve --transport tcp``."""

from __future__ import annotations

from tests.interop.conftest import CHAP_SECRET, CHAP_USER, LUN_SIZE, needs
from tools.interop import OurTarget
from tools.interop.libiscsi import iscsi_inq, iscsi_ls, iscsi_perf, iscsi_readcapacity16


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

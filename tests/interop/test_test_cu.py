"""libiscsi's conformance suite (iscsi-test-cu) against our target and tgtd on identical LUNs.

The quick test runs the iSCSI family (CmdSN, DataSN, residuals, TMF) and a few SCSI basics
(seconds); the full ``-d`` comparison is marked slow (about a minute: tgtd alone takes 45 s
here). ``python -m tools.interop.conformance`` runs the full comparison and writes
docs/conformance.md.
"""

from __future__ import annotations

import pytest

from tests.interop.conftest import LUN_SIZE, needs
from tools.interop import start_our_target, start_tgtd
from tools.interop.compare import compare
from tools.interop.conformance import EXTRA_RUNS, RunSpec, run_pair
from tools.interop.peers import PeerMissing, require_root
from tools.interop.testcu import CRASHED, FAILED, PASSED, run_test_cu

QUICK_TESTS = ["iSCSI", "ALL.TestUnitReady", "ALL.Inquiry", "ALL.ReadCapacity16", "ALL.Read10", "ALL.Write10",
               "ALL.Write16"]


def _both(tmp_path, tests: list[str] | None, timeout: float):  # type: ignore[no-untyped-def]
    needs("iscsi-test-cu", "tgtd", "tgtadm")
    try:
        require_root("tgtd")
    except PeerMissing as exc:
        pytest.skip(str(exc))
    with start_tgtd(tmp_path / "tgtd.img", 0, size=LUN_SIZE, log_dir=tmp_path) as daemon:
        theirs = run_test_cu(daemon.url(), tests=tests, timeout=timeout, log_path=str(tmp_path / "tgtd.cu.log"))
    with start_our_target(tmp_path / "ours.img", LUN_SIZE, log_dir=tmp_path) as target:
        ours = run_test_cu(target.url(), tests=tests, timeout=timeout, log_path=str(tmp_path / "ours.cu.log"))
        alive = target.process.alive()
        log_tail = target.process.log_tail()
    assert alive, f"our target died during iscsi-test-cu:\n{log_tail}"
    return ours, theirs


def _report(ours, theirs) -> str:  # type: ignore[no-untyped-def]
    lines = [f"ours {dict(ours.counts)}, tgtd {dict(theirs.counts)}"]
    for name in ours.names(FAILED) + ours.names(CRASHED):
        lines.append(f"  we fail {name}: {ours.tests[name].reason} (tgtd: {theirs.outcome_of(name)})")
    return "\n".join(lines)


def test_test_cu_quick_subset(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ours, theirs = _both(tmp_path, QUICK_TESTS, timeout=300)
    assert ours.tests and not ours.timed_out, ours.raw[-3000:]
    assert ours.consistent(), "parsed counts disagree with CUnit's Run Summary"
    result = compare(ours, theirs)
    assert result.acceptable, result.verdict() + "\n" + _report(ours, theirs)


@pytest.mark.slow
def test_test_cu_full_dataloss_not_worse_than_tgtd(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Issue 3's rule on the whole suite: clean passes >= tgtd's, no test failed that tgtd passes."""
    ours, theirs = _both(tmp_path, None, timeout=1500)
    assert ours.consistent() and theirs.consistent()
    assert theirs.counts[PASSED] > 0, "tgtd passed nothing: the reference run is broken\n" + theirs.raw[-2000:]
    result = compare(ours, theirs)
    assert result.acceptable, result.verdict() + "\n" + _report(ours, theirs)


@pytest.mark.parametrize("spec", [s for s in EXTRA_RUNS if s.required], ids=lambda s: s.name)
def test_extra_lun_runs(tmp_path, spec: RunSpec) -> None:  # type: ignore[no-untyped-def]
    """Issue 4's extra runs: the read-only LUN passes ReadOnly, the removable LUN passes NoMedia,
    PreventAllow and StartStopUnit, each test without a skip (tgtd runs on the same LUN)."""
    needs("iscsi-test-cu", "tgtd", "tgtadm")
    try:
        require_root("tgtd")
    except PeerMissing as exc:
        pytest.skip(str(exc))
    pair = run_pair(spec, tmp_path, timeout=600)
    assert pair.ours.consistent(), pair.ours.raw[-3000:]
    assert pair.clean, _report(pair.ours, pair.theirs) + "\n" + "\n".join(
        f"  {name}: {t.outcome} {t.reason}" for name, t in pair.ours.tests.items() if t.outcome != PASSED)

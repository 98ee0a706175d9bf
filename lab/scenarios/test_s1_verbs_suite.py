"""Scenario 1: the verbs scenario suite (tests/verbs) on rdma_rxe through pyverbs.

The suite is parametrized over backends; here only its ``pyverbs`` cases run, against the
guest's rxe0 (DATAMOVER_RDMA_IP is its RoCEv2 address). A skipped pyverbs case is a
failure here: the point of the scenario is that the real device was used.
"""

from __future__ import annotations

import os
import sys
import xml.etree.ElementTree as ET

from lab.scenarios.support import REPO, rdma_ip, run, scenario_dir


def test_rxe_is_selected_by_auto() -> None:
    """``auto`` picks pyverbs on the guest: rxe0 has an ACTIVE port and rdma_cm works."""
    code = ("from datamover_iser.verbs.select import open_provider; s = open_provider('auto'); "
            "print(s.summary); raise SystemExit(0 if s.name == 'pyverbs' and s.ok else 1)")
    proc = run([sys.executable, "-c", code], check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "rxe0" in proc.stdout


def test_verbs_suite_on_pyverbs() -> None:
    junit = scenario_dir() / "verbs-suite-junit.xml"
    proc = run([sys.executable, "-m", "pytest", str(REPO / "tests" / "verbs"), "-k", "pyverbs",
                "-p", "no:cacheprovider", "-o", "timeout=300", "-q", "-rA", f"--junitxml={junit}"],
               timeout=float(os.environ.get("LAB_S1_TIMEOUT", "540")), check=False,
               env={"DATAMOVER_RDMA_IP": rdma_ip()})
    (scenario_dir() / "verbs-suite.log").write_text(proc.stdout + proc.stderr)
    cases = list(ET.parse(junit).getroot().iter("testcase"))
    passed = [c for c in cases if not list(c)]
    bad = [f"{c.get('name')}: {c[0].tag}: {(c[0].get('message') or '')[:200]}" for c in cases if list(c)]
    assert cases, "the verbs suite collected no pyverbs case"
    assert not bad, f"{len(bad)} of {len(cases)} pyverbs cases did not pass:\n" + "\n".join(bad)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert len(passed) == len(cases)

"""Compare two iscsi-test-cu runs (ours vs. a reference target) test by test.

The acceptance rule (issue 3): our count of tests that pass without a [SKIPPED] line is at
least the reference's, and we fail no test the reference passes. "Fail" here includes a
crash (no verdict) and a skip where the reference really passed is reported separately:
it is not a failure, but it is a test we do not cover.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tools.interop.testcu import CRASHED, FAILED, PASSED, SKIPPED, TestCuResult


@dataclass(slots=True)
class Comparison:
    ours: TestCuResult
    reference: TestCuResult
    #: tests the reference passed (no skip) that we failed or crashed in
    regressions: list[str] = field(default_factory=list)
    #: tests the reference passed (no skip) that we skipped
    skipped_where_reference_passed: list[str] = field(default_factory=list)
    #: tests we passed (no skip) that the reference failed or skipped
    improvements: list[str] = field(default_factory=list)
    #: tests present in only one run (a different libiscsi, or a crash cut a run short)
    only_ours: list[str] = field(default_factory=list)
    only_reference: list[str] = field(default_factory=list)

    @property
    def ours_passed(self) -> int:
        return self.ours.counts[PASSED]

    @property
    def reference_passed(self) -> int:
        return self.reference.counts[PASSED]

    @property
    def acceptable(self) -> bool:
        """The issue's rule: at least as many clean passes, and no test failed that it passed."""
        return self.ours_passed >= self.reference_passed and not self.regressions and not self.only_reference

    def verdict(self) -> str:
        parts = [f"clean passes: ours {self.ours_passed}, reference {self.reference_passed}"]
        if self.regressions:
            parts.append(f"we fail {len(self.regressions)} test(s) the reference passes: "
                         + ", ".join(self.regressions[:20]))
        if self.only_reference:
            parts.append(f"{len(self.only_reference)} test(s) did not run against us: "
                         + ", ".join(self.only_reference[:10]))
        return "; ".join(parts)


def compare(ours: TestCuResult, reference: TestCuResult) -> Comparison:
    result = Comparison(ours, reference)
    for name, ref in reference.tests.items():
        mine = ours.tests.get(name)
        if mine is None:
            result.only_reference.append(name)
            continue
        if ref.outcome == PASSED and mine.outcome in (FAILED, CRASHED):
            result.regressions.append(name)
        elif ref.outcome == PASSED and mine.outcome == SKIPPED:
            result.skipped_where_reference_passed.append(name)
        elif mine.outcome == PASSED and ref.outcome in (FAILED, SKIPPED, CRASHED):
            result.improvements.append(name)
    result.only_ours = [name for name in ours.tests if name not in reference.tests]
    return result

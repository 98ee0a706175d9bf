"""Run libiscsi's ``iscsi-test-cu`` and turn its CUnit text into per-test outcomes.

What the output looks like (libiscsi 1.19, CUnit 2.1 basic mode, verbose)::

    Suite: GetLBAStatus
      Test: Simple ...passed
      Test: BeyondEol ...    [FAILED] GET_LBA_STATUS successful but should have failed ...
    FAILED
        1. test_get_lba_status_beyond_eol.c:38  - CU_ASSERT_EQUAL(_r,0)
      Test: UnmapSingle ...    [SKIPPED] Logical unit is fully provisioned. Skipping test
    passed
    ...
    Run Summary:    Type  Total    Ran Passed Failed Inactive
                  suites    134    134    n/a      0        0
                   tests    615    615    598     17        0

A test's own messages are printed between "Test: NAME ..." and CUnit's verdict, on the same
line or on lines of their own, so the parser cuts the text at each "Test:"/"Suite:" header and
looks for the verdict ("passed" or "FAILED" closing a line, not the bracketed "[FAILED]" of a
message) inside each piece. A test that printed "[SKIPPED]" and passed counts as skipped,
as it checked nothing. A piece with no verdict (the tool crashed or was killed) is "crashed".

Without ``-t`` the tool runs the families ALL, SCSI, iSCSI and LINUX in ``-l`` order, so the
same Suite.Test runs up to three times; the outcomes are keyed by the full name from ``-l``
(``SCSI.Read10.Simple``) when the run lines up with the listing, else by ``Suite.Test#N``.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field

from tools.interop.peers import require

PASSED, FAILED, SKIPPED, CRASHED = "passed", "failed", "skipped", "crashed"

_HEADER = re.compile(r"^(?:Suite: (?P<suite>.+?)\s*$|\s+Test: (?P<test>.+?) \.\.\.)", re.M)
# CUnit writes its verdict right after "...", or at the start of a line once the test printed
# something; whatever follows on that line (the next test's setup messages) is not the verdict.
_VERDICT = re.compile(r"(?:\A|\n)[ \t]*(?P<verdict>passed|FAILED)(?=\s|\Z)")
# fallback: a verdict closing a line after a message that did not end with a newline
_VERDICT_EOL = re.compile(r"(?<![\[\w])(?P<verdict>passed|FAILED)[ \t]*$", re.M)
_SKIP = re.compile(r"\[SKIPPED\]\s*(?P<reason>[^\n]*)")
_FAIL_MSG = re.compile(r"\[FAILED\]\s*(?P<reason>[^\n]*)")
_ASSERT = re.compile(r"^\s+\d+\.\s+(?P<where>\S+:\d+)\s+-\s+(?P<cond>.*)$", re.M)
_SUMMARY = re.compile(r"^\s*tests\s+(?P<total>\d+)\s+(?P<ran>\d+)\s+(?P<passed>\d+)\s+(?P<failed>\d+)\s+(?P<inactive>\d+)", re.M)


@dataclass(slots=True)
class TestOutcome:
    """One test's verdict with the reason the tool printed (skip reason or failure)."""

    suite: str
    test: str
    outcome: str
    reason: str = ""
    name: str = ""  # full name (FAMILY.Suite.Test) or Suite.Test[#N]

    @property
    def short(self) -> str:
        return f"{self.suite}.{self.test}"


@dataclass(slots=True)
class CUnitSummary:
    """CUnit's own "Run Summary" tests row (a cross-check of the parsed counts)."""

    total: int
    ran: int
    passed: int
    failed: int
    inactive: int


@dataclass(slots=True)
class TestCuResult:
    """A parsed iscsi-test-cu run."""

    tests: dict[str, TestOutcome]
    raw: str
    summary: CUnitSummary | None = None
    argv: list[str] = field(default_factory=list)
    returncode: int | None = None
    timed_out: bool = False
    seconds: float = 0.0

    @property
    def counts(self) -> Counter[str]:
        """Counter of outcomes: passed (without [SKIPPED]), skipped, failed, crashed."""
        return Counter(t.outcome for t in self.tests.values())

    @property
    def cunit_passed(self) -> int:
        """Passed by CUnit's count (skipped tests included), as its Run Summary says."""
        counts = self.counts
        return counts[PASSED] + counts[SKIPPED]

    def names(self, outcome: str) -> list[str]:
        return [name for name, t in self.tests.items() if t.outcome == outcome]

    def outcome_of(self, name: str) -> str | None:
        test = self.tests.get(name)
        return test.outcome if test else None

    def consistent(self) -> bool:
        """True when the parsed counts agree with CUnit's Run Summary."""
        if self.summary is None:
            return False
        counts = self.counts
        return (self.summary.ran == len(self.tests) and self.summary.failed == counts[FAILED]
                and self.summary.passed == self.cunit_passed)


def _segments(text: str) -> list[tuple[str, str, str]]:
    """(suite, test, body) for each "Test:" header; body runs to the next header."""
    headers = list(_HEADER.finditer(text))
    out: list[tuple[str, str, str]] = []
    suite = "?"
    for index, match in enumerate(headers):
        if match["suite"] is not None:
            suite = match["suite"]
            continue
        end = headers[index + 1].start() if index + 1 < len(headers) else len(text)
        body = text[match.end():end]
        # the summary block is not part of the last test
        summary_at = body.find("\nRun Summary:")
        if summary_at >= 0:
            body = body[:summary_at]
        out.append((suite, match["test"].strip(), body))
    return out


def _judge(body: str) -> tuple[str, str]:
    verdict = _VERDICT.search(body) or _VERDICT_EOL.search(body)
    if verdict is None:
        return CRASHED, "no verdict: the tool stopped during this test"
    before = body[:verdict.start()]
    if verdict["verdict"] == "FAILED":
        messages = [m["reason"].strip() for m in _FAIL_MSG.finditer(body)]
        asserts = [f"{m['where']} {m['cond'].strip()}" for m in _ASSERT.finditer(body[verdict.end():])]
        return FAILED, "; ".join(messages[:2] + asserts[:2]) or "failed"
    skip = _SKIP.search(before)
    if skip:
        return SKIPPED, skip["reason"].strip()
    return PASSED, ""


def parse_test_cu(text: str, listing: list[str] | None = None) -> TestCuResult:
    """Parse iscsi-test-cu output. ``listing`` (full names in run order, as ``-l`` prints the
    leaves) names the tests FAMILY.Suite.Test when it lines up with the run."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    segments = _segments(text)
    names: list[str]
    if listing is not None and len(listing) == len(segments) and all(
            full.split(".")[-2:] == [suite, test] for full, (suite, test, _) in zip(listing, segments)):
        names = list(listing)
    else:
        seen: Counter[str] = Counter()
        names = []
        for suite, test, _ in segments:
            short = f"{suite}.{test}"
            seen[short] += 1
            names.append(short if seen[short] == 1 else f"{short}#{seen[short]}")
    tests: dict[str, TestOutcome] = {}
    for name, (suite, test, body) in zip(names, segments):
        outcome, reason = _judge(body)
        tests[name] = TestOutcome(suite, test, outcome, reason, name)
    summary = None
    if match := _SUMMARY.search(text):
        summary = CUnitSummary(*(int(match[k]) for k in ("total", "ran", "passed", "failed", "inactive")))
    return TestCuResult(tests, text, summary)


def list_tests(binary: str | None = None) -> list[str]:
    """Full names of the leaf tests (FAMILY.Suite.Test) in the order ``-l`` prints them."""
    binary = binary or require("iscsi-test-cu")["iscsi-test-cu"]
    done = subprocess.run([binary, "-l"], capture_output=True, text=True, timeout=30)
    return [line.strip() for line in done.stdout.splitlines() if line.strip().count(".") == 2]


def select(listing: list[str], specs: list[str]) -> list[str]:
    """The leaves ``-t SPEC[,SPEC]`` selects, in run order (a spec is a name prefix)."""
    if not specs:
        return listing
    return [name for name in listing if any(name == s or name.startswith(s + ".") for s in specs)]


def run_test_cu(url: str, extra_args: list[str] | None = None, timeout: float = 1800.0, *,
                dataloss: bool = True, tests: list[str] | None = None, initiator: str | None = None,
                initiator2: str | None = None, log_path: str | None = None, sanitize: bool = False,
                multipath_url: str | None = None, env: dict[str, str] | None = None) -> TestCuResult:
    """Run ``iscsi-test-cu [-d] [-S] [-t A,B] [-i NAME] [-I NAME2] EXTRA URL [URL2]`` and parse it.

    ``dataloss`` adds ``-d`` (write tests: the LUN's data is destroyed); ``sanitize`` adds
    ``-S`` (the SANITIZE tests). ``tests`` become one ``-t`` list of FAMILY[.Suite[.Test]]
    names. ``multipath_url`` (the same LUN through a second portal) enables the multipath
    tests and makes the two-initiator tests use it. The tool exits 0 even when tests fail,
    so callers judge the outcomes, never the exit status. PeerMissing if not installed.
    """
    binary = require("iscsi-test-cu")["iscsi-test-cu"]
    argv = [binary]
    if dataloss:
        argv.append("-d")
    if sanitize:
        argv.append("-S")
    if tests:
        argv += ["-t", ",".join(tests)]
    if initiator:
        argv += ["-i", initiator]
    if initiator2:
        argv += ["-I", initiator2]
    argv += [*(extra_args or []), url]
    if multipath_url:
        argv.append(multipath_url)
    start = time.monotonic()
    timed_out = False
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout,
                              env=None if env is None else {**os.environ, **env})
        raw, returncode = done.stdout, done.returncode
    except subprocess.TimeoutExpired as exc:
        raw, returncode, timed_out = exc.stdout or b"", None, True
    text = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    if log_path:
        with open(log_path, "w") as handle:
            handle.write(text)
    try:
        listing = select(list_tests(binary), list(tests or []))
    except (OSError, subprocess.SubprocessError):
        listing = None
    result = parse_test_cu(text, listing)
    result.argv, result.returncode, result.timed_out = argv, returncode, timed_out
    result.seconds = time.monotonic() - start
    return result

"""The lab's report: which scenario ran, passed, failed or skipped, with the logs to read.

Sources, all in the run directory: ``guest-results.json`` (written by the guest runner after
each scenario) and each scenario's ``junit.xml``. A scenario the guest never reached is
"not run"; one that ran out of time is "timeout"; one whose tests were all skipped is
"skipped" (never counted as passed).
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lab.plan import Scenario


@dataclass(slots=True)
class Case:
    name: str
    outcome: str  # passed | failed | error | skipped
    seconds: float
    message: str = ""


@dataclass(slots=True)
class ScenarioResult:
    number: int
    slug: str
    title: str
    status: str  # passed | failed | skipped | timeout | not run
    seconds: float | None
    directory: str
    cases: list[Case] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "passed"


def parse_junit(path: Path) -> list[Case]:
    """Test cases of a pytest JUnit XML file; a malformed file yields one error case."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as exc:
        return [Case(path.name, "error", 0.0, f"unreadable JUnit XML: {exc}")]
    cases = []
    for tc in root.iter("testcase"):
        name = f"{tc.get('classname', '')}::{tc.get('name', '')}".strip(":")
        seconds = float(tc.get("time") or 0.0)
        outcome, message = "passed", ""
        for tag in ("failure", "error", "skipped"):
            el = tc.find(tag)
            if el is not None:
                outcome = {"failure": "failed"}.get(tag, tag)
                message = _summary(el.get("message") or el.text or "")
                break
        cases.append(Case(name, outcome, seconds, message))
    return cases


def _summary(text: str, head: int = 240, tail: int = 360) -> str:
    """One line: the message's start and, for a long one, its end (where the exception says why)."""
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    joined = " | ".join(lines)
    if len(joined) <= head + tail:
        return joined
    return joined[:head] + " | ... | " + joined[-tail:]


def _status(cases: list[Case], rc: object) -> str:
    if rc is None:
        return "timeout"
    if any(c.outcome in ("failed", "error") for c in cases) or (rc not in (0, 5) and not cases):
        return "failed"
    if cases and all(c.outcome == "skipped" for c in cases):
        return "skipped"
    if not cases:
        return "failed"
    return "passed" if rc == 0 else "failed"


def collect(run_dir: Path, scenarios: list[Scenario]) -> list[ScenarioResult]:
    try:
        ran = {r["number"]: r for r in json.loads((run_dir / "guest-results.json").read_text())}
    except (OSError, ValueError):
        ran = {}
    out = []
    for sc in scenarios:
        sdir = run_dir / "scenarios" / f"s{sc.number}-{sc.slug}"
        if sc.number not in ran:
            out.append(ScenarioResult(sc.number, sc.slug, sc.title, "not run", None, str(sdir)))
            continue
        rec = ran[sc.number]
        junit = sdir / "junit.xml"
        cases = parse_junit(junit) if junit.exists() else []
        out.append(ScenarioResult(sc.number, sc.slug, sc.title, _status(cases, rec["rc"]),
                                  float(rec["seconds"]), str(sdir), cases))
    return out


def write(run_dir: Path, results: list[ScenarioResult], meta: dict[str, object]) -> tuple[Path, Path]:
    """report.json (machine) and report.md (people) in the run directory."""
    js = run_dir / "report.json"
    js.write_text(json.dumps({"meta": meta, "scenarios": [asdict(r) for r in results]}, indent=2))
    lines = [f"# Interop lab report: {run_dir.name}", ""]
    for k, v in meta.items():
        lines.append(f"- {k}: {v}")
    lines += ["", "| # | scenario | status | time | tests (pass/fail/skip) | logs |", "|---|---|---|---|---|---|"]
    for r in results:
        p = sum(c.outcome == "passed" for c in r.cases)
        f = sum(c.outcome in ("failed", "error") for c in r.cases)
        s = sum(c.outcome == "skipped" for c in r.cases)
        t = f"{r.seconds:.0f} s" if r.seconds is not None else "-"
        rel = Path(r.directory).relative_to(run_dir) if Path(r.directory).is_relative_to(run_dir) else r.directory
        lines.append(f"| {r.number} | {r.title} | **{r.status}** | {t} | {p}/{f}/{s} | `{rel}/` |")
    for r in results:
        bad = [c for c in r.cases if c.outcome != "passed"]
        if bad:
            # skips and expected failures (xfail is reported as skipped) of a scenario that
            # may still have passed as a whole
            lines += ["", f"## Scenario {r.number} ({r.status}): tests that did not pass", ""]
            lines += [f"- `{c.name}`: {c.outcome}: {c.message}" for c in bad]
    lines += ["", "Logs: `console.log` (serial console), `guest.log` (guest session), per scenario "
              "`pytest.log`, `dmesg.log` and what the scenario kept.", ""]
    md = run_dir / "report.md"
    md.write_text("\n".join(lines))
    return js, md

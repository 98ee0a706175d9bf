"""Cross-checks between transports: same bytes, same statuses, same DI calls.

The first transport that ran is the reference (loopback when it was selected: the
simplest honest datamover). Every other transport is compared with it step by step:

* read data: a digest per read I/O, compared I/O by I/O;
* SCSI status and sense of every I/O, in I/O order;
* the normalised initiator-side DI trace (:func:`datamover.trace.normalise`), call by call.

When steps ran by duration, transports completed different numbers of I/Os; each check
then covers the I/Os both completed (a trace keeps the calls of tasks #1..#k).
A transport's own verification failures (read-back differing from what it wrote) are
differences too, reported against the transport itself.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

from datamover.compare.results import StepResult, TransportRun
from datamover.trace import first_difference

_ITT = re.compile(r"\bitt=#(\d+)\b")


@dataclass(frozen=True, slots=True)
class Difference:
    """One disagreement, with where it first shows."""

    kind: str  # "verify", "data", "status", "trace", "ios", "steps"
    transport: str
    reference: str
    step: str
    index: int | None  # I/O index or trace line, None for whole-step problems
    detail: str

    def __str__(self) -> str:
        where = f" at {'call' if self.kind == 'trace' else 'I/O'} #{self.index}" if self.index is not None else ""
        against = f" vs {self.reference}" if self.reference and self.reference != self.transport else ""
        return f"{self.transport}{against}: {self.kind} differs in step {self.step}{where}: {self.detail}"

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _status_text(outcome: tuple[object, str]) -> str:
    status, sense = outcome
    if status == "error":
        return f"error {sense}"
    return f"status {status:#04x}" + (f" sense {sense}" if sense else "") if isinstance(status, int) else str(outcome)


def trace_prefix(lines: list[str], tasks: int) -> list[str]:
    """The normalised calls of tasks #1..#tasks (and calls that belong to no task)."""
    out = []
    for line in lines:
        match = _ITT.search(line)
        if match is None or int(match.group(1)) <= tasks:
            out.append(line)
    return out


def compare_steps(ref: StepResult, other: StepResult, ref_name: str, name: str,
                  by_duration: bool) -> list[Difference]:
    """Differences between one step on the reference and on another transport."""
    found: list[Difference] = []
    count = min(ref.ios, other.ios)
    if not by_duration and ref.ios != other.ios:
        found.append(Difference("ios", name, ref_name, ref.name, None,
                                f"{other.ios} I/Os completed, {ref_name} completed {ref.ios}"))
    for index in range(count):
        if ref.outcomes[index] != other.outcomes[index]:
            found.append(Difference("status", name, ref_name, ref.name, index,
                                    f"{_status_text(other.outcomes[index])}, "
                                    f"{ref_name} got {_status_text(ref.outcomes[index])}"))
            break
    for index in range(count):
        if ref.digests[index] != other.digests[index]:
            mine, theirs = other.digests[index], ref.digests[index]
            found.append(Difference("data", name, ref_name, ref.name, index,
                                    f"read data digest {mine.hex() if mine else '-'}, "
                                    f"{ref_name} read {theirs.hex() if theirs else '-'}"))
            break
    ref_trace, other_trace = ref.trace, other.trace
    if by_duration and ref.ios != other.ios:
        ref_trace, other_trace = trace_prefix(ref_trace, count), trace_prefix(other_trace, count)
    if not (ref.trace_dropped or other.trace_dropped):
        diff = first_difference(ref_trace, other_trace)
        if diff is not None:
            line, theirs, mine = diff
            found.append(Difference("trace", name, ref_name, ref.name, line,
                                    f"{name} made {mine or '(no call)'}; {ref_name} made {theirs or '(no call)'}"))
    return found


def cross_check(runs: list[TransportRun], *, by_duration: bool = False) -> list[Difference]:
    """Compare every transport that ran with the first one; sets ``run.agrees``."""
    ran = [run for run in runs if run.ran]
    differences: list[Difference] = []
    for run in ran:
        own = [Difference("verify", run.name, run.name, step.name, None,
                          f"{step.verify_errors} read(s) returned other bytes than were written; "
                          f"first: {step.first_verify_error}")
               for step in run.steps if step.verify_errors]
        differences.extend(own[:1])
        run.agrees = not own
    if len(ran) < 2:
        return differences
    reference = ran[0]
    ref_steps = {step.name: step for step in reference.steps}
    for run in ran[1:]:
        found: list[Difference] = []
        names = [step.name for step in run.steps]
        if names != [step.name for step in reference.steps]:
            found.append(Difference("steps", run.name, reference.name, "-", None,
                                    f"ran steps {names}, {reference.name} ran {list(ref_steps)}"))
        seen_kinds: set[str] = set()
        for step in run.steps:
            ref = ref_steps.get(step.name)
            if ref is None:
                continue
            for difference in compare_steps(ref, step, reference.name, run.name, by_duration):
                if difference.kind not in seen_kinds:  # the first place each kind diverges
                    seen_kinds.add(difference.kind)
                    found.append(difference)
        if found:
            run.agrees = False
        differences.extend(found)
    return differences

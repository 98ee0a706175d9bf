"""The scenario catalogue (issue 7) and the plan file the host hands to the guest.

A scenario is one pytest module in ``lab/scenarios``; the guest runs each in its own pytest
process with its own time limit, so one hang costs that scenario only.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Scenario:
    number: int
    slug: str
    title: str
    module: str  # file name in lab/scenarios
    budget_s: int  # time limit inside the guest (TCG is slow: ~10x a native run)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(1, "verbs-suite", "verbs scenario suite on rdma_rxe through pyverbs",
             "test_s1_verbs_suite.py", 600),
    Scenario(2, "ours-iser", "our iSER initiator <-> our iSER target through pyverbs",
             "test_s2_ours_iser.py", 600),
    Scenario(3, "libiscsi-iser", "libiscsi (iser://) against our iSER target",
             "test_s3_libiscsi_iser.py", 900),
    Scenario(4, "tgtd-iser", "our iSER initiator against tgtd's iSER driver",
             "test_s4_tgtd_iser.py", 420),
    Scenario(5, "lio-isert", "our iSER initiator against the kernel LIO target (ib_isert)",
             "test_s5_lio_isert.py", 600),
    Scenario(6, "kernel-iser-initiator", "kernel iSER initiator (open-iscsi, ib_iser) against our iSER target",
             "test_s6_kernel_iser_initiator.py", 600),
    Scenario(7, "kernel-tcp", "kernel iscsi_tcp initiator and LIO TCP target against ours",
             "test_s7_kernel_tcp.py", 600),
)
BY_NUMBER = {s.number: s for s in SCENARIOS}
#: what CI runs (issue 7): the verbs suite, ours<->ours on pyverbs, libiscsi over iSER
CI_SET = (1, 2, 3)


class PlanError(ValueError):
    """A scenario selection that names no known scenario."""


def parse_selection(text: str) -> list[Scenario]:
    """``"all"``, ``"ci"`` or a comma list of numbers and ranges (``"1-3,6"``)."""
    text = text.strip().lower()
    if text == "all":
        return list(SCENARIOS)
    if text == "ci":
        return [BY_NUMBER[n] for n in CI_SET]
    chosen: list[int] = []
    for part in filter(None, (p.strip() for p in text.split(","))):
        lo, dash, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi if dash else lo)
        except ValueError:
            raise PlanError(f"not a scenario number or range: {part!r}") from None
        for n in range(first, last + 1):
            if n not in BY_NUMBER:
                raise PlanError(f"no scenario {n}; known: {sorted(BY_NUMBER)}")
            if n not in chosen:
                chosen.append(n)
    if not chosen:
        raise PlanError("no scenario selected")
    return [BY_NUMBER[n] for n in sorted(chosen)]


@dataclass(slots=True)
class Plan:
    """What the guest is asked to do; written as plan.json into the run directory."""

    repo: str
    run_dir: str
    scenarios: list[Scenario]
    rdma_ip: str = "192.0.2.10"
    pytest_args: list[str] = field(default_factory=list)
    #: instead of scenarios, run this shell command in the guest (``python -m lab --exec``)
    exec_cmd: str | None = None
    #: run this shell command in the guest before the scenarios (``--before``): guest-local
    #: experiments, e.g. a patch to try on the overlay root without touching the host's tree
    before_cmd: str | None = None

    def write(self, path: Path) -> None:
        data = asdict(self)
        path.write_text(json.dumps(data, indent=2))

    @classmethod
    def read(cls, path: Path) -> Plan:
        data = json.loads(path.read_text())
        data["scenarios"] = [Scenario(**s) for s in data["scenarios"]]
        return cls(**data)

"""The comparative run's outputs: the terminal table, the summary, and the JSON report."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from datamover.compare.results import RunStatus, TransportRun

if TYPE_CHECKING:
    from datamover.compare.crosscheck import Difference
    from datamover.compare.settings import CompareSettings

REPORT_VERSION = 1


@dataclass(slots=True)
class CompareReport:
    settings: CompareSettings
    runs: list[TransportRun]
    differences: list[Difference]
    region: int = 0
    steps: list[str] = field(default_factory=list)
    plots: list[str] = field(default_factory=list)
    plot_note: str | None = None

    @property
    def not_implemented(self) -> list[str]:
        return [run.name for run in self.runs if run.status is RunStatus.NOT_IMPLEMENTED]

    @property
    def failed(self) -> list[str]:
        return [run.name for run in self.runs if run.status is RunStatus.FAILED]

    @property
    def compared(self) -> list[str]:
        return [run.name for run in self.runs if run.ran]

    @property
    def ok(self) -> bool:
        """Every implemented transport ran, verified its data and agreed with the others."""
        return not self.failed and not self.differences

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": REPORT_VERSION,
            "ok": self.ok,
            "settings": self.settings.as_dict(),
            "region_bytes": self.region,
            "steps": list(self.steps),
            "reference": self.compared[0] if self.compared else None,
            "compared": self.compared,
            "not_implemented": self.not_implemented,
            "failed": self.failed,
            "differences": [d.as_dict() for d in self.differences],
            "first_difference": str(self.differences[0]) if self.differences else None,
            "transports": [_run_dict(run) for run in self.runs],
            "plots": list(self.plots),
            "plot_note": self.plot_note,
        }


def _run_dict(run: TransportRun) -> dict[str, Any]:
    return {
        "name": run.name,
        "status": run.status.value,
        "error": run.error,
        "describe": run.describe,  # which provider moved the bytes, as the transport says
        "provider": run.provider,
        "capabilities": list(run.capabilities),
        "target": run.target_mode,
        "note": run.note,
        "agrees": run.agrees,
        "negotiated_keys": dict(run.agreed),
        "totals": run.totals() if run.ran else None,
        "initiator_cpu_s": None if run.initiator_cpu is None else round(run.initiator_cpu, 4),
        "target_cpu_s": None if run.target_cpu is None else round(run.target_cpu, 4),
        "stats": dict(run.stats),
        "target_stats": None if run.target_stats is None else dict(run.target_stats),
        "steps": [step.summary() for step in run.steps],
    }


def write_json(report: CompareReport, path: str | os.PathLike[str]) -> None:
    target = Path(path)
    if target.parent and not target.parent.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(report.to_dict(), indent=2) + "\n")


# ------------------------------------------------------------------------- table
def _fmt(value: object, digits: int = 1) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> list[str]:
    widths = [max(len(headers[i]), *(len(r[i]) for r in rows)) if rows else len(headers[i])
              for i in range(len(headers))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    return [line(headers), line(["-" * w for w in widths]), *(line(r) for r in rows)]


def render_table(report: CompareReport) -> str:
    """The summary table, the per-step throughput table, and the verdict lines."""
    headers = ["TRANSPORT", "STATUS", "MiB/s", "IOPS", "p50 us", "p99 us", "p99.9 us",
               "init CPU s/GB", "tgt CPU s/GB", "copies/B", "ops/IO", "AGREES"]
    rows: list[list[str]] = []
    for run in report.runs:
        if not run.ran:
            status = run.status.value
            rows.append([run.name, status, *["-"] * 9, "-"])
            continue
        totals = run.totals()
        lat = totals["latency_us"]
        target_cpu = "shared" if run.cpu_shared else _fmt(totals["target_cpu_s_per_gb"], 2)
        rows.append([run.name, "ok", _fmt(totals["mib_s"]), _fmt(totals["iops"], 0), _fmt(lat["p50"]),
                     _fmt(lat["p99"]), _fmt(lat["p999"]), _fmt(totals["initiator_cpu_s_per_gb"], 2),
                     target_cpu, _fmt(totals["copies_per_byte"], 2), _fmt(totals["ops_per_io"], 2),
                     "yes" if run.agrees else "NO"])
    lines = _table(headers, rows, right=set(range(2, 11)))
    ran = [run for run in report.runs if run.ran]
    if ran and ran[0].steps:
        step_headers = ["STEP (MiB/s)", *(run.name for run in ran)]
        step_rows = []
        for position, step in enumerate(ran[0].steps):
            if not step.measured:
                continue
            cells = [step.name]
            for run in ran:
                cells.append(_fmt(run.steps[position].mib_s) if position < len(run.steps) else "-")
            step_rows.append(cells)
        lines += ["", *_table(step_headers, step_rows, right=set(range(1, len(step_headers))))]
    lines += ["", *summary_lines(report)]
    return "\n".join(lines)


def summary_lines(report: CompareReport) -> list[str]:
    out: list[str] = []
    for run in report.runs:
        if run.ran:
            out.append(f"{run.name}: {run.describe} [target {run.target_mode}]")
    for run in report.runs:
        if run.note:
            out.append(f"NOTE: {run.name}: {run.note}")
    for run in report.runs:
        if run.status is RunStatus.NOT_IMPLEMENTED:
            out.append(f"not implemented yet: {run.name} ({run.error})")
        elif run.status is RunStatus.FAILED:
            out.append(f"FAILED: {run.name}: {run.error}")
    for difference in report.differences:
        out.append(f"DIFFERENCE: {difference}")
    if report.plot_note:
        out.append(report.plot_note)
    compared = report.compared
    if report.ok:
        if len(compared) > 1:
            out.append(f"OK: {', '.join(compared)} agree (data, statuses, DI calls); verification passed")
        elif compared:
            out.append(f"OK: {compared[0]} verified (no other transport ran to compare with)")
        else:
            out.append("nothing ran: no selected transport is implemented")
    else:
        out.append("FAILED: transports disagree or a run failed (see above)")
    return out

"""One PNG per metric (``--plot DIR``), drawn with matplotlib's Agg backend.

matplotlib is optional: without it the run still succeeds and says, in one line, that
plots were skipped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from datamover.compare.report import CompareReport

#: (file stem, title, y label, metric key of a step or of the totals)
_STEP_METRICS: list[tuple[str, str, str, str]] = [
    ("throughput_mib_s", "Throughput per step", "MiB/s", "mib_s"),
    ("iops", "IOPS per step", "I/O per second", "iops"),
    ("latency_p50_us", "Latency p50 per step", "microseconds", "p50"),
    ("latency_p99_us", "Latency p99 per step", "microseconds", "p99"),
    ("latency_p999_us", "Latency p99.9 per step", "microseconds", "p999"),
]
_TOTAL_METRICS: list[tuple[str, str, str, str]] = [
    ("cpu_initiator_s_per_gb", "Initiator CPU per GB", "CPU seconds / GB", "initiator_cpu_s_per_gb"),
    ("cpu_target_s_per_gb", "Target CPU per GB (child or remote process)", "CPU seconds / GB",
     "target_cpu_s_per_gb"),
    ("copies_per_byte", "Payload copies per byte", "copies / byte", "copies_per_byte"),
    ("ops_per_io", "PDUs / verbs operations per I/O", "operations / I/O", "ops_per_io"),
]


def write_plots(report: CompareReport, directory: str) -> tuple[list[str], str | None]:
    """Draw the plots; returns (files written, a one-line note when skipped)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return [], "plots skipped: matplotlib is not installed (pip install matplotlib)"
    ran = [run for run in report.runs if run.ran]
    if not ran:
        return [], "plots skipped: no transport ran"
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    files: list[str] = []
    step_names = [step.name for step in ran[0].measured_steps()]

    def step_value(run: Any, position: int, key: str) -> float:
        steps = run.measured_steps()
        if position >= len(steps):
            return 0.0
        step = steps[position]
        if key in ("p50", "p99", "p999"):
            return float(step.latency_us()[key] or 0.0)
        return float(getattr(step, key))

    width = 0.8 / len(ran)
    for stem, title, ylabel, key in _STEP_METRICS:
        fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(step_names) * len(ran)), 4.5))
        for number, run in enumerate(ran):
            xs = [i + number * width for i in range(len(step_names))]
            ax.bar(xs, [step_value(run, i, key) for i in range(len(step_names))], width, label=run.name)
        ax.set_xticks([i + width * (len(ran) - 1) / 2 for i in range(len(step_names))])
        ax.set_xticklabels(step_names, rotation=60, ha="right", fontsize=7)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        ax.legend()
        fig.tight_layout()
        path = out / f"{stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files.append(str(path))
    for stem, title, ylabel, key in _TOTAL_METRICS:
        values = [run.totals()[key] for run in ran]
        fig, ax = plt.subplots(figsize=(6.0, 4.0))
        ax.bar([run.name for run in ran], [float(v) if v is not None else 0.0 for v in values])
        for position, value in enumerate(values):
            ax.annotate("n/a" if value is None else f"{value:g}", (position, float(value or 0.0)),
                        ha="center", va="bottom", fontsize=8)
        ax.set_title(title)
        ax.set_ylabel(ylabel)
        fig.tight_layout()
        path = out / f"{stem}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        files.append(str(path))
    return files, None

"""The comparative runner: the same workload over every transport, cross-checked.

``datamover compare`` starts a target and an initiator per transport, runs one
deterministic workload (sequential and random reads, writes and mixes in several block
sizes), measures throughput, IOPS, latency percentiles, CPU per GB and datamover
counters, and checks that every transport read back the same bytes, got the same SCSI
status and sense for every I/O, and made the same normalised DI calls on the initiator
side. Differences name the first diverging I/O or DI call.

Public API::

    settings = settings_from_config(load_config(path), overrides)
    report = asyncio.run(run_compare(settings))
    print(render_table(report)); report.ok
"""

from datamover.compare.crosscheck import Difference, cross_check
from datamover.compare.report import CompareReport, render_table, write_json
from datamover.compare.runner import run_compare
from datamover.compare.settings import CompareSettings, settings_from_config

__all__ = [
    "CompareReport",
    "CompareSettings",
    "Difference",
    "cross_check",
    "render_table",
    "run_compare",
    "settings_from_config",
    "write_json",
]

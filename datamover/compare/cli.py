"""``datamover compare``: the command-line face of the comparative runner.

Exit status: 0 when every implemented transport ran, verified its data and agreed with
the others; 1 otherwise (a difference, a verification failure, a transport that failed);
transports that are registered but not implemented yet are named and do not count.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from datamover.config import load_config

EXIT_OK, EXIT_FAIL = 0, 1


def add_compare_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``compare`` subcommand to the CLI's subparsers."""
    p = subparsers.add_parser(
        "compare", help="run one workload over every transport, measure and cross-check",
        description="Run the same verified workload over each transport (default: all registered), "
                    "print throughput, IOPS, latency, CPU per GB and datamover counters, and check that "
                    "read data, SCSI statuses and DI call traces agree. Flags override [compare] of -c FILE.")
    p.add_argument("-c", "--config", help="TOML config file ([compare], [keys], [transport.NAME])")
    p.add_argument("--transports", help="NAME[,NAME...] (default: every registered transport)")
    p.add_argument("--json", metavar="FILE", help="write a JSON report")
    p.add_argument("--plot", metavar="DIR", help="write one PNG per metric (needs matplotlib)")
    p.add_argument("--bytes", metavar="N", help="bytes per step, e.g. 4M (default 8M)")
    p.add_argument("--duration", metavar="S", help="run each step for S seconds instead of by bytes")
    p.add_argument("--block-sizes", metavar="SIZES", help="comma list, e.g. 4096,65536,1M")
    p.add_argument("--queue-depth", metavar="N", help="I/Os in flight (default 8)")
    p.add_argument("--patterns", metavar="LIST", help="seq,rand")
    p.add_argument("--ops", metavar="LIST", help="write,read,mixed")
    p.add_argument("--seed", metavar="N", help="workload and data seed (default 1)")
    p.add_argument("--no-verify", dest="verify", action="store_const", const=False,
                   help="do not compare read data with what was written")
    p.add_argument("--lun-size", metavar="N", help="memory LUN size of the targets started here")
    p.add_argument("--target", metavar="NAME=HOST:PORT", action="append", dest="targets",
                   help="use an already-running target for transport NAME (repeatable)")
    p.add_argument("--iqn", help="target name on --target portals (default: first one discovered)")
    p.add_argument("--in-process", action="store_const", const=True, default=None,
                   help="run every target in this process (no child processes)")
    p.set_defaults(func=cmd_compare)
    return p


_FLAG_KEYS = ("transports", "json", "plot", "bytes", "duration", "block_sizes", "queue_depth", "patterns",
              "ops", "seed", "verify", "lun_size", "targets", "iqn", "in_process")


def cmd_compare(args: argparse.Namespace) -> int:
    from datamover.compare.plots import write_plots
    from datamover.compare.report import render_table, write_json
    from datamover.compare.runner import run_compare
    from datamover.compare.settings import settings_from_config

    config = load_config(getattr(args, "config", None))
    overrides = {key: getattr(args, key, None) for key in _FLAG_KEYS}
    settings = settings_from_config(config, overrides)
    report = _run(run_compare(settings))
    if settings.plot:
        report.plots, report.plot_note = write_plots(report, settings.plot)
    print(render_table(report))
    if settings.json:
        try:
            write_json(report, settings.json)
        except OSError as exc:
            print(f"datamover: cannot write {settings.json}: {exc.strerror or exc}", file=sys.stderr)
            return EXIT_FAIL
    return EXIT_OK if report.ok else EXIT_FAIL


def _run(coro: Any) -> Any:
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)

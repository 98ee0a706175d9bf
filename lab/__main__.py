"""``python -m lab``: prepare the host, boot the guest, run scenarios, write the report.

Examples::

    python -m lab                   # every scenario (1-7)
    python -m lab --scenarios ci    # 1, 2, 3: what CI runs
    python -m lab --scenarios 3,6   # a chosen set
    python -m lab --list

Exit status: 0 when every chosen scenario passed, 1 when one did not, 2 when the lab could
not be set up (the message says why).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import time
from pathlib import Path

from lab import host, image, report, vm
from lab.plan import SCENARIOS, Plan, PlanError, parse_selection

REPO = Path(__file__).resolve().parents[1]


def _exec_outcome(run_dir: Path, result: vm.VmResult) -> int:
    log = run_dir / "exec.log"
    if log.exists():
        sys.stdout.write(log.read_text(errors="replace")[-20000:])
    try:
        rc = int(json.loads((run_dir / "exec-result.json").read_text())["rc"])
    except (OSError, ValueError, KeyError):
        print(f"lab: the command did not finish in the guest (VM {result.seconds:.0f}s"
              f"{', timed out' if result.timed_out else ''}); see {run_dir / 'console.log'}")
        return 1
    print(f"lab: exec rc={rc}; VM {result.seconds:.0f}s; logs in {run_dir}")
    return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m lab", description=__doc__.split("\n")[0])
    ap.add_argument("--scenarios", default="all", help="all | ci | comma list of numbers/ranges (default all)")
    ap.add_argument("--out", default=str(REPO / "out" / "lab"), help="cache and runs directory (default out/lab)")
    ap.add_argument("--no-install", action="store_true", help="do not apt-get; fail if something is missing")
    ap.add_argument("--memory", type=int, default=2048, help="guest memory, MiB")
    ap.add_argument("--cpus", type=int, default=2, help="guest CPUs")
    ap.add_argument("--timeout", type=int, default=0, help="guest wall-clock limit, s (default: sum of budgets + 300)")
    ap.add_argument("--list", action="store_true", help="list the scenarios and exit")
    ap.add_argument("-k", dest="keyword", help="pytest -k expression passed to every scenario")
    ap.add_argument("--before", dest="before_cmd", metavar="CMD",
                    help="run CMD in the guest before the scenarios (its root is an overlay: edits stay there)")
    ap.add_argument("--exec", dest="exec_cmd", metavar="CMD",
                    help="run CMD (bash, in the repo, rxe0 up) in the guest instead of scenarios; output in exec.log")
    args = ap.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # progress shows when piped

    if args.list:
        for sc in SCENARIOS:
            print(f"{sc.number}  {sc.slug:24} {sc.title}")
        return 0
    try:
        chosen = parse_selection(args.scenarios)
    except PlanError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2

    out = Path(args.out).resolve()
    cache = out / "cache"
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    run_dir = out / "runs" / stamp
    run_dir.mkdir(parents=True, exist_ok=True)
    setup_log = run_dir / "setup.log"
    t0 = time.monotonic()
    try:
        if os.geteuid() != 0:
            raise host.LabSetupError("the lab runs as root (apt-get, and root in the guest mirrors the host)")
        installed = [] if args.no_install else host.install_packages(setup_log)
        still = host.missing_packages()
        if still:
            raise host.LabSetupError(f"Debian packages missing: {' '.join(still)}")
        if host.check_binaries():
            raise host.LabSetupError(f"binaries missing: {' '.join(host.check_binaries())}")
        host.ensure_pyverbs(REPO, setup_log)
        kernel = host.ensure_kernel(cache, setup_log)
        initrd = image.build_initramfs(kernel, cache)
    except host.LabSetupError as exc:
        print(f"lab: setup failed: {exc}", file=sys.stderr)
        return 2
    setup_s = time.monotonic() - t0
    print(f"lab: run {run_dir} (setup {setup_s:.0f}s; installed: {' '.join(installed) or 'nothing'})")
    what = f"exec {args.exec_cmd!r}" if args.exec_cmd else f"scenarios {', '.join(str(s.number) for s in chosen)}"
    print(f"lab: kernel {kernel.version}; {what}")

    pytest_args = ["-k", args.keyword] if args.keyword else []
    if args.exec_cmd:
        chosen = []
    Plan(str(REPO), str(run_dir), chosen, pytest_args=pytest_args, exec_cmd=args.exec_cmd,
         before_cmd=args.before_cmd).write(run_dir / "plan.json")
    latest = out / "latest"
    if latest.is_symlink() or not latest.exists():
        latest.unlink(missing_ok=True)
        latest.symlink_to(run_dir.relative_to(out))
    timeout = args.timeout or sum(s.budget_s + 60 for s in chosen) + 300
    result = vm.boot(kernel, initrd, run_dir, REPO, vm.VmConfig(args.memory, args.cpus, timeout_s=timeout))
    if args.exec_cmd:
        return _exec_outcome(run_dir, result)
    results = report.collect(run_dir, chosen)
    meta = {"kernel": kernel.version, "guest": f"QEMU TCG, {args.cpus} CPUs, {args.memory} MiB",
            "setup_s": round(setup_s, 1), "vm_s": round(result.seconds, 1),
            "vm_exit": "timeout" if result.timed_out else result.returncode,
            "selection": args.scenarios}
    if args.before_cmd:
        meta["before"] = args.before_cmd  # the report says the tree was patched in the guest
    js, md = report.write(run_dir, results, meta)
    for r in results:
        t = f"{r.seconds:.0f}s" if r.seconds is not None else "-"
        print(f"lab: scenario {r.number} {r.slug:24} {r.status:8} {t}")
    print(f"lab: VM {result.seconds:.0f}s{' (TIMED OUT)' if result.timed_out else ''}; report {md}")
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Run the plan's scenarios inside the guest, one pytest process each, with a time limit.

Writes, per scenario, ``RUN/scenarios/sN-slug/{junit.xml,pytest.log,dmesg.log}`` plus what
the scenario itself keeps there, and ``RUN/guest-results.json`` after every scenario, so a
guest that dies half-way still leaves what it finished.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from lab.plan import Plan


def _dmesg() -> str:
    try:
        return subprocess.run(["dmesg"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"dmesg failed: {exc}\n"


def _exec(run: Path, plan: Plan) -> int:
    """``--exec``: one shell command with the scenarios' environment; output in exec.log."""
    env = dict(os.environ, DATAMOVER_LAB_GUEST="1", LAB_RUN_DIR=str(run), LAB_SCENARIO_DIR=str(run / "exec"),
               DATAMOVER_RDMA_IP=plan.rdma_ip, PYTHONUNBUFFERED="1")
    (run / "exec").mkdir(exist_ok=True)
    print(f"runner: exec {plan.exec_cmd!r}", flush=True)
    start = time.monotonic()
    with (run / "exec.log").open("w") as log:
        rc = subprocess.run(["bash", "-c", plan.exec_cmd or ""], cwd=plan.repo, env=env, stdout=log,
                            stderr=subprocess.STDOUT).returncode
    (run / "exec" / "dmesg.log").write_text(_dmesg())
    (run / "exec-result.json").write_text(json.dumps({"rc": rc, "seconds": round(time.monotonic() - start, 1)}))
    print(f"runner: exec rc={rc}", flush=True)
    return rc


def main(argv: list[str]) -> int:
    run = Path(argv[0])
    plan = Plan.read(run / "plan.json")
    repo = Path(plan.repo)
    if plan.before_cmd:
        with (run / "before.log").open("w") as log:
            rc = subprocess.run(["bash", "-c", plan.before_cmd], cwd=plan.repo, stdout=log,
                                stderr=subprocess.STDOUT).returncode
        print(f"runner: before {plan.before_cmd!r} rc={rc}", flush=True)
        if rc != 0:
            return 1
    if plan.exec_cmd:
        return _exec(run, plan)
    results: list[dict[str, object]] = []
    worst = 0
    dmesg_seen = len(_dmesg())
    for sc in plan.scenarios:
        sdir = run / "scenarios" / f"s{sc.number}-{sc.slug}"
        sdir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, DATAMOVER_LAB_GUEST="1", LAB_RUN_DIR=str(run), LAB_SCENARIO_DIR=str(sdir),
                   DATAMOVER_RDMA_IP=plan.rdma_ip, PYTHONUNBUFFERED="1")
        argv_ = [sys.executable, "-m", "pytest", str(repo / "lab" / "scenarios" / sc.module),
                 "-p", "no:cacheprovider", "-o", f"timeout={sc.budget_s}", "-v", "-rA",
                 f"--junitxml={sdir / 'junit.xml'}", *plan.pytest_args]
        print(f"runner: scenario {sc.number} ({sc.slug}) starts, budget {sc.budget_s}s", flush=True)
        start = time.monotonic()
        with (sdir / "pytest.log").open("w") as log:
            try:
                proc = subprocess.run(argv_, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT,
                                      timeout=sc.budget_s + 60)
                rc: int | None = proc.returncode
            except subprocess.TimeoutExpired:
                rc = None
        seconds = time.monotonic() - start
        full = _dmesg()
        (sdir / "dmesg.log").write_text(full[dmesg_seen:])
        dmesg_seen = len(full)
        results.append({"number": sc.number, "slug": sc.slug, "rc": rc, "seconds": round(seconds, 1)})
        (run / "guest-results.json").write_text(json.dumps(results, indent=2))
        print(f"runner: scenario {sc.number} done rc={rc} in {seconds:.0f}s", flush=True)
        if rc != 0:
            worst = 1
    return worst


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

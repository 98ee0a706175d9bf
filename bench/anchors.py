"""Our target and initiator beside the C anchors (tgtd, libiscsi), in one run.

    .venv/bin/python -m bench.anchors [--seconds 5] [--rounds 3] [--parts targets,initiators]
                                      [--workloads NAME,...] [--json FILE] [--plot FILE] [--verify]

Part ``targets``: our target (``datamover target serve``, TCP) and tgtd, each on its own
page-cached 256 MiB file LUN, driven by C clients we did not write or that do not share
our code: libiscsi's ``iscsi-perf`` for reads and ``bench/iscsi_load.c`` (libiscsi's async
API only, compiled on first use) for writes.

Part ``initiators``: against tgtd, our initiator (``bench/ourload.py``) beside libiscsi
(``iscsi-load``) on the same workloads; our initiator against our own target for random
4 KiB reads at QD32; and the QD1 reads again with our initiator's opt-in busy polling
(``busy_poll_us``, :data:`BUSY_POLL_US`), reported on a row of their own.

Every round runs every workload once on each side, the sides' order alternating from one
workload and round to the next, so a noisy neighbour hurts both alike. Reported: medians over
the rounds, the ratio of the medians, CPU microseconds per I/O of each target (targets part,
from /proc/PID/stat) or of each client process (initiators part, from wait4), and the
negotiated PDU sizes. ``--json`` keeps every round's figure.

Both LUNs are written once in full (stamped with their LBA) before the first round, which
also puts them in the page cache. With ``--verify`` the write workloads keep the stamps and
every LUN is read back and checked after the last round.

A benchmark reports numbers; it asserts nothing. ``--smoke`` runs a fraction of a second per
case on small LUNs so that the default test suite keeps this harness from rotting.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.host import tcp_congestion_control

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "bench" / "iscsi_load.c"
LUN_MIB = 256
TICKS = os.sysconf("SC_CLK_TCK")
OUR_IQN = "iqn.2026-11.org.datamover.bench:disk"
#: libiscsi 1.19's login proposals (lib/init.c): what every libiscsi session below offers
LIBISCSI_KEYS = {"MaxRecvDataSegmentLength": "262144", "FirstBurstLength": "262144",
                 "MaxBurstLength": "16776192", "InitialR2T": "No", "ImmediateData": "Yes"}


@dataclass(frozen=True, slots=True)
class Workload:
    name: str
    write: bool
    blocks: int  # 512-byte blocks per I/O
    queue_depth: int
    random: bool

    @property
    def io_bytes(self) -> int:
        return self.blocks * 512

    @property
    def large(self) -> bool:
        """Quoted in MiB/s (else IOPS)."""
        return self.io_bytes >= 64 * 1024


#: the extra QD1 row: our initiator polling for answers (InitiatorConfig.busy_poll_us) for up
#: to this long after each send; tgtd answers a 4 KiB read in about 60 us here
BUSY_POLL_US = 100
BUSY_POLL_SIDE = f"ours, busy_poll_us={BUSY_POLL_US}"

WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("seq-read-1m-qd16", False, 2048, 16, False),
    Workload("seq-read-64k-qd32", False, 128, 32, False),
    Workload("rand-read-4k-qd32", False, 8, 32, True),
    Workload("rand-read-4k-qd1", False, 8, 1, True),
    Workload("seq-write-1m-qd16", True, 2048, 16, False),
    Workload("seq-write-64k-qd32", True, 128, 32, False),
    Workload("rand-write-4k-qd32", True, 8, 32, True),
)}


# ============================================================ running a client
@dataclass(slots=True)
class Sample:
    """One client run: what it moved and what it cost."""

    iops: float
    mib_s: float
    client_cpu_s: float
    server_cpu_s: float
    ios: int
    ok: bool
    detail: str = ""

    def cpu_us_per_io(self, which: str) -> float:
        cpu = self.server_cpu_s if which == "server" else self.client_cpu_s
        return cpu / self.ios * 1e6 if self.ios else 0.0


_RESULT = re.compile(r"RESULT ios=(\d+) bytes=(\d+) seconds=([\d.]+) iops=([\d.]+) mib_s=([\d.]+)")
_CPU = re.compile(r"RESULT .* cpu_s=([\d.]+)")
_PERF = re.compile(r"iops average (\d+) \((\d+) MB/s\)")


def process_cpu(pid: int) -> float:
    """utime + stime of a whole process (all threads), in seconds, from /proc/PID/stat."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def run_client(argv: list[str], server_pid: int | None, timeout: float, io_bytes: int) -> Sample:
    """Run one client to completion; measure its CPU (wait4) and the server's (/proc)."""
    before = process_cpu(server_pid) if server_pid else 0.0
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=str(REPO))
    deadline = time.monotonic() + timeout
    while True:  # wait4 gives the client's own rusage (the child is reaped here)
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    proc.returncode = os.waitstatus_to_exitcode(status)
    after = process_cpu(server_pid) if server_pid else 0.0
    assert proc.stdout is not None
    text = proc.stdout.read().decode(errors="replace").replace("\r", "\n")
    client_cpu = usage.ru_utime + usage.ru_stime
    if match := _RESULT.search(text):
        ios, _bytes, _secs, iops, mib = match.groups()
        if timed := _CPU.search(text):  # the client's own figure for its timed part
            client_cpu = float(timed.group(1))
        return Sample(float(iops), float(mib), client_cpu, after - before, int(ios),
                      proc.returncode == 0, "" if proc.returncode == 0 else _tail(text))
    averages = _PERF.findall(text)
    if averages and "finished." in text:  # iscsi-perf: "iops average N (M MB/s)", then finished.
        iops = float(averages[-1][0])
        seconds = float(argv[argv.index("-t") + 1])
        return Sample(iops, iops * io_bytes / 2**20, client_cpu, after - before, int(iops * seconds),
                      proc.returncode == 0, "" if proc.returncode == 0 else _tail(text))
    return Sample(0.0, 0.0, client_cpu, after - before, 0, False, _tail(text) or f"exit {proc.returncode}")


def _tail(text: str) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines()[-4:])


def build_iscsi_load() -> str:
    """Compile bench/iscsi_load.c (once per source version) and return the binary's path."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "datamover-bench"
    binary = cache / f"iscsi-load-{digest}"
    if binary.exists():
        return str(binary)
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        raise RuntimeError("no C compiler (Debian: apt-get install build-essential)")
    if not Path("/usr/include/iscsi/iscsi.h").exists():
        raise RuntimeError("libiscsi headers missing (Debian: apt-get install libiscsi-dev)")
    cache.mkdir(parents=True, exist_ok=True)
    partial = binary.with_suffix(".tmp")
    done = subprocess.run([cc, "-O2", "-Wall", "-o", str(partial), str(SOURCE), "-liscsi"],
                          capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"compiling {SOURCE.name} failed:\n{done.stderr}")
    partial.rename(binary)
    return str(binary)


# ============================================================ the two sides
@dataclass(slots=True)
class Side:
    """A target under test (URL, the pid whose CPU is counted) or a client (argv builder)."""

    name: str
    url: str = ""
    pid: int | None = None


def load_argv(binary: list[str], w: Workload, seconds: float, url: str, verify: bool) -> list[str]:
    argv = [*binary, "-b", str(w.blocks), "-m", str(w.queue_depth), "-t", f"{seconds:g}"]
    if w.write:
        argv.append("-w")
    if w.random:
        argv.append("-r")
    if verify and w.write:
        argv.append("-V")
    return [*argv, url]


def perf_argv(w: Workload, seconds: float, url: str) -> list[str]:
    argv = ["iscsi-perf", "-b", str(w.blocks), "-m", str(w.queue_depth), "-t", str(max(1, round(seconds)))]
    if w.random:
        argv.append("-r")
    return [*argv, url]


def probe_keys(host: str, port: int, iqn: str) -> dict[str, str]:
    """Log in with our initiator proposing libiscsi's keys; return what the target agreed."""
    import asyncio

    from datamover.di import Portal
    from datamover.initiator import InitiatorConfig, InitiatorSession
    from datamover.plugin import create_transport

    async def probe() -> dict[str, str]:
        session = InitiatorSession(create_transport("tcp", {}), Portal(host, port),
                                   InitiatorConfig(keys=dict(LIBISCSI_KEYS)), iqn)
        await session.login()
        agreed = dict(session.agreed)
        await session.logout()
        return agreed

    try:
        return asyncio.run(probe())
    except Exception as exc:  # the table says so; the run goes on
        return {"error": f"{type(exc).__name__}: {exc}"}


def pdu_sizes(agreed: dict[str, str]) -> str:
    """Data-In / Data-Out PDU sizes a libiscsi session gets (from the target's answers)."""
    if "error" in agreed:
        return agreed["error"]
    to_initiator = min(int(agreed.get("MaxRecvDataSegmentLength.initiator", "8192")),
                       int(agreed.get("MaxBurstLength", "262144")))
    to_target = int(agreed.get("MaxRecvDataSegmentLength.target", "8192"))
    return (f"Data-In {to_initiator // 1024} KiB, Data-Out {to_target // 1024} KiB, "
            f"FirstBurst {int(agreed.get('FirstBurstLength', '65536')) // 1024} KiB, "
            f"MaxBurst {int(agreed.get('MaxBurstLength', '262144')) // 1024} KiB, "
            f"InitialR2T={agreed.get('InitialR2T', '?')}, ImmediateData={agreed.get('ImmediateData', '?')}")


# ============================================================ rounds
@dataclass(slots=True)
class Row:
    part: str
    workload: str
    a: str  # the reference side (tgtd / libiscsi)
    b: str  # ours
    a_samples: list[dict[str, object]] = field(default_factory=list)
    b_samples: list[dict[str, object]] = field(default_factory=list)

    def paired_ratio(self, key: str) -> float:
        """Median over the rounds of ours / reference, each round's pair measured back to back."""
        ratios = [float(b[key]) / float(a[key]) for a, b in zip(self.a_samples, self.b_samples)  # type: ignore[arg-type]
                  if a["ok"] and b["ok"] and float(a[key])]  # type: ignore[arg-type]
        return statistics.median(ratios) if ratios else 0.0

    def median(self, side: str, key: str) -> float:
        samples = self.a_samples if side == "a" else self.b_samples
        values = [float(s[key]) for s in samples if s["ok"]]  # type: ignore[arg-type]
        return statistics.median(values) if values else 0.0


def interleave(rows: list[Row], rounds: int, runner: Callable[[Row, str], Sample], log: Callable[[str], None]) -> None:
    """Each round: every row once per side, alternating which side goes first."""
    turn = 0
    for r in range(rounds):
        for row in rows:
            order = ("a", "b") if turn % 2 == 0 else ("b", "a")
            turn += 1
            for side in order:
                sample = runner(row, side)
                entry = asdict(sample)
                entry["server_us_per_io"] = sample.cpu_us_per_io("server")
                entry["client_us_per_io"] = sample.cpu_us_per_io("client")
                (row.a_samples if side == "a" else row.b_samples).append(entry)
                name = row.a if side == "a" else row.b
                value = f"{sample.mib_s:.0f} MiB/s" if WORKLOADS[row.workload].large else f"{sample.iops:.0f} IOPS"
                log(f"round {r + 1}/{rounds} {row.part:<10} {row.workload:<19} {name:<22} {value:>12}"
                    + ("" if sample.ok else f"  FAILED: {sample.detail}"))


# ============================================================ report
def _fmt(w: Workload, mib: float, iops: float) -> str:
    return f"{mib:.0f} MiB/s" if w.large else f"{iops / 1000:.1f}k IOPS"


def table(rows: list[Row], part: str, cpu_of: str) -> list[str]:
    lines: list[str] = []
    sel = [r for r in rows if r.part == part]
    if not sel:
        return lines
    a, b = sel[0].a, sel[0].b
    cpu_label = "target" if cpu_of == "server" else "client"
    lines.append(f"| workload | {a} | {b} | {b} / {a} | paired | {cpu_label} CPU us/IO {a} | "
                 f"{cpu_label} CPU us/IO {b} |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    key = f"{cpu_of}_us_per_io"
    for row in sel:
        w = WORKLOADS[row.workload]
        ma, mb = row.median("a", "mib_s"), row.median("b", "mib_s")
        ia, ib = row.median("a", "iops"), row.median("b", "iops")
        ratio = (mb / ma) if w.large and ma else (ib / ia if ia else 0.0)
        extra = ""
        if w.queue_depth == 1 and ia and ib:
            extra = f" (latency {1e6 / ib:.0f} vs {1e6 / ia:.0f} us: {ia / ib:.2f}x)"
        if w.write and row.a == "tgtd":
            extra += " (tgtd: 8 KiB Data-Out PDUs)"
        label = row.workload if row.b == "ours" else f"{row.workload} ({row.b})"
        paired = row.paired_ratio("mib_s" if w.large else "iops")
        lines.append(f"| {label} | {_fmt(w, ma, ia)} | {_fmt(w, mb, ib)} | {ratio:.2f}x{extra} | {paired:.2f}x | "
                     f"{row.median('a', key):.1f} | {row.median('b', key):.1f} |")
    return lines


def plot(rows: list[Row], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(p, [r for r in rows if r.part == p and r.b == "ours"]) for p in ("targets", "initiators")]
    groups = [(p, rs) for p, rs in groups if rs]
    fig, axes = plt.subplots(1, len(groups), figsize=(6 * len(groups), 4), squeeze=False)
    for ax, (part, rs) in zip(axes[0], groups):
        names, ratios = [], []
        for row in rs:
            w = WORKLOADS[row.workload]
            key = "mib_s" if w.large else "iops"
            a = row.median("a", key)
            names.append(row.workload)
            ratios.append(row.median("b", key) / a if a else 0.0)
        ax.barh(names, ratios, color=["tab:green" if r >= 1 else "tab:red" for r in ratios])
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_title("our target / tgtd" if part == "targets" else "our initiator / libiscsi (both -> tgtd)")
        ax.set_xlabel("ratio of medians (higher is better)")
        ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# ============================================================ main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per workload, side and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--parts", default="targets,initiators")
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    parser.add_argument("--lun-mib", type=int, default=LUN_MIB)
    parser.add_argument("--verify", action="store_true", help="keep LBA stamps in writes; check every LUN at the end")
    parser.add_argument("--json", help="write every sample here")
    parser.add_argument("--plot", help="write a PNG of the ratios here")
    parser.add_argument("--lun-option", action="append", default=[], metavar="OPTION",
                        help="an option of our target's LUN (--lun PATH,size=N,OPTION), e.g. mmap")
    parser.add_argument("--tcp-option", action="append", default=[], metavar="KEY=VALUE",
                        help="a [transport.tcp] option for our target (TOML value), e.g. phase_collapse=true")
    parser.add_argument("--smoke", action="store_true", help="a fraction of a second per case, 16 MiB LUNs")
    parser.add_argument("--from-json", help="print the tables of an earlier --json file; run nothing")
    args = parser.parse_args(argv)
    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        rows = [Row(**r) for r in saved["rows"]]
        print("\n".join(table(rows, "targets", "server") + [""] + table(rows, "initiators", "client")))
        for name, agreed in saved["negotiated"].items():
            print(f"  {name}: {pdu_sizes(agreed)}")
        if "tcp_congestion_control" in saved:  # recorded since 2026-11-25
            print(f"host TCP congestion control: {saved['tcp_congestion_control']}")
        if args.plot:
            plot(rows, args.plot)
        return 0
    if args.smoke:
        args.seconds, args.rounds, args.lun_mib = 0.3, 1, 16
    parts = [p for p in args.parts.split(",") if p]
    names = [n for n in args.workloads.split(",") if n]
    for name in names:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r} (known: {', '.join(WORKLOADS)})")
    for part in parts:
        if part not in ("targets", "initiators"):
            parser.error(f"unknown part {part!r} (targets, initiators)")

    sys.path.insert(0, str(REPO))
    from tools.interop.ours import datamover_argv
    from tools.interop.process import PeerProcess
    from tools.interop.tgtd import start_tgtd, tgtd_version

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    iscsi_load = build_iscsi_load()
    ourload = [sys.executable, "-m", "bench.ourload"]
    work = Path(tempfile.mkdtemp(prefix="dm-anchors-"))
    size = args.lun_mib << 20
    tgtd = ours = None
    try:
        tgtd = start_tgtd(work / "tgtd.img", size=size, log_dir=work)
        serving = re.compile(r"serving .* on (?P<host>[0-9.]+):(?P<port>\d+)")
        config: list[str] = []
        if args.tcp_option:
            toml = work / "target.toml"
            toml.write_text("[transport.tcp]\n" + "".join(f"{o.split('=', 1)[0]} = {o.split('=', 1)[1]}\n"
                                                          for o in args.tcp_option))
            config = ["-c", str(toml)]
        lun = ",".join([str(work / "ours.img"), f"size={size}", *args.lun_option])
        ours = PeerProcess([*datamover_argv(), "-v", "target", "serve", *config, "--transport", "tcp", "--portal",
                            "127.0.0.1:0", "--iqn", OUR_IQN, "--lun", lun],
                           work / "datamover-target.log", cwd=str(REPO))
        match = ours.wait_for_line(serving, 30)
        from tools.interop.libiscsi import iscsi_url

        our_url = iscsi_url(match["host"], int(match["port"]), OUR_IQN, 0)
        sides = {"tgtd": Side("tgtd", tgtd.url(), tgtd.process.pid), "ours": Side("ours", our_url, ours.pid)}
        keys = {"tgtd": probe_keys(tgtd.host, tgtd.port, tgtd.iqn),
                "ours": probe_keys(match["host"], int(match["port"]), OUR_IQN)}
        log(f"filling both {args.lun_mib} MiB LUNs (stamped, page-cached)")
        for side in sides.values():
            fill = run_client([iscsi_load, "-F", "-b", "2048", "-m", "8", side.url], None, 300, 0)
            if not fill.ok:
                raise RuntimeError(f"filling the {side.name} LUN failed: {fill.detail}")

        rows: list[Row] = []
        if "targets" in parts:
            rows += [Row("targets", n, "tgtd", "ours") for n in names]
        if "initiators" in parts:
            rows += [Row("initiators", n, "libiscsi", "ours") for n in names]
            if "rand-read-4k-qd32" in names:
                rows.append(Row("initiators", "rand-read-4k-qd32", "libiscsi->our target", "ours->our target"))
            if "rand-read-4k-qd1" in names:
                # the same QD1 reads with the initiator's opt-in busy polling (InitiatorConfig.busy_poll_us)
                rows.append(Row("initiators", "rand-read-4k-qd1", "libiscsi", BUSY_POLL_SIDE))
        timeout = args.seconds + 60

        def runner(row: Row, side: str) -> Sample:
            w = WORKLOADS[row.workload]
            if row.part == "targets":
                target = sides["tgtd" if side == "a" else "ours"]
                client = (load_argv([iscsi_load], w, args.seconds, target.url, args.verify) if w.write
                          else perf_argv(w, args.seconds, target.url))
                return run_client(client, target.pid, timeout, w.io_bytes)
            target = sides["ours" if row.b == "ours->our target" else "tgtd"]
            binary = [iscsi_load] if side == "a" else ourload
            if side == "b" and row.b == BUSY_POLL_SIDE:
                binary = [*ourload, "--busy-poll-us", str(BUSY_POLL_US)]
            return run_client(load_argv(binary, w, args.seconds, target.url, args.verify), target.pid, timeout,
                              w.io_bytes)

        interleave(rows, args.rounds, runner, log)

        verified: dict[str, bool] = {}
        if args.verify:
            for side in sides.values():
                check = run_client([iscsi_load, "-V", "-b", "2048", "-m", "8", "-t", "3", side.url], None, 120, 0)
                verified[side.name] = check.ok
                log(f"verify {side.name}: {'ok' if check.ok else check.detail}")
    finally:
        if ours is not None:
            ours.stop()
        if tgtd is not None:
            tgtd.stop()

    out: list[str] = []
    if args.tcp_option:
        out.append(f"our target's [transport.tcp] options: {', '.join(args.tcp_option)}")
    if args.lun_option:
        out.append(f"our target's LUN options: {', '.join(args.lun_option)}")
    out.append(f"{args.rounds} interleaved round(s) x {args.seconds:g} s per workload and side; medians; "
               f"{args.lun_mib} MiB page-cached file LUNs; tgtd {tgtd_version()}; {os.cpu_count()} CPUs; "
               f"TCP congestion control {tcp_congestion_control()}; load average at the end {os.getloadavg()[0]:.2f}")
    out.append("")
    out.append("Our target vs tgtd (reads: iscsi-perf; writes: bench/iscsi_load.c)")
    out += table(rows, "targets", "server")
    out.append("")
    out.append("Our initiator (bench/ourload.py) vs libiscsi (bench/iscsi_load.c)")
    out += table(rows, "initiators", "client")
    out.append("")
    out.append("Negotiated with libiscsi's proposals:")
    for name, agreed in keys.items():
        out.append(f"  {name}: {pdu_sizes(agreed)}")
    if verified:
        out.append("Data check after the run: " + ", ".join(f"{k} {'ok' if v else 'FAILED'}" for k, v in verified.items()))
    print("\n".join(out))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"rounds": args.rounds, "seconds": args.seconds, "lun_mib": args.lun_mib,
                       "tcp_options": args.tcp_option, "lun_options": args.lun_option, "negotiated": keys,
                       "tcp_congestion_control": tcp_congestion_control(),
                       "verified": verified, "rows": [asdict(r) for r in rows]}, handle, indent=2)
    if args.plot:
        plot(rows, args.plot)
    shutil.rmtree(work, ignore_errors=True)
    failed = any(not s["ok"] for r in rows for s in r.a_samples + r.b_samples) or not all(verified.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

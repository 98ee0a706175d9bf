"""Run libiscsi's command-line tools (Debian libiscsi-bin) and parse what they print.

URL format (all tools): ``iscsi://[USER[%SECRET]@]HOST[:PORT]/TARGET-IQN/LUN``; the
initiator name is ``-i NAME``. iscsi-ls takes a portal URL without IQN and LUN.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from urllib.parse import quote

from tools.interop.peers import require

DEFAULT_INITIATOR = "iqn.2007-10.com.github:sahlberg:libiscsi:iscsi-test"


def iscsi_url(host: str, port: int, iqn: str | None = None, lun: int | None = None, *,
              user: str | None = None, secret: str | None = None) -> str:
    """``iscsi://[user%secret@]host:port[/iqn/lun]`` (user and secret percent-quoted)."""
    auth = ""
    if user:
        auth = quote(user, safe="") + (f"%{quote(secret, safe='')}" if secret else "") + "@"
    url = f"iscsi://{auth}{host}:{port}"
    if iqn is not None:
        url += f"/{iqn}/{lun if lun is not None else 0}"
    return url


@dataclass(slots=True)
class ToolRun:
    """One libiscsi tool invocation: its command line, exit status and output."""

    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def describe(self) -> str:
        """A failure message for assertions: command, status, the output's tail."""
        tail = "\n".join((self.stdout + self.stderr).splitlines()[-30:])
        state = "timed out" if self.timed_out else f"exit status {self.returncode}"
        return f"{' '.join(self.argv)}: {state}\n{tail}"


def run_tool(name: str, args: list[str], timeout: float = 60.0) -> ToolRun:
    """Run one libiscsi tool; PeerMissing if it is not installed. Never raises on failure."""
    argv = [require(name)[name], *args]
    try:
        done = subprocess.run(argv, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        return ToolRun(argv, -1, _text(exc.stdout), _text(exc.stderr), timed_out=True)
    return ToolRun(argv, done.returncode, _text(done.stdout), _text(done.stderr))


def _text(data: bytes | str | None) -> str:
    if data is None:
        return ""
    if isinstance(data, str):
        return data
    # iscsi-perf redraws its progress line with \r: keep each redraw as a line
    return data.decode(errors="replace").replace("\r", "\n")


def _initiator(initiator: str | None) -> list[str]:
    return ["-i", initiator] if initiator else []


# ---------------------------------------------------------------- iscsi-ls
@dataclass(slots=True)
class LsTarget:
    name: str
    portal: str
    luns: dict[int, str] = field(default_factory=dict)  # LUN -> "Type:... (Size:...)"


_LS_TARGET = re.compile(r"^Target:(?P<name>\S+) Portal:(?P<portal>\S+)")
_LS_LUN = re.compile(r"^Lun:(?P<lun>\d+)\s+(?P<rest>.*)$")


def parse_ls(text: str) -> list[LsTarget]:
    targets: list[LsTarget] = []
    for line in text.splitlines():
        line = line.strip()
        if match := _LS_TARGET.match(line):
            targets.append(LsTarget(match["name"], match["portal"]))
        elif (match := _LS_LUN.match(line)) and targets:
            targets[-1].luns[int(match["lun"])] = match["rest"].strip()
    return targets


def iscsi_ls(host: str, port: int, *, show_luns: bool = True, initiator: str | None = None,
             user: str | None = None, secret: str | None = None, timeout: float = 30.0) -> tuple[ToolRun, list[LsTarget]]:
    """``iscsi-ls [-s] iscsi://host:port``: SendTargets discovery (and, with -s, a normal login
    per target with REPORT LUNS + INQUIRY + READ CAPACITY per LUN)."""
    run = run_tool("iscsi-ls", [*_initiator(initiator), *(["-s"] if show_luns else []),
                                iscsi_url(host, port, user=user, secret=secret)], timeout)
    return run, parse_ls(run.stdout)


# ---------------------------------------------------------------- iscsi-inq
def parse_colon_fields(text: str) -> dict[str, str]:
    """``Key:Value`` lines -> dict (first occurrence wins; repeated keys keep the first)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip() and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    return fields


def iscsi_inq(url: str, *, evpd: int | None = None, page: int | None = None, initiator: str | None = None,
              timeout: float = 30.0) -> tuple[ToolRun, dict[str, str]]:
    """``iscsi-inq [-e 1 -c PAGE] URL``: standard INQUIRY (or a VPD page)."""
    args = _initiator(initiator)
    if evpd is not None:
        args += ["-e", str(evpd)]
    if page is not None:
        args += ["-c", str(page)]
    run = run_tool("iscsi-inq", [*args, url], timeout)
    return run, parse_colon_fields(run.stdout)


# ---------------------------------------------------------------- iscsi-readcapacity16
@dataclass(slots=True)
class Capacity:
    last_lba: int
    block_size: int

    @property
    def size(self) -> int:
        return (self.last_lba + 1) * self.block_size


def iscsi_readcapacity16(url: str, *, initiator: str | None = None,
                         timeout: float = 30.0) -> tuple[ToolRun, Capacity | None]:
    run = run_tool("iscsi-readcapacity16", [*_initiator(initiator), url], timeout)
    fields = parse_colon_fields(run.stdout)
    try:
        capacity = Capacity(int(fields["RETURNED LOGICAL BLOCK ADDRESS"]), int(fields["LOGICAL BLOCK LENGTH IN BYTES"]))
    except (KeyError, ValueError):
        capacity = None
    return run, capacity


# ---------------------------------------------------------------- iscsi-perf
@dataclass(slots=True)
class PerfResult:
    iops_average: int | None
    mb_per_s: int | None
    finished: bool
    errors: list[str]


_PERF_AVERAGE = re.compile(r"^\s*iops average (?P<iops>\d+) \((?P<mb>\d+) MB/s\)", re.M)
_PERF_ERROR = re.compile(r"(?i)(error|failed|reconnect|sense|check condition|abort)")


def parse_perf(text: str) -> PerfResult:
    """iscsi-perf ends with ``iops average N (M MB/s)`` then ``finished.``; any line naming an
    error, failure, sense or reconnect is collected."""
    averages = list(_PERF_AVERAGE.finditer(text))
    last = averages[-1] if averages else None
    errors = [line.strip() for line in text.splitlines() if _PERF_ERROR.search(line)]
    return PerfResult(int(last["iops"]) if last else None, int(last["mb"]) if last else None,
                      "finished." in text, errors)


def iscsi_perf(url: str, seconds: int = 10, *, blocks: int | None = None, max_requests: int | None = None,
               random_io: bool = False, initiator: str | None = None) -> tuple[ToolRun, PerfResult]:
    """``iscsi-perf -t SECONDS [-b BLOCKS] [-m QD] [-r] URL``: reads only (libiscsi 1.19).

    ``-t`` is the run time in seconds; without ``-n`` an I/O error stops it with a failure.
    """
    args = [*_initiator(initiator), "-t", str(seconds)]
    if blocks is not None:
        args += ["-b", str(blocks)]
    if max_requests is not None:
        args += ["-m", str(max_requests)]
    if random_io:
        args.append("-r")
    run = run_tool("iscsi-perf", [*args, url], timeout=seconds + 30)
    return run, parse_perf(run.stdout + run.stderr)

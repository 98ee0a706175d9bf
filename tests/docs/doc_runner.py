"""Runs documentation blocks the way a reader would: in a scratch directory, in order.

One :class:`DocSession` per Markdown file. Its scratch directory holds

* ``.venv``: an overlay virtualenv whose interpreter sees the project's ``.venv`` (through
  a ``.pth`` file) but installs into itself, so ``.venv/bin/datamover`` works unchanged
  and a ``pip install`` in a doc never touches the project's environment;
* ``docs/examples``: a copy of the example plugins (their builds write into the source);
* ``var-tmp``: where ``/var/tmp/`` paths of the docs point.

Blocks run with bash (``set -euo pipefail``), the overlay's ``bin`` first on PATH.
Documented local ports are replaced by free ones (the same port gets the same free port
across the blocks of a file); ``datamover target serve`` lines start in the background,
in their own process group, and the block goes on once they print their "serving ... on
HOST:PORT" line. Background processes live until the file's last block has run.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sysconfig
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from doc_blocks import SERVE_READY, Block, is_serve_command, local_ports, logical_lines, substitute_ports

REPO = Path(__file__).resolve().parents[2]
PROJECT_VENV = REPO / ".venv"

#: bash functions every block script starts with
PRELUDE = r"""
set -euo pipefail
__dt_bg() {  # __dt_bg N READY_REGEX TIMEOUT: run .doctest/bg-N.sh in the background until ready
    local n=$1 ready=$2 limit=$3 log="$DOCTEST_DIR/.doctest/bg-$1.log"
    setsid bash "$DOCTEST_DIR/.doctest/bg-$n.sh" >"$log" 2>&1 </dev/null &
    local pid=$!
    echo "$pid" >>"$DOCTEST_DIR/.doctest/bg.pids"
    local end=$((SECONDS + limit))
    until grep -Eq -- "$ready" "$log" 2>/dev/null; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "doc-test: background command exited before printing /$ready/:" >&2
            cat "$log" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$end" ]; then
            echo "doc-test: background command printed no /$ready/ within $limit s:" >&2
            cat "$log" >&2
            return 1
        fi
        sleep 0.05
    done
    grep -E -m1 -- "$ready" "$log" >&2
}
"""


def group_alive(group: int) -> bool:
    """Whether process group ``group`` still has a running member (its leader being a
    zombie nobody reaped yet counts as gone)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{group}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2:].split()[0] != "Z"


def free_port() -> int:
    """A TCP port nobody listens on right now (on 127.0.0.1)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_overlay_venv(where: Path, base: Path = PROJECT_VENV) -> Path:
    """A virtualenv at ``where`` that imports everything from ``base`` and installs into
    itself; its ``bin`` holds ``python`` and a copy of each of base's console scripts."""
    subprocess.run([str(base / "bin" / "python"), "-m", "venv", "--without-pip", str(where)],
                   check=True, capture_output=True, timeout=60)
    base_site = subprocess.run([str(base / "bin" / "python"), "-c",
                                "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True, timeout=60).stdout.strip()
    site = Path(sysconfig.get_paths(vars={"base": str(where), "platbase": str(where)})["purelib"])
    site.mkdir(parents=True, exist_ok=True)
    # an "import" line in a .pth runs at start-up; addsitedir also processes base's own
    # .pth files (the editable install of datamover)
    (site / "_datamover_doctest_base.pth").write_text(f"import site; site.addsitedir({base_site!r})\n")
    python = where / "bin" / "python"
    for script in (base / "bin").iterdir():
        target = where / "bin" / script.name
        if target.exists() or not script.is_file():
            continue
        try:
            head, _, rest = script.read_bytes().partition(b"\n")
        except OSError:
            continue
        if head.startswith(b"#!") and b"python" in head:  # a console script: re-point it
            target.write_bytes(b"#!" + str(python).encode() + b"\n" + rest)
            target.chmod(0o755)
    return where


@dataclass(slots=True)
class BlockResult:
    block: Block
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    script: str

    def explain(self) -> str:
        return (f"{self.block.ident}: exit status {self.returncode} (expected "
                f"{self.block.directives.exit_status}) after {self.seconds:.1f} s\n"
                f"--- script\n{self.script}\n--- stdout (tail)\n{self.stdout[-3000:]}\n"
                f"--- stderr (tail)\n{self.stderr[-3000:]}")


@dataclass(slots=True)
class DocSession:
    """The scratch directory, ports and background processes of one Markdown file."""

    name: str
    workdir: Path = field(init=False)
    ports: dict[int, int] = field(default_factory=dict)
    background: list[int] = field(default_factory=list)  # process group ids
    results: dict[int, BlockResult] = field(default_factory=dict)
    _counter: int = 0
    _tmp: tempfile.TemporaryDirectory[str] | None = None

    def __post_init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix=f"doctest-{Path(self.name).stem}-")
        self.workdir = Path(self._tmp.name)
        (self.workdir / ".doctest").mkdir()
        (self.workdir / "var-tmp").mkdir()
        make_overlay_venv(self.workdir / ".venv")
        shutil.copytree(REPO / "docs" / "examples", self.workdir / "docs" / "examples",
                        ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))

    # ------------------------------------------------------------------ environment
    def environment(self, block: Block) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PYTEST_", "VIRTUAL_ENV", "PYTHONPATH", "DATAMOVER_", "COV_CORE_"))}
        env["PATH"] = os.pathsep.join([str(self.workdir / ".venv" / "bin"), env.get("PATH", "/usr/bin:/bin")])
        env["VIRTUAL_ENV"] = str(self.workdir / ".venv")
        env["HOME"] = env.get("HOME", str(self.workdir))
        env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["DOCTEST_DIR"] = str(self.workdir)
        env.update(block.directives.env)
        return env

    # ------------------------------------------------------------------ scripts
    def script_for(self, block: Block) -> str:
        """The bash script that runs ``block`` here (ports, /var/tmp, background servers)."""
        text = block.commands()
        for port in local_ports(text):
            if port not in self.ports:
                self.ports[port] = free_port()
        text = substitute_ports(text, self.ports).replace("/var/tmp/", f"{self.workdir}/var-tmp/")
        limit = int(block.directives.timeout)
        if block.directives.background:
            return PRELUDE + self._background(text, block.directives.ready, limit) + "\n"
        lines = text.splitlines()
        out: list[str] = []
        for first, last, piece, heredoc_body in logical_lines(text):
            # an error example (exit N) runs its target in the foreground: it is meant to fail
            if not heredoc_body and is_serve_command(piece) and block.directives.exit_status == 0:
                out.append(self._background(piece, SERVE_READY, limit))
            else:
                out.extend(lines[first:last + 1])
        return PRELUDE + "\n".join(out) + "\n"

    def _background(self, command: str, ready: str, limit: int) -> str:
        self._counter += 1
        (self.workdir / ".doctest" / f"bg-{self._counter}.sh").write_text(command + "\n")
        return f"__dt_bg {self._counter} {shlex.quote(ready)} {limit}"

    # ------------------------------------------------------------------ running
    def run(self, block: Block) -> BlockResult:
        script = self.script_for(block)
        pids = self.workdir / ".doctest" / "bg.pids"
        started = time.monotonic()
        # its own session: on timeout the whole group goes, so no grandchild keeps the
        # output pipes open (background servers have sessions of their own)
        process = subprocess.Popen(["bash", "-c", script], cwd=self.workdir, env=self.environment(block),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, start_new_session=True)
        try:
            stdout, stderr = process.communicate(timeout=block.directives.timeout)
            returncode = process.returncode
        except subprocess.TimeoutExpired:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            stdout, stderr = process.communicate()
            returncode = -1
            stderr += (f"\ndoc-test: the block ran past its {block.directives.timeout:g} s limit "
                       "(shorten it, or add <!-- doc-test: timeout N --> / skip with a reason)")
        if pids.exists():
            for text in pids.read_text().split():
                if int(text) not in self.background:
                    self.background.append(int(text))
        result = BlockResult(block, returncode, stdout, stderr, time.monotonic() - started, script)
        self.results[block.line] = result
        return result

    def background_logs(self) -> str:
        logs = sorted((self.workdir / ".doctest").glob("bg-*.log"))
        return "\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-2000:]}" for log in logs)

    def close(self) -> None:
        """Stop the background processes (SIGTERM to each group, then SIGKILL) and remove
        the scratch directory."""
        for group in self.background:
            try:
                os.killpg(group, signal.SIGTERM)
            except ProcessLookupError:
                continue
        deadline = time.monotonic() + 5.0
        for group in self.background:
            while time.monotonic() < deadline:
                if not group_alive(group):
                    break
                time.sleep(0.05)
            else:
                try:
                    os.killpg(group, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        self.background.clear()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None


def python_has(module: str) -> bool:
    """Whether the project's interpreter can import ``module``."""
    probe = subprocess.run([str(PROJECT_VENV / "bin" / "python"), "-c",
                            f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"],
                           capture_output=True, timeout=60)
    return probe.returncode == 0


def missing_requirement(item: str) -> str | None:
    """Why ``item`` of a ``requires`` directive is not met here, or None if it is.

    ``root``; ``path:/dev/kvm``; ``module:pyverbs``; ``env:NAME``; otherwise a program on
    PATH (also /usr/sbin and /sbin, where Debian puts daemons such as tgtd)."""
    if item == "root":
        return None if os.geteuid() == 0 else "needs root"
    kind, sep, value = item.partition(":")
    if sep and kind == "path":
        return None if os.path.exists(value) else f"needs {value} (absent)"
    if sep and kind == "module":
        return None if python_has(value) else f"needs the Python module {value} (not importable)"
    if sep and kind == "env":
        return None if os.environ.get(value) else f"needs the environment variable {value}"
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", str(PROJECT_VENV / "bin")])
    return None if shutil.which(item, path=search) else f"needs {item} (not installed)"


__all__ = ["REPO", "BlockResult", "DocSession", "free_port", "group_alive", "make_overlay_venv", "missing_requirement",
           "python_has"]

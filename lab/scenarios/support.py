"""What the scenarios share: logged commands, our target and initiator as processes, modules.

Every command a scenario runs is appended, with its output and exit status, to
``commands.log`` in the scenario's directory, which the report links to; long-running peers
(our target, tgtd, iscsid) keep their own log files there.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATAMOVER = [str(REPO / ".venv" / "bin" / "python"), "-m", "datamover.cli"]
TARGET_IQN = "iqn.2026-11.org.datamover.lab:disk"
INITIATOR_IQN = "iqn.2026-11.org.datamover.lab:host"
_SERVING = re.compile(r"serving .* on (?P<host>[0-9.]+):(?P<port>\d+)")


class CommandFailed(AssertionError):
    """A command the scenario relies on exited non-zero (its output is in the message)."""


def scenario_dir() -> Path:
    d = Path(os.environ.get("LAB_SCENARIO_DIR", "/tmp/lab-scenario"))
    d.mkdir(parents=True, exist_ok=True)
    return d


def rdma_ip() -> str:
    return os.environ.get("DATAMOVER_RDMA_IP", "192.0.2.10")


def run(argv: list[str], *, timeout: float = 120.0, check: bool = True, env: dict[str, str] | None = None,
        input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command to completion; log it; raise CommandFailed on non-zero when ``check``."""
    start = time.monotonic()
    try:
        # errors="replace": a peer tool in trouble may print bytes that are not UTF-8
        proc = subprocess.run(argv, capture_output=True, text=True, errors="replace", timeout=timeout,
                              input=input, env=None if env is None else {**os.environ, **env})
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        _log(argv, out, f"TIMEOUT after {timeout}s")
        raise CommandFailed(f"{' '.join(argv)}: timed out after {timeout}s\n{out[-3000:]}") from None
    _log(argv, proc.stdout + proc.stderr, f"rc={proc.returncode} in {time.monotonic() - start:.1f}s")
    if check and proc.returncode != 0:
        raise CommandFailed(f"{' '.join(argv)}: exit {proc.returncode}\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc


def _log(argv: list[str], output: str, status: str) -> None:
    if output and not output.endswith("\n"):
        output += "\n"
    with (scenario_dir() / "commands.log").open("a") as fh:
        fh.write(f"$ {' '.join(argv)}\n{output}[{status}]\n\n")


def modprobe(*modules: str) -> None:
    for m in modules:
        run(["modprobe", m])


class Daemon:
    """A background process whose output goes to a log file in the scenario directory."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.log = scenario_dir() / f"{name}.log"
        self._fh = self.log.open("ab")
        self.proc = subprocess.Popen(argv, stdout=self._fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=None if env is None else {**os.environ, **env}, start_new_session=True)
        _log(argv, "", f"started pid {self.proc.pid}, log {self.log.name}")

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = pattern.search(self.text())
            if m:
                return m
            if self.proc.poll() is not None:
                raise CommandFailed(f"{self.name} exited {self.proc.returncode}:\n{self.text()[-3000:]}")
            time.sleep(0.2)
        raise CommandFailed(f"{self.name}: no {pattern.pattern!r} within {timeout}s:\n{self.text()[-3000:]}")

    def stop(self, grace: float = 10.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._fh.close()
        return self.proc.returncode


#: extra ``[transport.iser]`` options for our initiator in this scenario's process (scenario 4
#: sets tgtd's per-command limit here)
INITIATOR_ISER_OPTIONS: dict[str, int | str] = {}


def transport_config(transport: str, path: Path, options: dict[str, int | str] | None = None) -> Path:
    """A TOML config naming the verbs provider explicitly: the lab proves pyverbs, never soft."""
    text = ""
    if transport == "iser":
        text = '[transport.iser]\nprovider = "pyverbs"\n'
        for key, value in (options or {}).items():
            text += f"{key} = {value!r}\n" if isinstance(value, int) else f'{key} = "{value}"\n'
    path.write_text(text)
    return path


@dataclass
class OurTarget:
    daemon: Daemon
    host: str
    port: int
    iqn: str
    lun_path: Path

    def stop(self) -> int | None:
        return self.daemon.stop()


def start_our_target(transport: str, *, port: int = 3260, size: int = 128 << 20, name: str = "our-target",
                     host: str | None = None, timeout: float = 120.0,
                     keys: dict[str, str] | None = None) -> OurTarget:
    """``datamover target serve`` with a sparse file LUN on tmpfs; waits for its serving line.
    ``keys`` go to the config's ``[keys]`` (what the target offers and accepts)."""
    host = host or rdma_ip()
    sdir = scenario_dir()
    lun = Path("/var/tmp") / f"{name}-lun.img"
    lun.unlink(missing_ok=True)
    cfg = transport_config(transport, sdir / f"{name}.toml")
    if keys:
        with cfg.open("a") as fh:
            fh.write("[keys]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items()))
    argv = [*DATAMOVER, "-v", "target", "serve", "-c", str(cfg), "--transport", transport,
            "--portal", f"{host}:{port}", "--iqn", TARGET_IQN, "--lun", f"{lun},size={size}"]
    d = Daemon(name, argv)
    m = d.wait_for(_SERVING, timeout)
    return OurTarget(d, m["host"], int(m["port"]), TARGET_IQN, lun)


def our_initiator(command: str, transport: str, host: str, port: int, target: str | None, *extra: str,
                  timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess[str]:
    """One ``datamover`` initiator command (discover, login, verify, read, write)."""
    cfg = transport_config(transport, scenario_dir() / f"initiator-{transport}.toml", INITIATOR_ISER_OPTIONS)
    argv = [*DATAMOVER, command, "-c", str(cfg), "--transport", transport, "--portal", f"{host}:{port}",
            "--name", INITIATOR_IQN]
    if target is not None and command != "discover":
        argv += ["--target", target]
    return run(argv + list(extra), timeout=timeout, check=check)


def sha256_of(path: Path | str, length: int | None = None, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    left = length
    with open(path, "rb") as fh:
        while left is None or left > 0:
            want = chunk if left is None else min(chunk, left)
            data = fh.read(want)
            if not data:
                break
            h.update(data)
            if left is not None:
                left -= len(data)
    return h.hexdigest()


_VERIFIED = re.compile(r"verified (?P<bytes>\d+) bytes .* sha256 (?P<sha>[0-9a-f]+)")


def verify_stored(transport: str, host: str, port: int, iqn: str, stored: Path | None, *, lun: int = 0,
                  size: str = "64M", timeout: float = 900.0) -> str:
    """``datamover verify`` (random data written from LBA 0 and read back), then the peer's
    backing file must hold exactly those bytes (verify prints their SHA-256 prefix)."""
    proc = our_initiator("verify", transport, host, port, iqn, "--lun", str(lun), "--bytes", size, timeout=timeout)
    m = _VERIFIED.search(proc.stdout + proc.stderr)
    if m is None:
        raise CommandFailed(f"verify printed no digest:\n{proc.stdout}{proc.stderr}")
    if stored is not None:
        on_disk = sha256_of(stored, int(m["bytes"]))
        assert on_disk.startswith(m["sha"]), f"{stored}: {on_disk[:16]} != what we wrote ({m['sha']})"
    return m["sha"]


def chunked_write_read(transport: str, host: str, port: int, iqn: str, stored: Path | None, *, lun: int = 0,
                       size: int = 16 << 20, chunk: int = 8 << 20, name: str = "chunked") -> None:
    """``datamover write``/``read`` in commands of ``chunk`` bytes (within the peers' Block
    Limits: LIO fileio and ours take 8 MiB), checksums compared, and against the backing file."""
    data = os.urandom(size)
    piece = Path("/var/tmp") / f"{name}-piece.bin"
    back = bytearray()
    for off in range(0, size, chunk):
        piece.write_bytes(data[off:off + chunk])
        our_initiator("write", transport, host, port, iqn, "--lun", str(lun), "--lba", str(off // 512),
                      "-i", str(piece), timeout=600)
    for off in range(0, size, chunk):
        our_initiator("read", transport, host, port, iqn, "--lun", str(lun), "--lba", str(off // 512),
                      "--count", str(min(chunk, size - off) // 512), "-o", str(piece), timeout=600)
        back += piece.read_bytes()
    want = hashlib.sha256(data).hexdigest()
    got = hashlib.sha256(back).hexdigest()
    (scenario_dir() / f"{name}-checksums.txt").write_text(f"written {want}\nread    {got}\n")
    assert got == want, "read back other bytes than written"
    if stored is not None:
        assert sha256_of(stored, size) == want, f"{stored} does not hold what we wrote"


def libiscsi_nocache_env() -> dict[str, str]:
    """``LD_PRELOAD`` of lab/scenarios/libiscsi_nocache.c (built here with gcc), which turns
    libiscsi's allocation cache off through its public API: the workaround for libiscsi
    1.19's iSER read-buffer free mismatch (finding 8; fixed upstream in 2934d64). Empty when
    there is no compiler (the tools then run as Debian ships them, and may crash)."""
    src = Path(__file__).with_name("libiscsi_nocache.c")
    out = scenario_dir() / "libiscsi_nocache.so"
    if not out.exists():
        proc = run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(out), str(src), "-ldl"], check=False, timeout=300)
        if proc.returncode != 0:
            return {}
    return {"LD_PRELOAD": str(out)}


"""Start a private tgtd (the reference target) on a free port, set up with tgtadm.

Each tgtd gets its own control port (``tgtd -C N`` / ``tgtadm -C N``: the management socket
is /var/run/tgtd/socket.N), so it never clashes with a system tgtd on 3260 or with another
test's tgtd. tgtd numbers LUN 0 as its controller; the file LUN is LUN 1.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tools.interop.net import free_port, wait_listening
from tools.interop.peers import require, require_root
from tools.interop.process import PeerFailed, PeerProcess, run_checked

DEFAULT_IQN = "iqn.2026-11.org.datamover.interop:tgtd"
SOCKET_DIR = Path("/var/run/tgtd")
TGTD_LUN = 1


def _free_control_port() -> int:
    """A control port with no socket in /var/run/tgtd (tgtd 1.0.85 accepts -C 0..32767)."""
    for _ in range(1000):
        candidate = random.randrange(10000, 32768)
        if not (SOCKET_DIR / f"socket.{candidate}").exists() and not (SOCKET_DIR / f"socket.{candidate}.lock").exists():
            return candidate
    raise PeerFailed("no free tgtd control port")


@dataclass(slots=True)
class Tgtd:
    """A running tgtd with one target (tid 1) and one file LUN (LUN 1)."""

    process: PeerProcess
    tgtadm: str
    control_port: int
    host: str
    port: int
    iqn: str
    lun_path: str
    lun: int = TGTD_LUN
    accounts: list[str] = field(default_factory=list)
    #: every portal it serves, the first being (host, port)
    portals: list[tuple[str, int]] = field(default_factory=list)

    @property
    def portal(self) -> str:
        return f"{self.host}:{self.port}"

    def url(self, user: str | None = None, secret: str | None = None, *, portal: int = 0) -> str:
        """The iSCSI URL of the LUN through portal number ``portal`` (0 = the first)."""
        from tools.interop.libiscsi import iscsi_url

        host, port = self.portals[portal] if self.portals else (self.host, self.port)
        return iscsi_url(host, port, self.iqn, self.lun, user=user, secret=secret)

    def admin(self, *args: str) -> str:
        """Run ``tgtadm -C PORT --lld iscsi ARGS``."""
        return run_checked([self.tgtadm, "-C", str(self.control_port), "--lld", "iscsi", *args])

    def show(self) -> str:
        return self.admin("--mode", "target", "--op", "show")

    def add_chap(self, user: str, secret: str, *, outgoing: bool = False) -> None:
        """Add an account and bind it to tid 1 (incoming = what initiators must present;
        outgoing = the target's own credentials for mutual CHAP)."""
        self.admin("--mode", "account", "--op", "new", "--user", user, "--password", secret)
        bind = ["--mode", "account", "--op", "bind", "--tid", "1", "--user", user]
        self.admin(*bind, *(["--outgoing"] if outgoing else []))
        self.accounts.append(user)

    def stop(self) -> int | None:
        """Shut tgtd down. In the foreground it ignores SIGTERM and SIGINT; the way out is
        ``tgtadm --op delete --mode sys --force``, then SIGKILL if it still runs."""
        if self.process.alive():
            try:
                run_checked([self.tgtadm, "-C", str(self.control_port), "--op", "delete", "--mode", "sys",
                             "--force"], timeout=10)
                self.process.proc.wait(5)
            except (PeerFailed, subprocess.TimeoutExpired):
                pass
        status = self.process.stop(grace=2, sig=signal.SIGKILL)
        for suffix in ("", ".lock"):
            try:
                (SOCKET_DIR / f"socket.{self.control_port}{suffix}").unlink()
            except OSError:
                pass
        return status

    def __enter__(self) -> Tgtd:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_tgtd(lun_path: str | os.PathLike[str], port: int = 0, iqn: str = DEFAULT_IQN, *,
               chap: str | None = None, size: int | None = None, host: str = "127.0.0.1",
               log_dir: str | os.PathLike[str] | None = None, params: dict[str, str] | None = None,
               timeout: float = 20.0, lun_params: dict[str, str] | None = None,
               portals: int = 1) -> Tgtd:
    """Start ``tgtd -f --iscsi portal=HOST:PORT -C N`` and configure tid 1 with LUN 1.

    ``port`` 0 picks a free one. ``chap`` is ``USER:SECRET`` (incoming) or
    ``USER:SECRET:MUTUALUSER:MUTUALSECRET`` (adds the outgoing account for mutual CHAP).
    ``size`` creates/extends the backing file sparse. ``params`` are target parameters set with
    ``tgtadm --op update`` (e.g. MaxRecvDataSegmentLength); ``lun_params`` are the LUN's
    (``removable=1``, ``readonly=1``, ``lbppbe=3``: ``tgtadm --mode logicalunit --op update
    --params``). ``portals`` > 1 adds that many more free ports (``--mode portal --op new``),
    e.g. for a multipath URL. Raises PeerMissing or PeerFailed.
    """
    paths = require("tgtd", "tgtadm")
    require_root("tgtd")
    lun_path = os.fspath(lun_path)
    if size is not None:
        with open(lun_path, "ab") as handle:
            if os.fstat(handle.fileno()).st_size < size:
                handle.truncate(size)
    if not os.path.exists(lun_path):
        raise PeerFailed(f"{lun_path}: backing file does not exist (give size=)")
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="dm-tgtd-"))
    port = port or free_port(host)
    control = _free_control_port()
    SOCKET_DIR.mkdir(parents=True, exist_ok=True)
    process = PeerProcess([paths["tgtd"], "-f", "-C", str(control), "--iscsi", f"portal={host}:{port}"],
                          log_dir / "tgtd.log")
    tgtd = Tgtd(process, paths["tgtadm"], control, host, port, iqn, lun_path, portals=[(host, port)])
    try:
        deadline = time.monotonic() + timeout
        while True:  # the control socket answers once tgtd is ready for tgtadm
            if not process.alive():
                raise PeerFailed(f"tgtd exited with status {process.proc.returncode}:\n{process.log_tail()}")
            try:
                tgtd.admin("--mode", "sys", "--op", "show")
                break
            except PeerFailed:
                if time.monotonic() > deadline:
                    raise PeerFailed(f"tgtd control port {control} not answering:\n{process.log_tail()}") from None
                time.sleep(0.1)
        tgtd.admin("--mode", "target", "--op", "new", "--tid", "1", "--targetname", iqn)
        tgtd.admin("--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", str(TGTD_LUN),
                   "--backing-store", lun_path)
        if lun_params:
            tgtd.admin("--mode", "logicalunit", "--op", "update", "--tid", "1", "--lun", str(TGTD_LUN),
                       "--params", ",".join(f"{k}={v}" for k, v in lun_params.items()))
        for _ in range(1, portals):
            extra = free_port(host)
            tgtd.admin("--mode", "portal", "--op", "new", "--param", f"portal={host}:{extra}")
            tgtd.portals.append((host, extra))
        tgtd.admin("--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "ALL")
        for name, value in (params or {}).items():
            tgtd.admin("--mode", "target", "--op", "update", "--tid", "1", "--name", name, "--value", value)
        if chap:
            parts = chap.split(":")
            if len(parts) not in (2, 4) or not all(parts):
                raise ValueError("chap must be USER:SECRET or USER:SECRET:MUTUALUSER:MUTUALSECRET")
            tgtd.add_chap(parts[0], parts[1])
            if len(parts) == 4:
                tgtd.add_chap(parts[2], parts[3], outgoing=True)
        for listen_host, listen_port in tgtd.portals:
            if not wait_listening(listen_host, listen_port, timeout):
                raise PeerFailed(f"tgtd is not listening on {listen_host}:{listen_port}:\n{process.log_tail()}")
    except BaseException:
        tgtd.stop()
        raise
    return tgtd


_VERSION = re.compile(r"version\s+(\S+)")


def tgtd_version() -> str:
    """tgtd's version string (e.g. 1.0.85), or "unknown"."""
    try:
        text = run_checked([require("tgtd")["tgtd"], "-V"], timeout=10)
    except PeerFailed:
        return "unknown"
    match = _VERSION.search(text)
    return match.group(1) if match else text.strip() or "unknown"

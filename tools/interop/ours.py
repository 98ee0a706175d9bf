"""Start our target as a separate process: ``datamover target serve`` (what a user runs).

The target is given port 0 and reports the port it bound in its "serving ... on HOST:PORT"
line, so there is no race with other processes for a free port.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tools.interop.process import PeerProcess

REPO = Path(__file__).resolve().parents[2]
DEFAULT_IQN = "iqn.2026-11.org.datamover.interop:disk"
_SERVING = re.compile(r"serving .* on (?P<host>[0-9.]+):(?P<port>\d+)(?P<more>(?:, [0-9.]+:\d+)*)")
_PORTAL = re.compile(r"(?P<host>[0-9.]+):(?P<port>\d+)")


def datamover_argv() -> list[str]:
    """How to run the ``datamover`` CLI: the venv's entry point, else ``python -m``."""
    entry = REPO / ".venv" / "bin" / "datamover"
    if entry.exists():
        return [str(entry)]
    return [sys.executable, "-m", "datamover.cli"]


@dataclass(slots=True)
class OurTarget:
    """A running ``datamover target serve``; LUN 0 is the file LUN."""

    process: PeerProcess
    host: str
    port: int
    iqn: str
    lun_path: str
    lun: int = 0
    #: every portal it serves, the first being (host, port)
    portals: list[tuple[str, int]] = field(default_factory=list)

    def url(self, user: str | None = None, secret: str | None = None, *, portal: int = 0) -> str:
        """The iSCSI URL of the LUN through portal number ``portal`` (0 = the first)."""
        from tools.interop.libiscsi import iscsi_url

        host, port = self.portals[portal] if self.portals else (self.host, self.port)
        return iscsi_url(host, port, self.iqn, self.lun, user=user, secret=secret)

    @property
    def portal(self) -> str:
        return f"{self.host}:{self.port}"

    def stop(self) -> int | None:
        return self.process.stop()

    def __enter__(self) -> OurTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _toml_value(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def start_our_target(lun_path: str | os.PathLike[str], size: int, port: int = 0, transport: str = "tcp", *,
                     chap: str | None = None, iqn: str = DEFAULT_IQN, keys: dict[str, str] | None = None,
                     host: str = "127.0.0.1", log_dir: str | os.PathLike[str] | None = None,
                     extra_args: list[str] | None = None, timeout: float = 30.0,
                     debug: bool = False, lun_options: list[str] | None = None,
                     portals: int = 1) -> OurTarget:
    """Spawn ``datamover target serve`` with one file LUN of ``size`` bytes; wait until it serves.

    ``chap`` is ``USER:SECRET[:MUTUALUSER:MUTUALSECRET]``; ``keys`` are RFC 7143 keys the
    target prefers (e.g. ``{"HeaderDigest": "CRC32C,None"}``), passed in a TOML [keys] table.
    ``lun_options`` are appended to the ``--lun`` value (``ro``, ``removable``,
    ``phys=4096``); a read-only LUN's image is created (sparse, ``size`` bytes) first, as
    the target opens it without creating it. ``portals`` > 1 listens on that many ports
    (each port 0, so each is free), e.g. for a multipath URL.
    Raises PeerFailed (with the log tail) if it exits or does not print its serving line.
    """
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="dm-target-"))
    argv = datamover_argv()
    if debug:
        argv.append("--debug")
    options = list(lun_options or [])
    if any(opt in ("ro", "read_only") or opt.startswith(("ro=", "read_only=")) for opt in options):
        with open(lun_path, "ab") as handle:  # a read-only LUN is never created by the target
            if os.fstat(handle.fileno()).st_size < size:
                handle.truncate(size)
    argv += ["target", "serve", "--transport", transport, "--iqn", iqn,
             "--lun", ",".join([f"{os.fspath(lun_path)}", f"size={size}", *options])]
    for index in range(max(1, portals)):
        argv += ["--portal", f"{host}:{port if index == 0 else 0}"]
    if chap:
        argv += ["--chap", chap]
    if keys:
        config = log_dir / "target.toml"
        config.write_text("[keys]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in keys.items()))
        argv += ["-c", str(config)]
    argv += list(extra_args or [])
    process = PeerProcess(argv, log_dir / "datamover-target.log", cwd=str(REPO))
    match = process.wait_for_line(_SERVING, timeout)
    served = [(match["host"], int(match["port"]))]
    served += [(m["host"], int(m["port"])) for m in _PORTAL.finditer(match["more"] or "")]
    return OurTarget(process, match["host"], int(match["port"]), iqn, os.fspath(lun_path), portals=served)

"""Start our target as a separate process: ``datamover target serve`` (what a user runs).

The target is given port 0 and reports the port it bound in its "serving ... on HOST:PORT"
line, so there is no race with other processes for a free port.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tools.interop.process import PeerProcess

REPO = Path(__file__).resolve().parents[2]
DEFAULT_IQN = "iqn.2026-11.org.datamover.interop:disk"
_SERVING = re.compile(r"serving .* on (?P<host>[0-9.]+):(?P<port>\d+)")


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

    def url(self, user: str | None = None, secret: str | None = None) -> str:
        from tools.interop.libiscsi import iscsi_url

        return iscsi_url(self.host, self.port, self.iqn, self.lun, user=user, secret=secret)

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
                     debug: bool = False) -> OurTarget:
    """Spawn ``datamover target serve`` with one file LUN of ``size`` bytes; wait until it serves.

    ``chap`` is ``USER:SECRET[:MUTUALUSER:MUTUALSECRET]``; ``keys`` are RFC 7143 keys the
    target prefers (e.g. ``{"HeaderDigest": "CRC32C,None"}``), passed in a TOML [keys] table.
    Raises PeerFailed (with the log tail) if it exits or does not print its serving line.
    """
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="dm-target-"))
    argv = datamover_argv()
    if debug:
        argv.append("--debug")
    argv += ["target", "serve", "--transport", transport, "--portal", f"{host}:{port}", "--iqn", iqn,
             "--lun", f"{os.fspath(lun_path)},size={size}"]
    if chap:
        argv += ["--chap", chap]
    if keys:
        config = log_dir / "target.toml"
        config.write_text("[keys]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in keys.items()))
        argv += ["-c", str(config)]
    argv += list(extra_args or [])
    process = PeerProcess(argv, log_dir / "datamover-target.log", cwd=str(REPO))
    match = process.wait_for_line(_SERVING, timeout)
    return OurTarget(process, match["host"], int(match["port"]), iqn, os.fspath(lun_path))

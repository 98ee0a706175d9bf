"""A started peer process with its log file, stopped politely then firmly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path


class PeerFailed(RuntimeError):
    """A peer process did not start, or a setup command failed; the message has its log tail."""


class PeerProcess:
    """A child process whose stdout and stderr go to ``log_path``.

    Used as a context manager: leaving the block stops the process (SIGTERM, then SIGKILL
    after ``grace`` seconds) so a failing test never leaves a target behind.
    """

    def __init__(self, argv: list[str], log_path: Path, *, env: dict[str, str] | None = None,
                 cwd: str | None = None) -> None:
        self.argv = argv
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=cwd, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def wait_for_line(self, pattern: re.Pattern[str], timeout: float) -> re.Match[str]:
        """Poll the log until ``pattern`` matches; PeerFailed if the process exits first."""
        deadline = time.monotonic() + timeout
        while True:
            match = pattern.search(self.log_text())
            if match:
                return match
            if not self.alive():
                raise PeerFailed(f"{os.path.basename(self.argv[0])} exited with status {self.proc.returncode} "
                                 f"before it was ready:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise PeerFailed(f"{os.path.basename(self.argv[0])} not ready after {timeout:.0f} s:\n{self.log_tail()}")
            time.sleep(0.05)

    def stop(self, grace: float = 5.0, sig: int = signal.SIGTERM) -> int | None:
        """Signal the process (only ours: by its pid), wait, then SIGKILL it; returns its status."""
        if self.alive():
            try:
                self.proc.send_signal(sig)
                self.proc.wait(grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(grace)
            except ProcessLookupError:
                pass
        if not self._log.closed:
            self._log.close()
        return self.proc.returncode

    def __enter__(self) -> PeerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_checked(argv: list[str], timeout: float = 30.0) -> str:
    """Run a setup command (tgtadm...), returning stdout; PeerFailed with its output on failure."""
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise PeerFailed(f"{' '.join(argv)}: no answer after {timeout:.0f} s") from None
    if done.returncode != 0:
        raise PeerFailed(f"{' '.join(argv)} failed with status {done.returncode}: "
                         f"{(done.stderr or done.stdout).strip()}")
    return done.stdout

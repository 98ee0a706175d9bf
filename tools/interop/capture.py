"""Capture loopback iSCSI traffic with tshark and check that Wireshark decodes it cleanly.

The port is not 3260, so every read of the capture passes ``-d tcp.port==PORT,iscsi``.
Wireshark learns from the Login text whether HeaderDigest/DataDigest are CRC32C, so a
capture must include the login for digests to be decoded.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tools.interop.peers import PeerMissing, require
from tools.interop.process import PeerFailed, PeerProcess


@dataclass(slots=True)
class Capture:
    """A running ``tshark -i lo -f 'tcp port PORT' -w FILE``."""

    process: PeerProcess
    path: Path
    port: int

    def stop(self) -> Path:
        """Stop capturing (SIGINT lets tshark flush the file); returns the capture path."""
        import signal

        time.sleep(0.3)  # let the last segments reach the capture
        self.process.stop(grace=10, sig=signal.SIGINT)
        return self.path

    def __enter__(self) -> Capture:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_capture(port: int, path: str | os.PathLike[str], interface: str = "lo", timeout: float = 15.0,
                  buffer_mib: int = 256) -> Capture:
    """Start tshark on ``interface`` with a capture filter on ``port``; wait until it captures.

    PeerMissing if tshark is absent or cannot open the interface (no permission).
    """
    tshark = require("tshark")["tshark"]
    path = Path(path)
    log = path.with_suffix(".tshark.log")
    # -B: a large kernel buffer, or 64 KiB loopback segments are dropped on a 2-core machine
    # ("previous segment not captured") and the decode of the PDUs that spanned them is lost
    process = PeerProcess([tshark, "-i", interface, "-B", str(buffer_mib), "-f", f"tcp port {port}",
                           "-w", str(path), "-q"], log)
    try:
        process.wait_for_line(re.compile(r"Capture started|Capturing on"), timeout)
    except PeerFailed as exc:
        text = str(exc)
        if "ermission" in text or "don't have permission" in text:
            raise PeerMissing(f"tshark cannot capture on {interface}: {text.splitlines()[-1]}") from None
        raise
    # the message comes before the filter is attached and the loop runs: without this pause
    # the first capture of a run was seen to hold 0 packets
    time.sleep(1.0)
    return Capture(process, path, port)


def dropped_segments(path: str | os.PathLike[str], port: int) -> int:
    """Segments the capture missed (tcp.analysis.lost_segment): a capture artifact, not a
    protocol error, but it makes the decode of the PDUs around it incomplete."""
    tshark = require("tshark")["tshark"]
    done = subprocess.run([tshark, "-r", os.fspath(path), *_decode_args(port), "-Y", "tcp.analysis.lost_segment"],
                          capture_output=True, text=True, timeout=120)
    return len([line for line in done.stdout.splitlines() if line.strip()])


@dataclass(slots=True)
class ExpertReport:
    """``tshark -q -z expert``: entries by severity, plus the malformed-packet count."""

    by_severity: dict[str, list[str]] = field(default_factory=dict)
    malformed: int = 0
    raw: str = ""

    @property
    def errors(self) -> list[str]:
        return self.by_severity.get("Errors", [])

    @property
    def warnings(self) -> list[str]:
        return self.by_severity.get("Warnings", [])


_SECTION = re.compile(r"^(Errors|Warns|Warnings|Notes|Chats|Comments)\s*\((\d+)\)")


def _decode_args(port: int) -> list[str]:
    return ["-d", f"tcp.port=={port},iscsi", "-o", "tcp.desegment_tcp_streams:TRUE",
            "-o", "iscsi.desegment_iscsi_messages:TRUE"]


def expert_info(path: str | os.PathLike[str], port: int) -> ExpertReport:
    """Run ``tshark -r FILE -d tcp.port==PORT,iscsi -q -z expert`` and parse its sections."""
    tshark = require("tshark")["tshark"]
    done = subprocess.run([tshark, "-r", os.fspath(path), *_decode_args(port), "-q", "-z", "expert"],
                          capture_output=True, text=True, timeout=120)
    report = ExpertReport(raw=done.stdout + done.stderr)
    current: str | None = None
    for line in done.stdout.splitlines():
        if match := _SECTION.match(line.strip()):
            current = "Warnings" if match.group(1) == "Warns" else match.group(1)
            report.by_severity.setdefault(current, [])
            continue
        if current and line.strip() and not set(line.strip()) <= set("=-"):
            if line.strip().startswith("Frequency"):
                continue
            report.by_severity[current].append(line.strip())
    malformed = subprocess.run([tshark, "-r", os.fspath(path), *_decode_args(port), "-Y", "_ws.malformed"],
                               capture_output=True, text=True, timeout=120)
    report.malformed = len([line for line in malformed.stdout.splitlines() if line.strip()])
    return report


def iscsi_opcodes(path: str | os.PathLike[str], port: int) -> Counter[str]:
    """How many PDUs of each iSCSI opcode name Wireshark decoded (``-Y iscsi``)."""
    tshark = require("tshark")["tshark"]
    done = subprocess.run([tshark, "-r", os.fspath(path), *_decode_args(port), "-Y", "iscsi",
                           "-T", "fields", "-e", "iscsi.opcode", "-E", "occurrence=a", "-E", "separator=,"],
                          capture_output=True, text=True, timeout=120)
    counts: Counter[str] = Counter()
    for line in done.stdout.splitlines():
        for value in line.split(","):
            if value.strip():
                counts[value.strip()] += 1
    return counts


def digest_fields(path: str | os.PathLike[str], port: int) -> Counter[str]:
    """Counts of decoded header/data digest fields (and their status), to prove digests were
    seen and checked."""
    tshark = require("tshark")["tshark"]
    fields = ["iscsi.headerdigest32", "iscsi.datadigest32"]
    done = subprocess.run([tshark, "-r", os.fspath(path), *_decode_args(port), "-Y", "iscsi",
                           "-T", "fields", *sum((["-e", f] for f in fields), []), "-E", "occurrence=a",
                           "-E", "separator=;"], capture_output=True, text=True, timeout=120)
    counts: Counter[str] = Counter()
    for line in done.stdout.splitlines():
        for name, value in zip(fields, line.split(";")):
            counts[name] += len([v for v in value.split(",") if v.strip()])
    return counts

"""tgtd (the user-space SCSI target framework) with its iSER driver, for scenario 4.

tgtd listens for iSER on every RDMA device through rdma_cm on port 3260; targets made with
``tgtadm --lld iser`` are reached only that way. tgt 1.0.85 cannot move that port: its
``--iser port=N`` parser tests a stale errno after strtol and refuses every value ("invalid
port supplied"), so scenario 4 runs with nothing else on 3260. The iSCSI/TCP driver is
pinned to another port.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.scenarios.support import INITIATOR_IQN, CommandFailed, Daemon, run

TGT_IQN = "iqn.2026-11.org.datamover.lab:tgtd-iser"


@dataclass
class TgtdIser:
    daemon: Daemon
    host: str
    port: int
    iqn: str
    backing: Path
    control: int
    lun: int = 1  # tgtd's LUN 0 is its controller

    def admin(self, *args: str) -> str:
        return run(["tgtadm", "-C", str(self.control), "--lld", "iser", *args]).stdout


@contextmanager
def tgtd_iser(host: str, port: int = 3260, *, control: int = 5261, size: int = 128 << 20,
              tcp_portal: bool = True, initiator_names: tuple[str, ...] = (INITIATOR_IQN,)) -> Iterator[TgtdIser]:
    backing = Path("/var/tmp/tgtd-iser.img")
    with backing.open("wb") as fh:
        fh.truncate(size)
    if port != 3260:
        raise ValueError("tgt 1.0.85 listens for iSER on 3260 only (its port= option is broken)")
    # the default RDMA buffer pool is 512 MiB; the guest has 2 GiB
    argv = ["tgtd", "-f", "-C", str(control), "--iser", "pool_sz_mb=128"]
    if tcp_portal:
        argv[4:4] = ["--iscsi", f"portal={host}:3263"]
    d = Daemon("tgtd", argv)
    t = TgtdIser(d, host, port, TGT_IQN, backing, control)
    try:
        deadline = time.monotonic() + 60
        while True:  # the control socket answers once tgtd is ready for tgtadm
            try:
                run(["tgtadm", "-C", str(control), "--mode", "sys", "--op", "show"])
                break
            except CommandFailed:
                if time.monotonic() > deadline or d.proc.poll() is not None:
                    raise
                time.sleep(1)
        t.admin("--mode", "target", "--op", "new", "--tid", "1", "--targetname", TGT_IQN)
        t.admin("--mode", "logicalunit", "--op", "new", "--tid", "1", "--lun", "1", "--backing-store", str(backing))
        t.admin("--mode", "target", "--op", "bind", "--tid", "1", "--initiator-address", "ALL")
        # tgt 1.0.85's iSER login (iser_text.c) needs an initiator-name ACL as well as an
        # address ACL, where its TCP login needs either (interop lab finding 10)
        for name in initiator_names:
            t.admin("--mode", "target", "--op", "bind", "--tid", "1", "--initiator-name", name)
        t.admin("--mode", "target", "--op", "show")
        yield t
    finally:
        d.stop()

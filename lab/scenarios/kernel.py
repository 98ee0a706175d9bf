"""The Linux kernel's own iSCSI peers, driven from a scenario: open-iscsi and LIO (targetcli).

Both are configured from scratch in the guest (its root is a tmpfs overlay of the host's, so
/etc/iscsi and targetcli's state are the guest's own) and torn down at the end, so scenarios
can follow each other in one boot.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from lab.scenarios.support import CommandFailed, Daemon, OurTarget, modprobe, run, scenario_dir, sha256_of

KERNEL_INITIATOR_IQN = "iqn.2026-11.org.datamover.lab:kernel-initiator"
LIO_IQN = "iqn.2026-11.org.datamover.lab:lio"
_DISK = re.compile(r"Attached scsi disk (\w+)\s+State: running")


# ------------------------------------------------------------------------ open-iscsi
@dataclass
class KernelInitiator:
    """iscsid in the foreground (its log in the scenario directory) and iscsiadm calls."""

    iscsid: Daemon

    def node(self, iqn: str, portal: str, iface: str, *op: str, check: bool = True, timeout: float = 120.0) -> str:
        return run(["iscsiadm", "-m", "node", "-T", iqn, "-p", portal, "-I", iface, *op],
                   timeout=timeout, check=check).stdout

    def add_node(self, iqn: str, portal: str, iface: str) -> None:
        """A node record made by hand: discovery is a separate check, login must not hinge on it."""
        run(["iscsiadm", "-m", "node", "-o", "new", "-T", iqn, "-p", portal, "-I", iface])
        for key, value in (("node.session.initial_login_retry_max", "1"),
                           ("node.session.timeo.replacement_timeout", "20"),
                           ("node.conn[0].timeo.login_timeout", "30")):
            self.node(iqn, portal, iface, "-o", "update", "-n", key, "-v", value)

    def discover(self, portal: str, iface: str) -> str:
        return run(["iscsiadm", "-m", "discovery", "-t", "sendtargets", "-p", portal, "-I", iface],
                   timeout=180).stdout

    def login(self, iqn: str, portal: str, iface: str) -> None:
        self.node(iqn, portal, iface, "--login", timeout=240)

    def logout(self, iqn: str, portal: str, iface: str) -> None:
        self.node(iqn, portal, iface, "--logout", timeout=120)

    def disk(self, timeout: float = 120.0) -> Path:
        """The block device of the (only) session once the SCSI scan attached it."""
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = run(["iscsiadm", "-m", "session", "-P", "3"], check=False).stdout
            m = _DISK.search(text)
            if m and Path("/dev", m[1]).exists():
                return Path("/dev", m[1])
            time.sleep(2)
        raise CommandFailed(f"no disk attached within {timeout}s:\n{text[-3000:]}")

    def sessions(self) -> str:
        return run(["iscsiadm", "-m", "session"], check=False).stdout


def _guest_iscsid_conf() -> None:
    """The guest's iscsid.conf: no systemd start-up, short retries (failures surface in seconds)."""
    conf = Path("/etc/iscsi/iscsid.conf")
    text = conf.read_text() if conf.exists() else ""
    text = re.sub(r"(?m)^iscsid\.startup\s*=.*$", "iscsid.startup = /bin/true", text)
    text = re.sub(r"(?m)^node\.session\.initial_login_retry_max\s*=.*$", "node.session.initial_login_retry_max = 1", text)
    conf.write_text(text)
    Path("/etc/iscsi/initiatorname.iscsi").write_text(f"InitiatorName={KERNEL_INITIATOR_IQN}\n")


@contextmanager
def kernel_initiator(*transport_modules: str) -> Iterator[KernelInitiator]:
    """Load ``transport_modules`` (iscsi_tcp, ib_iser), start iscsid; log out and stop it after."""
    modprobe("scsi_transport_iscsi", "sd_mod", *transport_modules)
    _guest_iscsid_conf()
    for d in ("/etc/iscsi/nodes", "/etc/iscsi/send_targets", "/run/lock/iscsi"):
        Path(d).mkdir(parents=True, exist_ok=True)
    iscsid = Daemon("iscsid", ["iscsid", "-f", "-d", "1"])
    time.sleep(2)
    try:
        yield KernelInitiator(iscsid)
    finally:
        run(["iscsiadm", "-m", "node", "--logoutall=all"], check=False, timeout=120)
        run(["iscsiadm", "-m", "node", "-o", "delete"], check=False)
        iscsid.stop()


def block_write_read(dev: Path, size: int, name: str) -> tuple[str, str]:
    """dd ``size`` random bytes to ``dev`` (O_DIRECT, fsync), read them back; two SHA-256s."""
    src = Path("/var/tmp") / f"{name}-src.bin"
    dst = Path("/var/tmp") / f"{name}-dst.bin"
    run(["dd", "if=/dev/urandom", f"of={src}", "bs=1M", f"count={size >> 20}", "status=none"], timeout=120)
    run(["dd", f"if={src}", f"of={dev}", "bs=1M", f"count={size >> 20}", "oflag=direct", "conv=fsync"], timeout=600)
    run(["blockdev", "--flushbufs", str(dev)], check=False)
    run(["dd", f"if={dev}", f"of={dst}", "bs=1M", f"count={size >> 20}", "iflag=direct"], timeout=600)
    wrote, read = sha256_of(src), sha256_of(dst)
    (scenario_dir() / f"{name}-checksums.txt").write_text(f"written {wrote}\nread    {read}\n")
    return wrote, read


def login_write_read_logout(initiator: KernelInitiator, target: OurTarget, iface: str, size: int,
                            name: str) -> None:
    """The kernel initiator against our target: log in through ``iface``, dd ``size`` bytes
    to the disk that appears and back, log out; the data must also be in our LUN file."""
    portal = f"{target.host}:{target.port}"
    initiator.add_node(target.iqn, portal, iface)
    initiator.login(target.iqn, portal, iface)
    try:
        wrote, read = block_write_read(initiator.disk(), size, name)
        assert wrote == read, "the kernel read back other bytes than it wrote"
    finally:
        initiator.logout(target.iqn, portal, iface)
    assert target.iqn not in initiator.sessions()
    assert sha256_of(target.lun_path, size) == wrote, "our LUN file does not hold what the kernel wrote"


# ------------------------------------------------------------------------ LIO
@dataclass
class Lio:
    iqn: str
    host: str
    port: int
    backing: Path


def targetcli(*lines: str, timeout: float = 300.0) -> str:
    """Run targetcli once with ``lines`` on stdin (one Python start-up, not one per command)."""
    return run(["targetcli"], input="\n".join([*lines, "exit"]) + "\n", timeout=timeout,
               env={"HOME": "/root", "TERM": "dumb"}).stdout


@contextmanager
def lio_target(host: str, port: int, *, iser: bool, size: int = 128 << 20, name: str = "lio") -> Iterator[Lio]:
    """A LIO iSCSI target with one fileio LUN, demo-mode ACLs, one portal (iSER enabled if asked)."""
    modprobe("configfs", "target_core_mod", "target_core_file", "iscsi_target_mod", *(["ib_isert"] if iser else []))
    if not Path("/sys/kernel/config/target").exists():
        run(["mount", "-t", "configfs", "configfs", "/sys/kernel/config"], check=False)
    backing = Path("/var/tmp") / f"{name}-backing.img"
    backing.unlink(missing_ok=True)
    tpg = f"/iscsi/{LIO_IQN}/tpg1"
    lines = [
        "set global auto_save_on_exit=false",
        "set global auto_add_default_portal=false",
        f"/backstores/fileio create name={name} file_or_dev={backing} size={size} write_back=false",
        f"/iscsi create {LIO_IQN}",
        f"{tpg}/portals create {host} {port}",
        f"{tpg}/luns create /backstores/fileio/{name}",
        f"{tpg} set attribute authentication=0 demo_mode_write_protect=0 generate_node_acls=1 cache_dynamic_acls=1",
    ]
    if iser:
        lines.append(f"{tpg}/portals/{host}:{port} enable_iser boolean=true")
    lines.append("ls")
    out = targetcli(*lines)
    (scenario_dir() / f"{name}-targetcli.txt").write_text(out)
    try:
        yield Lio(LIO_IQN, host, port, backing)
    finally:
        targetcli("clearconfig confirm=True")

"""Boot the guest under QEMU TCG and wait for it to power off.

No KVM (it does not work on the machines this was built on: ``-cpu host`` aborts, other
models hang), no NIC (``-nic none``; rxe traffic to the guest's own address takes rxe's
loopback path), two 9p shares: the host's / read-only and the run directory writable.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from lab.host import Kernel, LabSetupError


@dataclass(frozen=True, slots=True)
class VmConfig:
    memory_mb: int = 2048
    cpus: int = 2
    cpu_model: str = "qemu64"
    timeout_s: int = 1800


@dataclass(frozen=True, slots=True)
class VmResult:
    returncode: int
    seconds: float
    timed_out: bool
    console: Path


def qemu_argv(kernel: Kernel, initramfs: Path, run_dir: Path, repo: Path, cfg: VmConfig) -> list[str]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        raise LabSetupError("qemu-system-x86_64 not found (Debian package qemu-system-x86)")
    append = (f"console=ttyS0 panic=-1 loglevel=4 lab.run={run_dir} lab.kroot={kernel.root} "
              f"lab.kver={kernel.version} lab.repo={repo}")
    return [
        qemu, "-accel", "tcg,thread=multi", "-cpu", cfg.cpu_model, "-m", str(cfg.memory_mb),
        "-smp", str(cfg.cpus), "-nographic", "-no-reboot", "-nic", "none",
        "-kernel", str(kernel.vmlinuz), "-initrd", str(initramfs), "-append", append,
        "-fsdev", "local,id=root,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=root,mount_tag=hostroot",
        "-fsdev", f"local,id=out,path={run_dir},security_model=none",
        "-device", "virtio-9p-pci,fsdev=out,mount_tag=out",
    ]


def boot(kernel: Kernel, initramfs: Path, run_dir: Path, repo: Path, cfg: VmConfig) -> VmResult:
    """Run the guest to completion; its serial console goes to RUN/console.log."""
    console = run_dir / "console.log"
    argv = qemu_argv(kernel, initramfs, run_dir, repo, cfg)
    (run_dir / "qemu.argv").write_text(" ".join(argv) + "\n")
    start = time.monotonic()
    with console.open("wb") as out:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            rc = proc.wait(timeout=cfg.timeout_s)
            timed_out = False
        except subprocess.TimeoutExpired:
            proc.kill()
            rc = proc.wait()
            timed_out = True
    return VmResult(rc, time.monotonic() - start, timed_out, console)

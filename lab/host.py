"""Host preparation: Debian packages, the guest kernel, pyverbs in the project venv.

Everything comes from Debian with its ordinary client (apt-get); nothing needs KVM, a NIC
or privileges beyond root. The kernel is Debian's own ``linux-image-amd64`` flavour,
unpacked (not installed) into the lab's cache so that the host's kernel is untouched.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

#: what the lab needs on the host (issue 7); peers run in the guest from the host's root
PACKAGES = (
    "qemu-system-x86", "busybox-static", "kmod", "python3-pyverbs", "rdma-core", "ibverbs-utils",
    "iproute2", "dbus", "targetcli-fb", "open-iscsi", "tgt", "libiscsi-bin",
)
#: binaries the lab itself calls on the host
HOST_BINARIES = ("qemu-system-x86_64", "busybox", "depmod", "modinfo", "dpkg-deb")


class LabSetupError(RuntimeError):
    """The host cannot be prepared (not root, apt failure, no kernel package)."""


@dataclass(frozen=True, slots=True)
class Kernel:
    version: str  # e.g. 6.1.0-56-amd64
    root: Path  # the unpacked package (boot/, lib/modules/VERSION)

    @property
    def vmlinuz(self) -> Path:
        return self.root / "boot" / f"vmlinuz-{self.version}"

    @property
    def modules(self) -> Path:
        return self.root / "lib" / "modules" / self.version


def _run(argv: list[str], log: Path | None = None, **kw: object) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(argv, text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    if log is not None:
        with log.open("a") as fh:
            fh.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}rc={proc.returncode}\n")
    return proc


def missing_packages() -> list[str]:
    out = []
    for pkg in PACKAGES:
        proc = subprocess.run(["dpkg-query", "-W", "-f=${Status}", pkg], capture_output=True, text=True)
        if "install ok installed" not in proc.stdout:
            out.append(pkg)
    return out


def install_packages(log: Path) -> list[str]:
    """apt-get install what is missing; returns what was installed."""
    missing = missing_packages()
    if not missing:
        return []
    if os.geteuid() != 0:
        raise LabSetupError(f"need root to install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-qq"], log, env=env)
    proc = _run(["apt-get", "install", "-y", "-qq", "--no-install-recommends",
                 "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold", *missing],
                log, env=env)
    if proc.returncode != 0:
        raise LabSetupError(f"apt-get install {' '.join(missing)} failed (see {log})")
    return missing


def ensure_pyverbs(repo: Path, log: Path) -> None:
    """Debian's pyverbs linked into the venv (scripts/install-pyverbs.sh does the work)."""
    script = repo / "scripts" / "install-pyverbs.sh"
    proc = _run(["bash", str(script), str(repo / ".venv")], log)
    if proc.returncode != 0:
        raise LabSetupError(f"pyverbs is not importable from the venv (see {log})")


def kernel_package() -> str:
    """The versioned image package behind Debian's ``linux-image-amd64``."""
    proc = subprocess.run(["apt-cache", "depends", "linux-image-amd64"], capture_output=True, text=True)
    names = re.findall(r"Depends:\s*(linux-image-[0-9][^\s]*-amd64)", proc.stdout)
    if not names:
        raise LabSetupError("apt-cache knows no linux-image-amd64 dependency; run apt-get update")
    return names[0]


def ensure_kernel(cache: Path, log: Path, package: str | None = None) -> Kernel:
    """Download (apt-get download) and unpack the kernel package once; depmod its tree."""
    cache.mkdir(parents=True, exist_ok=True)
    package = package or kernel_package()
    version = package.removeprefix("linux-image-")
    kernel = Kernel(version, cache / f"kroot-{version}")
    if kernel.vmlinuz.exists() and (kernel.modules / "modules.dep").exists():
        return kernel
    debs = sorted(cache.glob(f"{package}_*.deb"))
    if not debs:
        proc = _run(["apt-get", "download", package], log, cwd=str(cache))
        debs = sorted(cache.glob(f"{package}_*.deb"))
        if proc.returncode != 0 or not debs:
            raise LabSetupError(f"apt-get download {package} failed (see {log})")
    tmp = kernel.root.with_name(kernel.root.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    if _run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], log).returncode != 0:
        raise LabSetupError(f"dpkg-deb -x {debs[-1]} failed")
    if _run(["depmod", "-b", str(tmp), version], log).returncode != 0:
        raise LabSetupError(f"depmod for {version} failed")
    shutil.rmtree(kernel.root, ignore_errors=True)
    tmp.rename(kernel.root)
    return kernel


def check_binaries() -> list[str]:
    return [b for b in HOST_BINARIES if shutil.which(b) is None and not Path("/sbin", b).exists()]

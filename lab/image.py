"""The guest's initramfs: busybox, the modules that reach the 9p root, and lab/guest/init.sh.

The image holds no run-specific path (those come on the kernel command line), so it is
built once per kernel and reused; it is rebuilt when init.sh changes.
"""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
import tempfile
from pathlib import Path

from lab.host import Kernel, LabSetupError

#: what /init needs before the host's root (and the kernel's full module tree) is reachable
BOOT_MODULES = ("virtio", "virtio_ring", "virtio_pci_legacy_dev", "virtio_pci_modern_dev", "virtio_pci",
                "netfs", "fscache", "9pnet", "9pnet_virtio", "9p", "overlay")
INIT = Path(__file__).with_name("guest") / "init.sh"


def _busybox() -> Path:
    for candidate in ("/bin/busybox", "/usr/bin/busybox"):
        if Path(candidate).exists():
            return Path(candidate)
    raise LabSetupError("busybox not found (Debian package busybox-static)")


def _fingerprint(kernel: Kernel) -> str:
    h = hashlib.sha256(INIT.read_bytes())
    h.update(kernel.version.encode())
    h.update(" ".join(BOOT_MODULES).encode())
    return h.hexdigest()[:16]


def build_initramfs(kernel: Kernel, cache: Path) -> Path:
    """Return the path of an initramfs for ``kernel``, building it if needed."""
    image = cache / f"initramfs-{kernel.version}-{_fingerprint(kernel)}.cpio.gz"
    if image.exists():
        return image
    busybox = _busybox()
    with tempfile.TemporaryDirectory(prefix="lab-initrd-", dir=cache) as tmp:
        root = Path(tmp) / "root"
        for d in ("bin", "dev", "proc", "sys", "newroot", f"lib/modules/{kernel.version}"):
            (root / d).mkdir(parents=True, exist_ok=True)
        shutil.copy2(busybox, root / "bin" / "busybox")
        shutil.copy2(INIT, root / "init")
        (root / "init").chmod(0o755)
        for name in BOOT_MODULES:
            proc = subprocess.run(["modinfo", "-b", str(kernel.root), "-k", kernel.version, "-n", name],
                                  capture_output=True, text=True)
            src = Path(proc.stdout.strip())
            if proc.returncode != 0 or not src.is_file():
                raise LabSetupError(f"module {name} not in {kernel.root}: {proc.stderr.strip()}")
            dst = root / src.relative_to(kernel.root)
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
        for index in kernel.modules.glob("modules.*"):
            shutil.copy2(index, root / "lib" / "modules" / kernel.version / index.name)
        files = subprocess.run(["find", "."], cwd=root, capture_output=True, text=True, check=True).stdout
        cpio = subprocess.run([str(busybox), "cpio", "-o", "-H", "newc"], cwd=root, input=files.encode(),
                              capture_output=True)
        if cpio.returncode != 0:
            raise LabSetupError(f"busybox cpio failed: {cpio.stderr.decode(errors='replace')}")
        part = image.with_suffix(".part")
        with gzip.open(part, "wb", compresslevel=6) as fh:
            fh.write(cpio.stdout)
        part.rename(image)
    return image

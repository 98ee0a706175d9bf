"""Where the peer binaries are, and a typed error when one is missing.

The interop tests skip (never fail) when a peer cannot be installed; this module gives them
one message that says which binary and which Debian package, and how to install it.
"""

from __future__ import annotations

import os
import shutil

#: binary -> Debian package that ships it (Debian 12)
PACKAGE_OF: dict[str, str] = {
    "iscsi-ls": "libiscsi-bin",
    "iscsi-inq": "libiscsi-bin",
    "iscsi-readcapacity16": "libiscsi-bin",
    "iscsi-perf": "libiscsi-bin",
    "iscsi-test-cu": "libiscsi-bin",
    "tgtd": "tgt",
    "tgtadm": "tgt",
    "tshark": "tshark",
}

# sbin directories are not on every user's PATH, but tgtd lives there
_EXTRA_DIRS = ("/usr/sbin", "/sbin", "/usr/local/sbin")


class PeerMissing(RuntimeError):
    """A peer program is not installed (or cannot run here); the message says how to fix it."""


def find_binary(name: str) -> str | None:
    """Absolute path of ``name``, looking in PATH and the sbin directories."""
    found = shutil.which(name)
    if found:
        return found
    for directory in _EXTRA_DIRS:
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def require(*names: str) -> dict[str, str]:
    """Paths of all ``names``; raises PeerMissing listing every absent one."""
    paths: dict[str, str] = {}
    missing: list[str] = []
    for name in names:
        path = find_binary(name)
        if path is None:
            missing.append(f"{name} (Debian package {PACKAGE_OF.get(name, '?')})")
        else:
            paths[name] = path
    if missing:
        raise PeerMissing(f"not installed: {', '.join(missing)}; run scripts/install-peers.sh")
    return paths


def require_root(what: str) -> None:
    """Raise PeerMissing unless running as root (tgtd and live captures need it here)."""
    if os.geteuid() != 0:
        raise PeerMissing(f"{what} needs root (tgtd opens its control socket under /var/run/tgtd)")

"""Free ports and readiness polling for the peers' listening sockets."""

from __future__ import annotations

import socket
import time


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (never 3260, which a system tgtd may own).

    There is a window between this call and the peer's bind; callers that can pass port 0
    to the peer and read the bound port back (our target) should do that instead.
    """
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = sock.getsockname()[1]
        if port != 3260:
            return int(port)


def wait_listening(host: str, port: int, timeout: float) -> bool:
    """Poll until something accepts TCP connections on host:port; False after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False

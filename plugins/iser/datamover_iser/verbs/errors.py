"""Typed errors of the verbs layer.

Synchronous verbs failures (a post on a QP in the wrong state, a bad argument) raise
``VerbsError`` carrying the errno that libibverbs would return, so callers can treat both
backends alike. Asynchronous failures are never exceptions: they are work completions with
an error status, as on real hardware.
"""

from __future__ import annotations

import errno as _errno


class VerbsError(OSError):
    """A verbs call failed synchronously; ``errno`` is what libibverbs would have returned."""

    def __init__(self, err: int, message: str) -> None:
        super().__init__(err, message)


class ProviderUnavailable(VerbsError):
    """The requested provider cannot run here (no pyverbs, no RDMA device, ...)."""

    def __init__(self, message: str) -> None:
        super().__init__(_errno.ENODEV, message)


class CMError(VerbsError):
    """A connection-manager operation failed (bad state, bad private data, ...)."""


class ConnectionRejected(CMError):
    """The passive side rejected the connection (RDMA_CM_EVENT_REJECTED).

    ``private_data`` is what the rejecting side attached (may be empty); ``reason`` is
    human-readable (``"no listener"``, ``"rejected by peer"``).
    """

    def __init__(self, reason: str, private_data: bytes = b"") -> None:
        super().__init__(_errno.ECONNREFUSED, f"connection rejected: {reason}")
        self.reason = reason
        self.private_data = private_data


class ConnectionFailed(CMError):
    """The connection could not be made or was lost (UNREACHABLE / CONNECT_ERROR / timeout)."""

    def __init__(self, message: str, err: int = _errno.ETIMEDOUT) -> None:
        super().__init__(err, message)


class IwarpOrderError(VerbsError):
    """iWARP (MPA) forbids the passive side to send before the active side has sent."""

    def __init__(self) -> None:
        super().__init__(
            _errno.EAGAIN,
            "iWARP: the passive side may not send before the first message from the active side",
        )

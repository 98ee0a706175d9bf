"""Errors of the session layer."""

from __future__ import annotations


class LoginError(Exception):
    """A login ended with a non-success status (class, detail) or could not proceed.

    ``status`` is the 16-bit Status-Class << 8 | Status-Detail of RFC 7143 11.13.5.
    ``redirect`` holds a TargetAddress for class 1 redirections.
    """

    def __init__(self, status: int, message: str, redirect: str | None = None) -> None:
        super().__init__(f"login failed ({status >> 8:#04x}/{status & 0xFF:#04x}): {message}")
        self.status = status
        self.redirect = redirect
        self.reason = message


class SessionClosed(ConnectionError):
    """The session has no usable connection (terminated, logged out, or failed)."""


class TaskAborted(Exception):
    """The task was aborted by a task management function or a session loss."""


class CommandFailed(Exception):
    """A SCSI command ended with a status other than GOOD (``status``, ``sense`` set)."""

    def __init__(self, status: int, sense: bytes = b"", message: str = "") -> None:
        self.status = status
        self.sense = sense
        detail = message or f"SCSI status {status:#04x}"
        if sense and len(sense) >= 14:
            key = sense[2] & 0x0F if sense[0] & 0x7F in (0x70, 0x71) else sense[1] & 0x0F
            asc, ascq = (sense[12], sense[13]) if sense[0] & 0x7F in (0x70, 0x71) else (sense[2], sense[3])
            detail += f", sense key {key:#x} ASC/ASCQ {asc:#04x}/{ascq:#04x}"
        super().__init__(detail)

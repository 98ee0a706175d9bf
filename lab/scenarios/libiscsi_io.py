"""Bulk WRITE(10)/READ(10) through libiscsi itself (ctypes), for iser:// URLs.

Debian's libiscsi-bin has no iscsi-dd and iscsi-perf only reads, so the lab's 64 MiB
write-then-read goes through libiscsi's synchronous API: the same library, the same iSER
transport (chosen by the ``iser://`` URL), our code only on the target side.

Run as ``python -m lab.scenarios.libiscsi_io URL SIZE_MIB``; prints the two SHA-256s.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import select
import sys
import time

ISCSI_SESSION_NORMAL = 2
ISCSI_HEADER_DIGEST_NONE = 0
SCSI_STATUS_GOOD = 0
BLOCK = 512
CHUNK = 1 << 20  # bytes per command


class LibiscsiError(RuntimeError):
    """libiscsi reported an error (its iscsi_get_error text is the message)."""


class ScsiIovec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _lib() -> ctypes.CDLL:
    lib = ctypes.CDLL("libiscsi.so.7")
    vp, i, u32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
    lib.iscsi_create_context.restype = vp
    lib.iscsi_create_context.argtypes = [ctypes.c_char_p]
    lib.iscsi_set_cache_allocations.restype = None
    lib.iscsi_set_cache_allocations.argtypes = [vp, ctypes.c_int]
    lib.iscsi_get_error.restype = ctypes.c_char_p
    lib.iscsi_get_error.argtypes = [vp]
    lib.iscsi_parse_full_url.restype = vp
    lib.iscsi_parse_full_url.argtypes = [vp, ctypes.c_char_p]
    lib.iscsi_set_session_type.argtypes = [vp, i]
    lib.iscsi_set_header_digest.argtypes = [vp, i]
    lib.iscsi_full_connect_sync.argtypes = [vp, ctypes.c_char_p, i]
    lib.iscsi_write10_sync.restype = vp
    lib.iscsi_write10_sync.argtypes = [vp, i, u32, ctypes.c_char_p, u32, i, i, i, i, i, i]
    lib.iscsi_read10_iov_sync.restype = vp
    lib.iscsi_read10_iov_sync.argtypes = [vp, i, u32, u32, i, i, i, i, i, i, ctypes.POINTER(ScsiIovec), i]
    lib.scsi_free_scsi_task.argtypes = [vp]
    lib.iscsi_logout_sync.argtypes = [vp]
    lib.iscsi_destroy_context.argtypes = [vp]
    lib.iscsi_destroy_url.argtypes = [vp]
    return lib


#: libiscsi's callback: (iscsi, status, command_data, private_data)
CALLBACK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)


def _async_lib() -> ctypes.CDLL:
    lib = _lib()
    vp, i, u32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_uint32
    lib.iscsi_full_connect_async.argtypes = [vp, ctypes.c_char_p, i, CALLBACK, vp]
    lib.iscsi_write10_task.restype = vp
    lib.iscsi_write10_task.argtypes = [vp, i, u32, ctypes.c_char_p, u32, i, i, i, i, i, i, CALLBACK, vp]
    lib.iscsi_read10_iov_task.restype = vp
    lib.iscsi_read10_iov_task.argtypes = [vp, i, u32, u32, i, i, i, i, i, i, CALLBACK, vp,
                                          ctypes.POINTER(ScsiIovec), i]
    lib.iscsi_get_fd.argtypes = [vp]
    lib.iscsi_which_events.argtypes = [vp]
    lib.iscsi_service.argtypes = [vp, i]
    return lib


class Session:
    """One libiscsi session to ``url`` (``iser://host:port/iqn/lun`` or ``iscsi://...``).

    Driven through libiscsi's asynchronous API with our own poll loop. Why not the ``*_sync``
    calls: their event loop polls with a 1 s timeout and then calls ``iscsi_service(iscsi, 0)``;
    over TCP that only checks timeouts, but libiscsi 1.19's iSER transport fails any service
    call without POLLIN ("revents is not POLLIN"), so every step slower than 1 s (common in a
    TCG guest) kills the session. iscsi-test-cu and the iscsi-* tools have that loop too.
    """

    def __init__(self, url: str, initiator: str = "iqn.2026-11.org.datamover.lab:libiscsi-io",
                 timeout: float = 120.0) -> None:
        self.lib = _async_lib()
        self.timeout = timeout
        self.ctx = self.lib.iscsi_create_context(initiator.encode())
        if not self.ctx:
            raise LibiscsiError("iscsi_create_context failed")
        # finding 8: with the allocation cache on, libiscsi 1.19 frees iSER read buffers into
        # its small-buffer cache and corrupts the heap (fixed upstream in 2934d64)
        self.lib.iscsi_set_cache_allocations(self.ctx, 0)
        parsed = self.lib.iscsi_parse_full_url(self.ctx, url.encode())
        if not parsed:
            raise LibiscsiError(f"bad URL {url}: {self._error()}")
        # struct iscsi_url starts with char portal[256]; the LUN is the URL's last element
        portal = ctypes.string_at(parsed)
        self.lib.iscsi_destroy_url(parsed)
        self.lun = int(url.rstrip("/").rsplit("/", 1)[1])
        self.lib.iscsi_set_session_type(self.ctx, ISCSI_SESSION_NORMAL)
        self.lib.iscsi_set_header_digest(self.ctx, ISCSI_HEADER_DIGEST_NONE)
        status = self._run(lambda cb: self.lib.iscsi_full_connect_async(self.ctx, portal, self.lun, cb, None) == 0,
                           f"login to {url}")
        if status != 0:
            raise LibiscsiError(f"login to {url} failed (status {status}): {self._error()}")

    def _error(self) -> str:
        return (self.lib.iscsi_get_error(self.ctx) or b"?").decode(errors="replace")

    def _run(self, start: object, what: str) -> int:
        """Start one asynchronous operation and service the context until its callback ran."""
        result: list[int] = []

        def done(_iscsi: int, status: int, command_data: int, _private: int) -> None:
            result.append(status)
            if command_data and what.startswith(("WRITE", "READ")):
                self.lib.scsi_free_scsi_task(command_data)

        cb = CALLBACK(done)  # referenced until the loop ends
        if not start(cb):  # type: ignore[operator]
            raise LibiscsiError(f"{what}: could not start: {self._error()}")
        deadline = time.monotonic() + self.timeout
        while not result:
            left = deadline - time.monotonic()
            if left <= 0:
                raise LibiscsiError(f"{what}: no completion within {self.timeout}s")
            poller = select.poll()
            poller.register(self.lib.iscsi_get_fd(self.ctx), self.lib.iscsi_which_events(self.ctx))
            events = poller.poll(min(left, 5.0) * 1000)
            if not events:
                continue  # nothing yet: never call iscsi_service without an event (see above)
            if self.lib.iscsi_service(self.ctx, events[0][1]) < 0:
                raise LibiscsiError(f"{what}: iscsi_service: {self._error()}")
        return result[0]

    def write(self, lba: int, data: bytes) -> None:
        what = f"WRITE(10) lba {lba} len {len(data)}"
        status = self._run(lambda cb: bool(self.lib.iscsi_write10_task(
            self.ctx, self.lun, lba, data, len(data), BLOCK, 0, 0, 0, 0, 0, cb, None)), what)
        if status != SCSI_STATUS_GOOD:
            raise LibiscsiError(f"{what}: status 0x{status:02x}: {self._error()}")

    def read(self, lba: int, length: int) -> bytes:
        buf = ctypes.create_string_buffer(length)
        iov = ScsiIovec(ctypes.cast(buf, ctypes.c_void_p), length)
        what = f"READ(10) lba {lba} len {length}"
        status = self._run(lambda cb: bool(self.lib.iscsi_read10_iov_task(
            self.ctx, self.lun, lba, length, BLOCK, 0, 0, 0, 0, 0, cb, None, ctypes.byref(iov), 1)), what)
        if status != SCSI_STATUS_GOOD:
            raise LibiscsiError(f"{what}: status 0x{status:02x}: {self._error()}")
        return buf.raw

    def close(self) -> None:
        if self.ctx:
            self.lib.iscsi_destroy_context(self.ctx)
            self.ctx = None


def write_then_read(url: str, size: int, seed: bytes | None = None) -> tuple[str, str]:
    """Write ``size`` random bytes from LBA 0 in 1 MiB commands, read them back; two SHA-256s."""
    data = seed or os.urandom(size)
    s = Session(url)
    try:
        for off in range(0, size, CHUNK):
            s.write(off // BLOCK, data[off:off + CHUNK])
        back = hashlib.sha256()
        for off in range(0, size, CHUNK):
            back.update(s.read(off // BLOCK, min(CHUNK, size - off)))
    finally:
        s.close()
    return hashlib.sha256(data).hexdigest(), back.hexdigest()


if __name__ == "__main__":
    wrote, read = write_then_read(sys.argv[1], int(sys.argv[2]) << 20)
    print(f"written {wrote}\nread    {read}")
    sys.exit(0 if wrote == read else 1)

"""Pieces of login handling shared by both roles: text reassembly and CHAP routing."""

from __future__ import annotations

from collections.abc import Iterable

#: Upper bound on the text of one reassembled login/text request or response. RFC 7143
#: gives no total limit; a peer that keeps sending C=1 must not grow our memory without end.
MAX_TEXT_BYTES = 64 * 1024

#: keys handled by the authentication method, not the negotiation engine
AUTH_KEY_PREFIXES = ("CHAP_",)


def split_auth(pairs: Iterable[tuple[str, str]]) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """Split received pairs into (negotiation pairs, authentication keys)."""
    negotiation: list[tuple[str, str]] = []
    auth: dict[str, str] = {}
    for key, value in pairs:
        if key.startswith(AUTH_KEY_PREFIXES):
            auth[key] = value
        else:
            negotiation.append((key, value))
    return negotiation, auth


class TextAssembler:
    """Joins the data segments of a C=1 continuation chain, bounded by MAX_TEXT_BYTES."""

    def __init__(self, limit: int = MAX_TEXT_BYTES) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, data: bytes | bytearray | memoryview) -> None:
        self._size += len(data)
        if self._size > self.limit:
            raise OverflowError(f"text exceeds {self.limit} bytes")
        self._parts.append(bytes(data))

    def take(self) -> bytes:
        data = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        return data

    @property
    def pending(self) -> bool:
        return bool(self._parts)

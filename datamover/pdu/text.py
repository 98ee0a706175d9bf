"""Key=value text of Login and Text PDU data segments (RFC 7143 §6.1, §6.2).

A data segment is a sequence of ``key=value`` items, each ended by a NUL. Keys are
case-sensitive and at most 63 bytes; values are UTF-8. Numbers are decimal, ``0x`` hex or
``0b`` base64; binary values (CHAP) are ``0x`` hex or ``0b`` base64.

The parser returns pairs in order and keeps duplicates: whether a repeated key is an error
is the negotiation layer's decision, not the codec's.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping

Buffer = bytes | bytearray | memoryview

#: RFC 7143 §6.1: "A key-name ... MUST NOT exceed 63 bytes".
MAX_KEY_LENGTH = 63

_DECIMAL = re.compile(r"[0-9]+")
_HEX = re.compile(r"[0-9a-fA-F]+")
_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")


class TextFormatError(ValueError):
    """A login/text data segment that is not a well-formed key=value list."""


def decode_text(data: Buffer) -> list[tuple[str, str]]:
    """The ``(key, value)`` pairs of a data segment, in order.

    Trailing NULs (the last item's terminator, and pad bytes if a transport left them in)
    are ignored. Raises :class:`TextFormatError` for an item without ``=``, an empty item
    between NULs, an empty or over-long key, or bytes that are not UTF-8.
    """
    raw = bytes(data).rstrip(b"\0")
    if not raw:
        return []
    pairs: list[tuple[str, str]] = []
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if not sep:
            shown = item[:40].decode("utf-8", "replace")
            raise TextFormatError(f"text item {shown!r} has no '='")
        if not key:
            raise TextFormatError("text item with an empty key")
        if len(key) > MAX_KEY_LENGTH:
            raise TextFormatError(f"key of {len(key)} bytes exceeds {MAX_KEY_LENGTH}")
        try:
            pairs.append((key.decode("utf-8"), value.decode("utf-8")))
        except UnicodeDecodeError as exc:
            raise TextFormatError(f"text item is not UTF-8: {exc}") from None
    return pairs


def encode_text(pairs: Iterable[tuple[str, str]] | Mapping[str, str]) -> bytes:
    """``key=value\\0`` for each pair (no padding: the PDU codec pads the data segment).

    Raises :class:`TextFormatError` for a key that is empty, too long, or holds ``=`` or
    NUL, and for a value holding NUL.
    """
    items = pairs.items() if isinstance(pairs, Mapping) else pairs
    out = bytearray()
    for key, value in items:
        k = key.encode("utf-8")
        v = value.encode("utf-8")
        if not k or len(k) > MAX_KEY_LENGTH:
            raise TextFormatError(f"key {key!r} must be 1..{MAX_KEY_LENGTH} bytes")
        if b"=" in k or b"\0" in k:
            raise TextFormatError(f"key {key!r} holds '=' or NUL")
        if b"\0" in v:
            raise TextFormatError(f"value of {key!r} holds NUL")
        out += k
        out += b"="
        out += v
        out += b"\0"
    return bytes(out)


def parse_binary(value: str) -> bytes:
    """The bytes of a binary value: ``0x`` hex or ``0b`` base64 (prefix case-insensitive).

    An odd number of hex digits is read with an implied leading zero. Base64 padding may
    be omitted. Raises ValueError for anything else, including an empty body.
    """
    prefix, body = value[:2].lower(), value[2:]
    if prefix == "0x":
        if not _HEX.fullmatch(body):
            raise ValueError(f"{value!r} is not a hex constant")
        if len(body) % 2:
            body = "0" + body
        return bytes.fromhex(body)
    if prefix == "0b":
        if not _BASE64.fullmatch(body) or len(body.rstrip("=")) % 4 == 1:
            raise ValueError(f"{value!r} is not a base64 constant")
        try:
            return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
        except binascii.Error as exc:
            raise ValueError(f"{value!r} is not a base64 constant: {exc}") from None
    raise ValueError(f"{value!r} is neither 0x hex nor 0b base64")


def parse_numeric(value: str) -> int:
    """A numerical value: decimal, ``0x`` hex or ``0b`` base64 (big-endian).

    Raises ValueError for an empty string, a sign, spaces, or any other character.
    """
    if value[:2].lower() in ("0x", "0b"):
        return int.from_bytes(parse_binary(value), "big")
    if not _DECIMAL.fullmatch(value):
        raise ValueError(f"{value!r} is not a numerical value")
    return int(value)


def format_hex(b: bytes) -> str:
    """``b`` as an iSCSI hex constant (``0x`` + lower-case digits)."""
    return "0x" + bytes(b).hex()


def format_base64(b: bytes) -> str:
    """``b`` as an iSCSI base64 constant (``0b`` + RFC 4648 base64 with padding)."""
    return "0b" + base64.b64encode(bytes(b)).decode("ascii")

"""RFC 1982 serial number arithmetic on 32 bits, as RFC 7143 4.2.2.1 requires for every
CmdSN / StatSN / DataSN comparison (plain ``<`` breaks at the 2**32 wrap)."""

from __future__ import annotations

SERIAL_BITS = 32
_MOD = 1 << SERIAL_BITS
_HALF = 1 << (SERIAL_BITS - 1)
MASK = _MOD - 1


def sn_add(a: int, n: int) -> int:
    """``a + n`` modulo 2**32 (n may be negative)."""
    return (a + n) & MASK


def sn_lt(a: int, b: int) -> bool:
    """``a < b`` in serial arithmetic (undefined, and False, when they are 2**31 apart).

    RFC 1982's two cases (``a < b`` with ``b - a < 2**31``, ``a > b`` with ``a - b > 2**31``)
    are one test on the distance from ``a`` up to ``b`` modulo 2**32 (a few commands'
    worth of these run per command, so the single expression is worth having)."""
    return 0 < ((b - a) & MASK) < _HALF


def sn_gt(a: int, b: int) -> bool:
    """``a > b`` in serial arithmetic."""
    return 0 < ((a - b) & MASK) < _HALF


def sn_le(a: int, b: int) -> bool:
    return ((b - a) & MASK) < _HALF


def sn_ge(a: int, b: int) -> bool:
    return ((a - b) & MASK) < _HALF


def sn_in_window(sn: int, low: int, high: int) -> bool:
    """``low <= sn <= high`` in serial arithmetic (an empty window when high == low - 1)."""
    return sn_le(low, sn) and sn_le(sn, high)


def sn_diff(a: int, b: int) -> int:
    """Signed distance ``a - b`` in serial arithmetic, in (-2**31, 2**31]."""
    d = (a - b) & MASK
    return d - _MOD if d > _HALF else d

"""The negotiated values the TCP datamover needs (from ``notice_key_values``).

protocol-digest 1.6: HeaderDigest, DataDigest, both declared MaxRecvDataSegmentLength
values, MaxBurstLength, FirstBurstLength, MaxOutstandingR2T, ErrorRecoveryLevel (and
DataPDUInOrder, which decides whether Data-Out offsets must ascend).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: RFC 7143 defaults (the values in force during login, too).
DEFAULT_MAX_RECV_DSL = 8192
DEFAULT_MAX_BURST = 262144
DEFAULT_FIRST_BURST = 65536

#: Login PDUs are bounded by the 8192-byte default; the slack tolerates peers that
#: declare a larger value early. Anything bigger is refused, never buffered.
LOGIN_DATA_LIMIT = 8192 + 8192

#: The largest value a 24-bit DataSegmentLength can carry (RFC 7143 12.12 range).
MAX_DSL = (1 << 24) - 1


class KeyValueError(ValueError):
    """A negotiated key value the datamover cannot use (not a number, out of range)."""


def _number(keys: Mapping[str, str], name: str, default: int, low: int = 0, high: int = MAX_DSL) -> int:
    text = keys.get(name)
    if text is None:
        return default
    try:
        value = int(str(text).strip(), 10)
    except ValueError:
        try:
            value = int(str(text).strip(), 0)
        except ValueError:
            raise KeyValueError(f"{name}={text!r} is not a number") from None
    if not low <= value <= high:
        raise KeyValueError(f"{name}={value} is outside {low}..{high}")
    return value


def _digest(keys: Mapping[str, str], name: str) -> bool:
    text = str(keys.get(name, "None")).strip()
    if text == "CRC32C":
        return True
    if text == "None":
        return False
    raise KeyValueError(f"{name}={text!r}: expected the negotiated result CRC32C or None")


@dataclass(frozen=True, slots=True)
class NegotiatedKeys:
    """What the datamover keeps from the negotiated keys, with RFC defaults."""

    header_digest: bool = False
    data_digest: bool = False
    max_recv_dsl_initiator: int = DEFAULT_MAX_RECV_DSL
    max_recv_dsl_target: int = DEFAULT_MAX_RECV_DSL
    max_burst_length: int = DEFAULT_MAX_BURST
    first_burst_length: int = DEFAULT_FIRST_BURST
    max_outstanding_r2t: int = 1
    error_recovery_level: int = 0
    data_pdu_in_order: bool = True

    @classmethod
    def from_keys(cls, keys: Mapping[str, str]) -> NegotiatedKeys:
        """Parse the mapping given to ``notice_key_values``; raises :class:`KeyValueError`."""
        return cls(
            header_digest=_digest(keys, "HeaderDigest"),
            data_digest=_digest(keys, "DataDigest"),
            max_recv_dsl_initiator=_number(keys, "MaxRecvDataSegmentLength.initiator",
                                           DEFAULT_MAX_RECV_DSL, 512),
            max_recv_dsl_target=_number(keys, "MaxRecvDataSegmentLength.target",
                                        DEFAULT_MAX_RECV_DSL, 512),
            max_burst_length=_number(keys, "MaxBurstLength", DEFAULT_MAX_BURST, 512),
            first_burst_length=_number(keys, "FirstBurstLength", DEFAULT_FIRST_BURST, 512),
            max_outstanding_r2t=_number(keys, "MaxOutstandingR2T", 1, 1, 65535),
            error_recovery_level=_number(keys, "ErrorRecoveryLevel", 0, 0, 2),
            data_pdu_in_order=str(keys.get("DataPDUInOrder", "Yes")).strip() != "No",
        )

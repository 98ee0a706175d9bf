"""Typed views of negotiated session and connection parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from datamover.capabilities import TransportCapabilities
from datamover.di import Role

#: What this implementation proposes (initiator) or prefers (target) when the config is
#: silent. Larger than the RFC defaults on purpose: big PDUs and bursts avoid R2T round
#: trips and syscalls (performance-baseline.md); peers with smaller limits negotiate down.
DEFAULT_OPERATIONAL_KEYS: dict[str, str] = {
    "HeaderDigest": "None",
    "DataDigest": "None",
    "InitialR2T": "No",
    "ImmediateData": "Yes",
    "MaxRecvDataSegmentLength": "262144",
    "MaxBurstLength": "1048576",
    "FirstBurstLength": "262144",
    "MaxOutstandingR2T": "1",
    "DefaultTime2Wait": "2",
    "ErrorRecoveryLevel": "0",
}


def _yes(value: str) -> bool:
    return value.strip() == "Yes"


@dataclass(frozen=True, slots=True)
class SessionParams:
    """The numbers the session layer needs, extracted once after login."""

    initial_r2t: bool
    immediate_data: bool
    first_burst_length: int
    max_burst_length: int
    max_outstanding_r2t: int
    error_recovery_level: int
    header_digest: bool
    data_digest: bool
    #: the largest data segment the initiator accepts in a control PDU from the target
    initiator_recv_limit: int
    #: the largest data segment the target accepts in a control PDU from the initiator
    target_recv_limit: int
    default_time2wait: int
    default_time2retain: int
    discovery: bool

    @classmethod
    def from_agreed(cls, agreed: Mapping[str, str], caps: TransportCapabilities) -> SessionParams:
        def num(name: str, default: int) -> int:
            try:
                return int(agreed.get(name, str(default)), 0)
            except ValueError:
                return default

        return cls(
            initial_r2t=_yes(agreed.get("InitialR2T", "Yes")),
            immediate_data=_yes(agreed.get("ImmediateData", "Yes")),
            first_burst_length=num("FirstBurstLength", 65536),
            max_burst_length=num("MaxBurstLength", 262144),
            max_outstanding_r2t=max(1, num("MaxOutstandingR2T", 1)),
            error_recovery_level=num("ErrorRecoveryLevel", 0),
            header_digest=agreed.get("HeaderDigest", "None") == "CRC32C",
            data_digest=agreed.get("DataDigest", "None") == "CRC32C",
            initiator_recv_limit=num(caps.recv_limit_key_initiator, 8192),
            target_recv_limit=num(caps.recv_limit_key_target, 8192),
            default_time2wait=num("DefaultTime2Wait", 2),
            default_time2retain=num("DefaultTime2Retain", 20),
            discovery=agreed.get("SessionType", "Normal") == "Discovery",
        )

    def recv_limit(self, role: Role) -> int:
        return self.initiator_recv_limit if role is Role.INITIATOR else self.target_recv_limit

    def send_limit(self, role: Role) -> int:
        """Largest data segment ``role`` may put in a control PDU it sends."""
        return self.target_recv_limit if role is Role.INITIATOR else self.initiator_recv_limit


def keys_for_transport(local: dict[str, str], caps: TransportCapabilities) -> dict[str, str]:
    """Drop keys this transport's negotiation table does not know (a config shared by
    several transports may name iSER's RecvDataSegmentLength keys; TCP ignores them)."""
    from datamover.negotiation.keys import RFC7143_KEYS

    known = {row.name for row in RFC7143_KEYS} | {row.name for row in caps.login_keys}
    return {key: value for key, value in local.items() if key in known}

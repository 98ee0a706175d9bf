"""The iSER transport (RFC 7145).

The datamover itself lands with the iSER issue; until then this transport registers, declares
what iSER will be (no digests, no phase collapse, its own login keys), and refuses to
listen or connect with a clear "not implemented yet" error. No fake behaviour.
"""

from __future__ import annotations

from collections.abc import Mapping

from datamover.capabilities import TransportCapabilities
from datamover.di import AcceptCallback, DatamoverConnection, Listener, NotImplementedTransport, Portal, Transport

_NOT_YET = ("the iSER transport is registered but not implemented yet (the iSER datamover is "
            "its own issue); use --transport tcp or loopback")


class IserTransport(Transport):
    name = "iser"

    @classmethod
    def capabilities(cls) -> TransportCapabilities:
        from datamover.negotiation.keys import ISER_KEYS

        return TransportCapabilities(
            header_digest=False, data_digest=False, phase_collapse=False,
            error_recovery_levels=frozenset({0}), login_keys=tuple(ISER_KEYS),
            forced_keys=(("HeaderDigest", "None"), ("DataDigest", "None")),
            ignored_keys=frozenset({"MaxRecvDataSegmentLength"}),
            recv_limit_key_initiator="InitiatorRecvDataSegmentLength",
            recv_limit_key_target="TargetRecvDataSegmentLength",
            data_pdus_on_wire=False, zero_copy=True, cross_process=True,
            extra=frozenset({"not-implemented"}),
        )

    @classmethod
    def option_names(cls) -> Mapping[str, type]:
        return {"provider": str, "fabric": str}

    async def listen(self, portal: Portal, on_accept: AcceptCallback) -> Listener:
        raise NotImplementedTransport(_NOT_YET)

    async def connect(self, portal: Portal, timeout: float | None = None) -> DatamoverConnection:
        raise NotImplementedTransport(_NOT_YET)

    def describe(self) -> str:
        return "iser (not implemented yet)"

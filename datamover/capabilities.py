"""Typed transport capabilities: what a transport declares and the core obeys.

There is no ``if transport == "iser"`` in the core. A transport that cannot carry digests,
forbids phase collapse, owns extra login keys, or bounds PDUs by other keys says so here.
The conformance kit (:mod:`datamover.testing`) deselects tests whose capability a transport
lacks, naming the capability.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from datamover.negotiation.keys import KeyRow


@dataclass(frozen=True, slots=True)
class TransportCapabilities:
    """Declared abilities and rules of one transport.

    Attributes:
        header_digest / data_digest: the transport can carry CRC32C digests (TCP yes;
            iSER forces them off, RFC 7145 6.1; loopback needs none).
        phase_collapse: the target may send status in the final Data-In (S bit).
        error_recovery_levels: ERLs the datamover can honour.
        login_keys: negotiation-table rows the transport contributes (iSER's
            RDMAExtensions, Initiator/TargetRecvDataSegmentLength, ...).
        forced_keys: keys forced to a value whatever the configuration says
            (iSER: HeaderDigest=None, DataDigest=None).
        ignored_keys: keys the transport ignores if declared (iSER:
            MaxRecvDataSegmentLength).
        recv_limit_key_initiator / recv_limit_key_target: the key whose negotiated value
            bounds the data segment of control PDUs *received by* that role. TCP and
            loopback: the role's own declared MaxRecvDataSegmentLength; iSER:
            InitiatorRecvDataSegmentLength / TargetRecvDataSegmentLength.
        data_pdus_on_wire: Data-In/R2T/solicited Data-Out travel as PDUs (TCP) rather than
            as RDMA operations or memcpy; tests about DataSN/R2TSN wire rules need it.
        zero_copy: payload reaches the peer buffer without an intermediate copy.
        multi_connection: MaxConnections > 1 is supported.
        cross_process: both ends may live in different processes (not loopback).
        records_trace: the datamover can record its DI call trace.
        buffer_alignment: preferred alignment of data buffers in bytes.
        provider: for transports with backends, which one moves bytes (reports).
    """

    header_digest: bool = False
    data_digest: bool = False
    phase_collapse: bool = False
    error_recovery_levels: frozenset[int] = frozenset({0})
    login_keys: tuple[KeyRow, ...] = ()
    forced_keys: tuple[tuple[str, str], ...] = ()
    #: values this transport prefers when the configuration is silent (over the core's
    #: defaults, under the user's [keys]); e.g. iSER prefers RDMA Read over R2T-less bursts
    preferred_keys: tuple[tuple[str, str], ...] = ()
    ignored_keys: frozenset[str] = frozenset()
    recv_limit_key_initiator: str = "MaxRecvDataSegmentLength.initiator"
    recv_limit_key_target: str = "MaxRecvDataSegmentLength.target"
    data_pdus_on_wire: bool = False
    zero_copy: bool = False
    multi_connection: bool = False
    cross_process: bool = True
    records_trace: bool = True
    buffer_alignment: int = 1
    provider: str = ""
    extra: frozenset[str] = field(default_factory=frozenset)

    def has(self, name: str) -> bool:
        """True if the capability named ``name`` is present (for test gating).

        ``name`` is a boolean attribute (``"header_digest"``), ``"erl1"``/``"erl2"``, or
        one of the free-form ``extra`` tags.
        """
        if name.startswith("erl") and name[3:].isdigit():
            return int(name[3:]) in self.error_recovery_levels
        value = getattr(self, name, None)
        if isinstance(value, bool):
            return value
        return name in self.extra

    def summary(self) -> list[str]:
        """Short capability tags for ``datamover plugins``."""
        tags = [
            name
            for name in ("header_digest", "data_digest", "phase_collapse", "data_pdus_on_wire",
                         "zero_copy", "multi_connection", "cross_process", "records_trace")
            if getattr(self, name)
        ]
        tags.append("erl=" + ",".join(str(level) for level in sorted(self.error_recovery_levels)))
        if self.login_keys:
            tags.append("keys=" + ",".join(row.name for row in self.login_keys))
        if self.provider:
            tags.append(f"provider={self.provider}")
        tags.extend(sorted(self.extra))
        return tags

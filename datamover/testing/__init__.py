"""The conformance kit for transport plugins.

Subclass :class:`TransportConformance` in your plugin's tests and provide the transport
(``transport_name`` or ``transport_factory`` fixture); tests that need a capability your
transport lacks are skipped with the capability named (:func:`requires`). The
``datamover`` pytest plugin adds ``--datamover-transport NAME[,NAME...]`` to run the kit
against registered transports. See docs/examples/uds_transport for a complete plugin.
"""

from datamover.testing.conformance import BURST_KEYS, INTEGRITY_TOTAL, TransportConformance
from datamover.testing.harness import INITIATOR_IQN, TARGET_IQN, KitHarness, RawClient, TransportFactory
from datamover.testing.requirements import MARKER, missing, requires

__all__ = [
    "BURST_KEYS",
    "INITIATOR_IQN",
    "INTEGRITY_TOTAL",
    "MARKER",
    "TARGET_IQN",
    "KitHarness",
    "RawClient",
    "TransportConformance",
    "TransportFactory",
    "missing",
    "requires",
]

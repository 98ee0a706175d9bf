"""The iSCSI initiator: an async API and a thin synchronous facade over it."""

from datamover.initiator.config import InitiatorConfig
from datamover.initiator.session import InitiatorSession, ScsiOutcome, discover

__all__ = ["InitiatorConfig", "InitiatorSession", "ScsiOutcome", "discover"]

"""The iSCSI target: portals, sessions, ACLs, SCSI logical units, task management."""

from datamover.target.config import LunConfig, TargetConfig, TargetServerConfig
from datamover.target.server import TargetServer

__all__ = ["LunConfig", "TargetConfig", "TargetServer", "TargetServerConfig"]

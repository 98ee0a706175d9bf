"""datamover_uds: an example third-party transport (iSCSI over Unix-domain sockets)."""

from datamover_uds.transport import UdsTransport

__all__ = ["UdsTransport"]

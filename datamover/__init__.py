"""datamover: iSCSI over any transport, on the RFC 5047 Datamover Interface."""

__version__ = "0.1.0"

"""The loopback transport: both ends in one process, the reference the others are checked against."""

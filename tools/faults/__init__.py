"""Fault injection for reliability runs: a PDU-aware TCP proxy, fault plans for it and for
the soft RDMA provider's fault hook, and a verified workload whose oracle tells acknowledged,
failed and corrupted writes apart (docs/reliability.md)."""

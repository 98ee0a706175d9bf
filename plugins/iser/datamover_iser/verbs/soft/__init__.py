"""The soft RDMA provider: rdma_rxe's semantics in Python, on in-process, shared-memory or
pyzmq fabrics. See ``provider.SoftProvider``."""

from .provider import SoftProvider, make_fabric

__all__ = ["SoftProvider", "make_fabric"]

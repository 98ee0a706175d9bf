"""datamover_tcp: the iSCSI-over-TCP transport plugin (RFC 7143 on asyncio).

Modules: :mod:`.transport` (listen/connect, capabilities), :mod:`.connection` (the DI
connection and PDU dispatch), :mod:`.framing` (receive buffer), :mod:`.sender` (batched
gather writes), :mod:`.initiator_data` (Data-In placement, R2T answers),
:mod:`.target_data` (Put_Data/Get_Data as Data-In/R2T/Data-Out), :mod:`.wire` (data PDU
gather lists), :mod:`.negotiated` (the keys it keeps), :mod:`.descriptor`.
"""

from datamover_tcp.connection import TcpConnection
from datamover_tcp.transport import TcpListener, TcpTransport

__all__ = ["TcpConnection", "TcpListener", "TcpTransport"]

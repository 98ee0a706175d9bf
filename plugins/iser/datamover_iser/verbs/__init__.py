"""Verbs interface of the iSER plugin, with a pyverbs backend and a software provider.

Start with ``select.open_provider("auto" | "pyverbs" | "soft", ...)``; it returns the
provider and the reason it was chosen, which every report should print.
"""

from .api import CMId, CQ, MR, MW, PD, QP, Context, Listener, Provider
from .enums import (
    Access,
    AsyncEventType,
    CMEventType,
    Personality,
    QPState,
    SendFlags,
    WCFlags,
    WCOpcode,
    WCStatus,
    WROpcode,
)
from .errors import (
    CMError,
    ConnectionFailed,
    ConnectionRejected,
    IwarpOrderError,
    ProviderUnavailable,
    VerbsError,
)
from .wr import SGE, AsyncEvent, CMEvent, ConnParam, MWBind, QPCap, RecvWR, SendWR, WorkCompletion, sge_of

__all__ = [
    "Access", "AsyncEvent", "AsyncEventType", "CMError", "CMEvent", "CMEventType", "CMId", "CQ",
    "ConnParam", "ConnectionFailed", "ConnectionRejected", "Context", "IwarpOrderError", "Listener",
    "MR", "MW", "MWBind", "PD", "Personality", "Provider", "ProviderUnavailable", "QP", "QPCap",
    "QPState", "RecvWR", "SGE", "SendFlags", "SendWR", "VerbsError", "WCFlags", "WCOpcode",
    "WCStatus", "WROpcode", "WorkCompletion", "sge_of",
]

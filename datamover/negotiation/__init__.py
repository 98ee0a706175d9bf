"""Login and Text key negotiation (RFC 7143 section 6), driven by a key table.

:mod:`~datamover.negotiation.keys` holds the table (one :class:`KeyRow` per key),
:mod:`~datamover.negotiation.engine` the :class:`Negotiator` that applies it.
"""

from datamover.negotiation.engine import (
    STATUS_AUTH_FAILURE,
    STATUS_INITIATOR_ERROR,
    STATUS_MISSING_PARAMETER,
    STATUS_SESSION_TYPE_UNSUPPORTED,
    STATUS_TARGET_ERROR,
    NegotiationConfigError,
    NegotiationError,
    Negotiator,
    parse_numeric,
)
from datamover.negotiation.keys import (
    ISER_KEYS,
    RFC7143_KEYS,
    KeyRow,
    KeyType,
    ResultFunction,
    Scope,
    Sender,
    Use,
)

__all__ = [
    "ISER_KEYS",
    "RFC7143_KEYS",
    "STATUS_AUTH_FAILURE",
    "STATUS_INITIATOR_ERROR",
    "STATUS_MISSING_PARAMETER",
    "STATUS_SESSION_TYPE_UNSUPPORTED",
    "STATUS_TARGET_ERROR",
    "KeyRow",
    "KeyType",
    "NegotiationConfigError",
    "NegotiationError",
    "Negotiator",
    "ResultFunction",
    "Scope",
    "Sender",
    "Use",
    "parse_numeric",
]

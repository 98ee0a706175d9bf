"""Login authentication (RFC 7143 section 12). Only CHAP (12.1.3) is implemented."""

from datamover.auth.chap import (
    ALGORITHMS,
    DIGEST_SIZES,
    AuthenticationError,
    ChapPolicyError,
    ChapSecret,
    InitiatorChap,
    TargetChap,
    chap_response,
    validate_secret,
)

__all__ = [
    "ALGORITHMS",
    "DIGEST_SIZES",
    "AuthenticationError",
    "ChapPolicyError",
    "ChapSecret",
    "InitiatorChap",
    "TargetChap",
    "chap_response",
    "validate_secret",
]

"""Webhook signatures: HMAC-SHA256 over a timestamp and the raw body, checked by receivers.

The signed string is `<timestamp>.` followed by the exact body bytes, so neither the body nor the
time of sending can be altered; a receiver refuses timestamps outside a tolerance window, so a
captured request cannot be replayed later. The header value is `v1=<hex>`; a receiver accepts a
comma-separated list of them, which lets a sender sign with an old and a new secret while rotating.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping

TIMESTAMP_HEADER = "X-Crisis-Timestamp"
SIGNATURE_HEADER = "X-Crisis-Signature"
SCHEME = "v1"
DEFAULT_TOLERANCE_S = 300


class SignatureInvalid(ValueError):
    """A request whose signature is missing, wrong, or whose timestamp is out of tolerance."""


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The signature header value for a body sent at `timestamp` (Unix seconds): `v1=<hex>`."""
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"{SCHEME}={digest}"


def signature_headers(secret: str, body: bytes, now: float | None = None) -> dict[str, str]:
    """The timestamp and signature headers to send with `body`."""
    timestamp = int(time.time() if now is None else now)
    return {
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: sign(secret, timestamp, body),
    }


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    *,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now: float | None = None,
) -> None:
    """Check a received request; raise SignatureInvalid saying what is wrong.

    Args:
        secret: The shared secret.
        headers: The request headers (any capitalisation).
        body: The exact raw bytes of the request body, before any parsing.
        tolerance_s: How far the timestamp may be from now, either way.
        now: The current Unix time (for tests).
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    raw_timestamp = lowered.get(TIMESTAMP_HEADER.lower())
    raw_signature = lowered.get(SIGNATURE_HEADER.lower())
    if not raw_timestamp or not raw_signature:
        raise SignatureInvalid(f"missing {TIMESTAMP_HEADER} or {SIGNATURE_HEADER} header")
    try:
        timestamp = int(raw_timestamp)
    except ValueError:
        raise SignatureInvalid(f"{TIMESTAMP_HEADER} is not an integer") from None
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        raise SignatureInvalid(
            f"timestamp {timestamp} is {current - timestamp:+.0f}s from now "
            f"(tolerance {tolerance_s:.0f}s)"
        )
    expected = sign(secret, timestamp, body)
    offered = [part.strip() for part in raw_signature.split(",")]
    if not any(hmac.compare_digest(expected.encode(), candidate.encode()) for candidate in offered):
        raise SignatureInvalid("signature does not match the body and timestamp")

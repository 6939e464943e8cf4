"""Webhook signatures: what a sender signs, a receiver verifies; anything altered is refused."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from core.signing import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SignatureInvalid,
    sign,
    signature_headers,
    verify,
)

SECRET = "receiver-shared-secret"
BODY = b'{"incident_id":"INC-1","message":"Crisis protocol activated"}'
NOW = 1_790_000_000


def test_signed_headers_verify() -> None:
    """Headers made for a body verify against that body and secret."""
    headers = signature_headers(SECRET, BODY, now=NOW)
    assert str(NOW) == headers[TIMESTAMP_HEADER]
    verify(SECRET, headers, BODY, now=NOW + 10)


def test_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    """The scheme other languages implement: hex HMAC-SHA256 of `<timestamp>.<body>`, as v1=."""
    expected = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert f"v1={expected}" == sign(SECRET, NOW, BODY)


def test_header_names_are_case_insensitive() -> None:
    """Receivers see headers lower-cased (HTTP/2, most frameworks)."""
    headers = {
        name.lower(): value for name, value in signature_headers(SECRET, BODY, now=NOW).items()
    }
    verify(SECRET, headers, BODY, now=NOW)


def test_tampered_body_is_refused() -> None:
    headers = signature_headers(SECRET, BODY, now=NOW)
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify(SECRET, headers, BODY.replace(b"activated", b"concluded"), now=NOW)


def test_wrong_secret_is_refused() -> None:
    headers = signature_headers("another-secret", BODY, now=NOW)
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify(SECRET, headers, BODY, now=NOW)


def test_timestamp_cannot_be_moved_without_the_signature() -> None:
    """Replaying a captured body with a fresh timestamp breaks the signature."""
    headers = signature_headers(SECRET, BODY, now=NOW)
    headers[TIMESTAMP_HEADER] = str(NOW + 600)
    with pytest.raises(SignatureInvalid, match="does not match"):
        verify(SECRET, headers, BODY, now=NOW + 600)


@pytest.mark.parametrize("offset", [301, -301, 86_400])
def test_stale_or_future_timestamp_is_refused(offset: int) -> None:
    headers = signature_headers(SECRET, BODY, now=NOW)
    with pytest.raises(SignatureInvalid, match="tolerance 300s"):
        verify(SECRET, headers, BODY, now=NOW + offset)


def test_tolerance_is_adjustable() -> None:
    headers = signature_headers(SECRET, BODY, now=NOW)
    verify(SECRET, headers, BODY, now=NOW + 3_000, tolerance_s=3_600)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {TIMESTAMP_HEADER: str(NOW)},
        {SIGNATURE_HEADER: sign(SECRET, NOW, BODY)},
        {TIMESTAMP_HEADER: "yesterday", SIGNATURE_HEADER: sign(SECRET, NOW, BODY)},
        {TIMESTAMP_HEADER: str(NOW), SIGNATURE_HEADER: "sha256=" + "0" * 64},
    ],
    ids=["none", "no-signature", "no-timestamp", "bad-timestamp", "old-scheme"],
)
def test_missing_or_malformed_headers_are_refused(headers: dict[str, str]) -> None:
    with pytest.raises(SignatureInvalid):
        verify(SECRET, headers, BODY, now=NOW)


def test_any_of_several_signatures_may_match() -> None:
    """While a secret is rotated the sender signs with both; either verifies."""
    headers = signature_headers(SECRET, BODY, now=NOW)
    headers[SIGNATURE_HEADER] = f"{sign('old-secret', NOW, BODY)}, {headers[SIGNATURE_HEADER]}"
    verify(SECRET, headers, BODY, now=NOW)
    with pytest.raises(SignatureInvalid):
        verify("unrelated-secret", headers, BODY, now=NOW)


def test_the_documented_test_vector() -> None:
    """docs/notifications.md gives this vector to implementers in other languages."""
    body = b'{"incident_id":"INC-1","message":"Crisis protocol activated"}'
    assert "v1=2247fd57742cd26f3a2381c19850b4588308229417a3fa50ad23c824b844f20f" == sign(
        "example-secret", 1_790_000_000, body
    )

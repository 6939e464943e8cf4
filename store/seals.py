"""Seals: the engine signs each incident's chain head with its Ed25519 key.

The hash chain shows an edited or deleted row; it cannot show a whole chain rewritten from the
first row on. A seal can: without the engine's private key nobody can sign a rewritten head.
Verification needs only the public key, so an outside auditor can check an export offline.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel

from store.errors import SealError
from workflows.audit import AuditEvent


class Seal(BaseModel):
    """A signature over an incident's chain head at one moment."""

    incident_id: str
    seq: int
    head_hash: str
    sealed_at: str
    reason: str
    key_id: str
    signature: str  # base64

    def message(self) -> bytes:
        return seal_message(self.incident_id, self.seq, self.head_hash, self.sealed_at, self.reason)


def seal_message(incident_id: str, seq: int, head_hash: str, sealed_at: str, reason: str) -> bytes:
    """What a seal signs: its fields but the key and the signature, as canonical JSON."""
    body = {
        "incident_id": incident_id,
        "seq": seq,
        "head_hash": head_hash,
        "sealed_at": sealed_at,
        "reason": reason,
    }
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError as error:
        raise SealError(f"not a PEM public key: {error}") from None
    if not isinstance(key, Ed25519PublicKey):
        raise SealError("the public key is not an Ed25519 key")
    return key


def _read_signing_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, OSError) as error:
        raise SealError(f"cannot read signing key {path}: {error}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SealError(f"signing key {path} is not an Ed25519 key")
    return key


def engine_public_key(path: Path) -> Ed25519PublicKey:
    """The public half of the engine's signing key at `path`, which must exist: a reader that
    created a key there would distrust every seal made with the real one, and the engine would
    then sign with the stray key."""
    if not path.is_file():
        raise SealError(f"no engine signing key at {path}")
    return _read_signing_key(path).public_key()


class Signer:
    """Holds the engine's private key (created on first use, readable by its owner only)."""

    def __init__(self, key_path: Path) -> None:
        self.key_path = key_path
        self._key = self._load_or_create(key_path)
        self.public_key = self._key.public_key()
        self.key_id = key_id(self.public_key)

    @staticmethod
    def _load_or_create(path: Path) -> Ed25519PrivateKey:
        if path.is_file():
            return _read_signing_key(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        # Created with owner-only permissions; O_EXCL so two workers never overwrite each other.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return Signer._load_or_create(path)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return key

    def seal(self, head: AuditEvent, *, reason: str) -> Seal:
        sealed_at = datetime.now(UTC).isoformat()
        message = seal_message(head.incident_id, head.seq, head.hash, sealed_at, reason)
        return Seal(
            incident_id=head.incident_id,
            seq=head.seq,
            head_hash=head.hash,
            sealed_at=sealed_at,
            reason=reason,
            key_id=self.key_id,
            signature=base64.b64encode(self._key.sign(message)).decode(),
        )


@dataclass
class SealVerification:
    ok: bool
    seals: int
    sealed_through: int  # the last seq covered by a valid seal
    problem: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "seals": self.seals,
            "sealed_through": self.sealed_through,
            "problem": self.problem,
        }


def verify_seals(
    events: list[AuditEvent], seals: list[Seal], public_key: Ed25519PublicKey, *, closed: bool
) -> SealVerification:
    """Every seal is genuine and names a head the rows still have; a closed incident is sealed
    through its last row."""
    by_seq = {event.seq: event for event in events}
    expected_key = key_id(public_key)
    through = 0
    for seal in sorted(seals, key=lambda s: s.seq):
        if seal.key_id != expected_key:
            return SealVerification(
                False,
                len(seals),
                through,
                f"seal at row {seal.seq} was made with another key ({seal.key_id})",
            )
        try:
            public_key.verify(base64.b64decode(seal.signature), seal.message())
        except (InvalidSignature, ValueError):
            return SealVerification(
                False, len(seals), through, f"seal at row {seal.seq} has a forged signature"
            )
        row = by_seq.get(seal.seq)
        if row is None:
            return SealVerification(
                False, len(seals), through, f"row {seal.seq} was sealed but is missing"
            )
        if row.hash != seal.head_hash:
            return SealVerification(
                False,
                len(seals),
                through,
                f"row {seal.seq} is not the row that was sealed (chain rewritten)",
            )
        through = max(through, seal.seq)
    last = max(by_seq, default=0)
    if closed and through < last:
        return SealVerification(
            False,
            len(seals),
            through,
            f"rows {through + 1}..{last} are not sealed (closed incidents are sealed to the end)",
        )
    return SealVerification(True, len(seals), through)

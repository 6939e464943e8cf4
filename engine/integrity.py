"""An incident's integrity, checked from the live store or from an export bundle offline: the
hash chain, the seals, and (when a history is at hand) the replay."""

from __future__ import annotations

import hashlib
import json
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from temporalio.client import Client

from engine.errors import BundleError, IncidentNotFound
from engine.verification import IncidentHistory, ReplayReport, export_history, replay_incident
from store.audit_store import AuditStore, Verification, verify_chain
from store.errors import SealError
from store.seals import (
    Seal,
    SealVerification,
    key_id,
    load_public_key,
    public_key_pem,
    verify_seals,
)
from workflows.audit import AuditEvent

BUNDLE_FORMAT = "crisis-audit-bundle/1"
FILES = ("events.json", "seals.json", "public-key.pem")


@dataclass
class Integrity:
    incident_id: str
    chain: Verification
    seals: SealVerification
    replay: ReplayReport | None = None
    key_id: str = ""  # of the trusted key the seals were checked with
    trusted_key: str = ""  # where that key came from, for the auditor
    bundle_key_id: str | None = None  # of the key a bundle carries; None for the live store

    @property
    def key_ok(self) -> bool:
        return self.bundle_key_id is None or self.bundle_key_id == self.key_id

    @property
    def ok(self) -> bool:
        return (
            self.key_ok
            and self.chain.ok
            and self.seals.ok
            and (self.replay is None or self.replay.ok)
        )

    def verdict(self) -> dict[str, str]:
        """One word per check, for reports: ok / FAILED: reason / not checked."""
        replay = "not checked"
        if self.replay is not None:
            reason = self.replay.divergence or self.replay.replay_vs_store.first_difference
            replay = "ok" if self.replay.ok else f"FAILED: {reason}"
        key: dict[str, str] = {}
        if self.bundle_key_id is not None:  # first: a foreign key explains every later failure
            key["key"] = (
                "ok"
                if self.key_ok
                else f"FAILED: the bundle's public-key.pem is {self.bundle_key_id}, "
                f"not the trusted key {self.key_id}"
            )
        return {
            **key,
            "chain": "ok" if self.chain.ok else f"FAILED: {self.chain.problem}",
            "seals": "ok" if self.seals.ok else f"FAILED: {self.seals.problem}",
            "replay": replay,
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "incident_id": self.incident_id,
            "ok": self.ok,
            "key_id": self.key_id,
            "trusted_key": self.trusted_key,
            "bundle_key_id": self.bundle_key_id,
            "chain": self.chain.as_dict(),
            "seals": self.seals.as_dict(),
            "replay": self.replay.as_dict() if self.replay else None,
            "verdict": self.verdict(),
        }


def check(
    incident_id: str,
    events: list[AuditEvent],
    seals: list[Seal],
    public_key: Ed25519PublicKey,
) -> Integrity:
    closed = bool(events) and events[-1].kind == "incident.closed"
    return Integrity(
        incident_id=incident_id,
        chain=verify_chain(incident_id, events),
        seals=verify_seals(events, seals, public_key, closed=closed),
        key_id=key_id(public_key),
    )


async def check_with_replay(
    integrity: Integrity, events: list[AuditEvent], history: IncidentHistory
) -> Integrity:
    integrity.replay = await replay_incident(history, events)
    return integrity


def check_store(store: AuditStore, incident_id: str, public_key: Ed25519PublicKey) -> Integrity:
    return check(incident_id, store.events(incident_id), store.seals(incident_id), public_key)


# --- export bundles ---------------------------------------------------------------------------
@dataclass
class Bundle:
    incident_id: str
    events: list[AuditEvent]
    seals: list[Seal]
    public_key: Ed25519PublicKey  # a copy of the engine's key, never trusted by itself
    history: IncidentHistory | None


def check_bundle(bundle: Bundle, trusted: Ed25519PublicKey, *, trusted_key: str) -> Integrity:
    """Chain and seals of a bundle against a key the auditor trusts: whoever rewrites a bundle
    can re-sign it and ship their own key, so the bundle's key is only compared, never used."""
    integrity = check(bundle.incident_id, bundle.events, bundle.seals, trusted)
    integrity.trusted_key = trusted_key
    integrity.bundle_key_id = key_id(bundle.public_key)
    return integrity


def write_bundle(
    out: Path,
    *,
    incident_id: str,
    events: list[AuditEvent],
    seals: list[Seal],
    public_key: Ed25519PublicKey,
    history: IncidentHistory | None,
) -> Path:
    """Write a directory (or a .tar.gz when `out` ends so) an outside auditor can verify alone."""
    archive = out.name.endswith(".tar.gz")
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / incident_id if archive else out
        directory.mkdir(parents=True, exist_ok=True)
        contents = {
            "events.json": json.dumps([e.model_dump() for e in events], indent=1),
            "seals.json": json.dumps([s.model_dump() for s in seals], indent=1),
            "public-key.pem": public_key_pem(public_key),
        }
        if history is not None:
            contents["history.json"] = history.to_json()
        for name, text in contents.items():
            (directory / name).write_text(text, encoding="utf-8")
        manifest = {
            "format": BUNDLE_FORMAT,
            "incident_id": incident_id,
            "created_at": datetime.now(UTC).isoformat(),
            "key_id": key_id(public_key),
            "events": len(events),
            "seals": len(seals),
            "sha256": {
                name: hashlib.sha256(text.encode()).hexdigest() for name, text in contents.items()
            },
        }
        (directory / "manifest.json").write_text(json.dumps(manifest, indent=1), encoding="utf-8")
        if archive:
            out.parent.mkdir(parents=True, exist_ok=True)
            with tarfile.open(out, "w:gz") as tar:
                tar.add(directory, arcname=incident_id)
    return out


def read_bundle(path: Path) -> Bundle:
    if path.is_file() and path.name.endswith((".tar.gz", ".tgz")):
        with tempfile.TemporaryDirectory() as tmp:
            try:
                with tarfile.open(path, "r:gz") as tar:
                    tar.extractall(tmp, filter="data")
            except (tarfile.TarError, EOFError, OSError) as error:
                raise BundleError(f"{path}: not a readable .tar.gz bundle ({error})") from None
            inner = [p for p in Path(tmp).iterdir() if p.is_dir()]
            if len(inner) != 1:
                raise BundleError(f"{path}: expected one incident directory in the archive")
            return read_bundle(inner[0])
    if not path.is_dir():
        raise BundleError(f"{path}: no such bundle (a directory or .tar.gz)")
    try:
        manifest = json.loads((path / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise BundleError(f"{path}: unreadable manifest.json: {error}") from None
    if manifest.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{path}: not an audit bundle ({BUNDLE_FORMAT} expected)")
    for name, digest in manifest.get("sha256", {}).items():
        try:
            actual = hashlib.sha256((path / name).read_bytes()).hexdigest()
        except OSError:
            raise BundleError(f"{path}: {name} listed in the manifest is missing") from None
        if actual != digest:
            raise BundleError(f"{path}: {name} does not match the manifest (altered after export)")
    try:
        events = [
            AuditEvent.model_validate(e) for e in json.loads((path / "events.json").read_text())
        ]
        seals = [Seal.model_validate(s) for s in json.loads((path / "seals.json").read_text())]
        public_key = load_public_key((path / "public-key.pem").read_text())
    except (OSError, ValueError, SealError) as error:
        raise BundleError(f"{path}: {error}") from None
    history_file = path / "history.json"
    history = IncidentHistory.from_file(history_file) if history_file.is_file() else None
    return Bundle(str(manifest["incident_id"]), events, seals, public_key, history)


async def verify_incident(
    client: Client | None,
    store: AuditStore,
    public_key: Ed25519PublicKey,
    incident_id: str,
    *,
    replay: bool = True,
    trusted_key: str = "the engine's signing key",
) -> Integrity:
    """Chain and seals from the store; with a Temporal client, the replay comparison too."""
    events = store.events(incident_id)
    if not events:
        raise IncidentNotFound(f"no audit trail for incident {incident_id}")
    integrity = check(incident_id, events, store.seals(incident_id), public_key)
    integrity.trusted_key = trusted_key
    if replay and client is not None:
        history = await export_history(client, incident_id)
        integrity = await check_with_replay(integrity, events, history)
    return integrity

"""Audit events as the workflow produces them, and the hash that chains them.

The workflow computes each event's hash itself, so replaying its history yields exactly the rows
the audit store should hold; the store and auditors recompute the same chain to verify it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict

GENESIS_HASH = "0" * 64
# What json.dumps(..., sort_keys=True, separators=(",", ":"), default=str) builds on every call.
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), default=str)


class AuditEvent(BaseModel):
    """One row of an incident's audit trail."""

    model_config = ConfigDict(frozen=True)

    incident_id: str
    seq: int
    kind: str
    at: str  # ISO 8601 UTC, exactly as hashed
    actor: str | None = None
    step_id: str | None = None
    data: dict[str, Any] = {}
    prev_hash: str
    hash: str

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude={"hash"})

    def expected_hash(self) -> str:
        return chain_hash(self.prev_hash, self.body())


class AuditBatch(BaseModel):
    """Events handed to the audit writer in one call, in order.

    `task` is the workflow's history length when the events were produced (0: written only after
    the workflow task committed). Events are deterministic within a committed task, so a row that
    differs from a newer task's row for the same number can only come from an attempt that never
    committed (a crashed worker's); the store supersedes such rows and never others.
    """

    events: list[AuditEvent]
    task: int = 0


class AuditWritten(BaseModel):
    """What a write left at the head of the chain (recorded in the history for auditors)."""

    inserted: int
    superseded: int = 0
    last_seq: int
    head_hash: str


def chain_hash(prev_hash: str, body: dict[str, Any]) -> str:
    """SHA-256 over the previous hash and the event's canonical JSON."""
    canonical = _CANONICAL.encode(body)
    return hashlib.sha256((prev_hash + canonical).encode()).hexdigest()


def make_event(
    *,
    incident_id: str,
    seq: int,
    kind: str,
    at: str,
    prev_hash: str,
    actor: str | None = None,
    step_id: str | None = None,
    data: dict[str, Any] | None = None,
) -> AuditEvent:
    body = {
        "incident_id": incident_id,
        "seq": seq,
        "kind": kind,
        "at": at,
        "actor": actor,
        "step_id": step_id,
        "data": data or {},
        "prev_hash": prev_hash,
    }
    return AuditEvent(**body, hash=chain_hash(prev_hash, body))


class AuditTrail:
    """Numbers and chains an incident's events as the workflow produces them; hands them out in
    batches for writing. Carries its position across continue-as-new."""

    def __init__(self, incident_id: str, *, seq: int = 0, last_hash: str = GENESIS_HASH) -> None:
        self._incident_id = incident_id
        self.seq = seq
        self.last_hash = last_hash
        self.pending: list[AuditEvent] = []

    def record(
        self,
        kind: str,
        *,
        at: str,
        actor: str | None = None,
        step_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> AuditEvent:
        self.seq += 1
        event = make_event(
            incident_id=self._incident_id,
            seq=self.seq,
            kind=kind,
            at=at,
            prev_hash=self.last_hash,
            actor=actor,
            step_id=step_id,
            data=data,
        )
        self.last_hash = event.hash
        self.pending.append(event)
        return event

    def take(self) -> list[AuditEvent]:
        batch, self.pending = self.pending, []
        return batch

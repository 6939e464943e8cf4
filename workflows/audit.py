"""Audit events as the workflow produces them, and the hash that chains them.

The workflow computes each event's hash itself, so replaying its history yields exactly the rows
the audit store should hold; the store and auditors recompute the same chain to verify it.
"""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict

from workflows.durations import parse_duration

GENESIS_HASH = "0" * 64
# Events that change an incident's state as its board shows it: worth lending to a lever call
# that may be slow, so they are on record while it retries (AuditTrail.lend).
STATE_EVENTS = frozenset({"incident.triggered", "stand_down.requested", "incident.failed"})
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
        """What the hash covers: every field but the hash (as `make_event` hashed it)."""
        return {
            "incident_id": self.incident_id,
            "seq": self.seq,
            "kind": self.kind,
            "at": self.at,
            "actor": self.actor,
            "step_id": self.step_id,
            "data": self.data,
            "prev_hash": self.prev_hash,
        }

    def expected_hash(self) -> str:
        return chain_hash(self.prev_hash, self.body())


class AuditBatch(BaseModel):
    """Events handed to the audit writer in one call, in order.

    `task` is the workflow's history length when the events were produced (0: written only after
    the workflow task committed). Events are deterministic within a committed task, so a row that
    differs from a newer task's row for the same number can only come from an attempt that never
    committed (a crashed worker's); the store supersedes such rows and never others. A task that
    failed or timed out more than once is retried at the same history length: `task_time`, when
    the attempt started (`workflow.now()`, µs since the epoch), tells those attempts apart.
    """

    events: list[AuditEvent]
    task: int = 0
    task_time: int = 0


class CarriedOutcome(BaseModel):
    """The event a lever call's own outcome makes (`step.applied` or an undo's), less what only
    the platform's answer and the call's duration can say."""

    kind: str
    step_id: str
    lever: str
    restored: dict[str, Any] | None = None  # undo: the state put back
    reason: str = ""  # undo
    expires_after: str | None = None  # apply: the measure lapses this long after it is applied


class AuditCarry(BaseModel):
    """Audit events a lever call writes itself once the platform has answered (interpreter v5):
    those recorded before it, then its own outcome's event, then the close if the call ends the
    incident. The last lever call of a phase writes the phase's trail this way, instead of a
    write of its own after it (a local activity costs as much as a lever call)."""

    incident_id: str
    events: list[AuditEvent]  # already chained
    task: int  # as AuditBatch.task
    task_time: int = 0  # as AuditBatch.task_time
    seq: int  # the chain the outcome continues: its last number and hash
    last_hash: str
    began: str  # when the call began, on the incident's clock
    outcome: CarriedOutcome
    closes: bool = False
    close_actor: str | None = None


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


def present(_keep: set[str] | None = None, **values: Any) -> dict[str, Any]:
    """Event data without empty optional fields: an event means the same, and hashes the same,
    as it did before the field existed (replays of earlier incidents must agree with the store)."""
    keep = _keep or set()
    return {k: v for k, v in values.items() if k in keep or v not in (None, "")}


def applied_data(
    lever: str, previous: Any, expires_at: str | None, put_back: str | None = None
) -> dict[str, Any]:
    """`put_back`: the incident whose restore lifted the measure, when it is applied again for
    that (it keeps its place among measures on the same settings: see store.overlaps)."""
    return present(
        lever=lever,
        previous=previous,
        expires_at=expires_at,
        put_back=put_back,
        _keep={"previous"},
    )


def undone_data(lever: str, restored: Any, reason: str) -> dict[str, Any]:
    return present(lever=lever, restored=restored, reason=reason, _keep={"restored"})


def carried_events(
    carry: AuditCarry, *, elapsed_s: float, previous: dict[str, Any] | None
) -> list[AuditEvent]:
    """The events a carrying lever call's outcome adds to the chain. The activity writes them
    and the workflow expects them: both compute them here, from the same recorded answer."""
    moment = datetime.fromisoformat(carry.began) + timedelta(seconds=elapsed_s)
    at, spec = moment.isoformat(), carry.outcome
    if spec.kind == "step.applied":
        expires = spec.expires_after and (moment + parse_duration(spec.expires_after)).isoformat()
        data = applied_data(spec.lever, previous, expires or None)
    else:
        data = undone_data(spec.lever, spec.restored, spec.reason)
    outcome = make_event(
        incident_id=carry.incident_id,
        seq=carry.seq + 1,
        kind=spec.kind,
        at=at,
        prev_hash=carry.last_hash,
        step_id=spec.step_id,
        data=data,
    )
    if not carry.closes:
        return [outcome]
    closed = make_event(
        incident_id=outcome.incident_id,
        seq=outcome.seq + 1,
        kind="incident.closed",
        at=at,
        prev_hash=outcome.hash,
        actor=carry.close_actor,
    )
    return [outcome, closed]


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
    batches for writing. Carries its position across continue-as-new.

    A lever call may carry the pending events and write them with its own outcome (`carry`).
    Until it answers, events recorded meanwhile wait unchained, since its outcome takes the next
    number; once it answers (`settle`), the events it wrote are expected from the workflow, which
    records them as usual, and the waiting ones follow them."""

    def __init__(self, incident_id: str, *, seq: int = 0, last_hash: str = GENESIS_HASH) -> None:
        self._incident_id = incident_id
        self.seq = seq
        self.last_hash = last_hash
        self.pending: list[AuditEvent] = []
        self._carry: AuditCarry | None = None
        self._expected: list[AuditEvent] = []
        self._held: list[dict[str, Any]] = []
        self._lent_through = 0
        # The number of the last pending event that changes the incident's state (0: none), so
        # that lend() need not scan the pending events at every lever call.
        self._state_seq = 0

    def record(
        self,
        kind: str,
        *,
        at: str,
        actor: str | None = None,
        step_id: str | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        fields = {"kind": kind, "at": at, "actor": actor, "step_id": step_id, "data": data}
        if self._carry is not None:
            self._held.append(fields)
            return
        event = self._next(**fields)
        if self._expected:
            if event.hash == self._expected[0].hash:
                self._expected.pop(0)  # written by the lever call that carried the trail
                self._advance(event)
                if not self._expected:
                    self._release()
                return
            # Not what the call wrote (a path this code does not take): the store will refuse
            # or supersede the difference, loudly; nothing is dropped here.
            self._expected = []
            self._release()
            event = self._next(**fields)
        self._advance(event)
        self._pend(event)

    def lend(self) -> list[AuditEvent]:
        """The pending events, if one of them changes the incident's state and was not lent before
        (else none): a lever call writes them if the platform is slow to answer or fails. They
        stay pending: the workflow writes them as usual, and the store takes a row it holds
        already as done."""
        if self._state_seq <= self._lent_through:
            return []
        self._lent_through = self.pending[-1].seq
        return list(self.pending)

    def take(self) -> list[AuditEvent]:
        batch, self.pending, self._state_seq = self.pending, [], 0
        return batch

    def carry(
        self,
        *,
        task: int,
        task_time: int = 0,
        began: str,
        outcome: CarriedOutcome,
        close_actor: str | None = None,
    ) -> AuditCarry:
        """Hand the pending events to a lever call that writes them after the platform answers,
        with its outcome's event (and the close, if `close_actor` is given)."""
        carry = AuditCarry(
            incident_id=self._incident_id,
            events=self.take(),
            task=task,
            task_time=task_time,
            seq=self.seq,
            last_hash=self.last_hash,
            began=began,
            outcome=outcome,
            closes=close_actor is not None,
            close_actor=close_actor,
        )
        self._carry = carry
        return carry

    def settle(
        self, *, written: bool, elapsed_s: float | None, previous: dict[str, Any] | None
    ) -> None:
        """The carrying call answered: `written` if it wrote what it carried (else those events
        are pending again, and the workflow's next events follow them as usual)."""
        carry, self._carry = self._carry, None
        assert carry is not None
        if written and elapsed_s is not None:
            self._expected = carried_events(carry, elapsed_s=elapsed_s, previous=previous)
        else:
            self.pending[:0] = carry.events
            self._state_seq = max(
                (e.seq for e in self.pending if e.kind in STATE_EVENTS), default=0
            )
            self._release()

    @property
    def carrying(self) -> bool:
        return self._carry is not None or bool(self._expected)

    def _next(self, **fields: Any) -> AuditEvent:
        return make_event(
            incident_id=self._incident_id, seq=self.seq + 1, prev_hash=self.last_hash, **fields
        )

    def _advance(self, event: AuditEvent) -> None:
        self.seq, self.last_hash = event.seq, event.hash

    def _release(self) -> None:
        held, self._held = self._held, []
        for fields in held:
            event = self._next(**fields)
            self._advance(event)
            self._pend(event)

    def _pend(self, event: AuditEvent) -> None:
        self.pending.append(event)
        if event.kind in STATE_EVENTS:
            self._state_seq = event.seq

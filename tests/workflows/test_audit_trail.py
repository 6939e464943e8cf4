"""The workflow's audit trail when a lever call carries it (interpreter v5): every event is
chained once, in the order the trail defines, whether or not the call wrote what it carried."""

from __future__ import annotations

from store.audit_store import verify_chain
from workflows.audit import AuditEvent, AuditTrail, CarriedOutcome, applied_data, carried_events

BEGAN = "2026-11-29T12:00:00+00:00"
APPLIED_AT = "2026-11-29T12:00:00.250000+00:00"  # BEGAN plus the call's 0.25 s
OUTCOME = CarriedOutcome(kind="step.applied", step_id="s2", lever="detection.set_threshold")
PREVIOUS = {"threshold": 0.8}


def started_trail() -> AuditTrail:
    trail = AuditTrail("INC-1")
    trail.record("incident.triggered", at=BEGAN, actor="alice")
    trail.record("step.started", at=BEGAN, step_id="s2")
    return trail


def record_outcome(trail: AuditTrail) -> None:
    """What the workflow records once the call answers, exactly as for a call that carried
    nothing."""
    data = applied_data("detection.set_threshold", PREVIOUS, None)
    trail.record("step.applied", at=APPLIED_AT, step_id="s2", data=data)


def test_events_recorded_during_the_call_follow_what_it_wrote() -> None:
    trail = started_trail()
    carry = trail.carry(task=7, began=BEGAN, outcome=OUTCOME)
    assert [e.seq for e in carry.events] == [1, 2] and trail.pending == []
    trail.record("note.added", at=BEGAN, actor="bob", data={"text": "meanwhile"})
    assert trail.pending == []  # its number is not known until the call answers
    trail.settle(written=True, elapsed_s=0.25, previous=PREVIOUS)
    written = [*carry.events, *carried_events(carry, elapsed_s=0.25, previous=PREVIOUS)]
    record_outcome(trail)
    assert [(e.seq, e.kind) for e in trail.pending] == [(4, "note.added")]
    whole: list[AuditEvent] = written + trail.pending
    assert [e.kind for e in written][-1] == "step.applied"
    assert verify_chain("INC-1", whole).ok
    assert not trail.carrying


def test_events_a_call_did_not_write_are_pending_again_in_order() -> None:
    trail = started_trail()
    carry = trail.carry(task=7, began=BEGAN, outcome=OUTCOME)
    trail.record("note.added", at=BEGAN, actor="bob", data={"text": "meanwhile"})
    trail.settle(written=False, elapsed_s=0.25, previous=PREVIOUS)
    record_outcome(trail)
    kinds = [e.kind for e in trail.pending]
    assert kinds == ["incident.triggered", "step.started", "note.added", "step.applied"]
    assert trail.pending[:2] == carry.events
    assert verify_chain("INC-1", trail.pending).ok


def test_a_closing_call_expects_the_close_too() -> None:
    trail = started_trail()
    undo = CarriedOutcome(kind="step.undone", step_id="s2", lever="detection.set_threshold")
    carry = trail.carry(task=9, began=BEGAN, outcome=undo, close_actor="bob")
    trail.settle(written=True, elapsed_s=0.25, previous=None)
    written = carried_events(carry, elapsed_s=0.25, previous=None)
    assert [e.kind for e in written] == ["step.undone", "incident.closed"]
    trail.record("step.undone", at=APPLIED_AT, step_id="s2", data=written[0].data)
    assert trail.carrying  # the close is still to come
    trail.record("incident.closed", at=APPLIED_AT, actor="bob")
    assert trail.pending == [] and not trail.carrying
    assert (trail.seq, trail.last_hash) == (written[-1].seq, written[-1].hash)


def test_an_event_the_call_did_not_write_is_kept_not_dropped() -> None:
    """Not a path the interpreter takes; if it did, the store would refuse the difference."""
    trail = started_trail()
    trail.carry(task=7, began=BEGAN, outcome=OUTCOME)
    trail.settle(written=True, elapsed_s=0.25, previous=PREVIOUS)
    trail.record("step.failed", at=APPLIED_AT, step_id="s2", data={"error": "x"})
    assert [(e.seq, e.kind) for e in trail.pending] == [(3, "step.failed")]
    assert not trail.carrying


def test_the_carried_expiry_is_the_one_the_workflow_computes() -> None:
    trail = started_trail()
    expiring = OUTCOME.model_copy(update={"expires_after": "2h"})
    carry = trail.carry(task=7, began=BEGAN, outcome=expiring)
    (outcome,) = carried_events(carry, elapsed_s=0.25, previous=PREVIOUS)
    assert outcome.at == APPLIED_AT
    assert outcome.data["expires_at"] == "2026-11-29T14:00:00.250000+00:00"
    assert outcome.data["previous"] == PREVIOUS


def test_pending_events_are_lent_once_per_state_event_and_stay_pending() -> None:
    trail = started_trail()
    assert [e.kind for e in trail.lend()] == ["incident.triggered", "step.started"]
    assert len(trail.pending) == 2  # lent, not taken: the workflow still writes them
    trail.record("step.applied", at=APPLIED_AT, step_id="s2")
    assert trail.lend() == []  # nothing new the board would show
    trail.record("stand_down.requested", at=APPLIED_AT, actor="bob")
    assert [e.seq for e in trail.lend()] == [1, 2, 3, 4]
    trail.take()
    trail.record("incident.failed", at=APPLIED_AT)
    trail.carry(task=9, began=APPLIED_AT, outcome=OUTCOME)
    assert trail.lend() == []  # the carrying call has them
    trail.settle(written=False, elapsed_s=None, previous=None)
    assert [e.kind for e in trail.lend()] == ["incident.failed"]  # handed back, never lent
    assert trail.lend() == []


def test_the_hashed_body_is_every_field_but_the_hash() -> None:
    trail = started_trail()
    record_outcome(trail)
    *_, event = trail.take()
    assert event.body() == event.model_dump(exclude={"hash"})
    assert event.expected_hash() == event.hash

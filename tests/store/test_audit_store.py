"""The audit store on SQLite and PostgreSQL: append-only, idempotent, hash-chained."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlmodel import Session

from store.audit_store import AppendResult, AuditStore, Write, projection_problem
from store.errors import AuditConflict, AuditGap, AuditRowUnreadable
from workflows.audit import GENESIS_HASH, AuditEvent, AuditTrail, make_event


def chain(incident_id: str, count: int) -> list[AuditEvent]:
    events, previous = [], GENESIS_HASH
    for seq in range(1, count + 1):
        event = make_event(
            incident_id=incident_id,
            seq=seq,
            kind=f"kind.{seq}",
            at=f"2026-11-28T10:00:{seq:02d}+00:00",
            prev_hash=previous,
            actor="alice",
            step_id=f"step-{seq}",
            data={"n": seq, "x": [1.5, "a"]},
        )
        events.append(event)
        previous = event.hash
    return events


def new_id() -> str:
    return f"INC-TEST-{uuid.uuid4().hex[:10]}"


def execute(store: AuditStore, sql: str, **params: object) -> None:
    with Session(store.engine) as session:
        session.execute(text(sql), params)
        session.commit()


def test_events_round_trip_in_order_and_verify(audit_store: AuditStore) -> None:
    """Appended events come back identical and in order, and their chain verifies."""
    incident = new_id()
    events = chain(incident, 5)
    assert audit_store.append(events[:2]).inserted == 2
    assert audit_store.append(events[2:]).inserted == 3
    assert events == audit_store.events(incident)
    result = audit_store.verify(incident)
    assert (True, 5) == (result.ok, result.events)


def test_a_retried_write_never_duplicates(audit_store: AuditStore) -> None:
    """Writing the same batch twice (a retried activity) inserts nothing the second time."""
    incident = new_id()
    events = chain(incident, 3)
    audit_store.append(events)
    assert audit_store.append(events).inserted == 0
    assert audit_store.append(events[1:]).inserted == 0
    assert len(audit_store.events(incident)) == 3


def test_a_different_event_under_a_held_number_is_refused(audit_store: AuditStore) -> None:
    """The store never overwrites: another event with the same seq is a conflict."""
    incident = new_id()
    events = chain(incident, 2)
    audit_store.append(events)
    forged = make_event(
        incident_id=incident, seq=2, kind="forged", at=events[1].at, prev_hash=events[0].hash
    )
    with pytest.raises(AuditConflict):
        audit_store.append([forged])


def test_an_event_ahead_of_its_predecessor_waits(audit_store: AuditStore) -> None:
    """An event whose predecessor is not recorded yet is refused as a gap (and retried later)."""
    incident = new_id()
    events = chain(incident, 3)
    with pytest.raises(AuditGap):
        audit_store.append(events[2:])
    audit_store.append(events)
    assert audit_store.verify(incident).ok


def test_an_altered_row_is_named(audit_store: AuditStore) -> None:
    """Editing a recorded row's content breaks verification at exactly that row."""
    incident = new_id()
    audit_store.append(chain(incident, 4))
    execute(
        audit_store,
        "UPDATE audit_events SET actor = 'mallory' WHERE incident_id = :i AND seq = 3",
        i=incident,
    )
    result = audit_store.verify(incident)
    assert (False, 3) == (result.ok, result.first_bad_seq)
    assert "altered" in (result.problem or "")


def test_a_removed_row_is_named(audit_store: AuditStore) -> None:
    """Deleting a row from the middle of the chain is reported at the gap."""
    incident = new_id()
    audit_store.append(chain(incident, 4))
    execute(audit_store, "DELETE FROM audit_events WHERE incident_id = :i AND seq = 2", i=incident)
    result = audit_store.verify(incident)
    assert (False, 2) == (result.ok, result.first_bad_seq)
    assert "missing" in (result.problem or "")


def test_concurrent_writers_keep_every_chain_intact(audit_store: AuditStore) -> None:
    """Many incidents written at once by several threads, each batch twice, stay exact."""
    incidents = [new_id() for _ in range(12)]
    chains = {incident: chain(incident, 20) for incident in incidents}

    def write(incident: str) -> None:
        events = chains[incident]
        for start in range(0, 20, 5):
            audit_store.append(events[start : start + 5])
            audit_store.append(events[start : start + 5])

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(write, incidents * 2))
    for incident in incidents:
        assert chains[incident] == audit_store.events(incident)
        assert audit_store.verify(incident).ok


def test_rows_of_an_attempt_that_never_committed_are_superseded_by_a_newer_task(
    audit_store: AuditStore,
) -> None:
    """A crashed worker's uncommitted rows give way to the next attempt's, and are kept aside."""
    incident = new_id()
    committed = chain(incident, 2)
    audit_store.append(committed, task=3)
    lost = [
        make_event(
            incident_id=incident,
            seq=3,
            kind="step.applied",
            at="2026-11-28T10:00:10+00:00",
            prev_hash=committed[-1].hash,
        ),
    ]
    audit_store.append(lost, task=7)
    retried = make_event(
        incident_id=incident,
        seq=3,
        kind="step.applied",
        at="2026-11-28T10:00:20+00:00",
        prev_hash=committed[-1].hash,
    )
    result = audit_store.append([retried], task=9)
    assert (1, 1) == (result.inserted, result.superseded)
    assert [*committed, retried] == audit_store.events(incident)
    assert audit_store.verify(incident).ok


def test_an_older_task_never_supersedes_a_newer_one(audit_store: AuditStore) -> None:
    """A stale worker writing late cannot replace what the live attempt recorded."""
    incident = new_id()
    committed = chain(incident, 2)
    audit_store.append(committed, task=3)
    live = make_event(
        incident_id=incident,
        seq=3,
        kind="step.applied",
        at="2026-11-28T10:00:20+00:00",
        prev_hash=committed[-1].hash,
    )
    audit_store.append([live], task=9)
    stale = make_event(
        incident_id=incident,
        seq=3,
        kind="step.applied",
        at="2026-11-28T10:00:10+00:00",
        prev_hash=committed[-1].hash,
    )
    with pytest.raises(AuditConflict):
        audit_store.append([stale], task=7)
    with pytest.raises(AuditConflict):  # committed-only writers (task 0) never supersede
        audit_store.append([stale], task=0)
    assert [*committed, live] == audit_store.events(incident)


def test_attempts_of_one_task_are_told_apart_by_when_they_started(
    audit_store: AuditStore,
) -> None:
    """A workflow task that timed out twice is retried at the same history length: the later
    attempt's rows replace the earlier one's, and the earlier attempt, writing late, cannot put
    its rows back."""
    incident = new_id()
    first, second, third = (
        make_event(
            incident_id=incident,
            seq=1,
            kind="incident.triggered",
            at=f"2026-11-28T10:00:{second:02d}+00:00",
            prev_hash=GENESIS_HASH,
        )
        for second in (1, 11, 21)
    )
    audit_store.append([first], task=3, task_time=1_000)
    assert AppendResult(1, 1) == audit_store.append([second], task=6, task_time=11_000)
    assert AppendResult(1, 1) == audit_store.append([third], task=6, task_time=21_000)
    with pytest.raises(AuditConflict):
        audit_store.append([second], task=6, task_time=11_000)
    assert [third] == audit_store.events(incident)
    assert AppendResult(0, 0) == audit_store.append([third], task=6, task_time=21_000)


def test_two_reordered_rows_are_named(audit_store: AuditStore) -> None:
    """Swapping the content of two rows breaks the chain at the first of them."""
    incident = new_id()
    audit_store.append(chain(incident, 4))
    execute(
        audit_store,
        "UPDATE audit_events SET seq = -2 WHERE incident_id = :i AND seq = 2",
        i=incident,
    )
    execute(
        audit_store,
        "UPDATE audit_events SET seq = 2 WHERE incident_id = :i AND seq = 3",
        i=incident,
    )
    execute(
        audit_store,
        "UPDATE audit_events SET seq = 3 WHERE incident_id = :i AND seq = -2",
        i=incident,
    )
    result = audit_store.verify(incident)
    assert (False, 2) == (result.ok, result.first_bad_seq)


def test_a_group_of_writes_lands_together_and_a_bad_one_fails_alone(
    audit_store: AuditStore,
) -> None:
    """Several incidents' writes go in one call; one that breaks its chain is refused on its own
    and the rest are recorded exactly."""
    good = {incident: chain(incident, 4) for incident in [new_id() for _ in range(3)]}
    gap = chain(new_id(), 3)[1:]  # starts at seq 2: its first event is not recorded
    writes = [Write(events, task=5) for events in good.values()]
    outcomes = audit_store.append_many([writes[0], Write(gap), *writes[1:]])
    assert isinstance(outcomes[1], AuditGap)
    assert [4, 4, 4] == [o.inserted for o in outcomes if isinstance(o, AppendResult)]
    for incident, events in good.items():
        assert events == audit_store.events(incident)
    assert [] == audit_store.events(gap[0].incident_id)
    again = audit_store.append_many(writes)  # a retried group inserts nothing
    assert [0, 0, 0] == [o.inserted for o in again if isinstance(o, AppendResult)]


def test_a_row_that_is_no_event_is_one_named_error(tmp_path: Path) -> None:
    """A row edited by hand into something no event is (its data not JSON) is refused by name,
    with the incident and the row, never a traceback from deep inside."""
    store = AuditStore(f"sqlite:///{tmp_path / 'audit.db'}")
    trail = AuditTrail("INC-BAD")
    trail.record("incident.triggered", at="2026-12-01T06:00:00+00:00", data={"playbook": "p"})
    store.append(trail.take())
    with store.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE audit_events SET data = '{not json' WHERE seq = 1")
    with pytest.raises(AuditRowUnreadable, match="INC-BAD row 1 cannot be read as an audit event"):
        store.events("INC-BAD")
    store.dispose()


def test_the_incident_row_is_made_again_from_the_trail_and_an_edit_named(
    audit_store: AuditStore,
) -> None:
    """The incidents row (what the board reads) agrees with its trail on either database, with
    its datetimes and summary as each hands them back; an edit to it is named."""
    incident = new_id()
    trail = AuditTrail(incident)
    trail.record(
        "incident.triggered",
        at="2026-11-28T10:00:00+00:00",
        actor="alice",
        data={"playbook": "p", "version": 2, "level": "severe"},
    )
    trail.record(
        "step.applied",
        at="2026-11-28T10:00:01+00:00",
        step_id="s",
        data={"lever": "moderation.surge", "expires_at": "2026-11-28T11:00:01+00:00"},
    )
    trail.record(
        "level.escalated", at="2026-11-28T10:00:02+00:00", actor="bob", data={"level": "critical"}
    )
    audit_store.append(trail.take())
    row = audit_store.incident(incident)
    assert row is not None and row.summary and row.summary["measures"]
    assert projection_problem(row, audit_store.events(incident)) is None

    # A row behind its trail (rewound to an earlier moment) shows the incident as it stood then.
    trail.record("incident.closed", at="2026-11-28T10:00:03+00:00", actor="bob")
    audit_store.append(trail.take())
    assert (
        "the incidents table's row ends at row 3, the trail at row 4: the board shows the "
        "incident as it stood then"
    ) == projection_problem(row, audit_store.events(incident))

    execute(
        audit_store, "UPDATE incidents SET level = 'elevated' WHERE incident_id = :i", i=incident
    )
    row = audit_store.incident(incident)
    assert row is not None
    assert (
        "the incidents table's row shows level 'elevated' where its trail says 'critical'"
        == projection_problem(row, audit_store.events(incident))
    )
    execute(audit_store, "DELETE FROM audit_events WHERE incident_id = :i AND seq = 4", i=incident)
    assert (
        "the incidents table's row ends at row 4, the trail at row 3: rows are missing from the "
        "trail"
    ) == projection_problem(row, audit_store.events(incident))

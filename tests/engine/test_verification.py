"""Auditors' replay against the table while a lever call that wrote early is still in flight."""

from __future__ import annotations

from engine.verification import compare_events, with_early_writes
from workflows.audit import AuditEvent, AuditTrail

AT = "2026-11-29T12:00:00+00:00"


def chain(count: int) -> list[AuditEvent]:
    trail = AuditTrail("INC-1")
    for index in range(count):
        trail.record("step.started", at=AT, step_id=f"s{index}")
    return trail.take()


def test_the_table_may_hold_what_a_call_in_flight_was_lent_and_no_more() -> None:
    events = chain(5)
    produced, lent = events[:2], events[:4]  # written by the workflow; lent to a call since
    for stored in (events[:2], events[:3], events[:4]):
        assert compare_events(with_early_writes(produced, lent, stored), stored, "t").matches
    extra = compare_events(with_early_writes(produced, lent, events), events, "t")
    assert extra.first_difference == "seq 5 (step.started) in the t was never produced"


def test_a_row_that_differs_from_what_was_lent_is_reported() -> None:
    events, other = chain(3), chain(4)
    altered = [*events[:2], other[3].model_copy(update={"seq": 3})]
    compared = compare_events(with_early_writes(events[:2], events, altered), altered, "t")
    assert not compared.matches
    assert (compared.first_difference or "").startswith("seq 3:")


def rechained(events: list[AuditEvent]) -> list[AuditEvent]:
    """The events numbered and chained again from 1, as a forger who removed a row would."""
    trail = AuditTrail("INC-1")
    for event in events:
        trail.record(event.kind, at=event.at, step_id=event.step_id, data=event.data)
    return trail.take()


def test_a_row_removed_and_the_rest_renumbered_is_named_missing_not_altered() -> None:
    """The chain re-hashed after a deletion verifies on its own; the replay names the row that
    is gone (and, the other way round, a row slipped in), not every later row as altered."""
    events = chain(5)
    removed = rechained([*events[:2], *events[3:]])
    compared = compare_events(events, removed, "audit table")
    assert (False, 2) == (compared.matches, compared.events)
    assert (
        "seq 3 (step.started) is missing from the audit table; the rows after it are renumbered"
        == compared.first_difference
    )
    # Taken out alone, the rows after it keep their numbers: not said to be renumbered.
    compared = compare_events(events, [*events[:2], *events[3:]], "audit table")
    assert (
        "seq 3 (step.started) is missing from the audit table; the rows after it are unchanged, "
        "with their own numbers" == compared.first_difference
    )
    added = rechained([*events[:2], events[1], *events[2:]])
    compared = compare_events(events, added, "audit table")
    assert (
        "seq 3 (step.started) in the audit table was never produced; the rows after it are "
        "renumbered" == compared.first_difference
    )

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

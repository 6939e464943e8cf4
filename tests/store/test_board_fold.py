"""The board's summary of an incident, folded from its audit events alone: what it must stop
showing once the trail says so, and what it must keep showing after the close."""

from __future__ import annotations

from typing import Any

import pytest

from store.board import empty_summary, fold
from workflows.audit import AuditTrail

AT = "2026-12-01T06:00:00+00:00"


def summary(*events: tuple[str, str | None, dict[str, Any]]) -> dict[str, Any]:
    trail = AuditTrail("INC-FOLD")
    for kind, step_id, data in events:
        trail.record(kind, at=AT, step_id=step_id, data=data)
    facts = empty_summary()
    for event in trail.take():
        fold(facts, event)
    return facts


ASKED = ("approval.requested", "cut", {"roles": ["commander"], "quorum": 1, "deadline": AT})
APPLIED = (
    "step.applied",
    "surge",
    {"lever": "moderation.surge", "previous": {}, "expires_at": "2026-12-02T06:00:00+00:00"},
)


def test_an_approval_withdrawn_by_a_failure_or_a_de_escalation_is_no_longer_waiting() -> None:
    assert {"cut"} == set(summary(ASKED)["pending_approvals"])
    assert {} == summary(ASKED, ("incident.failed", "surge", {"error": "x"}))["pending_approvals"]
    assert {} == summary(ASKED, ("step.dormant", "cut", {"level": "elevated"}))["pending_approvals"]
    # An escalation of the failed incident that asks again is waiting again.
    failed_then_asked = summary(ASKED, ("incident.failed", "surge", {}), ASKED)
    assert {"cut"} == set(failed_then_asked["pending_approvals"])


def test_a_measure_whose_undo_failed_stays_after_the_close_until_it_is_settled() -> None:
    undo_failed = ("step.undo_failed", "surge", {"lever": "moderation.surge", "error": "HTTP 400"})
    closed = ("incident.closed", None, {})
    assert None is summary(APPLIED, undo_failed)["measures"]["surge"]["expires_at"]  # no lapse
    left = summary(APPLIED, undo_failed, closed)
    assert "HTTP 400" == left["measures"]["surge"]["not_restored"]
    assert None is left["measures"]["surge"]["expires_at"]  # no lapse will take it back
    assert 1 == left["not_restored"]
    # Taken back at last (or applied again): nothing is left to flag.
    undone = ("step.undone", "surge", {"lever": "moderation.surge", "restored": {}})
    assert (0, {}) == (
        summary(APPLIED, undo_failed, undone)["not_restored"],
        summary(APPLIED, undo_failed, undone)["measures"],
    )
    assert {} == summary(APPLIED, closed)["measures"]
    by_hand = ("step.restored_by_hand", "surge", {"lever": "moderation.surge", "reason": "done"})
    assert (0, {}) == (
        summary(APPLIED, undo_failed, by_hand)["not_restored"],
        summary(APPLIED, undo_failed, by_hand)["measures"],
    )


def test_a_measure_whose_apply_had_no_answer_may_be_in_force_until_the_stand_down_learns() -> None:
    """Its step.failed says `unanswered`: the board keeps it as maybe in force (the overlap
    check reads the same summary) until it is applied again and taken back; a failure with an
    answer is no measure."""
    no_answer = ("step.failed", "surge", {"lever": "moderation.surge", "unanswered": True})
    maybe = summary(no_answer)["measures"]
    assert {"surge": {"lever": "moderation.surge", "expires_at": None, "uncertain": True}} == maybe
    refused = ("step.failed", "surge", {"lever": "moderation.surge", "error": "HTTP 400"})
    assert {} == summary(refused)["measures"]
    learned = ("step.applied", "surge", {"lever": "moderation.surge", "after_failure": True})
    assert {"surge": {"lever": "moderation.surge", "expires_at": None}} == summary(
        no_answer, learned
    )["measures"]
    undone = ("step.undone", "surge", {"lever": "moderation.surge", "restored": {}})
    closed = ("incident.closed", None, {})
    assert {} == summary(no_answer, learned, undone, closed)["measures"]


@pytest.mark.parametrize("kind", ["overlap.lifted", "overlap.left_lifted"])
def test_an_earlier_restore_over_a_measure_with_no_answer_settles_it(kind: str) -> None:
    """Told that an earlier incident's restore went over it, the incident names the measure under
    `no_answer`: whatever the call did is gone, so the board no longer counts it."""
    no_answer = ("step.failed", "surge", {"lever": "moderation.surge", "unanswered": True})
    other = ("step.applied", "cut", {"lever": "recommender.throttle"})
    told = (kind, None, {"by": "INC-1", "step": "x", "steps": [], "no_answer": ["surge"]})
    assert ["cut"] == list(summary(no_answer, other, told)["measures"])

"""What the console's incident page lists as in force, from a status alone."""

from __future__ import annotations

from api.auth import Principal
from api.web.views import incident_view
from workflows.incident import IncidentState, IncidentStatus, StepRecord


def test_a_measure_being_taken_back_is_still_listed_in_force() -> None:
    """Its undo is retrying (the platform erred): the setting holds until the platform answers,
    so the page lists it, with why, beside the measures still applied, and not the one undone."""
    steps = [
        StepRecord(id="surge", kind="lever", lever="moderation.surge", state="undone"),
        StepRecord(
            id="limit-one",
            kind="lever",
            lever="recommender.throttle",
            state="undoing",
            error="recommender.throttle: platform error HTTP 503",
        ),
        StepRecord(id="cut", kind="lever", lever="recommender.throttle", state="applied"),
        StepRecord(id="tell", kind="lever", lever="notify.webhook", state="applied"),
    ]
    status = incident("standing_down", *steps)
    alice = Principal(name="alice", roles=["commander"], token_id="t1")
    view = incident_view(status, alice, approval_roles={}, timeline=[])
    assert ["limit-one", "cut"] == [m.id for m in view.measures]


def test_a_measure_whose_apply_had_no_answer_is_listed_as_maybe_in_force() -> None:
    """Its step failed with no answer from the platform, which may have applied it: the page
    lists it apart from the measures known to be in force; a step that failed otherwise not."""
    status = incident("failed", *FAILED_TWO_WAYS)
    alice = Principal(name="alice", roles=["commander"], token_id="t1")
    view = incident_view(status, alice, approval_roles={}, timeline=[])
    assert ([], ["surge"]) == ([m.id for m in view.measures], [m.id for m in view.maybe_in_force])


# A measure whose apply had no answer (maybe in force), and one the platform refused.
FAILED_TWO_WAYS = (
    StepRecord(
        id="surge",
        kind="lever",
        lever="moderation.surge",
        state="failed",
        uncertain=True,
        error="moderation.surge: no answer from the platform at http://p/moderation/surge",
    ),
    StepRecord(id="cut", kind="lever", lever="recommender.throttle", state="failed"),
)


def incident(state: IncidentState, *steps: StepRecord) -> IncidentStatus:
    """An incident's status with these steps (the rest as any)."""
    return IncidentStatus(
        incident_id="INC-1",
        state=state,
        playbook="p",
        version=1,
        playbook_hash="sha256:00",
        inputs={},
        triggered_by="alice",
        triggered_at="2026-12-01T10:00:00+00:00",
        steps=list(steps),
    )

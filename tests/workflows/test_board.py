"""The incident board follows a real incident from its audit trail alone: approvals waiting,
measures in force with their lapse times, the next review, and nothing left once it closes."""

from __future__ import annotations

from datetime import timedelta

from sqlmodel import Session

from engine.board import BoardEntry, board_page
from engine.incidents import not_restored
from store.audit_store import IncidentRow
from tests.workflows.lab import Lab, at
from workflows.crisis import CrisisWorkflow
from workflows.incident import ApproveRequest, NoteRequest, RestoreRequest, ReviewRequest

BOARD_PLAYBOOK = """
reviews: {every: 4h, grace: 30m, on_missed: escalate}
steps:
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
    expires_after: 12h
  - id: throttle
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.5}
    approval: {roles: [commander, policy-lead], quorum: 2, timeout: 2h, on_timeout: skip}
    expires_after: 24h
"""


def entry(lab: Lab, incident_id: str, state: str = "open") -> BoardEntry:
    page = board_page(lab.store, state=state, limit=200)  # type: ignore[arg-type]
    return next(item for item in page.items if item.incident_id == incident_id)


async def test_the_board_shows_what_a_commander_must_act_on(lab: Lab) -> None:
    incident_id = await lab.trigger(BOARD_PLAYBOOK)
    await lab.audit(incident_id, until="approval.requested")
    started = at((await lab.status(incident_id)).triggered_at)
    now = entry(lab, incident_id)
    assert (["throttle"], 2, 0) == (
        [p.step_id for p in now.pending_approvals],
        now.pending_approvals[0].quorum,
        now.pending_approvals[0].approvals,
    )
    assert ["commander", "policy-lead"] == now.pending_approvals[0].roles
    assert [("surge", "moderation.surge")] == [(m.step_id, m.lever) for m in now.measures]
    assert now.next_expiry is not None  # 12h after the surge was applied, a moment after trigger
    assert timedelta(0) <= now.next_expiry - (started + timedelta(hours=12)) < timedelta(minutes=1)
    assert started + timedelta(hours=4) == now.review_due
    assert ("running", "elevated", "alice") == (now.state, now.level, now.triggered_by)

    approve = CrisisWorkflow.approve
    await lab.act(
        incident_id, approve, ApproveRequest(step_id="throttle", actor="alice", role="commander")
    )
    await lab.audit(incident_id, until="approval.given")
    assert 1 == entry(lab, incident_id).pending_approvals[0].approvals
    await lab.act(
        incident_id, approve, ApproveRequest(step_id="throttle", actor="bob", role="policy-lead")
    )
    await lab.audit(incident_id, until="step.applied", count=2)
    now = entry(lab, incident_id)
    assert [] == now.pending_approvals
    assert ["surge", "throttle"] == [m.step_id for m in now.measures]  # soonest lapse first

    # A review confirmed moves the next one on; a missed one is replaced by the one after it.
    await lab.advance(timedelta(hours=1))
    await lab.act(incident_id, CrisisWorkflow.confirm_review, ReviewRequest(actor="alice"))
    await lab.audit(incident_id, until="review.confirmed")
    confirmed_due = entry(lab, incident_id).review_due
    assert confirmed_due is not None and confirmed_due > started + timedelta(hours=4)
    await lab.advance(timedelta(hours=5))
    await lab.act(incident_id, CrisisWorkflow.add_note, NoteRequest(actor="t", text="wake"))
    await lab.audit(incident_id, until="review.missed")
    missed = entry(lab, incident_id)
    assert missed.review_due is not None and missed.review_due > confirmed_due
    assert "severe" == missed.level  # the missed review escalated

    # The surge lapsed at 12h; stand-down leaves nothing on the board's open list.
    await lab.advance(timedelta(hours=7))
    await lab.act(incident_id, CrisisWorkflow.add_note, NoteRequest(actor="t", text="wake"))
    await lab.audit(incident_id, until="step.expired")
    assert ["throttle"] == [m.step_id for m in entry(lab, incident_id).measures]
    await lab.incidents.stand_down(incident_id, actor="alice", reason="calm")
    await lab.audit(incident_id, until="incident.closed")
    closed = entry(lab, incident_id, state="all")
    assert ("closed", [], [], None) == (
        closed.state,
        closed.measures,
        closed.pending_approvals,
        closed.review_due,
    )
    assert incident_id not in [i.incident_id for i in board_page(lab.store).items]


async def test_rows_projected_before_the_board_existed_catch_up(lab: Lab) -> None:
    """A row without a summary (written by an earlier version) is rebuilt from its events."""
    incident_id = await lab.trigger(BOARD_PLAYBOOK)
    await lab.audit(incident_id, until="approval.requested")
    with Session(lab.store.engine) as session:
        row = session.get(IncidentRow, incident_id)
        assert row is not None
        row.summary = None
        session.add(row)
        session.commit()
    await lab.act(
        incident_id,
        CrisisWorkflow.approve,
        ApproveRequest(step_id="throttle", actor="alice", role="commander"),
    )
    await lab.audit(incident_id, until="approval.given")
    now = entry(lab, incident_id)
    assert [("throttle", 1)] == [(p.step_id, p.approvals) for p in now.pending_approvals]
    assert ["surge"] == [m.step_id for m in now.measures]


async def test_pages_are_newest_first_and_say_where_the_next_starts(lab: Lab) -> None:
    ids = []
    for _ in range(3):
        ids.append(await lab.trigger(BOARD_PLAYBOOK))
        await lab.audit(ids[-1], until="approval.requested")
        await lab.advance(timedelta(minutes=1))
    mine = [i for i in (await _all_open(lab)) if i in ids]
    assert list(reversed(ids)) == mine
    first = board_page(lab.store, limit=1)
    assert 1 == len(first.items) and first.next_offset == 1
    second = board_page(lab.store, limit=1, offset=1)
    assert first.items[0].incident_id != second.items[0].incident_id


async def _all_open(lab: Lab) -> list[str]:
    return [i.incident_id for i in board_page(lab.store, limit=200).items]


async def test_a_measure_whose_undo_failed_keeps_the_incident_on_the_open_board(
    lab: Lab,
) -> None:
    """Stand-down could not take the surge back (the platform refuses its undo for good): the
    incident waits standing down, the board lists the surge NOT RESTORED with the reason, and
    the commander's stand-down answer names it; a restore by hand clears it."""
    incident_id = await lab.trigger(BOARD_PLAYBOOK)
    await lab.audit(incident_id, until="approval.requested")
    await lab.sandbox.fault(path_prefix="/moderation", operation_prefix="undo-", status=400)
    status = await lab.incidents.stand_down(incident_id, actor="alice", reason="calm")
    await lab.audit(incident_id, until="step.undo_failed")

    assert "standing_down" == status.state
    told = not_restored(status)
    assert told is not None and told.startswith("1 measure was NOT RESTORED")
    assert "surge (moderation.surge: " in told
    left = entry(lab, incident_id)
    assert ("standing_down", [], ["surge"]) == (
        left.state,
        left.pending_approvals,
        [m.step_id for m in left.measures],
    )
    assert left.measures[0].not_restored and "400" in left.measures[0].not_restored
    by_hand = RestoreRequest(step_id="surge", actor="alice", reason="done in admin", by_hand=True)
    await lab.act(incident_id, CrisisWorkflow.restore, by_hand)
    await lab.audit(incident_id, until="incident.closed")
    assert incident_id not in await _all_open(lab)
    await lab.sandbox.clear_faults()

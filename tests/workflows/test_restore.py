"""A measure whose undo failed for good: a stand-down waits, standing down, until a commander
retries the undo or records a restore by hand; only then do closing steps run and the incident
close. The platform is the real sandbox, refusing the undo until told otherwise."""

from __future__ import annotations

from datetime import timedelta

import pytest

from engine.board import board_page
from engine.errors import ActionInvalid, IncidentConflict
from engine.incidents import not_restored, undelivered
from engine.overlap import refuse_restore_if_later_overlaps
from tests.helpers import assert_eventually
from tests.workflows.lab import Lab, at, kinds, level, settings_of, step, step_states
from workflows.crisis import CrisisWorkflow
from workflows.incident import RestoreRequest

TWO_MEASURES = """
steps:
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
    expires_after: 1h
  - id: throttle
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.5}
on_stand_down:
  - id: all-clear
    do: notify.webhook
    with: {to: internal, message: stood down}
"""
REFUSE_SURGE_UNDO = {"path_prefix": "/moderation", "operation_prefix": "undo-", "status": 400}


def restore(actor: str = "bob", *, by_hand: bool = False) -> RestoreRequest:
    reason = "restored in the admin tool" if by_hand else "platform is back"
    return RestoreRequest(step_id="surge", actor=actor, reason=reason, by_hand=by_hand)


async def stood_down_with_surge_left(lab: Lab) -> tuple[str, dict[str, object]]:
    """An incident stood down while the platform refuses the surge's undo; the platform's
    settings before it was triggered."""
    before = settings_of(await lab.platform())
    incident_id = await lab.trigger(TWO_MEASURES)
    await lab.settle(incident_id, {"surge": "applied", "throttle": "applied"})
    await lab.sandbox.fault(**REFUSE_SURGE_UNDO)
    status = await lab.incidents.stand_down(incident_id, actor="alice", reason="calm")
    assert ("standing_down", "undo_failed", "undone", "pending") == (
        status.state,
        *(step_states(status)[s] for s in ("surge", "throttle", "all-clear")),
    )
    return incident_id, before


async def test_a_stand_down_waits_until_the_retried_undo_restores_the_measure(lab: Lab) -> None:
    incident_id, before = await stood_down_with_surge_left(lab)
    status = await lab.status(incident_id)
    told = not_restored(status)
    assert told is not None and "retry its undo" in told and "surge (moderation.surge" in told
    left = next(i for i in board_page(lab.store).items if i.incident_id == incident_id)
    assert ("standing_down", ["surge"]) == (left.state, [m.step_id for m in left.measures])

    again = await lab.act(incident_id, CrisisWorkflow.restore, restore())
    assert ("undo_failed", 2) == (again.state, again.undos)
    assert "standing_down" == (await lab.status(incident_id)).state

    await lab.sandbox.clear_faults()
    done = await lab.act(incident_id, CrisisWorkflow.restore, restore())
    assert "undone" == done.state
    events = await lab.audit(incident_id, until="incident.closed")
    closed = await lab.status(incident_id)
    assert ("closed", "applied") == (closed.state, step(closed, "all-clear").state)
    assert before == settings_of(await lab.platform())  # every setting back as it was
    assert 0 == (await lab.platform())["stats"]["duplicates"]
    assert [
        "step.undo_failed",
        "undo.retried",
        "step.undo_failed",
        "undo.retried",
        "step.undone",
    ] == [k for k in kinds(events) if k in ("undo.retried", "step.undone", "step.undo_failed")][1:]
    retried = [e for e in events if e.kind == "undo.retried"]
    assert {("bob", "surge", "platform is back")} == {
        (e.actor, e.step_id, e.data["reason"]) for e in retried
    }
    # The closing notice went out once the surge was restored, not before.
    order = kinds(events)
    restored = order.index("step.undone", order.index("undo.retried"))
    assert restored < order.index("step.applied", order.index("stand_down.requested"))
    assert lab.store.verify(incident_id).ok
    assert incident_id not in [i.incident_id for i in board_page(lab.store).items]
    # Stamped in order: the close comes no earlier than the restore it waited for.
    stamps = [at(e.at) for e in events]
    assert stamps == sorted(stamps)


async def test_a_restore_by_hand_is_recorded_and_closes_without_touching_the_platform(
    lab: Lab,
) -> None:
    incident_id, before = await stood_down_with_surge_left(lab)
    applied = (await lab.platform())["moderation"]
    record = await lab.act(incident_id, CrisisWorkflow.restore, restore("carol", by_hand=True))
    assert "undone" == record.state
    assert record.outcome == "restored by hand (carol): restored in the admin tool"
    events = await lab.audit(incident_id, until="incident.closed")
    by_hand = next(e for e in events if e.kind == "step.restored_by_hand")
    assert ("carol", "surge", "moderation.surge") == (
        by_hand.actor,
        by_hand.step_id,
        by_hand.data["lever"],
    )
    assert "400" in by_hand.data["error"]  # what the failed undo said, on record beside it
    # The engine took the commander's word: the platform was not called again.
    assert applied == (await lab.platform())["moderation"] != before["moderation"]
    assert "closed" == (await lab.status(incident_id)).state
    assert lab.store.verify(incident_id).ok
    await lab.sandbox.clear_faults()


async def test_restore_is_refused_for_a_measure_whose_undo_did_not_fail(lab: Lab) -> None:
    incident_id = await lab.trigger(TWO_MEASURES)
    await lab.settle(incident_id, {"surge": "applied", "throttle": "applied"})
    with pytest.raises(IncidentConflict, match="surge is applied: only a measure whose undo"):
        await lab.act(incident_id, CrisisWorkflow.restore, restore())
    with pytest.raises(ActionInvalid, match="no measure 'nope'"):
        await lab.act(
            incident_id,
            CrisisWorkflow.restore,
            restore().model_copy(update={"step_id": "nope"}),
        )


async def test_a_lapse_whose_undo_failed_is_retried_while_the_incident_runs(lab: Lab) -> None:
    """The surge lapses but the platform refuses its undo: the incident runs on with it NOT
    RESTORED until a retry takes it back; the throttle stays in force meanwhile."""
    before = settings_of(await lab.platform())
    incident_id = await lab.trigger(TWO_MEASURES)
    await lab.settle(incident_id, {"surge": "applied", "throttle": "applied"})
    await lab.sandbox.fault(**REFUSE_SURGE_UNDO)
    await lab.advance(timedelta(hours=1, minutes=1))
    await lab.sync(incident_id)
    await lab.settle(incident_id, {"surge": "undo_failed", "throttle": "applied"})
    await lab.sandbox.clear_faults()
    record = await lab.act(incident_id, CrisisWorkflow.restore, restore())
    assert "expired" == record.state  # a lapse, as if its undo had gone through: renewable
    now = settings_of(await lab.platform())
    assert before["moderation"] == now["moderation"]
    assert before["recommender"] != now["recommender"]  # still throttled
    status = await lab.incidents.stand_down(incident_id, actor="alice", reason="calm")
    assert "closed" == status.state
    assert before == settings_of(await lab.platform())


async def test_a_measure_left_by_an_earlier_lapse_holds_the_stand_down_too(lab: Lab) -> None:
    incident_id = await lab.trigger(TWO_MEASURES)
    await lab.settle(incident_id, {"surge": "applied", "throttle": "applied"})
    await lab.sandbox.fault(**REFUSE_SURGE_UNDO)
    await lab.advance(timedelta(hours=1, minutes=1))
    await lab.sync(incident_id)
    await lab.settle(incident_id, {"surge": "undo_failed"})
    status = await lab.incidents.stand_down(incident_id, actor="alice", reason="calm")
    assert ("standing_down", "undone") == (status.state, step(status, "throttle").state)
    await lab.act(incident_id, CrisisWorkflow.restore, restore(by_hand=True))
    await lab.audit(incident_id, until="incident.closed")
    assert "closed" == (await lab.status(incident_id)).state
    await lab.sandbox.clear_faults()


NOTICE_AND_MEASURE = """
steps:
  - id: tell
    do: notify.webhook
    with: {to: regulator, message: crisis opened}
    undo: {do: notify.webhook, with: {to: regulator, message: every measure lifted}}
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
"""


async def test_closing_notices_wait_for_the_restore_and_a_failed_one_holds_nothing(
    lab: Lab,
) -> None:
    """The notice that every measure is lifted goes out only once the surge is restored; a
    closing notice whose delivery fails for good is on record but holds no close (it holds
    nothing on the platform), and it is not a measure to restore."""
    incident_id = await lab.trigger(NOTICE_AND_MEASURE)
    await lab.settle(incident_id, {"tell": "applied", "surge": "applied"})
    await lab.sandbox.fault(**REFUSE_SURGE_UNDO)
    status = await lab.incidents.stand_down(incident_id, actor="alice", reason="calm")
    assert ("standing_down", "applied") == (status.state, step(status, "tell").state)
    notices = (await lab.platform())["notifications"]
    sent = [n for n in notices if n["idempotency_key"].startswith(f"{incident_id}/")]
    assert [f"{incident_id}/tell/apply-1"] == [n["idempotency_key"] for n in sent]
    with pytest.raises(ActionInvalid, match=r"no measure .tell. in this incident"):
        await lab.act(
            incident_id, CrisisWorkflow.restore, restore().model_copy(update={"step_id": "tell"})
        )
    await lab.sandbox.clear_faults()
    await lab.sandbox.fault(path_prefix="/notify", operation_prefix="undo-", status=400)
    await lab.act(incident_id, CrisisWorkflow.restore, restore())
    events = await lab.audit(incident_id, until="incident.closed")
    assert ["step.undone", "step.undo_failed", "incident.closed"] == kinds(events)[-3:]
    assert "tell" == events[-2].step_id
    await lab.sandbox.clear_faults()
    # What a commander is told: no measure left, one notice not delivered.
    status = await lab.status(incident_id)
    assert ("closed", "undo_failed") == (status.state, step(status, "tell").state)
    assert None is not_restored(status)
    told = undelivered(status)
    assert told is not None and told.startswith("1 closing notice was NOT delivered"), told
    assert "tell (notify.webhook: " in told
    # Recorded before failed undos said they were notices: a notification step's undo is one.
    tell = step(status, "tell")
    assert tell.failed_undo is not None
    tell.failed_undo.notice = False
    assert (None, told) == (not_restored(status), undelivered(status))


STACKED = """
steps:
  - id: first
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
  - id: second
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
"""


async def test_a_retry_that_would_put_an_older_measure_back_is_refused(lab: Lab) -> None:
    """`second` was applied over `first`; its undo fails, then `first`'s undo puts back what was
    there before both. Retrying `second` would restore what it replaced, `first`'s surge: it is
    refused, and the setting, already right, can be recorded as restored by hand."""
    before = settings_of(await lab.platform())
    incident_id = await lab.trigger(STACKED)
    await lab.settle(incident_id, {"first": "applied", "second": "applied"})
    await lab.sandbox.fault(**REFUSE_SURGE_UNDO, times=1)
    status = await lab.incidents.stand_down(incident_id, actor="alice", reason="calm")
    assert {"first": "undone", "second": "undo_failed"} == step_states(status)
    assert before == settings_of(await lab.platform())
    second = restore().model_copy(update={"step_id": "second"})
    with pytest.raises(IncidentConflict, match="first, on the same settings, was taken back"):
        await lab.act(incident_id, CrisisWorkflow.restore, second)
    by_hand = second.model_copy(update={"by_hand": True})
    await lab.act(incident_id, CrisisWorkflow.restore, by_hand)
    await lab.audit(incident_id, until="incident.closed")
    assert before == settings_of(await lab.platform())


@pytest.mark.parametrize(
    ("by_hand", "doing", "then"),
    [
        (False, "retrying the undo of surge now", "then retry"),
        (True, "restoring surge by hand now", "then put the setting back and record it"),
    ],
)
async def test_a_restore_that_would_lift_a_later_incidents_measure_is_refused(
    lab: Lab, by_hand: bool, doing: str, then: str
) -> None:
    """A later incident applied its surge on the same queue while this one waited: retrying this
    one's undo would put back the queue from before both, lifting the later surge, and so would
    a person putting it back by hand (a stand-down's own undo hands nothing back: the later
    incident would not be told, and its stand-down would then put this one's surge back)."""
    held, _ = await stood_down_with_surge_left(lab)
    later = await lab.trigger(TWO_MEASURES)
    await lab.settle(later, {"surge": "applied"})
    await lab.audit(later, until="step.applied", count=2)
    with pytest.raises(IncidentConflict) as refused:
        await refuse_restore_if_later_overlaps(
            lab.store, lab.incidents, held, "surge", by_hand=by_hand
        )
    said = str(refused.value)
    assert said.startswith(doing) and f"stand {later} down first" in said, said
    assert said.endswith(then), said
    await lab.sandbox.clear_faults()


RACE = """
steps:
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
  - id: tell
    level: severe
    do: notify.send
    with: {to: regulator, template: crisis-opened}
"""


async def test_a_stand_down_during_a_delivery_whose_undo_fails_is_written_and_closes(
    lab: Lab,
) -> None:
    """The stand-down comes while an escalation's notice is being delivered: the audit pump,
    woken when the delivery ends, finds the events taken by the surge's undo, which carries
    them and then fails. The pump once ended there: the failure, the restore and the close
    went unwritten, and the incident never closed."""
    incident_id = await lab.trigger(RACE)
    await lab.settle(incident_id, {"surge": "applied", "tell": "dormant"})
    await lab.sandbox.fault(**REFUSE_SURGE_UNDO)
    await lab.sandbox.fault(path_prefix="/notify", status=0, latency_ms=3000, times=1)
    await lab.act(incident_id, CrisisWorkflow.escalate, level(to="severe"))

    async def telling() -> None:
        assert "running" == step(await lab.status(incident_id), "tell").state

    await assert_eventually(telling, timeout=10, interval=0.02)
    status = await lab.incidents.stand_down(incident_id, actor="alice", reason="calm")
    assert ("standing_down", "undo_failed") == (status.state, step(status, "surge").state)
    await lab.audit(incident_id, until="step.undo_failed")
    await lab.act(incident_id, CrisisWorkflow.restore, restore(by_hand=True))
    events = await lab.audit(incident_id, until="incident.closed")
    assert "step.restored_by_hand" in kinds(events)
    assert lab.store.verify(incident_id).ok
    await lab.sandbox.clear_faults()


EARLIER_SURGE = """
steps:
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
    expires_after: 2h
"""
LATER_SURGE = EARLIER_SURGE.replace("5}", "10}").replace("2h", "1h")


async def test_a_retry_over_which_an_earlier_incident_restored_its_own_is_refused(
    lab: Lab,
) -> None:
    """E's surge, then A's over it. A's lapse fails; E's surge lapses and E's restore is
    applied over A's (overlap handoff). A retry of A's would restore what A replaced, E's
    surge: it is refused, naming E; recorded by hand, it ends as a lapse would."""
    before = settings_of(await lab.platform())["moderation"]["hate"]
    earlier = await lab.trigger(EARLIER_SURGE)
    await lab.settle(earlier, {"surge": "applied"})
    later = await lab.trigger(LATER_SURGE)
    await lab.settle(later, {"surge": "applied"})
    await lab.sandbox.fault(**REFUSE_SURGE_UNDO, times=1)
    await lab.advance(timedelta(hours=1, minutes=1))
    await lab.sync(later)
    await lab.settle(later, {"surge": "undo_failed"})
    await lab.advance(timedelta(hours=1))
    await lab.sync(earlier)
    await lab.settle(earlier, {"surge": "expired"})
    await lab.audit(later, until="overlap.lifted")
    with pytest.raises(IncidentConflict, match=f"{earlier} \\(surge\\) handed its settings back"):
        await lab.act(later, CrisisWorkflow.restore, restore())
    record = await lab.act(later, CrisisWorkflow.restore, restore(by_hand=True))
    assert "expired" == record.state
    assert before == settings_of(await lab.platform())["moderation"]["hate"]


A_SEVERE = """
steps:
  - id: surge
    level: severe
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
"""
B_SURGE = """
steps:
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
"""


async def withdrawal_failed_under(lab: Lab) -> tuple[int, str, str]:
    """A's surge, then B's over it on the same queue; A's de-escalation fails to withdraw its
    surge. The queue's reviewers before both, A and B."""
    before = settings_of(await lab.platform())["moderation"]["hate"]["reviewers"]
    a = await lab.trigger(A_SEVERE, level="severe")
    await lab.settle(a, {"surge": "applied"})
    b = await lab.trigger(B_SURGE)
    await lab.settle(b, {"surge": "applied"})
    await lab.sandbox.fault(**REFUSE_SURGE_UNDO, times=1)
    await lab.act(a, CrisisWorkflow.de_escalate, level(to="elevated"))
    await lab.settle(a, {"surge": "undo_failed"})
    return before, a, b


async def test_a_withdrawal_restored_while_standing_down_hands_back_to_a_later_incident(
    lab: Lab,
) -> None:
    """A's surge, then B's over it on the same queue. A's de-escalation fails to withdraw its
    surge; A is stood down and waits; the retry of the withdrawal restores what A's surge
    replaced, and, as a withdrawal does, tells B, which puts its own surge back on top."""
    before, a, b = await withdrawal_failed_under(lab)
    assert (
        "standing_down" == (await lab.incidents.stand_down(a, actor="alice", reason="calm")).state
    )
    record = await lab.act(a, CrisisWorkflow.restore, restore())
    assert "undone" == record.state  # what a stand-down makes of a withdrawn measure
    await lab.audit(a, until="incident.closed")
    await lab.audit(b, until="overlap.restored")
    # A's surge is gone and B's is in force again (lifted by A's restore, then put back).
    assert before + 10 == settings_of(await lab.platform())["moderation"]["hate"]["reviewers"]
    assert "applied" == step(await lab.status(b), "surge").state


async def test_a_withdrawal_restored_by_hand_hands_back_to_a_later_incident(lab: Lab) -> None:
    """As its retry does: the person put back what A's surge replaced, which lifts B's surge
    over it too, so B is told and puts its own back; B's stand-down then leaves the queue as it
    was before both (it put back A's surge, which was no longer there)."""
    before, a, b = await withdrawal_failed_under(lab)
    record = await lab.act(a, CrisisWorkflow.restore, restore(by_hand=True))
    assert "dormant" == record.state
    events = await lab.audit(b, until="overlap.restored")
    lifted = next(e for e in events if e.kind == "overlap.lifted")
    assert (a, "restored by hand (bob): restored in the admin tool") == (
        lifted.data["by"],
        lifted.data["reason"],
    )
    status = await lab.sync(b)
    assert ("applied", 2) == (step(status, "surge").state, step(status, "surge").applications)
    assert before + 10 == settings_of(await lab.platform())["moderation"]["hate"]["reviewers"]
    await lab.incidents.stand_down(b, actor="alice", reason="calm")
    await lab.audit(b, until="incident.closed")
    assert before == settings_of(await lab.platform())["moderation"]["hate"]["reviewers"]

"""A stand-down takes the measures back newest first. When the platform errs on one undo, that
undo is put off after a few quick tries: the other measures are restored first (its retries held
them all in force for minutes), then it is retried, and the measures on the same settings under
it after it, so that restoring them never wipes it. The platform is the real sandbox."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from core.settings import Settings
from engine.errors import IncidentBusy
from engine.incidents import Incidents
from tests.helpers import assert_eventually
from tests.workflows.lab import Lab, at, kinds, settings_of, step, step_states
from workflows.audit import AuditEvent
from workflows.crisis import CrisisWorkflow
from workflows.incident import RestoreRequest

FOUR_MEASURES = """
steps:
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
  - id: cut-reshares
    do: recommender.throttle
    with:
      {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.5, reshare_limit: 5}
  - id: limit-one
    do: recommender.throttle
    with:
      {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.25, reshare_limit: 1}
  - id: detection
    do: detection.set_threshold
    with: {classifier: incitement_to_violence, threshold: 0.5}
on_stand_down:
  - id: all-clear
    do: notify.webhook
    with: {to: internal, message: stood down}
"""
MEASURES = ("surge", "cut-reshares", "limit-one", "detection")
RECOMMENDER_UNDO_ERRS = {"path_prefix": "/recommender", "operation_prefix": "undo-", "status": 503}


async def test_an_undo_the_platform_errs_on_is_retried_after_the_other_measures(lab: Lab) -> None:
    before = settings_of(await lab.platform())
    incident = await lab.trigger(FOUR_MEASURES)
    await lab.settle(incident, dict.fromkeys(MEASURES, "applied"))
    await lab.sandbox.fault(**RECOMMENDER_UNDO_ERRS)
    # Answered once the incident closes: a caller that waits less is told it was taken (once
    # the workflow task that took it has reported, which lever calls retrying delay a few s).
    impatient = Incidents(lab.env.client, Settings(action_timeout_s=15))
    with pytest.raises(IncidentBusy, match="took the request but had not carried it out within"):
        await impatient.stand_down(incident, actor="alice", reason="calm")

    # The recommender still errs, and everything else is already back as it was.
    async def others_restored() -> dict[str, str]:
        states = step_states(await lab.status(incident))
        assert ("undone", "undone") == (states["detection"], states["surge"]), states
        return states

    states = await assert_eventually(others_restored, timeout=30)
    assert ("undoing", "applied", "pending") == (
        states["limit-one"],
        states["cut-reshares"],
        states["all-clear"],
    )
    platform = settings_of(await lab.platform())
    assert before["moderation"] == platform["moderation"]
    assert before["detection"] == platform["detection"]
    gb = platform["recommender"]["GB"]["incitement_to_violence"]
    assert {"reach_multiplier": 0.25, "reshare_limit": 1} == gb  # the newest still in force
    erring = step(await lab.status(incident), "limit-one")
    assert erring.error is not None and "503" in erring.error

    # The other measures' undos reach the trail (the board) while it retries.
    async def in_the_trail() -> None:
        undone = [e.step_id for e in lab.store.events(incident) if e.kind == "step.undone"]
        assert ["detection", "surge"] == undone

    await assert_eventually(in_the_trail, timeout=10)

    await lab.sandbox.clear_faults()

    async def closes() -> list[AuditEvent]:  # at its next try: up to 30 s apart by now
        events = lab.store.events(incident)
        assert "incident.closed" == events[-1].kind
        return events

    events = await assert_eventually(closes, timeout=45)
    closed = await lab.status(incident)
    assert "closed" == closed.state
    assert before == settings_of(await lab.platform())  # every setting back as it was
    assert 0 == (await lab.platform())["stats"]["duplicates"]
    undone = [e for e in events if e.kind == "step.undone"]
    # Newest first, the erring one and the one under it last, each once: nothing lifted and
    # put back on the way.
    assert ["detection", "surge", "limit-one", "cut-reshares"] == [e.step_id for e in undone]
    assert undone[2].data["reason"].startswith("retried after the other measures (")
    assert "503" in undone[2].data["reason"]
    assert not any("lifted" in str(e.data.get("reason")) for e in events)
    assert "step.undo_failed" not in kinds(events)
    assert closed.steps[-1].state == "applied"  # the closing notice, once all were restored
    order = kinds(events)
    assert order.index("step.applied", order.index("stand_down.requested")) > order.index(
        "step.undone", order.index("step.undone") + 3
    )
    assert lab.store.verify(incident).ok
    stamps = [at(e.at) for e in events]
    assert stamps == sorted(stamps)


async def test_an_undo_of_the_last_measure_is_not_put_off(lab: Lab) -> None:
    """With no other measure behind it, an erring undo retries at once, as before."""
    incident = await lab.trigger(FOUR_MEASURES)
    await lab.settle(incident, dict.fromkeys(MEASURES, "applied"))
    await lab.sandbox.fault(
        path_prefix="/moderation", operation_prefix="undo-", status=503, times=2
    )
    await lab.incidents.stand_down(incident, actor="alice", reason="calm")
    events = await lab.audit(incident, until="incident.closed")
    undone = [e for e in events if e.kind == "step.undone"]
    assert ["detection", "limit-one", "cut-reshares", "surge"] == [e.step_id for e in undone]
    assert not any(e.data.get("reason") for e in undone)
    assert lab.store.verify(incident).ok


async def test_an_undo_retried_at_length_shows_why_meanwhile(lab: Lab) -> None:
    """The last measure's undo (nothing waits behind it) errs beyond its first quick tries: it
    goes on retrying with its full policy, status says why it is still undoing, and the trail
    (the board) already has the other measures taken back."""
    before = settings_of(await lab.platform())
    incident = await lab.trigger(FOUR_MEASURES)
    await lab.settle(incident, dict.fromkeys(MEASURES, "applied"))
    await lab.sandbox.fault(path_prefix="/moderation", operation_prefix="undo-", status=503)
    standing_down = asyncio.create_task(
        lab.incidents.stand_down(incident, actor="alice", reason="calm")
    )

    async def erring() -> None:
        surge = step(await lab.status(incident), "surge")
        assert "undoing" == surge.state and surge.error and "503" in surge.error, surge

    await assert_eventually(erring, timeout=30)

    async def in_the_trail() -> None:
        undone = [e.step_id for e in lab.store.events(incident) if e.kind == "step.undone"]
        assert ["detection", "limit-one", "cut-reshares"] == undone

    await assert_eventually(in_the_trail, timeout=10)
    assert "undoing" == step(await lab.status(incident), "surge").state
    await lab.sandbox.clear_faults()
    closed = await asyncio.wait_for(standing_down, 60)
    surge = step(closed, "surge")
    assert ("undone", None) == (surge.state, surge.error)
    assert before == settings_of(await lab.platform())
    assert 0 == (await lab.platform())["stats"]["duplicates"]
    events = await lab.audit(incident, until="incident.closed")
    undone = [e for e in events if e.kind == "step.undone"]
    assert ["detection", "limit-one", "cut-reshares", "surge"] == [e.step_id for e in undone]
    assert not any(e.data.get("reason") for e in undone)  # retried, not put off: nothing to say
    assert lab.store.verify(incident).ok


async def test_a_failing_stand_down_step_is_recorded_and_the_incident_closes(lab: Lab) -> None:
    """As the protocol document says: a stand-down step runs after every undo, so its failure
    (on_failure stop, the default) stops nothing: the next one runs and the incident closes."""
    incident = await lab.trigger(
        FOUR_MEASURES
        + "  - id: tell-regulator\n    do: notify.webhook\n"
        + "    with: {to: regulator, message: stood down}\n"
    )
    await lab.settle(incident, dict.fromkeys(MEASURES, "applied"))
    await lab.sandbox.fault(path_prefix="/notify/webhooks/internal", status=400)
    closed = await lab.incidents.stand_down(incident, actor="alice", reason="calm")
    assert ("closed", "failed", "applied") == (
        closed.state,
        step(closed, "all-clear").state,
        step(closed, "tell-regulator").state,
    )
    assert lab.store.verify(incident).ok


EXPLICIT_OVER_RESTORE = """
steps:
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
  - id: soft
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.5}
  - id: hard
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.25}
    undo:
      do: recommender.throttle
      with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.9}
"""


async def test_a_measure_under_a_put_off_explicit_undo_waits_for_it(lab: Lab) -> None:
    """The newer measure's undo is an explicit call, not a restore: the older one on the same
    settings still goes back after it, as without the error, so its restore has the last word."""
    before = settings_of(await lab.platform())
    incident = await lab.trigger(EXPLICIT_OVER_RESTORE)
    await lab.settle(incident, dict.fromkeys(("surge", "soft", "hard"), "applied"))
    await lab.sandbox.fault(**RECOMMENDER_UNDO_ERRS, times=4)
    await lab.incidents.stand_down(incident, actor="alice", reason="calm")
    events = await lab.audit(incident, until="incident.closed")
    undone = [e.step_id for e in events if e.kind == "step.undone"]
    assert ["surge", "hard", "soft"] == undone
    assert before == settings_of(await lab.platform())


async def test_a_notice_left_to_undo_is_no_reason_to_put_off(lab: Lab) -> None:
    """Only measures wait behind an undo's retries: with a sent notice (no undo) alone left,
    the erring undo retries at once."""
    incident = await lab.trigger(
        """
steps:
  - id: note
    do: notify.webhook
    with: {to: internal, message: opened}
  - id: limit-one
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.25}
"""
    )
    await lab.settle(incident, {"note": "applied", "limit-one": "applied"})
    await lab.sandbox.fault(**RECOMMENDER_UNDO_ERRS, times=5)
    await lab.incidents.stand_down(incident, actor="alice", reason="calm")
    events = await lab.audit(incident, until="incident.closed")
    (undone,) = [e for e in events if e.kind == "step.undone"]
    assert ("limit-one", None) == (undone.step_id, undone.data.get("reason"))


async def test_the_last_measure_erring_too_waits_behind_those_put_off(lab: Lab) -> None:
    """The recommender errs at first, the oldest measure's queue for longer: the recommender's
    undos, put off, are retried before the oldest one's full retries, not held behind them."""
    before = settings_of(await lab.platform())
    incident = await lab.trigger(FOUR_MEASURES)
    await lab.settle(incident, dict.fromkeys(MEASURES, "applied"))
    await lab.sandbox.fault(**RECOMMENDER_UNDO_ERRS, times=4)
    await lab.sandbox.fault(path_prefix="/moderation", operation_prefix="undo-", status=503)
    standing_down = asyncio.create_task(
        lab.incidents.stand_down(incident, actor="alice", reason="calm")
    )

    async def recommender_back() -> None:
        states = step_states(await lab.status(incident))
        assert ("undone", "undone", "undoing") == (
            states["limit-one"],
            states["cut-reshares"],
            states["surge"],
        ), states

    await assert_eventually(recommender_back, timeout=30)
    assert before["recommender"] == settings_of(await lab.platform())["recommender"]
    await lab.sandbox.clear_faults()
    closed = await asyncio.wait_for(standing_down, 60)
    assert "closed" == closed.state
    assert before == settings_of(await lab.platform())
    events = await lab.audit(incident, until="incident.closed")
    undone = [e.step_id for e in events if e.kind == "step.undone"]
    assert ["detection", "limit-one", "cut-reshares", "surge"] == undone
    assert lab.store.verify(incident).ok


NO_ANSWER = """
steps:
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
    timeout: 1s
    retry: {max_attempts: 2, initial_interval: 300ms, max_interval: 300ms}
"""
# The platform takes the request and applies it, but answers only after the call timed out.
SLOW_SURGE = {"path_prefix": "/moderation", "operation_prefix": "apply-", "latency_ms": 1500}


async def test_a_measure_applied_with_no_answer_is_taken_back_at_stand_down(lab: Lab) -> None:
    """Every attempt timed out, so the step failed; but a platform may apply what it was sent
    and answer too late (recorded as never applied, such a measure stayed in force after the
    stand-down). The stand-down now sends it again under its own idempotency key: a platform
    that applied it answers what it replaced and applies nothing twice; this one (the sandbox
    drops a request whose caller hung up) applies it now. Either way it then restores that."""
    before = settings_of(await lab.platform())
    await lab.sandbox.fault(**SLOW_SURGE, times=2)
    incident = await lab.trigger(NO_ANSWER)
    status = await lab.settle(incident, {"surge": "failed"}, state="failed")
    # Given up on just before the step's own deadline (1s), so the failure says what, how long
    # it waited and how often.
    error = step(status, "surge").error or ""
    assert error.startswith("moderation.surge: no answer from the platform at "), error
    assert error.endswith("/moderation/surge within 0.8s"), error
    trail = await lab.audit(incident, until="step.failed")
    failed = next(e for e in trail if e.kind == "step.failed")
    assert 2 == failed.data["attempts"]
    # Stamped when it failed (two waits of 0.8s and the backoff), not when the call began.
    took = at(failed.at) - at(trail[0].at)
    assert took >= timedelta(seconds=1.5), took
    await lab.sandbox.clear_faults()
    await lab.incidents.stand_down(incident, actor="alice", reason="calm")
    status = await lab.settle(incident, {"surge": "undone"}, state="closed")
    assert step(status, "surge").previous is not None  # learned from the platform's answer
    # Its times now say when the stand-down learnt it; its story keeps the failure.
    assert f"applied, as the stand-down learnt; its apply had failed: {error}" == (
        step(status, "surge").outcome
    )
    assert before == settings_of(await lab.platform())
    events = await lab.audit(incident, until="incident.closed")
    told = ("step.failed", "stand_down.requested", "step.applied", "step.undone")
    assert list(told) == [kind for kind in kinds(events) if kind in told]
    applied = next(e for e in events if e.kind == "step.applied")
    assert applied.data["after_failure"] is True
    assert 0 == (await lab.platform())["stats"]["duplicates"]


async def test_a_measure_whose_first_attempt_had_no_answer_is_taken_back(lab: Lab) -> None:
    """The first attempt timed out and the last one met a platform error: that error says
    nothing of the first, which the platform may have applied, so the stand-down takes the
    measure back as it does when every attempt timed out."""
    before = settings_of(await lab.platform())
    await lab.sandbox.fault(**SLOW_SURGE, status=0, times=1)
    await lab.sandbox.fault(path_prefix="/moderation", operation_prefix="apply-", times=2)
    incident = await lab.trigger(NO_ANSWER)
    status = await lab.settle(incident, {"surge": "failed"}, state="failed")
    assert "HTTP 500" in (step(status, "surge").error or "")
    await lab.incidents.stand_down(incident, actor="alice", reason="calm")
    status = await lab.settle(incident, {"surge": "undone"}, state="closed")
    assert step(status, "surge").previous is not None
    assert before == settings_of(await lab.platform())
    events = await lab.audit(incident, until="incident.closed")
    applied = next(e for e in events if e.kind == "step.applied")
    assert applied.data["after_failure"] is True


async def test_a_measure_with_no_answer_at_stand_down_waits_for_a_restore(lab: Lab) -> None:
    """The platform still does not answer at stand-down: the measure may hold and what it
    replaced is unknown, so the incident does not close as if all were restored; a retried
    restore, once the platform answers, learns what it replaced and takes it back."""
    before = settings_of(await lab.platform())
    await lab.sandbox.fault(**SLOW_SURGE)
    incident = await lab.trigger(NO_ANSWER)
    await lab.settle(incident, {"surge": "failed"}, state="failed")
    answer = await lab.incidents.stand_down(incident, actor="alice", reason="calm")
    assert ("standing_down", "undo_failed") == (answer.state, step(answer, "surge").state)
    status = await lab.settle(incident, {"surge": "undo_failed"}, state="standing_down")
    assert "its apply had no answer and still has none" in (step(status, "surge").error or "")
    await lab.sandbox.clear_faults()
    await lab.act(
        incident,
        CrisisWorkflow.restore,
        RestoreRequest(step_id="surge", actor="alice", reason="platform back"),
    )
    await lab.settle(incident, {"surge": "undone"}, state="closed")
    assert before == settings_of(await lab.platform())


SLOW_THEN_NOTICE = """
steps:
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [spam], reach_multiplier: 0.5}
  - id: tell
    do: notify.webhook
    with: {to: regulator, message: measures in force}
"""


async def test_a_stand_down_sent_during_a_slow_call_is_heard_before_the_next_notice(
    lab: Lab,
) -> None:
    """The measure's call takes 3 s; a stand-down sent meanwhile waits at the server until the
    workflow task running the call completes. The notice after it is not sent: the stand-down
    is heard first, and the measure is taken back."""
    before = settings_of(await lab.platform())
    await lab.sandbox.fault(
        path_prefix="/recommender", operation_prefix="apply-", status=0, latency_ms=3000, times=1
    )
    incident = await lab.trigger(SLOW_THEN_NOTICE)
    await asyncio.sleep(1)  # the call is under way
    closed = await lab.incidents.stand_down(incident, actor="alice", reason="calm")
    assert "closed" == closed.state
    assert ("undone", "skipped") == (step(closed, "cut").state, step(closed, "tell").state)
    platform = await lab.platform()
    assert [] == platform["notifications"], platform["notifications"]
    assert before == settings_of(platform)
    events = await lab.audit(incident, until="incident.closed")
    assert "tell" not in {e.step_id for e in events}

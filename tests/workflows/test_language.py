"""The playbook language's semantics, end to end on a time-skipping Temporal server.

Levels, approvals, timeouts, expiry, reviews, parallel branches, waits, failure policies,
stand-down steps and continue-as-new: each test triggers a small playbook written here, lets hours
of workflow time pass in milliseconds, and checks three things: the workflow's status, the
platform sandbox's real state over HTTP, and the audit trail.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from engine.errors import ActionInvalid, IncidentConflict, IncidentError
from engine.incidents import not_withdrawn
from engine.playbook_files import load_playbook
from engine.report import build_report
from engine.verification import IncidentHistory, replay_incident
from tests.helpers import assert_eventually
from tests.workflows.lab import (
    HEADER,
    Lab,
    approve,
    at,
    continue_as_new,
    kinds,
    level,
    more_runs,
    operations,
    settings_of,
    step,
    step_states,
)
from workflows.crisis import CrisisWorkflow
from workflows.incident import (
    ApproveRequest,
    LevelRequest,
    NoteRequest,
    RejectRequest,
    RenewRequest,
    ReviewRequest,
    StandDownRequest,
)
from workflows.limits import MAX_NAME_CHARS, MAX_NOTE_CHARS, MAX_TEXT_CHARS

# --- 1. levels --------------------------------------------------------------------------------
LEVELLED = """
steps:
  - id: base
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: surge
    level: severe
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5, priority: urgent}
  - id: terror
    level: severe
    do: detection.set_threshold
    with: {classifier: terrorism, threshold: 0.5}
  - id: throttle
    level: critical
    do: recommender.throttle
    with: {region: GB, categories: [terrorism], reach_multiplier: 0.5}
"""


async def test_levels_escalate_in_order_de_escalate_newest_first_and_re_escalate(
    lab: Lab,
) -> None:
    """Higher-level steps wait dormant, escalation applies them in playbook order, de-escalation
    undoes them newest first (restoring the platform), and re-escalation applies them again."""
    before = await lab.platform()
    incident = await lab.trigger(LEVELLED)
    await lab.settle(
        incident,
        {"base": "applied", "surge": "dormant", "terror": "dormant", "throttle": "dormant"},
        level="elevated",
    )
    assert [("base", "apply-1")] == operations(await lab.platform())

    escalated = await lab.act(incident, CrisisWorkflow.escalate, level())
    assert "severe" == escalated.level
    await lab.settle(
        incident,
        {"base": "applied", "surge": "applied", "terror": "applied", "throttle": "dormant"},
        level="severe",
    )
    state = await lab.platform()
    assert {"reviewers": 15, "priority": "urgent"} == state["moderation"]["fraud"]
    assert 0.5 == state["detection"]["terrorism"]
    assert {} == state["recommender"]
    assert ["base", "surge", "terror"] == [name for name, _ in operations(state)]

    await lab.act(incident, CrisisWorkflow.escalate, level(to="critical"))
    await lab.settle(incident, {"throttle": "applied"}, level="critical")
    assert {"terrorism": {"reach_multiplier": 0.5, "reshare_limit": None}} == (
        await lab.platform()
    )["recommender"]["GB"]

    await lab.act(incident, CrisisWorkflow.de_escalate, level(to="elevated"))
    status = await lab.settle(
        incident,
        {"base": "applied", "surge": "dormant", "terror": "dormant", "throttle": "dormant"},
        level="elevated",
    )
    state = await lab.platform()
    newest_first = [("throttle", "undo-1"), ("terror", "undo-1"), ("surge", "undo-1")]
    assert newest_first == operations(state)[-3:]
    expected = settings_of(before)
    expected["detection"]["fraud"] = 0.3  # the base measure stays
    assert expected == settings_of(state)
    assert all(step(status, s).undone_at for s in ("surge", "terror", "throttle"))
    # Taken back, not held back: status says which.
    assert "withdrawn: level is now elevated" == step(status, "surge").outcome

    await lab.act(incident, CrisisWorkflow.escalate, level())
    status = await lab.settle(
        incident, {"surge": "applied", "terror": "applied", "throttle": "dormant"}
    )
    assert (None, None) == (step(status, "surge").undone_at, step(status, "terror").undone_at)
    assert step(status, "surge").outcome is None
    state = await lab.platform()
    assert [("surge", "apply-2"), ("terror", "apply-2")] == operations(state)[-2:]
    assert 15 == state["moderation"]["fraud"]["reviewers"]
    assert 0 == state["stats"]["duplicates"]
    assert ["severe", "critical", "elevated", "severe"] == [
        change.level for change in status.level_history
    ]
    assert {"carol"} == {change.actor for change in status.level_history}

    events = await lab.audit(incident, until="step.applied", count=6)
    assert 3 == kinds(events).count("level.escalated")
    assert 1 == kinds(events).count("level.de_escalated")
    assert ["throttle", "terror", "surge"] == [
        e.step_id for e in events if e.kind == "step.withdrawn"
    ]
    assert lab.store.verify(incident).ok


WITHDRAWN = """
steps:
  - id: base
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: tell
    when: "level >= 'severe'"
    parallel:
      - id: tell-police
        do: notify.webhook
        with: {to: law-enforcement, message: escalated}
  - id: surge
    level: severe
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
"""


async def test_a_de_escalation_answers_once_its_measures_are_withdrawn_or_one_errs(
    lab: Lab,
) -> None:
    """The answer shows what the withdrawal did: terror withdrawn, and surge, whose undo the
    platform errs on, still undoing with the error (its retries go on, for minutes at worst);
    it is withdrawn once they get through."""
    incident = await lab.trigger(LEVELLED, level="severe")
    await lab.settle(incident, {"base": "applied", "surge": "applied", "terror": "applied"})
    await lab.sandbox.fault(
        path_prefix="/moderation", operation_prefix="undo-", status=503, times=5
    )
    answer = await lab.act(incident, CrisisWorkflow.de_escalate, level())
    assert ("elevated", "dormant", "undoing") == (
        answer.level,
        step(answer, "terror").state,
        step(answer, "surge").state,
    )
    assert "HTTP 503" in (step(answer, "surge").error or "")
    left = not_withdrawn(answer) or ""
    assert left.startswith("1 measure was not withdrawn yet (the platform erred"), left
    status = await lab.settle(
        incident, {"base": "applied", "surge": "dormant", "terror": "dormant"}, level="elevated"
    )
    assert not_withdrawn(status) is None
    assert 0 == (await lab.platform())["stats"]["duplicates"]


async def test_steps_withdrawn_on_de_escalation_are_not_called_unrun_at_stand_down(
    lab: Lab,
) -> None:
    """A notification sent (in a parallel step) and a measure applied at severe, then
    de-escalated: at stand-down the measure shows undone, the message kept (it was sent) and
    the parallel step done, not "not run"."""
    incident = await lab.trigger(WITHDRAWN)
    await lab.settle(incident, {"base": "applied"}, level="elevated")
    await lab.act(incident, CrisisWorkflow.escalate, level())
    await lab.settle(incident, {"tell-police": "applied", "surge": "applied"}, level="severe")
    await lab.act(incident, CrisisWorkflow.de_escalate, level())
    await lab.settle(incident, {"surge": "dormant"}, level="elevated")
    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    states = {s.id: (s.state, s.outcome) for s in closed.steps}
    assert "undone" == states["base"][0]
    assert "undone" == states["surge"][0]
    assert ("kept", "done") == (states["tell-police"][0], states["tell"][0])
    assert all(outcome != "not run: incident stood down" for _, outcome in states.values())


FAILS_THEN_SEVERE = """
steps:
  - id: note
    do: notify.webhook
    with: {to: nowhere, message: opened}
    on_failure: continue
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
  - id: critical-surge
    level: critical
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
  - id: threshold
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: severe-throttle
    level: severe
    do: recommender.throttle
    with: {region: GB, categories: [fraud], reach_multiplier: 0.5}
"""


async def test_a_failed_incident_is_escalated_only_where_a_step_could_run(lab: Lab) -> None:
    """No step after a failure runs, at any level: an escalation to a level no step before it
    waits for would be recorded and answered as done while nothing came. It is refused, naming
    the step that failed the incident (not an earlier one that failed with on_failure
    continue); to the level a passed step waits for, it runs it. The steps the failure stopped
    say so at stand-down."""
    await lab.sandbox.fault(path_prefix="/notify/webhooks/nowhere", status=400)
    await lab.sandbox.fault(path_prefix="/detection", status=400)
    incident = await lab.trigger(FAILS_THEN_SEVERE)
    await lab.settle(
        incident,
        {"note": "failed", "surge": "applied", "critical-surge": "dormant", "threshold": "failed"},
        state="failed",
    )
    with pytest.raises(
        IncidentConflict,
        match="incident failed at threshold: no step after it runs, and none before it waits "
        "for severe or below",
    ):
        await lab.act(incident, CrisisWorkflow.escalate, level())
    events = await lab.audit(incident, until="incident.failed")
    assert "level.escalated" not in kinds(events)

    await lab.act(incident, CrisisWorkflow.escalate, level(to="critical"))
    await lab.settle(incident, {"critical-surge": "applied"}, state="failed", level="critical")
    await lab.act(incident, CrisisWorkflow.de_escalate, level(to="elevated"))
    await lab.settle(incident, {"critical-surge": "dormant"}, state="failed", level="elevated")
    closed = await lab.incidents.stand_down(incident, actor="bob", reason="over")
    assert ("undone", "undone") == (
        step(closed, "surge").state,
        step(closed, "critical-surge").state,
    )
    assert ("skipped", "not run: the incident failed") == (
        step(closed, "severe-throttle").state,
        step(closed, "severe-throttle").outcome,
    )


async def test_a_failed_incident_is_not_escalated_for_a_step_its_condition_holds_back(
    lab: Lab,
) -> None:
    """A step before the failure held back by a condition on the inputs alone runs at no level:
    no reason to escalate."""
    await lab.sandbox.fault(path_prefix="/detection", status=400)
    incident = await lab.trigger(
        """
inputs:
  region: {type: string, default: GB}
steps:
  - id: fr-only
    when: "inputs.region == 'FR'"
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
  - id: threshold
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
"""
    )
    await lab.settle(incident, {"fr-only": "dormant", "threshold": "failed"}, state="failed")
    with pytest.raises(IncidentConflict, match="incident failed at threshold: no step after it"):
        await lab.act(incident, CrisisWorkflow.escalate, level(to="critical"))


async def test_a_step_its_level_held_back_before_a_failure_was_stopped_by_the_stand_down(
    lab: Lab,
) -> None:
    await lab.sandbox.fault(path_prefix="/detection", status=400)
    incident = await lab.trigger(FAILS_THEN_SEVERE.replace("nowhere", "internal"))
    await lab.settle(incident, {"critical-surge": "dormant", "threshold": "failed"}, state="failed")
    closed = await lab.incidents.stand_down(incident, actor="bob", reason="over")
    assert "not run: incident stood down" == step(closed, "critical-surge").outcome
    assert "not run: the incident failed" == step(closed, "severe-throttle").outcome


async def test_an_incident_triggered_at_a_level_applies_the_steps_of_that_level(lab: Lab) -> None:
    """Triggered at severe, the severe steps run in the sequence and only critical ones wait."""
    incident = await lab.trigger(LEVELLED, level="severe")
    status = await lab.settle(
        incident,
        {"base": "applied", "surge": "applied", "terror": "applied", "throttle": "dormant"},
        level="severe",
    )
    assert [] == status.level_history
    state = await lab.platform()
    assert ["base", "surge", "terror"] == [name for name, _ in operations(state)]
    assert 15 == state["moderation"]["fraud"]["reviewers"]
    events = await lab.audit(incident, until="step.dormant")
    assert "severe" == events[0].data["level"]


async def test_level_changes_beyond_the_declared_levels_are_refused(lab: Lab) -> None:
    """Escalating above the top, de-escalating below the bottom and unknown levels are refused,
    leaving no trace."""
    incident = await lab.trigger(LEVELLED, level="critical")
    await lab.settle(incident, {"throttle": "applied"}, level="critical")
    # Refused now (another level might allow it), or as asked (no level will): see ActionInvalid.
    with pytest.raises(IncidentConflict, match="already at the highest level") as now:
        await lab.act(incident, CrisisWorkflow.escalate, level())
    assert not isinstance(now.value, ActionInvalid)
    with pytest.raises(IncidentConflict, match="not above the current level"):
        await lab.act(incident, CrisisWorkflow.escalate, level(to="critical"))
    with pytest.raises(ActionInvalid, match="unknown level 'catastrophic'"):
        await lab.act(incident, CrisisWorkflow.de_escalate, level(to="catastrophic"))
    with pytest.raises(IncidentConflict, match="not below the current level"):
        await lab.act(incident, CrisisWorkflow.de_escalate, level(to="critical"))

    await lab.act(incident, CrisisWorkflow.de_escalate, level(to="elevated"))
    status = await lab.settle(incident, {"surge": "dormant", "throttle": "dormant"})
    with pytest.raises(IncidentConflict, match="already at the lowest level"):
        await lab.act(incident, CrisisWorkflow.de_escalate, level())
    assert ["elevated"] == [change.level for change in status.level_history]
    events = await lab.audit(incident, until="level.de_escalated")
    assert 1 == sum(k.startswith("level.") for k in kinds(events))


# --- 2. approvals -----------------------------------------------------------------------------
QUORUM = """
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25}
    approval: {roles: [commander, policy-lead], quorum: 2, timeout: 1h}
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
"""


async def test_a_quorum_of_two_distinct_approvers_with_listed_roles_releases_the_step(
    lab: Lab,
) -> None:
    """One approval leaves the step waiting (the steps after it go on); a repeat approver and an
    unlisted role are refused; a second distinct approver applies it."""
    incident = await lab.trigger(QUORUM)
    await lab.settle(incident, {"throttle": "awaiting_approval", "surge": "applied"})

    record = await lab.act(
        incident, CrisisWorkflow.approve, approve("throttle", "alice", "commander")
    )
    assert ["alice"] == [a.actor for a in record.approvals]
    status = await lab.settle(incident, {"throttle": "awaiting_approval", "surge": "applied"})
    assert 1 == len(step(status, "throttle").approvals)
    with pytest.raises(IncidentConflict, match="alice has already approved throttle"):
        await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "alice", "policy-lead"))
    # One person, spelt otherwise (the CLI's direct --actor is not checked against tokens).
    with pytest.raises(IncidentConflict, match=r"ALICE has already approved throttle \(as alice\)"):
        await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "ALICE", "policy-lead"))
    with pytest.raises(IncidentConflict, match="role 'intern' cannot approve throttle"):
        await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "carol", "intern"))
    assert [("surge", "apply-1")] == operations(await lab.platform())

    assert "awaiting_approval" == record.state
    second = await lab.act(
        incident, CrisisWorkflow.approve, approve("throttle", "bob", "policy-lead")
    )
    assert ("running", 2) == (second.state, len(second.approvals))  # its quorum is met
    status = await lab.settle(incident, {"throttle": "applied", "surge": "applied"})
    assert [("alice", "commander"), ("bob", "policy-lead")] == [
        (a.actor, a.role) for a in step(status, "throttle").approvals
    ]
    state = await lab.platform()
    assert {"reach_multiplier": 0.25, "reshare_limit": None} == state["recommender"]["GB"][
        "racial_hatred"
    ]
    assert ["surge", "throttle"] == [name for name, _ in operations(state)]

    events = await lab.audit(incident, until="step.applied", count=2)
    approval_kinds = [k for k in kinds(events) if k.startswith("approval.")]
    assert [
        "approval.requested",
        "approval.given",
        "approval.given",
        "approval.granted",
    ] == approval_kinds
    granted = next(e for e in events if e.kind == "approval.granted")
    assert ["alice", "bob"] == granted.data["approvers"]
    assert lab.store.verify(incident).ok


async def test_a_rejected_step_is_skipped_with_the_reason_and_the_sequence_goes_on(
    lab: Lab,
) -> None:
    """Rejection by a listed role skips the step (saying who and why); the next step runs."""
    incident = await lab.trigger(QUORUM)
    await lab.settle(incident, {"throttle": "awaiting_approval"})
    rejection = RejectRequest(step_id="throttle", actor="carol", role="intern", reason="no")
    with pytest.raises(IncidentConflict, match="role 'intern' cannot reject"):
        await lab.act(incident, CrisisWorkflow.reject, rejection)

    rejection = RejectRequest(
        step_id="throttle", actor="bob", role="commander", reason="too broad for GB"
    )
    await lab.act(incident, CrisisWorkflow.reject, rejection)
    status = await lab.settle(incident, {"throttle": "skipped", "surge": "applied"})
    assert "rejected by bob: too broad for GB" == step(status, "throttle").outcome
    with pytest.raises(IncidentConflict, match="not awaiting approval"):
        await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "alice", "commander"))
    state = await lab.platform()
    assert {} == state["recommender"]
    assert 22 == state["moderation"]["hate"]["reviewers"]
    assert [("surge", "apply-1")] == operations(state)
    events = await lab.audit(incident, until="step.applied")
    rejected = next(e for e in events if e.kind == "approval.rejected")
    assert ("bob", "throttle", "too broad for GB") == (
        rejected.actor,
        rejected.step_id,
        rejected.data["reason"],
    )


HELD = """
steps:
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5, reshare_limit: 5}
    approval: {roles: [commander], timeout: 1h, on_timeout: escalate}
  - id: severe-surge
    level: severe
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
  - id: fr-cut
    do: recommender.throttle
    with: {region: FR, categories: [racial_hatred], reach_multiplier: 0.5}
  - id: stricter-cut
    do: recommender.throttle
    with:
      region: GB
      categories: [racial_hatred, threats]
      reach_multiplier: 0.5
      reshare_limit: 1
"""


async def test_a_step_awaiting_approval_holds_back_only_the_steps_on_its_settings(
    lab: Lab,
) -> None:
    """The steps after a waiting approval go on, and an escalation meanwhile runs its steps; a
    later step on the same settings waits for it (applied first, it would be overridden by the
    looser earlier one), through a continue-as-new, and goes on once the earlier is applied."""
    incident = await lab.trigger(HELD, history_limit=60)
    status = await lab.settle(
        incident,
        {
            "cut": "awaiting_approval",
            "severe-surge": "dormant",
            "fr-cut": "applied",
            "stricter-cut": "pending",
        },
    )
    assert "waits for cut, which changes the same settings" == step(status, "stricter-cut").outcome
    # The trail says so too: the report reads the wait, not the step's state at the start.
    events = await lab.audit(incident, until="step.waiting")
    waiting = next(e for e in events if e.kind == "step.waiting")
    assert ("stricter-cut", {"for": "cut"}) == (waiting.step_id, waiting.data)
    path = lab.directory / "lang.yaml"  # named after its playbook, as in a library
    path.write_text(HEADER + HELD)
    report = build_report(events, playbook=load_playbook(path, lab.directory))
    measures = {m.step_id: m for m in report.measures}
    expected = "not applied: waits for cut, which changes the same settings"
    assert expected == measures["stricter-cut"].outcome_text

    await lab.act(incident, CrisisWorkflow.escalate, level())
    await lab.settle(
        incident, {"severe-surge": "applied", "stricter-cut": "pending"}, level="severe"
    )
    await continue_as_new(lab, incident)
    await lab.settle(
        incident,
        {"cut": "awaiting_approval", "stricter-cut": "pending"},
        also=lambda s: more_runs(s, 1),
    )
    assert ["fr-cut", "severe-surge"] == [name for name, _ in operations(await lab.platform())]

    await lab.act(incident, CrisisWorkflow.approve, approve("cut", "alice", "commander"))
    status = await lab.settle(incident, {"cut": "applied", "stricter-cut": "applied"})
    assert step(status, "stricter-cut").outcome is None
    state = await lab.platform()
    assert ["fr-cut", "severe-surge", "cut", "stricter-cut"] == [
        name for name, _ in operations(state)
    ]
    assert 1 == state["recommender"]["GB"]["racial_hatred"]["reshare_limit"]
    events = await lab.audit(incident, until="step.applied", count=4)
    assert 1 == kinds(events).count("approval.requested")
    # Asked for before the steps after it started.
    assert kinds(events).index("approval.requested") < kinds(events).index("step.started")
    assert lab.store.verify(incident).ok

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert {"undone"} == {s.state for s in closed.steps}
    assert {} == (await lab.platform())["recommender"]


async def test_a_held_step_that_fails_stops_the_playbook(lab: Lab) -> None:
    """A step run off the sequence that fails (its approval timed out with on_timeout: fail)
    marks the incident failed, and the sequence starts nothing after it."""
    incident = await lab.trigger(
        """
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25}
    approval: {roles: [commander], timeout: 30m, on_timeout: fail}
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
  - id: hold
    wait: 1h
  - id: after
    do: detection.set_threshold
    with: {classifier: threats, threshold: 0.4}
"""
    )
    await lab.settle(incident, {"throttle": "awaiting_approval", "hold": "waiting"})
    await lab.advance(timedelta(minutes=31))
    await lab.settle(incident, {"throttle": "failed", "surge": "applied"}, state="failed")
    await lab.advance(timedelta(minutes=40))
    status = await lab.settle(incident, {"hold": "done", "after": "pending"}, state="failed")
    assert "approval timed out" == step(status, "throttle").error
    assert [("surge", "apply-1")] == operations(await lab.platform())


# --- 3. approval timeouts ---------------------------------------------------------------------
TIMEOUT = """
steps:
  - id: extra
    level: severe
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
  - id: throttle
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25}
    approval: {roles: [commander], timeout: 30m, on_timeout: ON_TIMEOUT}
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
"""


async def test_an_approval_timeout_with_escalate_raises_the_level_and_keeps_waiting(
    lab: Lab,
) -> None:
    """At the deadline the level rises one step (its steps apply) and the step waits again with a
    new deadline."""
    incident = await lab.trigger(TIMEOUT.replace("ON_TIMEOUT", "escalate"))
    status = await lab.settle(
        incident, {"extra": "dormant", "throttle": "awaiting_approval", "surge": "applied"}
    )
    first_deadline = at(step(status, "throttle").approval_deadline)

    await lab.advance(timedelta(minutes=29))
    status = await lab.sync(incident)
    assert "elevated" == status.level

    await lab.advance(timedelta(minutes=2))
    status = await lab.settle(
        incident,
        {"extra": "applied", "throttle": "awaiting_approval", "surge": "applied"},
        level="severe",
    )
    second_deadline = at(step(status, "throttle").approval_deadline)
    assert timedelta(minutes=30) <= second_deadline - first_deadline < timedelta(minutes=31)
    assert ("system", "severe") == (status.level_history[-1].actor, status.level_history[-1].level)
    state = await lab.platform()
    assert 22 == state["moderation"]["hate"]["reviewers"]
    assert {} == state["recommender"]

    await lab.advance(timedelta(minutes=31))
    status = await lab.settle(incident, {"throttle": "awaiting_approval"}, level="critical")
    third_deadline = at(step(status, "throttle").approval_deadline)
    assert timedelta(minutes=30) <= third_deadline - second_deadline < timedelta(minutes=31)

    # At the highest level the level stays: the trail says so, and when it asks again until.
    await lab.advance(timedelta(minutes=31))
    status = await lab.settle(incident, {"throttle": "awaiting_approval"}, level="critical")
    fourth_deadline = at(step(status, "throttle").approval_deadline)
    assert timedelta(minutes=30) <= fourth_deadline - third_deadline < timedelta(minutes=31)

    await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "bob", "commander"))
    await lab.settle(incident, {"throttle": "applied", "surge": "applied"})
    events = await lab.audit(incident, until="approval.granted")
    assert 2 == kinds(events).count("level.escalated")
    timeouts = [e for e in events if e.kind == "approval.timed_out"]
    assert [
        ("severe", second_deadline),
        ("critical", third_deadline),
        (None, fourth_deadline),
    ] == [(e.data["escalates_to"], at(e.data["deadline"])) for e in timeouts]
    told = [t.text for t in build_report(events).timeline if t.kind == "approval.timed_out"]
    assert told[0].startswith("approval of throttle timed out: escalating to severe; ")
    assert told[2].startswith(
        "approval of throttle timed out: already at the highest level, which stays; approval "
        "asked again until "
    )


@pytest.mark.parametrize(
    ("on_timeout", "expected"),
    [
        ("skip", {"throttle": "skipped", "surge": "applied", "state": "running"}),
        ("fail", {"throttle": "failed", "surge": "applied", "state": "failed"}),
        ("proceed", {"throttle": "applied", "surge": "applied", "state": "running"}),
    ],
)
async def test_an_approval_timeout_skips_fails_or_proceeds(
    lab: Lab, on_timeout: str, expected: dict[str, str]
) -> None:
    """skip: the step is skipped; fail: the incident fails; proceed: the step is applied without
    approvals. (The step after it went on meanwhile.)"""
    incident = await lab.trigger(TIMEOUT.replace("ON_TIMEOUT", on_timeout))
    await lab.settle(incident, {"throttle": "awaiting_approval"})
    await lab.advance(timedelta(minutes=31))
    status = await lab.settle(
        incident,
        {"extra": "dormant", "throttle": expected["throttle"], "surge": expected["surge"]},
        state=expected["state"],
        level="elevated",
    )
    throttle = step(status, "throttle")
    state = await lab.platform()
    events = await lab.audit(incident, until="approval.timed_out")
    assert (
        on_timeout == next(e for e in events if e.kind == "approval.timed_out").data["on_timeout"]
    )
    if on_timeout == "skip":
        assert "approval timed out" == throttle.outcome
        assert {} == state["recommender"]
        assert [("surge", "apply-1")] == operations(state)
    elif on_timeout == "fail":
        assert "approval timed out" == throttle.error
        assert [("surge", "apply-1")] == operations(state)
        await lab.audit(incident, until="incident.failed")
    else:
        assert [] == throttle.approvals
        assert 0.25 == state["recommender"]["GB"]["racial_hatred"]["reach_multiplier"]
        assert [("surge", "apply-1"), ("throttle", "apply-1")] == operations(state)


# --- 4. expiry and renewal --------------------------------------------------------------------
EXPIRING = """
steps:
  - id: throttle
    do: recommender.throttle
    with:
      region: GB
      categories: [incitement_to_violence]
      reach_multiplier: 0.25
      reshare_limit: 5
    expires_after: 48h
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 25}
"""


async def test_a_measure_lapses_after_its_expiry_and_the_platform_is_restored(lab: Lab) -> None:
    """48h after it is applied the measure is undone and marked expired; the others stay."""
    incident = await lab.trigger(EXPIRING)
    status = await lab.settle(incident, {"throttle": "applied", "surge": "applied"})
    expires_at = at(step(status, "throttle").expires_at)
    assert timedelta(hours=48) == expires_at - at(step(status, "throttle").finished_at)
    assert {} != (await lab.platform())["recommender"]

    await lab.advance(timedelta(hours=47))
    status = await lab.sync(incident)
    assert "applied" == step(status, "throttle").state

    await lab.advance(timedelta(hours=2))
    status = await lab.settle(incident, {"throttle": "expired", "surge": "applied"})
    assert step(status, "throttle").expires_at is None
    state = await lab.platform()
    assert {} == state["recommender"]
    assert 37 == state["moderation"]["hate"]["reviewers"]
    events = await lab.audit(incident, until="step.expired")
    expired = next(e for e in events if e.kind == "step.expired")
    assert expires_at <= at(expired.at) < expires_at + timedelta(minutes=5)
    assert "expiry reached" == expired.data["reason"]
    assert lab.store.verify(incident).ok


async def test_renewing_before_expiry_pushes_the_expiry_out(lab: Lab) -> None:
    """Renewed for 24h at 36h, the measure is still applied after 48h and lapses after 60h."""
    incident = await lab.trigger(EXPIRING)
    status = await lab.settle(incident, {"throttle": "applied"})
    original = at(step(status, "throttle").expires_at)

    await lab.advance(timedelta(hours=36))
    renewal = RenewRequest(step_id="throttle", actor="bob", reason="still tense", duration="24h")
    record = await lab.act(incident, CrisisWorkflow.renew, renewal)
    renewed = at(record.expires_at)
    assert original + timedelta(hours=11) < renewed < original + timedelta(hours=13)

    await lab.advance(timedelta(hours=13))  # past the original expiry
    status = await lab.sync(incident)
    assert "applied" == step(status, "throttle").state
    assert renewed == at(step(status, "throttle").expires_at)
    assert (
        0.25
        == (await lab.platform())["recommender"]["GB"]["incitement_to_violence"]["reach_multiplier"]
    )

    await lab.advance(timedelta(hours=12))  # past the renewed expiry
    await lab.settle(incident, {"throttle": "expired", "surge": "applied"})
    assert {} == (await lab.platform())["recommender"]
    events = await lab.audit(incident, until="step.expired")
    renewal_event = next(e for e in events if e.kind == "measure.renewed")
    assert ("bob", "still tense", False) == (
        renewal_event.actor,
        renewal_event.data["reason"],
        renewal_event.data["reapply"],
    )
    assert original == at(renewal_event.data["was"])
    expired = next(e for e in events if e.kind == "step.expired")
    assert renewed <= at(expired.at) < renewed + timedelta(minutes=5)


async def test_renewing_a_lapsed_measure_applies_it_again_until_the_renewal_ends(lab: Lab) -> None:
    """Lapsed at 48h and renewed for 6h at 50h: applied again, and its step.applied (what the
    board and the timeline read) says it lapses 6h later, not the playbook's 48h; it does."""
    incident = await lab.trigger(EXPIRING)
    await lab.settle(incident, {"throttle": "applied"})
    await lab.advance(timedelta(hours=50))
    await lab.sync(incident)
    await lab.settle(incident, {"throttle": "expired"})
    renewal = RenewRequest(step_id="throttle", actor="bob", reason="flared up", duration="6h")
    await lab.act(incident, CrisisWorkflow.renew, renewal)
    status = await lab.settle(incident, {"throttle": "applied"})
    events = await lab.audit(incident, until="step.applied", count=3)
    renewed = next(e for e in events if e.kind == "measure.renewed")
    applied = [e for e in events if e.kind == "step.applied" and e.step_id == "throttle"][-1]
    assert (
        renewed.data["until"] == applied.data["expires_at"] == step(status, "throttle").expires_at
    )
    assert (
        0.25
        == (await lab.platform())["recommender"]["GB"]["incitement_to_violence"]["reach_multiplier"]
    )

    await lab.advance(timedelta(hours=7))
    await lab.sync(incident)
    await lab.settle(incident, {"throttle": "expired"})
    assert {} == (await lab.platform())["recommender"]
    await lab.audit(incident, until="step.expired", count=2)
    assert lab.store.verify(incident).ok
    # The path's own patch replays: the auditors' check reproduces every stored row.
    history = await lab.env.client.get_workflow_handle(incident).fetch_history()
    report = await replay_incident(IncidentHistory(incident, [history]), lab.store.events(incident))
    assert report.ok, report.as_dict()


async def test_a_measure_that_is_not_applied_cannot_be_renewed(lab: Lab) -> None:
    """Renewing a measure without an expiry, or an unknown step, is refused."""
    incident = await lab.trigger(LEVELLED)
    await lab.settle(incident, {"base": "applied", "surge": "dormant"})
    for step_id, duration, message in [
        ("surge", "24h", "measure surge has no expiry to renew"),
        ("nope", "24h", "no measure 'nope'"),
        ("base", "24h", "measure base has no expiry to renew"),
    ]:
        request = RenewRequest(step_id=step_id, actor="bob", reason="r", duration=duration)
        with pytest.raises(IncidentConflict, match=message):
            await lab.act(incident, CrisisWorkflow.renew, request)


# --- 5. reviews -------------------------------------------------------------------------------
REVIEWED = """
reviews: {every: 6h, grace: 30m, on_missed: ON_MISSED}
steps:
  - id: base
    do: detection.set_threshold
    with: {classifier: incitement_to_violence, threshold: 0.25}
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 25}
  - id: extra
    level: severe
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.5}
"""


async def test_a_missed_review_escalates(lab: Lab) -> None:
    """No review within every + grace: review.missed is recorded and the level rises."""
    incident = await lab.trigger(REVIEWED.replace("ON_MISSED", "escalate"))
    status = await lab.settle(incident, {"base": "applied", "extra": "dormant"})
    due = at(status.next_review_due)
    assert timedelta(hours=6) == due - at(status.triggered_at)

    await lab.advance(timedelta(hours=6, minutes=20))  # within the grace period
    status = await lab.sync(incident)
    assert ("elevated", 0) == (status.level, status.reviews_missed)

    await lab.advance(timedelta(minutes=15))
    status = await lab.settle(incident, {"extra": "applied"}, level="severe")
    assert 1 == status.reviews_missed
    assert due + timedelta(hours=6) < at(status.next_review_due)
    assert ("system", "review missed") == (
        status.level_history[-1].actor,
        status.level_history[-1].reason,
    )
    assert (
        0.5
        == (await lab.platform())["recommender"]["GB"]["incitement_to_violence"]["reach_multiplier"]
    )
    events = await lab.audit(incident, until="level.escalated")
    missed = next(e for e in events if e.kind == "review.missed")
    assert "escalate" == missed.data["on_missed"]
    assert kinds(events).index("review.missed") < kinds(events).index("level.escalated")


async def test_a_review_confirmed_in_time_prevents_the_miss(lab: Lab) -> None:
    """confirm_review moves the next review 6h on, so the original deadline passes quietly."""
    incident = await lab.trigger(REVIEWED.replace("ON_MISSED", "escalate"))
    await lab.settle(incident, {"base": "applied", "extra": "dormant"})

    await lab.advance(timedelta(hours=5))
    confirmed = await lab.act(
        incident, CrisisWorkflow.confirm_review, ReviewRequest(actor="bob", note="still needed")
    )
    due = at(confirmed.next_review_due)
    assert due - await lab.now() > timedelta(hours=5, minutes=59)

    await lab.advance(timedelta(hours=2))  # past the first review's grace
    status = await lab.sync(incident)
    assert ("elevated", 0, due) == (
        status.level,
        status.reviews_missed,
        at(status.next_review_due),
    )
    assert "dormant" == step(status, "extra").state
    events = await lab.audit(incident, until="review.confirmed")
    assert "review.missed" not in kinds(events)
    confirmed_event = next(e for e in events if e.kind == "review.confirmed")
    assert ("bob", "still needed") == (confirmed_event.actor, confirmed_event.data["note"])


async def test_a_missed_review_with_stand_down_undoes_everything_and_closes(lab: Lab) -> None:
    """on_missed stand_down: the system stands the incident down and the platform is restored."""
    before = await lab.platform()
    incident = await lab.trigger(REVIEWED.replace("ON_MISSED", "stand_down"))
    await lab.settle(incident, {"base": "applied", "surge": "applied", "extra": "dormant"})

    await lab.advance(timedelta(hours=6, minutes=31))
    status = await lab.settle(
        incident, {"base": "undone", "surge": "undone", "extra": "skipped"}, state="closed"
    )
    assert status.stand_down is not None
    assert ("system", "review missed") == (status.stand_down.actor, status.stand_down.reason)
    assert 1 == status.reviews_missed
    state = await lab.platform()
    assert settings_of(before) == settings_of(state)
    events = await lab.audit(incident, until="incident.closed")
    assert ["review.missed", "stand_down.requested", "step.undone", "step.undone"] == [
        k for k in kinds(events) if k in ("review.missed", "stand_down.requested", "step.undone")
    ]
    assert "incident.closed" == events[-1].kind
    assert lab.store.verify(incident).ok


# --- 6. parallel branches and conditions -----------------------------------------------------
PARALLEL = """
inputs:
  region: {type: string, default: GB}
steps:
  - id: tell
    parallel:
      - id: regulator
        do: notify.webhook
        with: {to: regulator, message: "Disorder in ${inputs.region}"}
      - id: police
        when: "inputs.region == 'GB'"
        do: notify.webhook
        with: {to: law-enforcement, message: "Disorder in ${inputs.region}"}
      - id: surge
        do: moderation.surge
        with: {queue: hate, extra_reviewers: 10}
  - id: after
    do: detection.set_threshold
    with: {classifier: racial_hatred, threshold: 0.4}
"""


@pytest.mark.parametrize(
    ("region", "police", "told"),
    [("GB", "applied", ["law-enforcement", "regulator"]), ("FR", "dormant", ["regulator"])],
)
async def test_a_conditional_branch_runs_only_where_its_condition_holds(
    lab: Lab, region: str, police: str, told: list[str]
) -> None:
    """The police branch runs for GB and stays dormant for FR; the others run either way and
    stand-down undoes the reversible branch."""
    before = await lab.platform()
    incident = await lab.trigger(PARALLEL, {"region": region})
    await lab.settle(
        incident,
        {
            "tell": "done",
            "regulator": "applied",
            "police": police,
            "surge": "applied",
            "after": "applied",
        },
    )
    state = await lab.platform()
    assert told == sorted(n["stakeholder"] for n in state["notifications"])
    assert all(region in n["body"]["message"] for n in state["notifications"])
    assert 22 == state["moderation"]["hate"]["reviewers"]

    if region == "FR":  # the trail says it was its condition that held it back, not the level
        events = await lab.audit(incident, until="step.dormant")
        dormant = next(e for e in events if e.kind == "step.dormant")
        assert ("police", "inputs.region == 'GB'") == (dormant.step_id, dormant.data["condition"])

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert {
        "regulator": "kept",
        "police": "kept" if region == "GB" else "skipped",
        "surge": "undone",
        "after": "undone",
    } == {k: v for k, v in step_states(closed).items() if k != "tell"}
    assert settings_of(before) == settings_of(await lab.platform())


async def test_the_branches_of_a_parallel_step_held_back_by_the_level_show_it(lab: Lab) -> None:
    """Below its level the parallel step is dormant, and so, as status shows them, are its
    branches (their own records are not run yet); escalated, they run."""
    held = PARALLEL.replace("  - id: tell\n", "  - id: tell\n    level: severe\n")
    incident = await lab.trigger(held, {"region": "FR"})
    branches = {"regulator": "dormant", "police": "dormant", "surge": "dormant"}
    await lab.settle(incident, {"tell": "dormant", **branches, "after": "applied"})
    await lab.act(incident, CrisisWorkflow.escalate, level())
    await lab.settle(
        incident,
        {"tell": "done", "regulator": "applied", "police": "dormant", "surge": "applied"},
        level="severe",
    )


async def test_a_failing_branch_fails_the_incident_while_its_sibling_is_applied(
    lab: Lab,
) -> None:
    """An unknown classifier (404) fails its branch and the incident; the sibling branch stays
    applied until stand-down undoes it."""
    before = await lab.platform()
    incident = await lab.trigger(
        """
steps:
  - id: both
    parallel:
      - id: surge
        do: moderation.surge
        with: {queue: hate, extra_reviewers: 10}
      - id: bad
        do: detection.set_threshold
        with: {classifier: no-such-classifier, threshold: 0.3}
  - id: after
    do: recommender.throttle
    with: {region: GB, categories: [threats], reach_multiplier: 0.5}
"""
    )
    status = await lab.settle(
        incident,
        {"both": "failed", "surge": "applied", "bad": "failed", "after": "pending"},
        state="failed",
    )
    assert "404" in (step(status, "bad").error or "")
    assert 22 == (await lab.platform())["moderation"]["hate"]["reviewers"]
    events = await lab.audit(incident, until="incident.failed")
    # The branch whose failure stopped the playbook (its parallel step, in histories recorded
    # before the patch failure-stops-at-once-and-settles-calls).
    assert "bad" == next(e for e in events if e.kind == "incident.failed").step_id

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="fix the playbook")
    assert {"both": "failed", "surge": "undone", "bad": "failed", "after": "skipped"} == (
        step_states(closed)
    )
    assert settings_of(before) == settings_of(await lab.platform())


# --- 7. waits ---------------------------------------------------------------------------------
WAITING = """
steps:
  - id: first
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: pause
    wait: 30m
  - id: second
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
"""


async def test_a_wait_step_delays_the_next_step(lab: Lab) -> None:
    """The step after `wait: 30m` runs 30 minutes later, not before."""
    incident = await lab.trigger(WAITING)
    status = await lab.settle(
        incident, {"first": "applied", "pause": "waiting", "second": "pending"}
    )
    until = at(step(status, "pause").wait_until)
    assert timedelta(minutes=30) == until - at(step(status, "pause").started_at)

    await lab.advance(timedelta(minutes=29))
    status = await lab.sync(incident)
    assert "pending" == step(status, "second").state
    assert [("first", "apply-1")] == operations(await lab.platform())

    await lab.advance(timedelta(minutes=2))
    status = await lab.settle(incident, {"pause": "done", "second": "applied"})
    assert until <= at(step(status, "second").started_at)
    assert 15 == (await lab.platform())["moderation"]["fraud"]["reviewers"]
    events = await lab.audit(incident, until="wait.finished")
    assert until <= at(next(e for e in events if e.kind == "wait.finished").at)


async def test_a_stand_down_during_a_wait_skips_the_rest(lab: Lab) -> None:
    """Standing down mid-wait ends the wait; the steps after it never run."""
    before = await lab.platform()
    incident = await lab.trigger(WAITING)
    await lab.settle(incident, {"pause": "waiting"})
    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert {"first": "undone", "pause": "skipped", "second": "skipped"} == step_states(closed)
    await lab.advance(timedelta(hours=1))
    state = await lab.platform()
    assert [("first", "apply-1"), ("first", "undo-1")] == operations(state)
    assert settings_of(before) == settings_of(state)
    events = await lab.audit(incident, until="incident.closed")
    assert "wait.finished" not in kinds(events)


# --- 8. on_failure ----------------------------------------------------------------------------
async def test_on_failure_continue_runs_the_next_step_without_failing(lab: Lab) -> None:
    """A failed step with on_failure continue is recorded and the sequence goes on."""
    incident = await lab.trigger(
        """
steps:
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
  - id: bad
    do: detection.set_threshold
    with: {classifier: no-such-classifier, threshold: 0.3}
    on_failure: continue
  - id: throttle
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5}
"""
    )
    status = await lab.settle(
        incident, {"surge": "applied", "bad": "failed", "throttle": "applied"}
    )
    assert "404" in (step(status, "bad").error or "")
    state = await lab.platform()
    assert 0.5 == state["recommender"]["FR"]["fraud"]["reach_multiplier"]
    assert 15 == state["moderation"]["fraud"]["reviewers"]
    events = await lab.audit(incident, until="step.applied", count=2)
    assert "step.failed" in kinds(events)
    assert "incident.failed" not in kinds(events)


async def test_on_failure_undo_undoes_the_applied_steps_and_fails(lab: Lab) -> None:
    """A failed step with on_failure undo takes back every applied step, newest first."""
    before = await lab.platform()
    incident = await lab.trigger(
        """
steps:
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
  - id: throttle
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5}
  - id: bad
    do: detection.set_threshold
    with: {classifier: no-such-classifier, threshold: 0.3}
    on_failure: undo
  - id: later
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
"""
    )
    await lab.settle(
        incident,
        {"surge": "undone", "throttle": "undone", "bad": "failed", "later": "pending"},
        state="failed",
    )
    state = await lab.platform()
    assert settings_of(before) == settings_of(state)
    assert [
        ("surge", "apply-1"),
        ("throttle", "apply-1"),
        ("throttle", "undo-1"),
        ("surge", "undo-1"),
    ] == operations(state)
    events = await lab.audit(incident, until="incident.failed")
    assert ["step.failed", "incident.failed", "step.undone", "step.undone"] == [
        k for k in kinds(events) if k in ("step.failed", "step.undone", "incident.failed")
    ]


# --- 9. on_stand_down -------------------------------------------------------------------------
async def test_on_stand_down_steps_run_at_stand_down(lab: Lab) -> None:
    """The closing notice reaches the regulator only at stand-down, after the measures are
    undone; a closing step whose condition fails is skipped."""
    incident = await lab.trigger(
        """
inputs:
  region: {type: string, default: FR}
steps:
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
on_stand_down:
  - id: closing-notice
    do: notify.webhook
    with:
      to: regulator
      severity: info
      message: "Incident ${incident.id} in ${inputs.region} closed: measures lifted"
  - id: police-notice
    when: "inputs.region == 'GB'"
    do: notify.webhook
    with: {to: law-enforcement, message: "closed"}
"""
    )
    await lab.settle(
        incident,
        {"surge": "applied", "closing-notice": "pending", "police-notice": "pending"},
    )
    assert [] == (await lab.platform())["notifications"]

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert {"surge": "undone", "closing-notice": "applied", "police-notice": "skipped"} == (
        step_states(closed)
    )
    state = await lab.platform()
    assert [
        ("surge", "apply-1"),
        ("surge", "undo-1"),
        ("closing-notice", "apply-1"),
    ] == operations(state)
    [notice] = state["notifications"]
    assert ("regulator", "info", True) == (
        notice["stakeholder"],
        notice["body"]["severity"],
        notice["signature_valid"],
    )
    assert f"Incident {incident} in FR closed: measures lifted" == notice["body"]["message"]


# --- 10. awkward cases ------------------------------------------------------------------------
async def test_an_approval_timing_out_as_a_stand_down_arrives_leaves_nothing_applied(
    lab: Lab,
) -> None:
    """Whichever comes first, the incident closes with the step skipped and the platform as it
    was, even if the timeout's escalation applied a step meanwhile."""
    before = await lab.platform()
    incident = await lab.trigger(TIMEOUT.replace("ON_TIMEOUT", "escalate"))
    await lab.settle(incident, {"throttle": "awaiting_approval"})
    await lab.advance(timedelta(minutes=29, seconds=59))
    _, closed = await asyncio.gather(
        lab.advance(timedelta(seconds=2)),
        lab.incidents.stand_down(incident, actor="bob", reason="calm"),
    )
    assert "closed" == closed.state
    states = step_states(closed)
    assert ("skipped", "undone") == (states["throttle"], states["surge"])
    assert states["extra"] in ("skipped", "undone")
    state = await lab.platform()
    assert settings_of(before) == settings_of(state)
    assert "throttle" not in [name for name, _ in operations(state)]
    assert 0 == state["stats"]["duplicates"]
    events = await lab.audit(incident, until="incident.closed")
    assert "approval.granted" not in kinds(events)
    assert lab.store.verify(incident).ok


async def test_a_notice_under_way_when_the_level_drops_is_withdrawn_once_it_lands(
    lab: Lab,
) -> None:
    """A delivery runs as an activity, so a de-escalation can come while an escalation's notice
    is on its way: once it lands, the notice is withdrawn as the de-escalation would have done
    (its undo tells the regulator), and the next escalation tells them again."""
    incident = await lab.trigger(
        """
steps:
  - id: base
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: tell
    level: severe
    do: notify.send
    with: {to: regulator, template: crisis-escalated}
    undo:
      do: notify.send
      with: {to: regulator, template: crisis-de-escalated}
"""
    )
    await lab.settle(incident, {"base": "applied", "tell": "dormant"})
    await lab.sandbox.fault(path_prefix="/notify", status=0, latency_ms=2000, times=1)
    await lab.act(incident, CrisisWorkflow.escalate, level())

    async def on_its_way() -> None:
        assert 1 == (await lab.platform())["stats"]["faults_injected"]

    await assert_eventually(on_its_way, timeout=15, interval=0.05)
    await lab.act(incident, CrisisWorkflow.de_escalate, level())
    status = await lab.settle(incident, {"tell": "dormant"}, level="elevated")
    assert "withdrawn: level is now elevated" == step(status, "tell").outcome
    told = [n["body"]["message"] for n in (await lab.platform())["notifications"]]
    assert 2 == len(told), told
    assert "now at level severe." in told[0] and "now at level elevated:" in told[1], told
    events = await lab.audit(incident, until="step.withdrawn")
    assert ["level.escalated", "level.de_escalated", "step.applied", "step.withdrawn"] == [
        e.kind for e in events if e.kind.startswith(("level.", "step.applied", "step.withdrawn"))
    ][-4:]

    await lab.act(incident, CrisisWorkflow.escalate, level())
    await lab.settle(incident, {"tell": "applied"}, level="severe")
    assert 3 == len((await lab.platform())["notifications"])


async def test_a_de_escalation_while_a_step_awaits_approval_makes_it_dormant(lab: Lab) -> None:
    """De-escalated below its level, a step awaiting approval becomes dormant with its approvals
    and deadline cleared; re-escalation asks for approval afresh."""
    incident = await lab.trigger(
        """
steps:
  - id: base
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: throttle
    level: severe
    do: recommender.throttle
    with: {region: GB, categories: [threats], reach_multiplier: 0.5}
    approval: {roles: [commander, policy-lead], quorum: 2, timeout: 1h, on_timeout: fail}
  - id: after
    do: moderation.surge
    with: {queue: general, extra_reviewers: 5}
""",
        level="severe",
    )
    await lab.settle(incident, {"base": "applied", "throttle": "awaiting_approval"})
    await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "alice", "commander"))

    await lab.act(incident, CrisisWorkflow.de_escalate, level())
    status = await lab.settle(
        incident, {"base": "applied", "throttle": "dormant", "after": "applied"}, level="elevated"
    )
    throttle = step(status, "throttle")
    assert ([], None) == (throttle.approvals, throttle.approval_deadline)
    with pytest.raises(IncidentConflict, match="not awaiting approval"):
        await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "bob", "policy-lead"))

    await lab.advance(timedelta(hours=2))  # the old deadline must not fail the incident
    status = await lab.sync(incident)
    assert ("running", "dormant") == (status.state, step(status, "throttle").state)

    await lab.act(incident, CrisisWorkflow.escalate, level())
    status = await lab.settle(incident, {"throttle": "awaiting_approval"}, level="severe")
    assert [] == step(status, "throttle").approvals
    assert at(step(status, "throttle").approval_deadline) > await lab.now()
    await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "alice", "commander"))
    await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "bob", "policy-lead"))
    await lab.settle(incident, {"throttle": "applied"})
    state = await lab.platform()
    assert 0.5 == state["recommender"]["GB"]["threats"]["reach_multiplier"]
    assert [("throttle", "apply-1")] == [o for o in operations(state) if o[0] == "throttle"]
    events = await lab.audit(incident, until="approval.granted")
    assert 2 == kinds(events).count("approval.requested")
    assert "approval.timed_out" not in kinds(events)
    assert "throttle" == next(e for e in events if e.kind == "step.dormant").step_id


async def test_a_renewal_past_the_calendar_is_refused_and_the_incident_carries_on(
    lab: Lab,
) -> None:
    """A duration whose deadline the clock cannot hold is refused before it is recorded."""
    incident = await lab.trigger(EXPIRING)
    await lab.settle(incident, {"throttle": "applied"})
    huge = RenewRequest(
        step_id="throttle", actor="bob", reason="forever", duration="9999999999999999999d"
    )
    with pytest.raises(IncidentConflict, match="longer than 36500d"):
        await lab.act(incident, CrisisWorkflow.renew, huge)
    status = await lab.sync(incident)
    assert ("running", "applied") == (status.state, step(status, "throttle").state)


async def test_a_renewal_for_no_time_is_refused_and_the_measure_holds(lab: Lab) -> None:
    """A zero duration would renew "until now" and lapse the measure at once: it is refused
    before it is recorded."""
    incident = await lab.trigger(EXPIRING)
    await lab.settle(incident, {"throttle": "applied"})
    for duration in ("0s", "0h0m", "0ms"):
        zero = RenewRequest(step_id="throttle", actor="bob", reason="r", duration=duration)
        with pytest.raises(IncidentConflict, match="must be longer than zero"):
            await lab.act(incident, CrisisWorkflow.renew, zero)
    status = await lab.sync(incident)
    assert ("running", "applied") == (status.state, step(status, "throttle").state)


async def test_a_renewal_that_would_bring_the_lapse_forward_is_refused(lab: Lab) -> None:
    """Renewing pushes a measure's expiry out: 24h asked of a measure that holds 48h more would
    make it lapse sooner, and is refused; the expiry stays where it was."""
    incident = await lab.trigger(EXPIRING)
    status = await lab.settle(incident, {"throttle": "applied"})
    original = step(status, "throttle").expires_at
    shorter = RenewRequest(step_id="throttle", actor="bob", reason="r", duration="24h")
    with pytest.raises(IncidentConflict, match="a renewal only pushes the expiry out"):
        await lab.act(incident, CrisisWorkflow.renew, shorter)
    status = await lab.sync(incident)
    assert ("applied", original) == (
        step(status, "throttle").state,
        step(status, "throttle").expires_at,
    )
    assert "measure.renewed" not in [e.kind for e in lab.store.events(incident)]


async def test_renewing_a_lapsed_measure_applies_it_again(lab: Lab) -> None:
    """A renewal after expiry re-applies the measure (apply-2) until the renewal's end, then it
    lapses again (undo-2)."""
    incident = await lab.trigger(EXPIRING)
    await lab.settle(incident, {"throttle": "applied"})
    await lab.advance(timedelta(hours=49))
    await lab.settle(incident, {"throttle": "expired"})
    assert {} == (await lab.platform())["recommender"]

    renewal = RenewRequest(step_id="throttle", actor="bob", reason="flare-up", duration="24h")
    renewed_at = await lab.now()
    await lab.act(incident, CrisisWorkflow.renew, renewal)
    status = await lab.settle(incident, {"throttle": "applied"})
    expires_at = at(step(status, "throttle").expires_at)
    assert timedelta(hours=23) < expires_at - renewed_at < timedelta(hours=25)
    state = await lab.platform()
    assert 0.25 == state["recommender"]["GB"]["incitement_to_violence"]["reach_multiplier"]
    assert ("throttle", "apply-2") == operations(state)[-1]

    await lab.advance(timedelta(hours=25))
    await lab.settle(incident, {"throttle": "expired"})
    state = await lab.platform()
    assert {} == state["recommender"]
    assert [("throttle", op) for op in ("apply-1", "undo-1", "apply-2", "undo-2")] == [
        o for o in operations(state) if o[0] == "throttle"
    ]
    assert 0 == state["stats"]["duplicates"]
    events = await lab.audit(incident, until="step.expired", count=2)
    renewal_event = next(e for e in events if e.kind == "measure.renewed")
    assert (True, None) == (renewal_event.data["reapply"], renewal_event.data["was"])


async def test_continue_as_new_in_the_middle_of_a_wait_keeps_the_wait_and_the_audit_chain(
    lab: Lab,
) -> None:
    """With a small history limit the incident continues as new while waiting; the wait still
    ends on time and the audit chain runs on unbroken across runs."""
    incident = await lab.trigger(
        """
steps:
  - id: first
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: hold
    wait: 2h
  - id: second
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
""",
        history_limit=40,
    )
    status = await lab.settle(incident, {"first": "applied", "hold": "waiting"})
    until = at(step(status, "hold").wait_until)
    runs = status.runs
    notes = await continue_as_new(lab, incident)
    status = await lab.settle(
        incident,
        {"first": "applied", "hold": "waiting", "second": "pending"},
        also=lambda s: more_runs(s, runs),
    )
    assert until == at(step(status, "hold").wait_until)
    assert notes == len(status.notes)

    await lab.advance(until - await lab.now() - timedelta(minutes=1))
    status = await lab.sync(incident)
    assert ("waiting", "pending") == (step(status, "hold").state, step(status, "second").state)

    await lab.advance(timedelta(minutes=2))
    status = await lab.settle(incident, {"hold": "done", "second": "applied"})
    assert until <= at(step(status, "second").started_at) < until + timedelta(minutes=5)
    assert [("first", "apply-1"), ("second", "apply-1")] == operations(await lab.platform())

    events = await lab.audit(incident, until="step.applied", count=2)
    seqs = [e.seq for e in events]
    assert list(range(1, len(events) + 1)) == seqs
    assert 1 == kinds(events).count("wait.started")
    continued = kinds(events).index("incident.continued")
    assert kinds(events).index("wait.started") < continued < kinds(events).index("wait.finished")
    assert lab.store.verify(incident).ok


async def test_continue_as_new_while_a_step_awaits_approval_carries_its_approvals(
    lab: Lab,
) -> None:
    """An approval given before the incident continues as new still counts after it, the same
    approver is still refused, and the second approval applies the step."""
    incident = await lab.trigger(QUORUM, history_limit=40)
    await lab.settle(incident, {"throttle": "awaiting_approval"})
    await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "alice", "commander"))
    await continue_as_new(lab, incident)
    status = await lab.settle(
        incident, {"throttle": "awaiting_approval"}, also=lambda s: more_runs(s, 1)
    )
    assert ["alice"] == [a.actor for a in step(status, "throttle").approvals]
    with pytest.raises(IncidentConflict, match="alice has already approved"):
        await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "alice", "commander"))

    await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "bob", "policy-lead"))
    await lab.settle(incident, {"throttle": "applied", "surge": "applied"})
    assert ["surge", "throttle"] == [name for name, _ in operations(await lab.platform())]
    events = await lab.audit(incident, until="step.applied", count=2)
    assert 1 == kinds(events).count("approval.requested")
    assert list(range(1, len(events) + 1)) == [e.seq for e in events]
    assert lab.store.verify(incident).ok


CAUGHT_UP_APPROVAL = """
steps:
  - id: severe-surge
    level: severe
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
    approval: {roles: [commander], timeout: 72h, on_timeout: skip}
  - id: throttle
    do: recommender.throttle
    with: {region: GB, categories: [threats], reach_multiplier: 0.5}
    expires_after: 48h
  - id: hold
    wait: 30h
  - id: after
    do: detection.set_threshold
    with: {classifier: threats, threshold: 0.4}
"""


async def _past_the_history_limit_behind_a_caught_up_approval(lab: Lab) -> str:
    incident = await lab.trigger(CAUGHT_UP_APPROVAL, history_limit=40)
    await lab.settle(
        incident, {"severe-surge": "dormant", "throttle": "applied", "hold": "waiting"}
    )
    await lab.act(incident, CrisisWorkflow.escalate, level())
    await lab.settle(incident, {"severe-surge": "awaiting_approval"}, level="severe")
    for number in range(6):
        await lab.act(
            incident, CrisisWorkflow.add_note, NoteRequest(actor="bob", text=f"note {number}")
        )
    # Past the limit the run continues as new even though an approval is still outstanding.
    assert (await lab.sync(incident)).runs >= 2
    return incident


async def test_a_caught_up_step_awaiting_approval_does_not_hold_up_the_sequence(
    lab: Lab,
) -> None:
    """Past the history limit, with a caught-up step awaiting approval, the step after a wait
    still runs when the wait ends."""
    incident = await _past_the_history_limit_behind_a_caught_up_approval(lab)
    await lab.advance(timedelta(hours=31))
    status = await lab.sync(incident)
    assert ("done", "applied") == (step(status, "hold").state, step(status, "after").state)


async def test_a_caught_up_step_awaiting_approval_does_not_hold_up_expiry(lab: Lab) -> None:
    """Past the history limit, with a caught-up step awaiting approval, a measure still lapses
    48h after it was applied."""
    incident = await _past_the_history_limit_behind_a_caught_up_approval(lab)
    await lab.advance(timedelta(hours=49))
    status = await lab.sync(incident)
    assert "expired" == step(status, "throttle").state
    assert {} == (await lab.platform())["recommender"]


async def test_a_caught_up_step_awaiting_approval_with_the_default_history_limit(
    lab: Lab,
) -> None:
    """The same incident below its history limit: the wait ends on time and the measure lapses
    at 48h (the control for the two tests above)."""
    incident = await lab.trigger(CAUGHT_UP_APPROVAL)
    await lab.settle(incident, {"throttle": "applied", "hold": "waiting"})
    await lab.act(incident, CrisisWorkflow.escalate, level())
    await lab.settle(incident, {"severe-surge": "awaiting_approval"}, level="severe")
    await lab.advance(timedelta(hours=31))
    await lab.settle(incident, {"hold": "done", "after": "applied"})
    await lab.advance(timedelta(hours=18))
    await lab.settle(incident, {"throttle": "expired", "severe-surge": "awaiting_approval"})
    assert {} == (await lab.platform())["recommender"]


# --- 11. notes --------------------------------------------------------------------------------
async def test_a_note_appears_in_the_status_and_the_audit_trail(lab: Lab) -> None:
    """add_note is answered with the status holding the note, recorded, and refused once
    closed."""
    incident = await lab.trigger(WAITING)
    await lab.settle(incident, {"pause": "waiting"})
    status = await lab.act(
        incident,
        CrisisWorkflow.add_note,
        NoteRequest(actor="bob", text="Police confirm the march has dispersed"),
    )
    assert [("bob", "Police confirm the march has dispersed")] == [
        (n.actor, n.text) for n in status.notes
    ]
    assert [("bob", "Police confirm the march has dispersed")] == [
        (n.actor, n.text) for n in (await lab.status(incident)).notes
    ]
    events = await lab.audit(incident, until="note.added")
    note = next(e for e in events if e.kind == "note.added")
    assert ("bob", "Police confirm the march has dispersed") == (note.actor, note.data["text"])

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert 1 == len(closed.notes)
    # A closed incident takes no more notes (the test server calls the finished run "not
    # found" where the dev server says "already completed": both are an IncidentError).
    with pytest.raises(IncidentError):
        await lab.act(incident, CrisisWorkflow.add_note, NoteRequest(actor="bob", text="late"))


async def test_over_long_text_is_refused_before_it_is_recorded(lab: Lab) -> None:
    """Each action's free text has a limit (the API's too, for callers that skip the API): over
    it, the update is refused with the limit named, and the incident carries on."""
    incident = await lab.trigger(LEVELLED)
    await lab.settle(incident, {"base": "applied", "surge": "dormant"})
    note, text, name = "n" * (MAX_NOTE_CHARS + 1), "t" * (MAX_TEXT_CHARS + 1), "a" * 201
    refused = [
        (CrisisWorkflow.add_note, NoteRequest(actor="bob", text=note), "text", MAX_NOTE_CHARS),
        (CrisisWorkflow.add_note, NoteRequest(actor=name, text="x"), "actor", MAX_NAME_CHARS),
        (CrisisWorkflow.escalate, LevelRequest(actor="bob", reason=text), "reason", MAX_TEXT_CHARS),
        (
            CrisisWorkflow.de_escalate,
            LevelRequest(actor="b", reason=text),
            "reason",
            MAX_TEXT_CHARS,
        ),
        (
            CrisisWorkflow.renew,
            RenewRequest(step_id="base", actor="bob", reason=text, duration="1h"),
            "reason",
            MAX_TEXT_CHARS,
        ),
        (
            CrisisWorkflow.approve,
            ApproveRequest(step_id="surge", actor="bob", role="r", comment=text),
            "comment",
            MAX_TEXT_CHARS,
        ),
        (
            CrisisWorkflow.reject,
            RejectRequest(step_id="surge", actor="bob", role=name, reason="r"),
            "role",
            MAX_NAME_CHARS,
        ),
        (
            CrisisWorkflow.confirm_review,
            ReviewRequest(actor="b", note=text),
            "note",
            MAX_TEXT_CHARS,
        ),
        (
            CrisisWorkflow.stand_down,
            StandDownRequest(actor="bob", reason=text),
            "reason",
            MAX_TEXT_CHARS,
        ),
    ]
    for update, request, field, limit in refused:
        with pytest.raises(IncidentConflict, match=rf"{field} is too long: {limit + 1} .*{limit}"):
            await lab.act(incident, update, request)
    status = await lab.act(
        incident, CrisisWorkflow.add_note, NoteRequest(actor="bob", text="n" * MAX_NOTE_CHARS)
    )
    assert ["bob"] == [n.actor for n in status.notes]
    assert "running" == status.state

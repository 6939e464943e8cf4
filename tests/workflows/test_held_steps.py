"""Steps held off the sequence (interpreter v7), end to end on a time-skipping Temporal server.

A step waiting for its approval no longer blocks the playbook: the sequence starts it off the
sequence and goes on, and a later step of the same lever on some of the same settings waits for
it to settle before it asks for its own approval or is applied. These tests try to break that
rule: rejections, timeouts, level changes, parallel branches, stand-down, continue-as-new and
failures while a step waits behind a held one. Each checks the step states, the platform
sandbox's real state and, where it matters, the audit trail.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from engine.errors import IncidentConflict
from tests.helpers import assert_eventually
from tests.workflows.lab import (
    Lab,
    approve,
    continue_as_new,
    history_length,
    kinds,
    level,
    more_runs,
    operations,
    settings_of,
    step,
    step_states,
)
from workflows.audit import AuditEvent
from workflows.crisis import CrisisWorkflow
from workflows.incident import (
    IncidentStatus,
    NoteRequest,
    RejectRequest,
    RenewRequest,
)


def reject(step_id: str, actor: str = "bob") -> RejectRequest:
    return RejectRequest(step_id=step_id, actor=actor, role="commander", reason="too broad")


def waits_for(earlier: str) -> str:
    return f"waits for {earlier}, which changes the same settings"


def policy(state: dict[str, Any], region: str, category: str) -> Any:
    """The reach policy of a category in a region (None if there is none)."""
    return state["recommender"].get(region, {}).get(category)


async def until_steps(lab: Lab, incident: str, steps: dict[str, str]) -> IncidentStatus:
    """As `lab.settle`, for an incident with a parallel step still running (a branch awaiting
    its approval): the named steps in these states and no lever call under way."""

    async def check() -> IncidentStatus:
        status = await lab.status(incident)
        now = step_states(status)
        assert steps == {k: v for k, v in now.items() if k in steps}, now
        levers = {s.state for s in status.steps if s.kind == "lever"}
        assert not {"running", "undoing"} & levers, now
        return status

    return await assert_eventually(check, timeout=15, interval=0.05)


def started(events: list[AuditEvent], step_id: str) -> int:
    """The position in the trail of the step's first step.started."""
    return next(
        n for n, e in enumerate(events) if e.kind == "step.started" and e.step_id == step_id
    )


# --- 1. the earlier approval refused, or never given -------------------------------------------
SAME_SETTINGS = """
steps:
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}
    approval: {roles: [commander], timeout: 1h, on_timeout: skip}
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
  - id: stricter
    do: recommender.throttle
    with:
      region: GB
      categories: [racial_hatred, threats]
      reach_multiplier: 0.25
      reshare_limit: 1
"""
STRICTER = {"reach_multiplier": 0.25, "reshare_limit": 1}


async def test_a_rejected_held_step_lets_the_step_behind_it_go_on(lab: Lab) -> None:
    """Rejecting the earlier step on the same settings releases the later one: it is applied
    with its own values, and stand-down puts the platform back exactly as it was."""
    before = await lab.platform()
    incident = await lab.trigger(SAME_SETTINGS)
    status = await lab.settle(
        incident, {"cut": "awaiting_approval", "surge": "applied", "stricter": "pending"}
    )
    assert waits_for("cut") == step(status, "stricter").outcome
    assert {} == (await lab.platform())["recommender"]

    await lab.act(incident, CrisisWorkflow.reject, reject("cut"))
    status = await lab.settle(
        incident, {"cut": "skipped", "surge": "applied", "stricter": "applied"}
    )
    assert "rejected by bob: too broad" == step(status, "cut").outcome
    assert step(status, "stricter").outcome is None
    state = await lab.platform()
    assert STRICTER == policy(state, "GB", "racial_hatred")
    assert STRICTER == policy(state, "GB", "threats")
    assert [("surge", "apply-1"), ("stricter", "apply-1")] == operations(state)

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert {"cut": "skipped", "surge": "undone", "stricter": "undone"} == step_states(closed)
    assert settings_of(before) == settings_of(await lab.platform())
    events = await lab.audit(incident, until="incident.closed")
    assert kinds(events).index("approval.rejected") < started(events, "stricter")
    assert lab.store.verify(incident).ok


async def test_a_held_step_whose_approval_times_out_with_skip_releases_the_step_behind_it(
    lab: Lab,
) -> None:
    """on_timeout: skip: at the deadline the earlier step is skipped and the later one on the
    same settings is applied then (not before); stand-down restores the platform."""
    before = await lab.platform()
    incident = await lab.trigger(SAME_SETTINGS)
    await lab.settle(incident, {"cut": "awaiting_approval", "stricter": "pending"})

    await lab.advance(timedelta(minutes=59))
    status = await lab.sync(incident)
    assert ("awaiting_approval", "pending") == (
        step(status, "cut").state,
        step(status, "stricter").state,
    )
    assert {} == (await lab.platform())["recommender"]

    await lab.advance(timedelta(minutes=2))
    status = await lab.settle(incident, {"cut": "skipped", "stricter": "applied"})
    assert "approval timed out" == step(status, "cut").outcome
    assert STRICTER == policy(await lab.platform(), "GB", "racial_hatred")

    await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert settings_of(before) == settings_of(await lab.platform())
    events = await lab.audit(incident, until="incident.closed")
    assert kinds(events).index("approval.timed_out") < started(events, "stricter")


# --- 2. two approvals on the same settings ----------------------------------------------------
TWO_APPROVALS = """
steps:
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5, reshare_limit: 5}
    approval: {roles: [commander], timeout: 72h, on_timeout: skip}
  - id: stricter
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25, reshare_limit: 1}
    approval: {roles: [commander, policy-lead], timeout: 72h, on_timeout: skip}
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
"""


async def test_the_later_of_two_approvals_on_the_same_settings_waits_and_ends_in_force(
    lab: Lab,
) -> None:
    """The later step does not ask for its approval (so cannot be approved first) until the
    earlier one is settled; approved in turn, the later step's values are in force, and
    stand-down restores the original."""
    before = await lab.platform()
    incident = await lab.trigger(TWO_APPROVALS)
    status = await lab.settle(
        incident, {"cut": "awaiting_approval", "stricter": "pending", "surge": "applied"}
    )
    assert waits_for("cut") == step(status, "stricter").outcome
    assert step(status, "stricter").approval_deadline is None
    # The refusal says what it waits for.
    waiting = r"stricter is not awaiting approval \(it is pending: waits for cut, which changes"
    with pytest.raises(IncidentConflict, match=waiting):
        await lab.act(incident, CrisisWorkflow.approve, approve("stricter", "bob", "policy-lead"))
    with pytest.raises(IncidentConflict, match=waiting):
        await lab.act(incident, CrisisWorkflow.reject, reject("stricter"))

    await lab.act(incident, CrisisWorkflow.approve, approve("cut"))
    status = await lab.settle(incident, {"cut": "applied", "stricter": "awaiting_approval"})
    assert step(status, "stricter").outcome is None
    assert {"reach_multiplier": 0.5, "reshare_limit": 5} == policy(
        await lab.platform(), "GB", "racial_hatred"
    )

    await lab.act(incident, CrisisWorkflow.approve, approve("stricter", "bob", "policy-lead"))
    await lab.settle(incident, {"cut": "applied", "stricter": "applied"})
    state = await lab.platform()
    assert {"reach_multiplier": 0.25, "reshare_limit": 1} == policy(state, "GB", "racial_hatred")
    assert ["surge", "cut", "stricter"] == [name for name, _ in operations(state)]

    events = await lab.audit(incident, until="step.applied", count=3)
    asked = [e.step_id for e in events if e.kind == "approval.requested"]
    assert ["cut", "stricter"] == asked
    granted = next(e for e in events if e.kind == "approval.granted")
    stricter_asked = next(
        e for e in events if e.kind == "approval.requested" and e.step_id == "stricter"
    )
    assert granted.seq < stricter_asked.seq

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert {"undone"} == {s.state for s in closed.steps}
    assert settings_of(before) == settings_of(await lab.platform())
    assert lab.store.verify(incident).ok


# --- 3. level changes ------------------------------------------------------------------------
LEVELLED = """
steps:
  - id: cut
    level: severe
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}
    approval: {roles: [commander], timeout: 72h, on_timeout: skip}
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
  - id: stricter
    level: STRICTER_LEVEL
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25, reshare_limit: 1}
"""


async def test_de_escalation_while_a_step_waits_behind_a_held_one_then_re_escalation(
    lab: Lab,
) -> None:
    """De-escalated, the held step becomes dormant and the step behind it too (nothing of either
    applied); re-escalated, the earlier asks afresh and the later waits for it again, and is the
    one in force once the earlier is approved."""
    before = await lab.platform()
    incident = await lab.trigger(LEVELLED.replace("STRICTER_LEVEL", "severe"), level="severe")
    await lab.settle(
        incident, {"cut": "awaiting_approval", "surge": "applied", "stricter": "pending"}
    )

    await lab.act(incident, CrisisWorkflow.de_escalate, level())
    status = await lab.settle(
        incident, {"cut": "dormant", "surge": "applied", "stricter": "dormant"}, level="elevated"
    )
    assert step(status, "stricter").outcome is None
    assert ([], None) == (step(status, "cut").approvals, step(status, "cut").approval_deadline)
    await lab.advance(timedelta(hours=73))  # the old deadline must not skip it
    status = await lab.sync(incident)
    assert ("dormant", "dormant") == (step(status, "cut").state, step(status, "stricter").state)
    assert {} == (await lab.platform())["recommender"]

    await lab.act(incident, CrisisWorkflow.escalate, level())
    status = await lab.settle(
        incident, {"cut": "awaiting_approval", "stricter": "pending"}, level="severe"
    )
    assert waits_for("cut") == step(status, "stricter").outcome
    assert 0 == step(status, "stricter").applications
    await lab.act(incident, CrisisWorkflow.approve, approve("cut"))
    await lab.settle(incident, {"cut": "applied", "stricter": "applied"})
    state = await lab.platform()
    assert {"reach_multiplier": 0.25, "reshare_limit": 1} == policy(state, "GB", "racial_hatred")
    assert ["surge", "cut", "stricter"] == [name for name, _ in operations(state)]

    await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert settings_of(before) == settings_of(await lab.platform())
    events = await lab.audit(incident, until="incident.closed")
    assert 2 == [e.step_id for e in events if e.kind == "approval.requested"].count("cut")
    assert lab.store.verify(incident).ok


async def test_a_step_behind_a_held_one_that_the_level_withdraws_goes_on_at_once(
    lab: Lab,
) -> None:
    """Only the earlier step is above the new level: it goes dormant, and the later one on its
    settings no longer has anything to wait for, so it is applied."""
    incident = await lab.trigger(LEVELLED.replace("STRICTER_LEVEL", "elevated"), level="severe")
    await lab.settle(incident, {"cut": "awaiting_approval", "stricter": "pending"})
    await lab.act(incident, CrisisWorkflow.de_escalate, level())
    await lab.settle(incident, {"cut": "dormant", "stricter": "applied"}, level="elevated")
    assert {"reach_multiplier": 0.25, "reshare_limit": 1} == policy(
        await lab.platform(), "GB", "racial_hatred"
    )


async def test_a_step_waiting_behind_a_re_held_one_after_re_escalation_reads_pending(
    lab: Lab,
) -> None:
    """After de-escalation and re-escalation the later step waits for the earlier one again:
    its level is reached, so it should read pending (as before the level changes), not dormant."""
    incident = await lab.trigger(LEVELLED.replace("STRICTER_LEVEL", "severe"), level="severe")
    await lab.settle(incident, {"cut": "awaiting_approval", "stricter": "pending"})
    await lab.act(incident, CrisisWorkflow.de_escalate, level())
    await lab.settle(incident, {"cut": "dormant", "stricter": "dormant"}, level="elevated")
    await lab.act(incident, CrisisWorkflow.escalate, level())
    status = await lab.settle(incident, {"cut": "awaiting_approval"}, level="severe")
    assert waits_for("cut") == step(status, "stricter").outcome
    assert "pending" == step(status, "stricter").state


# --- 4. parallel steps -----------------------------------------------------------------------
PARALLEL = """
steps:
  - id: both
    parallel:
      - id: cut
        do: recommender.throttle
        with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}
        approval: {roles: [commander], timeout: 72h, on_timeout: skip}
      - id: surge
        do: moderation.surge
        with: {queue: hate, extra_reviewers: 10}
  - id: other
    do: detection.set_threshold
    with: {classifier: racial_hatred, threshold: 0.4}
  - id: bigger-surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 25, priority: urgent}
"""


async def test_a_step_on_the_settings_of_a_parallel_steps_applied_branch_waits_for_the_other(
    lab: Lab,
) -> None:
    """A parallel step one of whose branches awaits approval is held as a whole: its other
    branch is applied at once, the steps on other settings go on, and a later step on the
    applied branch's settings waits until the parallel step is done, then is the one in force;
    stand-down restores the platform."""
    before = await lab.platform()
    incident = await lab.trigger(PARALLEL)
    status = await until_steps(
        lab,
        incident,
        {
            "cut": "awaiting_approval",
            "surge": "applied",
            "other": "applied",
            "bigger-surge": "pending",
        },
    )
    assert "running" == step(status, "both").state
    assert waits_for("both") == step(status, "bigger-surge").outcome
    state = await lab.platform()
    assert {"reviewers": 22, "priority": "high"} == state["moderation"]["hate"]
    assert 0.4 == state["detection"]["racial_hatred"]

    await lab.act(incident, CrisisWorkflow.approve, approve("cut"))
    status = await lab.settle(
        incident, {"both": "done", "cut": "applied", "surge": "applied", "bigger-surge": "applied"}
    )
    state = await lab.platform()
    assert {"reviewers": 47, "priority": "urgent"} == state["moderation"]["hate"]
    assert 0.5 == policy(state, "GB", "racial_hatred")["reach_multiplier"]
    applied = [name for name, _ in operations(state)]
    assert (["other", "surge"], ["cut", "bigger-surge"]) == (sorted(applied[:2]), applied[2:])

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert {"both": "done", "cut": "undone", "surge": "undone", "bigger-surge": "undone"} == {
        k: v for k, v in step_states(closed).items() if k != "other"
    }
    assert settings_of(before) == settings_of(await lab.platform())
    assert lab.store.verify(incident).ok


async def test_a_rejected_branch_releases_the_step_behind_its_parallel_step(lab: Lab) -> None:
    """The branch awaiting approval rejected, the parallel step is done and the later step on
    its sibling's settings is applied over the sibling."""
    before = await lab.platform()
    incident = await lab.trigger(PARALLEL)
    await until_steps(lab, incident, {"cut": "awaiting_approval", "bigger-surge": "pending"})
    await lab.act(incident, CrisisWorkflow.reject, reject("cut"))
    await lab.settle(
        incident, {"both": "done", "cut": "skipped", "surge": "applied", "bigger-surge": "applied"}
    )
    state = await lab.platform()
    assert {} == state["recommender"]
    assert {"reviewers": 47, "priority": "urgent"} == state["moderation"]["hate"]
    await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert settings_of(before) == settings_of(await lab.platform())


async def test_continue_as_new_with_a_parallel_step_held_by_its_branch(lab: Lab) -> None:
    """Across a continue-as-new the parallel step is still held by its branch awaiting approval
    (its applied sibling not applied again) and the step behind it still waits; approved, the
    parallel step is done and the later step is applied over the sibling."""
    before = await lab.platform()
    incident = await lab.trigger(PARALLEL, history_limit=40)
    await until_steps(lab, incident, {"cut": "awaiting_approval", "bigger-surge": "pending"})
    await continue_as_new(lab, incident)  # answers once the incident runs on in a new run
    status = await until_steps(
        lab, incident, {"cut": "awaiting_approval", "surge": "applied", "bigger-surge": "pending"}
    )
    assert 1 < status.runs
    assert waits_for("both") == step(status, "bigger-surge").outcome

    await lab.act(incident, CrisisWorkflow.approve, approve("cut"))
    await lab.settle(
        incident, {"both": "done", "cut": "applied", "surge": "applied", "bigger-surge": "applied"}
    )
    state = await lab.platform()
    assert {"reviewers": 47, "priority": "urgent"} == state["moderation"]["hate"]
    assert [("surge", "apply-1")] == [o for o in operations(state) if o[0] == "surge"]
    assert 0 == state["stats"]["duplicates"]
    await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert settings_of(before) == settings_of(await lab.platform())
    assert lab.store.verify(incident).ok


# --- 5. stand-down --------------------------------------------------------------------------
async def test_a_stand_down_while_a_step_waits_behind_a_held_one_applies_neither(
    lab: Lab,
) -> None:
    """Stood down while the later step waits: neither same-settings step is ever applied (not
    even once the old deadline passes), both read skipped, the others are undone, the platform
    is restored and the audit chain verifies."""
    before = await lab.platform()
    incident = await lab.trigger(TWO_APPROVALS)
    await lab.settle(
        incident, {"cut": "awaiting_approval", "stricter": "pending", "surge": "applied"}
    )
    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert {"cut": "skipped", "stricter": "skipped", "surge": "undone"} == step_states(closed)
    outcomes = {s.id: s.outcome for s in closed.steps}
    assert "not run: incident stood down" == outcomes["cut"] == outcomes["stricter"]
    await lab.advance(timedelta(hours=73))
    state = await lab.platform()
    assert [("surge", "apply-1"), ("surge", "undo-1")] == operations(state)
    assert settings_of(before) == settings_of(state)
    events = await lab.audit(incident, until="incident.closed")
    assert ["cut"] == [e.step_id for e in events if e.kind == "approval.requested"]
    assert not {"approval.timed_out", "approval.granted"} & set(kinds(events))
    assert "incident.closed" == events[-1].kind
    assert lab.store.verify(incident).ok


# --- 6. continue-as-new ---------------------------------------------------------------------
async def test_continue_as_new_with_one_step_held_and_another_waiting_behind_it(
    lab: Lab,
) -> None:
    """Across a continue-as-new the held step still awaits its approval (asked once), the later
    step still waits for it without asking for its own; approved in turn, the later step's
    values are in force."""
    before = await lab.platform()
    incident = await lab.trigger(TWO_APPROVALS, history_limit=40)
    await lab.settle(incident, {"cut": "awaiting_approval", "stricter": "pending"})
    await continue_as_new(lab, incident)
    status = await lab.settle(
        incident,
        {"cut": "awaiting_approval", "stricter": "pending", "surge": "applied"},
        also=lambda s: more_runs(s, 1),
    )
    assert waits_for("cut") == step(status, "stricter").outcome
    with pytest.raises(IncidentConflict, match="stricter is not awaiting approval"):
        await lab.act(incident, CrisisWorkflow.approve, approve("stricter"))

    await lab.act(incident, CrisisWorkflow.approve, approve("cut"))
    await lab.settle(incident, {"cut": "applied", "stricter": "awaiting_approval"})
    await lab.act(incident, CrisisWorkflow.approve, approve("stricter", "bob", "policy-lead"))
    await lab.settle(incident, {"cut": "applied", "stricter": "applied"})
    state = await lab.platform()
    assert {"reach_multiplier": 0.25, "reshare_limit": 1} == policy(state, "GB", "racial_hatred")
    assert ["surge", "cut", "stricter"] == [name for name, _ in operations(state)]
    assert 0 == state["stats"]["duplicates"]
    events = await lab.audit(incident, until="step.applied", count=3)
    assert ["cut", "stricter"] == [e.step_id for e in events if e.kind == "approval.requested"]
    assert list(range(1, len(events) + 1)) == [e.seq for e in events]

    await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert settings_of(before) == settings_of(await lab.platform())
    assert lab.store.verify(incident).ok


BEHIND_A_WAIT = """
steps:
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}
    approval: {roles: [commander], timeout: 72h, on_timeout: skip}
  - id: pause
    wait: 1h
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
  - id: stricter
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25, reshare_limit: 1}
"""


async def test_a_continue_as_new_between_steps_keeps_the_later_step_behind_the_held_one(
    lab: Lab,
) -> None:
    """The history reaches its limit as a wait ends, so the run continues as new while the
    sequence is between the step after the wait and the step on the held step's settings: in
    the new run that step must still wait for the held one, not be applied at once."""
    incident = await lab.trigger(BEHIND_A_WAIT, history_limit=60)
    await lab.settle(incident, {"cut": "awaiting_approval", "pause": "waiting"})
    # Notes up to just short of the limit: the task the wait's timer starts is past it.
    for number in range(30):
        if await history_length(lab, incident) + 3 >= 60:
            break
        await lab.act(
            incident, CrisisWorkflow.add_note, NoteRequest(actor="bob", text=f"note {number}")
        )
    assert 1 == (await lab.status(incident)).runs
    await lab.advance(timedelta(minutes=61))
    status = await lab.settle(
        incident,
        {"cut": "awaiting_approval", "pause": "done", "surge": "applied"},
        also=lambda s: more_runs(s, 1),
    )
    assert {} == (await lab.platform())["recommender"]
    assert ("pending", waits_for("cut")) == (
        step(status, "stricter").state,
        step(status, "stricter").outcome,
    )


THREE_ON_ONE_SETTING = """
steps:
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}
    approval: {roles: [commander], timeout: 72h, on_timeout: skip}
  - id: stricter
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25}
    approval: {roles: [commander], timeout: 72h, on_timeout: skip}
  - id: strictest
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.1, reshare_limit: 1}
"""


async def test_three_steps_on_one_setting_are_applied_in_playbook_order(lab: Lab) -> None:
    """Each waits for the one before it: the third is applied only once the second is approved,
    and its values are the ones in force."""
    incident = await lab.trigger(THREE_ON_ONE_SETTING)
    await lab.settle(
        incident, {"cut": "awaiting_approval", "stricter": "pending", "strictest": "pending"}
    )
    await lab.act(incident, CrisisWorkflow.approve, approve("cut"))
    await lab.settle(
        incident, {"cut": "applied", "stricter": "awaiting_approval", "strictest": "pending"}
    )
    assert 0.5 == policy(await lab.platform(), "GB", "racial_hatred")["reach_multiplier"]
    await lab.act(incident, CrisisWorkflow.approve, approve("stricter"))
    await lab.settle(incident, {"cut": "applied", "stricter": "applied", "strictest": "applied"})
    state = await lab.platform()
    assert {"reach_multiplier": 0.1, "reshare_limit": 1} == policy(state, "GB", "racial_hatred")
    assert ["cut", "stricter", "strictest"] == [name for name, _ in operations(state)]


async def test_a_waiting_step_names_the_step_it_now_waits_for(lab: Lab) -> None:
    """Once the first of three steps on one setting is applied, the third waits for the second
    (now asking for its approval), and says so."""
    incident = await lab.trigger(THREE_ON_ONE_SETTING)
    status = await lab.settle(incident, {"cut": "awaiting_approval", "strictest": "pending"})
    assert waits_for("cut") == step(status, "strictest").outcome
    await lab.act(incident, CrisisWorkflow.approve, approve("cut"))
    status = await lab.settle(
        incident, {"cut": "applied", "stricter": "awaiting_approval", "strictest": "pending"}
    )
    assert waits_for("stricter") == step(status, "strictest").outcome


# --- 7. failures ----------------------------------------------------------------------------
FAILING = """
steps:
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}
    approval: {roles: [commander], timeout: 72h, on_timeout: skip}
    retry: {max_attempts: 2, initial_interval: 10ms, max_interval: 10ms}
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 10}
  - id: pause
    wait: 1h
  - id: after
    do: detection.set_threshold
    with: {classifier: threats, threshold: 0.4}
"""


async def test_a_held_step_whose_lever_fails_for_good_stops_the_playbook(lab: Lab) -> None:
    """Approved, the held step's lever keeps failing: the step and the incident fail, the step
    after the wait is never started, and stand-down undoes only what was applied."""
    before = await lab.platform()
    incident = await lab.trigger(FAILING)
    await lab.settle(incident, {"cut": "awaiting_approval", "surge": "applied", "pause": "waiting"})
    await lab.sandbox.fault(path_prefix="/recommender", status=503, times=2)
    await lab.act(incident, CrisisWorkflow.approve, approve("cut"))
    status = await lab.settle(
        incident, {"cut": "failed", "surge": "applied", "pause": "waiting"}, state="failed"
    )
    assert "recommender.throttle: platform error HTTP 503" == step(status, "cut").error
    assert 2 == (await lab.platform())["stats"]["faults_injected"]

    await lab.advance(timedelta(minutes=61))
    status = await lab.settle(incident, {"pause": "done", "after": "pending"}, state="failed")
    assert step(status, "after").started_at is None
    state = await lab.platform()
    assert [("surge", "apply-1")] == operations(state)
    events = await lab.audit(incident, until="incident.failed")
    failed = next(e for e in events if e.kind == "incident.failed")
    assert ("cut", "recommender.throttle: platform error HTTP 503") == (
        failed.step_id,
        failed.data["error"],
    )

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="give up")
    assert {"cut": "failed", "surge": "undone", "pause": "done", "after": "skipped"} == (
        step_states(closed)
    )
    assert settings_of(before) == settings_of(await lab.platform())
    assert lab.store.verify(incident).ok


FAILING_BEHIND = """
steps:
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}
    approval: {roles: [commander], timeout: 1h, on_timeout: ON_TIMEOUT}
    retry: {max_attempts: 2, initial_interval: 10ms, max_interval: 10ms}
  - id: stricter
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25, reshare_limit: 1}
"""


@pytest.mark.parametrize("how", ["lever", "timeout"])
async def test_a_step_waiting_behind_a_held_step_that_fails_is_not_started(
    lab: Lab, how: str
) -> None:
    """The held step fails (its lever keeps failing once approved, or its approval times out
    with on_timeout: fail): the incident fails and the later step on its settings, which was
    only waiting for it, is not applied."""
    incident = await lab.trigger(
        FAILING_BEHIND.replace("ON_TIMEOUT", "skip" if how == "lever" else "fail")
    )
    await lab.settle(incident, {"cut": "awaiting_approval", "stricter": "pending"})
    if how == "lever":
        await lab.sandbox.fault(path_prefix="/recommender", status=503, times=2)
        await lab.act(incident, CrisisWorkflow.approve, approve("cut"))
    else:
        await lab.advance(timedelta(minutes=61))
    status = await lab.settle(incident, {"cut": "failed"}, state="failed")
    assert {} == (await lab.platform())["recommender"]
    assert ("pending", 0) == (
        step(status, "stricter").state,
        step(status, "stricter").applications,
    )


# --- 8. renew and escalate while a step waits -------------------------------------------------
RENEW_ESCALATE = """
steps:
  - id: base
    do: detection.set_threshold
    with: {classifier: racial_hatred, threshold: 0.4}
    expires_after: 2h
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}
    approval: {roles: [commander], timeout: 72h, on_timeout: skip}
    expires_after: 48h
  - id: severe-cut
    level: severe
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.4}
  - id: stricter
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25, reshare_limit: 1}
    expires_after: 48h
"""


async def test_renewals_and_an_escalation_while_a_step_waits_behind_a_held_one(
    lab: Lab,
) -> None:
    """A renewal of another measure goes through and the held and waiting steps cannot be
    renewed; an escalation makes the dormant step on the same settings wait too (neither step
    run twice, approval asked once); approved, the three are applied in playbook order and the
    last one's values are in force."""
    before = await lab.platform()
    incident = await lab.trigger(RENEW_ESCALATE)
    status = await lab.settle(
        incident,
        {
            "base": "applied",
            "cut": "awaiting_approval",
            "severe-cut": "dormant",
            "stricter": "pending",
        },
    )
    assert waits_for("cut") == step(status, "stricter").outcome
    for step_id, state in (("stricter", "pending"), ("cut", "awaiting_approval")):
        renewal = RenewRequest(step_id=step_id, actor="bob", reason="r", duration="24h")
        with pytest.raises(IncidentConflict, match=f"measure {step_id} is {state}"):
            await lab.act(incident, CrisisWorkflow.renew, renewal)
    renewal = RenewRequest(step_id="base", actor="bob", reason="still tense", duration="24h")
    await lab.act(incident, CrisisWorkflow.renew, renewal)

    await lab.act(incident, CrisisWorkflow.escalate, level())
    status = await lab.settle(
        incident, {"cut": "awaiting_approval", "severe-cut": "pending"}, level="severe"
    )
    assert waits_for("cut") == step(status, "severe-cut").outcome
    assert waits_for("cut") == step(status, "stricter").outcome
    assert (0, 0) == (
        step(status, "severe-cut").applications,
        step(status, "stricter").applications,
    )
    await lab.advance(timedelta(hours=3))  # past base's first expiry, not its renewal
    status = await lab.sync(incident)
    assert ("applied", "awaiting_approval") == (
        step(status, "base").state,
        step(status, "cut").state,
    )
    assert {} == (await lab.platform())["recommender"]

    await lab.act(incident, CrisisWorkflow.approve, approve("cut"))
    status = await lab.settle(
        incident, {"cut": "applied", "severe-cut": "applied", "stricter": "applied"}
    )
    assert step(status, "stricter").outcome is None
    state = await lab.platform()
    assert {"reach_multiplier": 0.25, "reshare_limit": 1} == policy(state, "GB", "racial_hatred")
    assert ["base", "cut", "severe-cut", "stricter"] == [name for name, _ in operations(state)]
    assert 0 == state["stats"]["duplicates"]
    events = await lab.audit(incident, until="step.applied", count=4)
    assert ["cut"] == [e.step_id for e in events if e.kind == "approval.requested"]

    # The renewal still holds stricter's measure; cut's lapse must not wipe stricter's values.
    renewal = RenewRequest(step_id="stricter", actor="bob", reason="r", duration="72h")
    await lab.act(incident, CrisisWorkflow.renew, renewal)
    await lab.advance(timedelta(hours=49))
    await lab.settle(incident, {"cut": "expired", "stricter": "applied"})
    assert {"reach_multiplier": 0.25, "reshare_limit": 1} == policy(
        await lab.platform(), "GB", "racial_hatred"
    )

    await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert settings_of(before) == settings_of(await lab.platform())
    assert lab.store.verify(incident).ok

"""Who may release a step awaiting approval: one holder of each role with `every_role` (two
people, two roles), never more approvals than the quorum, never a blank reason, and never a name
that passes for another's."""

from __future__ import annotations

import asyncio

import pytest

from engine.errors import IncidentConflict
from engine.report import build_report, render_markdown
from tests.workflows.lab import Lab, approve, kinds, operations, step
from workflows.crisis import CrisisWorkflow
from workflows.incident import LevelRequest, RejectRequest, StandDownRequest

TWO_ROLES = """
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25}
    approval: {roles: [commander, policy-lead], quorum: 2, every_role: true, timeout: 1h}
"""


async def test_every_role_needs_a_holder_of_each_role_among_the_approvers(lab: Lab) -> None:
    """A second commander is refused while no policy lead has approved; the policy lead's
    approval releases the step, and the trail and the report say who had to approve."""
    incident = await lab.trigger(TWO_ROLES)
    await lab.settle(incident, {"throttle": "awaiting_approval"})
    await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "alice", "commander"))

    with pytest.raises(IncidentConflict, match="still needs approval by a policy-lead"):
        await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "carol", "commander"))
    status = await lab.settle(incident, {"throttle": "awaiting_approval"})
    assert ["alice"] == [a.actor for a in step(status, "throttle").approvals]
    assert [] == operations(await lab.platform())

    await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "bob", "policy-lead"))
    await lab.settle(incident, {"throttle": "applied"})
    events = await lab.audit(incident, until="step.applied")
    requested = next(e for e in events if e.kind == "approval.requested")
    assert requested.data["every_role"] is True
    granted = next(e for e in events if e.kind == "approval.granted")
    assert ["alice", "bob"] == granted.data["approvers"]

    report = build_report(events)
    told = [t.text for t in report.timeline if t.kind == "approval.requested"]
    assert told[0].startswith("throttle needs approval by a commander and a policy-lead")
    assert "a commander and a policy-lead" in render_markdown(report)
    assert lab.store.verify(incident).ok


async def test_approvals_sent_at_once_stop_at_the_quorum(lab: Lab) -> None:
    """Three approvals of a quorum of two, sent at the same moment, usually reach the workflow
    in one task: two are taken, the third is refused, and the trail records two."""
    incident = await lab.trigger(TWO_ROLES.replace("every_role: true, ", ""))
    await lab.settle(incident, {"throttle": "awaiting_approval"})
    people = [("alice", "commander"), ("bob", "policy-lead"), ("carol", "commander")]
    answers = await asyncio.gather(
        *(
            lab.act(incident, CrisisWorkflow.approve, approve("throttle", who, role))
            for who, role in people
        ),
        return_exceptions=True,
    )
    refused = [a for a in answers if isinstance(a, BaseException)]
    assert 1 == len(refused), answers
    assert isinstance(refused[0], IncidentConflict)
    # Together in one workflow task, or the third after the step ran (a busy machine).
    said = str(refused[0])
    assert "has its 2 approvals already" in said or "is not awaiting approval" in said, said

    status = await lab.settle(incident, {"throttle": "applied"})
    assert 2 == len(step(status, "throttle").approvals)
    events = await lab.audit(incident, until="step.applied")
    assert 2 == kinds(events).count("approval.given")
    granted = next(e for e in events if e.kind == "approval.granted")
    assert 2 == len(granted.data["approvers"])


async def test_a_blank_reason_is_refused_before_it_is_recorded(lab: Lab) -> None:
    """Reasons are what auditors read: one of spaces is refused like an empty one, for callers
    that reach the workflow without the API's checks."""
    incident = await lab.trigger(TWO_ROLES)
    await lab.settle(incident, {"throttle": "awaiting_approval"})
    refused = [
        (CrisisWorkflow.stand_down, StandDownRequest(actor="alice", reason="   ")),
        (
            CrisisWorkflow.reject,
            RejectRequest(step_id="throttle", actor="bob", role="policy-lead", reason="\t"),
        ),
        (CrisisWorkflow.escalate, LevelRequest(actor="alice", reason=" ")),
    ]
    for update, request in refused:
        with pytest.raises(IncidentConflict, match="reason is blank"):
            await lab.act(incident, update, request)
    # Nor can a name with a blank in it pass for another person's.
    await lab.act(incident, CrisisWorkflow.approve, approve("throttle", "alice", "commander"))
    with pytest.raises(IncidentConflict, match="invalid actor 'alice '"):
        spaced = approve("throttle", "alice ", "policy-lead")
        await lab.act(incident, CrisisWorkflow.approve, spaced)
    status = await lab.settle(incident, {"throttle": "awaiting_approval"})
    assert "running" == status.state


LEVELLED = """
steps:
  - id: cut
    level: severe
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25}
    approval: {roles: [commander], timeout: 1h, on_timeout: skip}
"""


async def test_a_step_asked_again_after_its_withdrawal_no_longer_says_withdrawn(
    lab: Lab,
) -> None:
    """Applied at severe, withdrawn by a de-escalation, asked for again by the next escalation:
    its status shows the new request, not the old withdrawal."""
    incident = await lab.trigger(LEVELLED, level="severe")
    await lab.settle(incident, {"cut": "awaiting_approval"}, level="severe")
    await lab.act(incident, CrisisWorkflow.approve, approve("cut", "alice", "commander"))
    await lab.settle(incident, {"cut": "applied"}, level="severe")
    await lab.act(incident, CrisisWorkflow.de_escalate, LevelRequest(actor="alice", reason="calm"))
    status = await lab.settle(incident, {"cut": "dormant"}, level="elevated")
    assert (step(status, "cut").outcome or "").startswith("withdrawn")
    await lab.act(incident, CrisisWorkflow.escalate, LevelRequest(actor="alice", reason="again"))
    status = await lab.settle(incident, {"cut": "awaiting_approval"}, level="severe")
    assert None is step(status, "cut").outcome

"""A step run after later steps on its settings is applied under them, end to end on a
time-skipping Temporal server.

Of two steps of one lever on the same settings, the later one in the playbook is the one in
force when they run in order. An escalation runs a step the sequence passed (its level was not
reached) after the later ones: applied over them, it would put its looser values in force. It is
applied under them instead: they are lifted, it is applied, they are put back, each keeping its
expiry. Each test checks the platform sandbox's real settings, the step states and the trail.
"""

from __future__ import annotations

from datetime import timedelta

from tests.workflows.lab import Lab, at, kinds, level, operations, settings_of, step
from workflows.crisis import CrisisWorkflow
from workflows.incident import LevelRequest, RenewRequest

ORDER = """
steps:
  - id: severe-cut
    level: severe
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.4}
    on_failure: ON_FAILURE
  - id: stricter
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25, reshare_limit: 1}
    expires_after: 48h
"""
STRICTER = {"reach_multiplier": 0.25, "reshare_limit": 1}


def policy(state: dict) -> dict | None:
    return state["recommender"].get("GB", {}).get("racial_hatred")


async def test_an_escalation_applies_the_earlier_step_under_the_later_one(lab: Lab) -> None:
    """Escalated, the severe step the sequence passed goes in under the later, stricter one,
    which stays in force with its expiry; de-escalated, it is taken back from under it; the
    stand-down leaves the platform as it was."""
    before = await lab.platform()
    incident = await lab.trigger(ORDER.replace("ON_FAILURE", "stop"))
    status = await lab.settle(incident, {"severe-cut": "dormant", "stricter": "applied"})
    expires = step(status, "stricter").expires_at
    await lab.advance(timedelta(hours=1))

    await lab.act(incident, CrisisWorkflow.escalate, level())
    status = await lab.settle(
        incident, {"severe-cut": "applied", "stricter": "applied"}, level="severe"
    )
    state = await lab.platform()
    assert STRICTER == policy(state)
    assert [
        ("stricter", "apply-1"),
        ("stricter", "undo-1"),
        ("severe-cut", "apply-1"),
        ("stricter", "apply-2"),
    ] == operations(state)
    assert expires == step(status, "stricter").expires_at  # put back until the same time
    events = await lab.audit(incident, until="step.applied", count=3)
    lifted = next(e for e in events if e.kind == "step.undone")
    assert ("stricter", "lifted while severe-cut is applied under it") == (
        lifted.step_id,
        lifted.data["reason"],
    )

    await lab.act(incident, CrisisWorkflow.de_escalate, LevelRequest(actor="carol", reason="calm"))
    status = await lab.settle(
        incident, {"severe-cut": "dormant", "stricter": "applied"}, level="elevated"
    )
    assert STRICTER == policy(await lab.platform())
    assert expires == step(status, "stricter").expires_at

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert "closed" == closed.state
    assert settings_of(before) == settings_of(await lab.platform())
    assert lab.store.verify(incident).ok


async def test_the_later_step_put_back_still_lapses_when_it_was_due(lab: Lab) -> None:
    """Put back over the earlier step, the later measure lapses at its own expiry, leaving the
    earlier one in force (what it replaced is now the earlier one's values)."""
    incident = await lab.trigger(ORDER.replace("ON_FAILURE", "stop"))
    status = await lab.settle(incident, {"severe-cut": "dormant", "stricter": "applied"})
    due = at(step(status, "stricter").expires_at)
    await lab.act(incident, CrisisWorkflow.escalate, level())
    await lab.settle(incident, {"severe-cut": "applied", "stricter": "applied"}, level="severe")
    await lab.advance(due - await lab.now() + timedelta(minutes=1))
    await lab.settle(incident, {"severe-cut": "applied", "stricter": "expired"}, level="severe")
    assert {"reach_multiplier": 0.4, "reshare_limit": None} == policy(await lab.platform())


async def test_an_earlier_step_failing_under_the_later_one(
    lab: Lab, incidents_: None = None
) -> None:
    """The earlier step fails: with on_failure stop the later measure is put back and stays in
    force on the failed incident; with on_failure undo everything is taken back."""
    for on_failure, stricter, expected in (
        ("stop", "applied", STRICTER),
        ("undo", "undone", None),
    ):
        await lab.sandbox.reset()
        incident = await lab.trigger(ORDER.replace("ON_FAILURE", on_failure))
        await lab.settle(incident, {"severe-cut": "dormant", "stricter": "applied"})
        rule = {"path_prefix": "/recommender", "operation_prefix": "apply-", "times": 1}
        await lab.sandbox.fault(**rule, status=400)
        await lab.act(incident, CrisisWorkflow.escalate, level())
        status = await lab.settle(
            incident,
            {"severe-cut": "failed", "stricter": stricter},
            state="failed",
            level="severe",
        )
        assert expected == policy(await lab.platform()), on_failure
        assert "incident.failed" in kinds(lab.store.events(incident))
        assert step(status, "severe-cut").error


STACKED = """
steps:
  - id: looser
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5, reshare_limit: 5}
    expires_after: 1h
  - id: stricter
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.25, reshare_limit: 1}
    expires_after: 48h
"""


async def test_a_lapsed_measure_renewed_comes_back_under_the_later_one(lab: Lab) -> None:
    """`looser` lapses under `stricter`, then a commander renews it: it is applied again under
    `stricter`, which stays the one in force with its expiry (applied over it, reshares went
    back to 5 while `stricter` said applied); the stand-down leaves the platform as it was."""
    before = await lab.platform()
    incident = await lab.trigger(STACKED)
    status = await lab.settle(incident, {"looser": "applied", "stricter": "applied"})
    expires = step(status, "stricter").expires_at
    await lab.advance(timedelta(hours=1, minutes=5))
    await lab.settle(incident, {"looser": "expired", "stricter": "applied"})
    assert STRICTER == policy(await lab.platform())

    renewal = RenewRequest(step_id="looser", actor="carol", reason="keep a floor", duration="1d")
    await lab.act(incident, CrisisWorkflow.renew, renewal)
    status = await lab.settle(incident, {"looser": "applied", "stricter": "applied"})
    state = await lab.platform()
    assert STRICTER == policy(state)
    assert (
        [
            ("stricter", "undo-2"),  # the first lift was for looser's lapse
            ("looser", "apply-2"),
            ("stricter", "apply-3"),
        ]
        == operations(state)[-3:]
    )
    assert expires == step(status, "stricter").expires_at  # put back until the same time
    events = await lab.audit(incident, until="step.applied", count=4)
    lifted = [e for e in events if e.kind == "step.undone" and e.step_id == "stricter"][-1]
    assert "lifted while looser is applied under it" == lifted.data["reason"]

    closed = await lab.incidents.stand_down(incident, actor="bob", reason="calm")
    assert "closed" == closed.state
    assert settings_of(before) == settings_of(await lab.platform())
    assert lab.store.verify(incident).ok

"""`on_failure: undo` while another lever call is still under way, end to end on a time-skipping
Temporal server.

A step that fails with `on_failure: undo` fails the incident at once (nothing new starts) and
takes back every measure applied, newest first. A lever call already under way when it fails (a
parallel branch, or the sequence's step while a held step fails) lands first and is taken back
with the rest, so nothing the playbook applied stays in force on a failed incident. Each test
checks the step states, the platform sandbox's real settings and the audit trail. More cases:
test_failure_undo_edges.py.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import timedelta

from tests.helpers import assert_eventually
from tests.workflows.lab import Lab, approve, kinds, operations, settings_of, step, step_states
from workflows.crisis import CrisisWorkflow

PARALLEL = """
steps:
  - id: base
    do: detection.set_threshold
    with: {classifier: racial_hatred, threshold: 0.4}
  - id: both
    parallel:
      - id: surge
        do: moderation.surge
        with: {queue: hate, extra_reviewers: 5}
        on_failure: undo
      - id: cut
        do: recommender.throttle
        with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}
"""


async def test_a_branch_landing_after_its_sibling_failed_with_undo_is_taken_back(
    lab: Lab,
) -> None:
    """One branch is refused by the platform at once (on_failure: undo) while the other is still
    under way: it lands, then both measures are taken back, newest first."""
    before = await lab.platform()
    await lab.sandbox.fault(path_prefix="/moderation", status=400, times=1)
    await lab.sandbox.fault(path_prefix="/recommender", status=0, latency_ms=1500, times=1)
    incident = await lab.trigger(PARALLEL)
    status = await lab.settle(
        incident, {"base": "undone", "surge": "failed", "cut": "undone"}, state="failed"
    )
    for taken in ("cut", "base"):
        assert "taken back: surge failed (on_failure: undo)" == step(status, taken).outcome
    assert settings_of(before) == settings_of(await lab.platform())
    assert [
        ("base", "apply-1"),
        ("cut", "apply-1"),
        ("cut", "undo-1"),
        ("base", "undo-1"),
    ] == operations(await lab.platform())
    events = await lab.audit(incident, until="step.undone", count=2)
    assert ["step.failed", "incident.failed", "step.applied", "step.undone", "step.undone"] == [
        k for k in kinds(events) if k not in ("step.started",)
    ][-5:]
    undone = [e for e in events if e.kind == "step.undone"]
    assert ["cut", "base"] == [e.step_id for e in undone]
    assert {"surge failed (on_failure: undo)"} == {e.data["reason"] for e in undone}
    assert lab.store.verify(incident).ok


HELD = """
steps:
  - id: base
    do: detection.set_threshold
    with: {classifier: racial_hatred, threshold: 0.4}
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [racial_hatred], reach_multiplier: 0.5}
    approval: {roles: [commander], timeout: 1h, on_timeout: skip}
    retry: {max_attempts: 1}
    on_failure: undo
  - id: surge
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
    retry: {max_attempts: 2, initial_interval: 2m, max_interval: 2m}
"""


async def test_the_sequences_step_landing_after_a_held_step_failed_with_undo_is_taken_back(
    lab: Lab,
) -> None:
    """The held step is approved and fails (on_failure: undo) while the sequence's next step
    waits two minutes to retry its lever: the incident fails at once, and once that call lands
    every measure is taken back, newest first."""
    before = await lab.platform()
    await lab.sandbox.fault(path_prefix="/moderation", status=503, times=1)
    incident = await lab.trigger(HELD)

    def states(*expected: str) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            status = await lab.status(incident)
            now = step_states(status)
            assert expected == (status.state, now["base"], now["cut"], now["surge"]), now

        return check

    # surge's call waits out its retry interval: a timer, so the workflow takes the approval
    await assert_eventually(states("running", "applied", "awaiting_approval", "running"))
    await lab.sandbox.fault(path_prefix="/recommender", status=503, times=1)
    await lab.act(incident, CrisisWorkflow.approve, approve("cut"))
    await assert_eventually(states("failed", "applied", "failed", "running"))
    await lab.advance(timedelta(minutes=3))
    status = await lab.settle(
        incident, {"base": "undone", "cut": "failed", "surge": "undone"}, state="failed"
    )
    assert "taken back: cut failed (on_failure: undo)" == step(status, "surge").outcome
    assert settings_of(before) == settings_of(await lab.platform())
    assert [("surge", "undo-1"), ("base", "undo-1")] == operations(await lab.platform())[-2:]
    events = await lab.audit(incident, until="step.undone", count=2)
    assert "incident.failed" in kinds(events)
    assert lab.store.verify(incident).ok


async def test_a_stand_down_before_the_call_lands_closes_with_its_measure_taken_back(
    lab: Lab,
) -> None:
    """As above, but a commander stands the failed incident down while the sequence's call
    still waits to retry: the stand-down waits for it, and the incident closes with nothing of
    its measures left on the platform."""
    before = await lab.platform()
    await lab.sandbox.fault(path_prefix="/moderation", status=503, times=1)
    incident = await lab.trigger(HELD)

    async def held() -> None:
        now = step_states(await lab.status(incident))
        assert ("awaiting_approval", "running") == (now["cut"], now["surge"]), now

    await assert_eventually(held, timeout=15, interval=0.05)
    await lab.sandbox.fault(path_prefix="/recommender", status=503, times=1)
    await lab.act(incident, CrisisWorkflow.approve, approve("cut"))

    async def failed() -> None:
        assert "failed" == (await lab.status(incident)).state

    await assert_eventually(failed, timeout=15, interval=0.05)
    standing_down = asyncio.create_task(
        lab.incidents.stand_down(incident, actor="bob", reason="give up")
    )
    await lab.advance(timedelta(minutes=3))
    closed = await standing_down
    assert {"base": "undone", "cut": "failed", "surge": "undone"} == step_states(closed)
    assert "closed" == closed.state
    assert settings_of(before) == settings_of(await lab.platform())
    assert lab.store.verify(incident).ok

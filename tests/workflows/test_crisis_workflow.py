"""The interpreter end to end: real dev server, real sandbox over HTTP, real audit store."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from temporalio.client import Client

from core.settings import Settings
from engine.errors import IncidentConflict
from engine.incidents import Incidents
from store.audit_store import AuditStore
from tests.conftest import Sandbox
from tests.helpers import assert_eventually, sdk_failure_tracebacks
from workflows.audit import AuditEvent
from workflows.incident import IncidentStatus

pytestmark = pytest.mark.usefixtures("worker")


async def wait_for_state(incidents: Incidents, incident_id: str, *states: str) -> IncidentStatus:
    async def check() -> IncidentStatus:
        status = await incidents.status(incident_id)
        assert status.state in states and all(s.state != "running" for s in status.steps), status
        return status

    return await assert_eventually(check)


async def test_violent_disorder_applies_every_lever_and_stand_down_restores_them(
    client: Client, settings: Settings, sandbox: Sandbox, sqlite_store: AuditStore
) -> None:
    """The shipped playbook changes the platform, and stand-down puts back exactly what it found."""
    before = await sandbox.state()
    incidents = Incidents(client, settings)
    triggered = await incidents.trigger(
        "violent-disorder", {"region": "GB"}, actor="alice", eager=True
    )

    async def all_applied() -> IncidentStatus:
        status = await incidents.status(triggered.incident_id)
        assert [s.state for s in status.steps] == ["applied"] * 5
        return status

    status = await assert_eventually(all_applied)
    assert status.state == "running"
    during = await sandbox.state()
    policy = during["recommender"]["GB"]["incitement_to_violence"]
    assert (policy["reach_multiplier"], policy["reshare_limit"]) == (0.25, 5)
    assert during["detection"]["incitement_to_violence"] == 0.25
    assert (
        during["moderation"]["hate"]["reviewers"] == before["moderation"]["hate"]["reviewers"] + 25
    )
    assert [n["stakeholder"] for n in during["notifications"]] == [
        "regulator",
        "internal-crisis-team",
    ]
    assert all(n["signature_valid"] for n in during["notifications"])

    closed = await incidents.stand_down(triggered.incident_id, actor="bob", reason="disorder over")
    assert closed.state == "closed"
    assert [s.state for s in closed.steps] == ["undone"] * 5
    after = await sandbox.state()
    for part in ("recommender", "detection", "moderation"):
        assert after[part] == before[part], part
    assert after["notifications"][-1]["stakeholder"] == "regulator"
    assert "concluded" in after["notifications"][-1]["body"]["message"]
    assert after["stats"]["duplicates"] == 0

    async def audited() -> list[str]:
        kinds = [e.kind for e in sqlite_store.events(triggered.incident_id)]
        assert kinds[-1] == "incident.closed"
        return kinds

    kinds = await assert_eventually(audited)
    assert kinds[0] == "incident.triggered"
    assert kinds.count("step.applied") == 5 and kinds.count("step.undone") == 5
    assert "stand_down.requested" in kinds
    assert sqlite_store.verify(triggered.incident_id).ok


async def test_a_second_stand_down_is_refused(
    client: Client, settings: Settings, sandbox: Sandbox
) -> None:
    """Standing down a closed incident is a clear conflict, not a second undo."""
    incidents = Incidents(client, settings)
    triggered = await incidents.trigger("violent-disorder", {}, actor="alice", eager=True)
    await incidents.stand_down(triggered.incident_id, actor="bob", reason="false alarm")
    with pytest.raises(IncidentConflict):
        await incidents.stand_down(triggered.incident_id, actor="bob", reason="again")
    assert (await sandbox.state())["stats"]["duplicates"] == 0


def write_playbook(directory: Path, body: str) -> Path:
    path = directory / "test-playbook.yaml"
    path.write_text(body)
    return path


THREE_STEPS = """
playbook: test-playbook
version: 1
title: Three levers
description: For tests.
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: FR, categories: [fraud], reach_multiplier: 0.5}
  - id: threshold
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
    retry: {max_attempts: 3, initial_interval: 100ms, max_interval: 200ms}
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
"""


async def test_a_flaky_lever_is_retried_until_it_applies_once(
    client: Client,
    settings: Settings,
    sandbox: Sandbox,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two platform errors are retried; the lever is applied exactly once. Each failed attempt
    is the lever's own log line, not also a traceback from the SDK."""
    caplog.set_level(logging.WARNING, logger="temporalio.activity")
    await sandbox.fault(path_prefix="/detection", status=500, times=2)
    incidents = Incidents(client, settings)
    path = write_playbook(tmp_path, THREE_STEPS)
    triggered = await incidents.trigger(str(path), {}, actor="alice", eager=True)
    status = await wait_for_state(incidents, triggered.incident_id, "running")
    assert [s.state for s in status.steps] == ["applied"] * 3
    state = await sandbox.state()
    assert state["stats"]["faults_injected"] == 2
    assert state["detection"]["fraud"] == 0.3
    applied_steps = [a["step"] for a in state["applications"]]
    assert applied_steps == ["throttle", "threshold", "surge"]
    assert [] == sdk_failure_tracebacks(caplog)
    # Stamped when the platform took it, after two failed attempts and 300 ms of backoff, not
    # when the last attempt began.
    threshold = status.steps[1]
    started, finished = (
        datetime.fromisoformat(str(t)) for t in (threshold.started_at, threshold.finished_at)
    )
    assert finished - started >= timedelta(milliseconds=300), (started, finished)
    await incidents.stand_down(triggered.incident_id, actor="bob", reason="done")


async def test_the_board_shows_an_incident_while_a_later_lever_call_retries(
    client: Client,
    settings: Settings,
    sandbox: Sandbox,
    sqlite_store: AuditStore,
    tmp_path: Path,
) -> None:
    """The first lever answers at once, the second keeps failing for a while: the incident is on
    the board (its trigger in the store) while the second still retries, not once it applies."""
    await sandbox.fault(path_prefix="/detection", status=500)
    incidents = Incidents(client, settings)
    path = write_playbook(tmp_path, THREE_STEPS.replace("max_attempts: 3", "max_attempts: 100"))
    triggered = await incidents.trigger(str(path), {}, actor="alice", eager=True)

    async def on_the_board() -> None:
        row = sqlite_store.incident(triggered.incident_id)
        assert row is not None and "running" == row.state

    await assert_eventually(on_the_board, timeout=10)
    state = await sandbox.state()
    assert ["throttle"] == [a["step"] for a in state["applications"]]  # still retrying
    await sandbox.clear_faults()
    status = await wait_for_state(incidents, triggered.incident_id, "running")
    assert [s.state for s in status.steps] == ["applied"] * 3
    await incidents.stand_down(triggered.incident_id, actor="bob", reason="done")
    assert sqlite_store.verify(triggered.incident_id).ok


async def test_a_lever_that_keeps_failing_fails_the_incident_and_stand_down_still_undoes(
    client: Client, settings: Settings, sandbox: Sandbox, tmp_path: Path, sqlite_store: AuditStore
) -> None:
    """After its retries a step fails the playbook; stand-down undoes only what was applied."""
    before = await sandbox.state()
    await sandbox.fault(path_prefix="/detection", status=503)
    incidents = Incidents(client, settings)
    triggered = await incidents.trigger(
        str(write_playbook(tmp_path, THREE_STEPS)), {}, actor="alice", eager=True
    )
    status = await wait_for_state(incidents, triggered.incident_id, "failed")
    assert [s.state for s in status.steps] == ["applied", "failed", "pending"]
    failed = status.steps[1]
    assert "detection.set_threshold: platform error HTTP 503" == failed.error
    assert (await sandbox.state())["stats"]["faults_injected"] == 3
    # Stamped when it failed, after three attempts 100 ms and 200 ms apart, not when it began.
    assert failed.started_at is not None and failed.finished_at is not None
    took = datetime.fromisoformat(failed.finished_at) - datetime.fromisoformat(failed.started_at)
    assert took >= timedelta(milliseconds=300), (failed.started_at, failed.finished_at)
    await sandbox.clear_faults()

    closed = await incidents.stand_down(triggered.incident_id, actor="bob", reason="give up")
    assert [s.state for s in closed.steps] == ["undone", "failed", "skipped"]
    assert "not run: the incident failed" == closed.steps[2].outcome  # not by the stand-down
    after = await sandbox.state()
    assert after["recommender"] == before["recommender"]
    assert after["moderation"] == before["moderation"]

    async def audited() -> list[str]:
        kinds = [e.kind for e in sqlite_store.events(triggered.incident_id)]
        assert kinds[-1] == "incident.closed"
        return kinds

    kinds = await assert_eventually(audited)
    assert "step.failed" in kinds and "incident.failed" in kinds
    events = sqlite_store.events(triggered.incident_id)
    step_failed = next(e for e in events if e.kind == "step.failed")
    assert (3, failed.finished_at) == (step_failed.data["attempts"], step_failed.at)
    ats = [datetime.fromisoformat(e.at) for e in events]
    assert ats == sorted(ats), [(e.seq, e.kind, e.at) for e in events]  # never back in time


NOTICE_AFTER_A_MEASURE = """
playbook: test-playbook
version: 1
title: A measure, then a notice with a closing notice
description: For tests.
steps:
  - id: threshold
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: tell
    do: notify.webhook
    with: {to: regulator, message: opened}
    undo:
      do: notify.webhook
      with: {to: regulator, message: closed}
"""


async def test_a_closing_notice_that_keeps_failing_does_not_hold_the_measures(
    client: Client, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    """At stand-down the measures are taken back first: the platform is restored while the
    closing notice is still retrying on a failing channel, and the notice goes once it can."""
    before = (await sandbox.state())["detection"]
    incidents = Incidents(client, settings)
    path = write_playbook(tmp_path, NOTICE_AFTER_A_MEASURE)
    triggered = await incidents.trigger(str(path), {}, actor="alice", eager=True)
    await wait_for_state(incidents, triggered.incident_id, "running")
    await sandbox.fault(path_prefix="/notify", status=500)
    standing_down = asyncio.create_task(
        incidents.stand_down(triggered.incident_id, actor="bob", reason="over")
    )

    async def measure_restored() -> None:
        state = await sandbox.state()
        assert before == state["detection"]
        assert state["stats"]["faults_injected"] >= 1  # the notice is still failing

    await assert_eventually(measure_restored)
    assert not standing_down.done()
    await sandbox.clear_faults()
    closed = await standing_down
    assert {"threshold": "undone", "tell": "undone"} == {s.id: s.state for s in closed.steps}
    assert "closed" == (await sandbox.state())["notifications"][-1]["body"]["message"]


AFTER_A_PARALLEL_STEP = """
playbook: test-playbook
version: 1
title: A measure, two messages at once, then a measure awaiting approval
description: For tests.
steps:
  - id: threshold
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
  - id: tell
    parallel:
      - id: tell-regulator
        do: notify.webhook
        with: {to: regulator, message: opened}
      - id: tell-police
        do: notify.webhook
        with: {to: law-enforcement, message: opened}
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
    approval: {roles: [commander], timeout: 10m, on_timeout: skip}
"""


async def test_what_follows_a_parallel_step_is_stamped_after_it(
    client: Client,
    settings: Settings,
    sandbox: Sandbox,
    sqlite_store: AuditStore,
    tmp_path: Path,
) -> None:
    """Slow branches: the approval requested after them is stamped after them, and its deadline
    counts from then (it was stamped with the lever before the parallel step, in the past)."""
    await sandbox.fault(path_prefix="/notify", status=0, latency_ms=400, times=2)
    incidents = Incidents(client, settings)
    path = write_playbook(tmp_path, AFTER_A_PARALLEL_STEP)
    triggered = await incidents.trigger(str(path), {}, actor="alice", eager=True)

    async def requested() -> list[AuditEvent]:
        events = sqlite_store.events(triggered.incident_id)
        assert "approval.requested" in [e.kind for e in events]
        return events

    events = await assert_eventually(requested)
    asked = next(e for e in events if e.kind == "approval.requested")
    told = [e.at for e in events if e.kind == "step.applied" and e.step_id.startswith("tell-")]
    assert 2 == len(told)
    assert max(e.at for e in events if e.seq < asked.seq) <= asked.at  # never back in time
    status = await incidents.status(triggered.incident_id)
    surge = next(s for s in status.steps if s.id == "surge")
    assert surge.approval_deadline is not None
    deadline = datetime.fromisoformat(surge.approval_deadline)
    assert timedelta(minutes=10) == deadline - datetime.fromisoformat(asked.at)
    await incidents.stand_down(triggered.incident_id, actor="bob", reason="done")


async def test_a_rejected_lever_is_not_retried(
    client: Client, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A 4xx from the platform (unknown classifier) fails the step at once."""
    body = THREE_STEPS.replace("classifier: fraud", "classifier: no-such-classifier")
    incidents = Incidents(client, settings)
    triggered = await incidents.trigger(
        str(write_playbook(tmp_path, body)), {}, actor="alice", eager=True
    )
    status = await wait_for_state(incidents, triggered.incident_id, "failed")
    assert status.steps[1].state == "failed"
    assert "404" in (status.steps[1].error or "")
    assert (await sandbox.state())["stats"]["requests"] == 2
    await incidents.stand_down(triggered.incident_id, actor="bob", reason="fix the playbook")

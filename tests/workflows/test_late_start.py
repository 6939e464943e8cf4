"""An incident triggered while no worker runs: its first task runs once one comes. The trail
still begins with `incident.triggered`, dated when the commander triggered it, and an action
sent meanwhile follows it (it was recorded ahead of it, dated when the worker came)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from pathlib import Path

from temporalio.client import Client

from core.settings import Settings
from engine.incidents import Incidents
from engine.report import build_report
from engine.temporal import running_worker
from store.audit_store import AuditStore
from tests.helpers import assert_eventually
from workflows.audit import AuditEvent
from workflows.crisis import CrisisWorkflow
from workflows.incident import LevelRequest, ReviewRequest

LATE_BY_S = 2.0  # beyond LATE_START: the worker comes this long after the trigger


async def test_a_stand_down_sent_before_any_worker_ran_follows_the_trigger(
    client: Client, settings: Settings, sqlite_store: AuditStore
) -> None:
    incidents = Incidents(client, settings)
    triggered = await incidents.trigger("violent-disorder", {"region": "GB"}, actor="alice")
    incident_id = triggered.incident_id
    sent_at = datetime.now().astimezone()
    stand_down = asyncio.create_task(
        incidents.stand_down(incident_id, actor="bob", reason="false alarm")
    )
    await asyncio.sleep(LATE_BY_S)  # the update waits at the server with the start
    assert not stand_down.done()

    async with running_worker(client, settings=settings, store=sqlite_store):
        status = await stand_down
        assert "closed" == status.state

        async def written() -> list[str]:
            kinds = [e.kind for e in sqlite_store.events(incident_id)]
            assert "incident.closed" == kinds[-1], kinds
            return kinds

        kinds = await assert_eventually(written, timeout=15)

    events = sqlite_store.events(incident_id)
    assert ["incident.triggered", "stand_down.requested"] == kinds[:2]
    dated = datetime.fromisoformat(events[0].at)
    # Dated when triggered (before the stand-down was sent), not when the worker came.
    assert dated <= sent_at, (dated, sent_at)
    assert (datetime.fromisoformat(events[1].at) - dated).total_seconds() >= LATE_BY_S
    assert events[0].at == status.triggered_at
    assert sqlite_store.verify(incident_id).ok
    report = build_report(events)
    assert ("alice", "closed") == (report.facts.triggered_by, report.facts.state)


LEVELLED = """\
playbook: late-levels
version: 1
title: Levels and reviews
description: For tests.
levels: [elevated, severe]
reviews: {every: 6h, grace: 30m, on_missed: stand_down}
steps:
  - id: cut
    do: recommender.throttle
    with: {region: GB, categories: [fraud], reach_multiplier: 0.5}
"""


async def test_actions_before_the_first_task_keep_the_declared_level_and_the_review_confirmed(
    client: Client, settings: Settings, sqlite_store: AuditStore, tmp_path: Path
) -> None:
    """An escalation and a review confirmed before any worker ran: the trigger records the
    level it was declared at, the escalation follows it, and the review stays due when the
    commander was told (the late start dates the trigger only)."""
    path = tmp_path / "late-levels.yaml"
    path.write_text(LEVELLED)
    incidents = Incidents(client, settings)
    incident_id = (await incidents.trigger(str(path), {}, actor="alice")).incident_id
    escalate = asyncio.create_task(
        incidents.act(incident_id, CrisisWorkflow.escalate, LevelRequest(actor="bob", reason="x"))
    )
    await asyncio.sleep(0.2)  # in this order
    confirm = asyncio.create_task(
        incidents.act(
            incident_id, CrisisWorkflow.confirm_review, ReviewRequest(actor="bob", note="needed")
        )
    )
    await asyncio.sleep(LATE_BY_S)
    async with running_worker(client, settings=settings, store=sqlite_store):
        await escalate
        confirmed = await confirm
        status = await incidents.status(incident_id)
        assert ("severe", confirmed.next_review_due) == (status.level, status.next_review_due)
        await incidents.stand_down(incident_id, actor="alice", reason="over")

        async def written() -> list[AuditEvent]:
            events = sqlite_store.events(incident_id)
            assert "incident.closed" == events[-1].kind
            return events

        events = await assert_eventually(written, timeout=15)
    assert ["incident.triggered", "level.escalated", "review.confirmed"] == [
        e.kind for e in events[:3]
    ]
    assert "elevated" == events[0].data["level"]
    assert sqlite_store.verify(incident_id).ok

"""An incident triggered while no worker runs: its first task runs once one comes. The trail
still begins with `incident.triggered`, dated when the commander triggered it, and an action
sent meanwhile follows it (it was recorded ahead of it, dated when the worker came)."""

from __future__ import annotations

import asyncio
from datetime import datetime

from temporalio.client import Client

from core.settings import Settings
from engine.incidents import Incidents
from engine.report import build_report
from engine.temporal import running_worker
from store.audit_store import AuditStore
from tests.helpers import assert_eventually

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

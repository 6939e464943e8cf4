"""Commander actions sent while no worker runs the incident: delayed, not lost, never doubled."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.workflowservice.v1 import UpdateWorkflowExecutionRequest
from temporalio.client import Client

from core.settings import Settings
from engine import updates
from engine.devserver import free_port, start_dev_server
from engine.errors import IncidentBusy, IncidentError
from engine.incidents import Incidents
from engine.temporal import connect, running_worker
from store.audit_store import AuditStore
from tests.helpers import assert_eventually
from tests.workflows.lab import kinds
from workflows.crisis import CrisisWorkflow
from workflows.incident import StandDownRequest


async def _applied_then_no_worker(
    client: Client, settings: Settings, store: AuditStore, incidents: Incidents
) -> str:
    """An incident with its five levers applied, whose worker has then stopped."""
    async with running_worker(client, settings=settings, store=store):
        incident = (await incidents.trigger("violent-disorder", {}, actor="alice")).incident_id

        async def applied() -> None:
            assert kinds(store.events(incident)).count("step.applied") == 5

        await assert_eventually(applied)
    return incident


async def test_a_stand_down_waits_for_a_worker_and_is_taken_once(
    client: Client, settings: Settings, sqlite_store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each RPC attempt times out while no worker runs; the same update is sent again until a
    worker takes it, and the incident records one stand-down."""
    monkeypatch.setattr(updates, "_ATTEMPT", timedelta(seconds=1))
    sent: list[str] = []  # the update id of every RPC, whether our loop or the SDK's sent it
    service = client.workflow_service
    rpc = service.update_workflow_execution

    async def counted(request: UpdateWorkflowExecutionRequest, **kwargs: Any) -> Any:
        sent.append(request.request.meta.update_id)
        return await rpc(request, **kwargs)

    monkeypatch.setattr(service, "update_workflow_execution", counted)
    incidents = Incidents(client, settings)
    incident = await _applied_then_no_worker(client, settings, sqlite_store, incidents)

    standing_down = asyncio.create_task(incidents.stand_down(incident, actor="bob", reason="over"))

    async def sent_again() -> None:  # attempts of 1 s time out meanwhile (later on a busy machine)
        assert len(sent) >= 2

    await assert_eventually(sent_again, timeout=15, interval=0.1)
    assert not standing_down.done()
    assert len(sent) >= 2 and len(set(sent)) == 1  # attempts timed out: the same update again
    async with running_worker(client, settings=settings, store=sqlite_store):
        status = await asyncio.wait_for(standing_down, 60)
        assert status.state in ("standing_down", "closed")
        await client.get_workflow_handle(incident).result()

    history = await client.get_workflow_handle(incident).fetch_history()
    accepted = [
        e
        for e in history.events
        if e.HasField("workflow_execution_update_accepted_event_attributes")
    ]
    assert len(accepted) == 1
    events = kinds(sqlite_store.events(incident))
    assert events.count("stand_down.requested") == 1
    assert events.count("step.undone") == 5 and events[-1] == "incident.closed"


async def test_an_action_no_worker_takes_is_reported_busy_in_time(
    client: Client, settings: Settings, sqlite_store: AuditStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(updates, "_ATTEMPT", timedelta(seconds=1))
    incidents = Incidents(client, settings)
    incident = await _applied_then_no_worker(client, settings, sqlite_store, incidents)

    busy = Incidents(client, settings.model_copy(update={"action_timeout_s": 1.5}))
    with pytest.raises(IncidentBusy) as refused:
        await asyncio.wait_for(busy.stand_down(incident, actor="bob", reason="over"), 30)
    # Its worker stopped a moment ago: the server still counts its last poll (70 s).
    message = str(refused.value)
    assert message.startswith(f"incident {incident} did not answer within 1.5s ("), message
    assert message.endswith(
        "the request may still take effect, or be refused once the incident runs: check its status"
    ), message


async def test_an_action_while_temporal_is_unreachable_says_it_may_have_been_carried_out(
    settings: Settings, tmp_path: Path
) -> None:
    """Sent again while the server cannot be reached, until the action's deadline; then one line
    saying a lever may have been pulled before it went away, and what to do."""
    port = free_port()
    server = start_dev_server(db_file=tmp_path / "temporal.db", port=port)
    try:
        client = await connect(
            settings.model_copy(update={"temporal_address": f"127.0.0.1:{port}"})
        )
    finally:
        server.kill()
        server.wait(timeout=30)
    # Shorter than the client's own retries of one RPC (about 6 s): the deadline asks the server.
    unreachable = Incidents(client, settings.model_copy(update={"action_timeout_s": 3}))
    with pytest.raises(IncidentError) as failed:
        await asyncio.wait_for(unreachable.stand_down("INC-X", actor="bob", reason="over"), 60)
    message = str(failed.value)
    assert message.startswith("incident INC-X: Temporal could not be reached within 3s ("), message
    assert "a lever may have been pulled and not recorded" in message, message
    assert message.endswith("send the request again (the platform applies nothing twice)"), message


async def test_an_update_sent_again_after_the_incident_closed_answers_its_outcome(
    client: Client, settings: Settings, sqlite_store: AuditStore, worker: None
) -> None:
    """A retry whose first attempt did get through (the stand-down closed the incident) is
    answered with that stand-down's outcome, not refused as a new request."""
    incidents = Incidents(client, settings)
    incident = (await incidents.trigger("violent-disorder", {}, actor="alice")).incident_id

    async def applied() -> None:
        assert kinds(sqlite_store.events(incident)).count("step.applied") == 5

    await assert_eventually(applied)
    handle = client.get_workflow_handle(incident)
    request = StandDownRequest(actor="bob", reason="over")
    first = await handle.execute_update(CrisisWorkflow.stand_down, request, id="stand-down-1")
    await handle.result()
    again = await handle.execute_update(CrisisWorkflow.stand_down, request, id="stand-down-1")
    assert first == again
    assert kinds(sqlite_store.events(incident)).count("stand_down.requested") == 1


async def test_a_status_on_a_task_queue_no_worker_polls_says_so(
    client: Client, settings: Settings, worker: None
) -> None:
    """Triggered on a task queue no worker polls (another deployment's, or one stopped), while
    this one's has a worker: the status names the reason, busy, not a Temporal error."""
    elsewhere = settings.model_copy(update={"task_queue": f"{settings.task_queue}-elsewhere"})
    incident = (
        await Incidents(client, elsewhere).trigger("violent-disorder", {}, actor="alice")
    ).incident_id
    with pytest.raises(IncidentBusy, match=f"incident {incident} cannot answer: no worker has"):
        await asyncio.wait_for(Incidents(client, settings).status(incident), 60)

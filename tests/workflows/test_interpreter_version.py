"""What a run of today's interpreter leaves in its history: one version marker (not one patch
marker per change, each of which also costs the server a search-attribute update), and a
stand-down written to the audit trail together with the undos it starts."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlmodel import Session, select
from temporalio.client import Client

from core.settings import Settings
from engine.incidents import Incidents
from store.audit_store import AuditRow, AuditStore
from tests.helpers import assert_eventually
from tests.workflows.lab import Lab, kinds
from workflows.crisis import CrisisWorkflow
from workflows.incident import ApproveRequest, StandDownRequest
from workflows.incident_run import INTERPRETER_V7

TWO_LEVERS = """
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.5}
  - id: threshold
    do: detection.set_threshold
    with: {classifier: incitement_to_violence, threshold: 0.3}
"""


async def test_a_run_records_one_version_marker(lab: Lab) -> None:
    """The only patch marker of a new incident names the interpreter version."""
    incident = await lab.trigger(TWO_LEVERS)
    await lab.settle(incident, {"throttle": "applied", "threshold": "applied"})
    await lab.act(incident, CrisisWorkflow.stand_down, StandDownRequest(actor="bob", reason="x"))
    history = await lab.env.client.get_workflow_handle(incident).fetch_history()
    patches = [
        e.marker_recorded_event_attributes.details["patch-data"].payloads[0].data
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
        and e.marker_recorded_event_attributes.marker_name == "core_patch"
    ]
    assert len(patches) == 1
    assert INTERPRETER_V7.encode() in patches[0]


async def test_a_stand_down_is_written_with_its_undos(
    client: Client, settings: Settings, sqlite_store: AuditStore, worker: None
) -> None:
    """Two writes for a whole incident: what it applied, then its stand-down and undos. (On the
    dev server, whose task boundaries are a deployment's: five levers of the frozen playbook.)"""
    incidents = Incidents(client, settings)
    triggered = await incidents.trigger("violent-disorder", {"region": "GB"}, actor="alice")
    incident = triggered.incident_id

    async def applied() -> None:
        assert kinds(sqlite_store.events(incident)).count("step.applied") == 5

    await assert_eventually(applied)
    await incidents.stand_down(incident, actor="bob", reason="over")
    with Session(sqlite_store.engine) as session:
        rows = session.exec(
            select(AuditRow).where(AuditRow.incident_id == incident).order_by(AuditRow.seq)
        ).all()
    writes: dict[datetime, list[str]] = {}  # rows of one write share its time
    for row in rows:
        writes.setdefault(row.recorded_at, []).append(row.kind)
    first, second = writes.values()
    assert (first[0], first[-1]) == ("incident.triggered", "step.applied")
    assert second == ["stand_down.requested", *["step.undone"] * 5, "incident.closed"]


EXPIRING_THEN_APPROVED = """
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.5}
    expires_after: 2h
  - id: threshold
    do: detection.set_threshold
    with: {classifier: incitement_to_violence, threshold: 0.3}
    approval: {roles: [commander], timeout: 1d}
    expires_after: 6h
"""


async def test_a_later_expiry_keeps_the_timer_of_the_first(lab: Lab) -> None:
    """v4: a measure applied in a later task with a later expiry leaves the running timer alone
    (v3 cancelled it and started an identical one). The first still lapses on time, then the
    second."""
    incident = await lab.trigger(EXPIRING_THEN_APPROVED)
    await lab.settle(incident, {"throttle": "applied", "threshold": "awaiting_approval"})
    approval = ApproveRequest(step_id="threshold", actor="carol", role="commander")
    await lab.act(incident, CrisisWorkflow.approve, approval)
    await lab.settle(incident, {"throttle": "applied", "threshold": "applied"})
    await lab.advance(timedelta(hours=2, minutes=1))
    await lab.sync(incident)
    await lab.settle(incident, {"throttle": "expired", "threshold": "applied"})
    await lab.advance(timedelta(hours=4))
    await lab.sync(incident)
    await lab.settle(incident, {"throttle": "expired", "threshold": "expired"})
    await lab.act(incident, CrisisWorkflow.stand_down, StandDownRequest(actor="bob", reason="x"))
    history = await lab.env.client.get_workflow_handle(incident).fetch_history()
    started = [e for e in history.events if e.HasField("timer_started_event_attributes")]
    cancelled = [e for e in history.events if e.HasField("timer_canceled_event_attributes")]
    # The approval's own timer, then one per expiry moment; none cancelled and started again.
    assert (len(started), len(cancelled)) == (3, 1), (len(started), len(cancelled))

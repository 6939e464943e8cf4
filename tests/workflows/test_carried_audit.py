"""Interpreter v5: the last lever call of a phase writes the phase's audit events itself, with its
own outcome's (and the close), so an incident's trail costs no audit activity of its own. Each
test runs on the dev server and checks what auditors check: the chain, and a replay of the
history that reproduces the stored rows."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
from temporalio.client import Client

from activities.audit import AuditWriter
from core.settings import Settings
from engine.incidents import Incidents
from engine.temporal import build_worker
from engine.verification import export_history, replay_incident
from store.audit_store import AuditStore
from store.errors import AuditStoreError
from store.seals import Signer
from tests.conftest import Sandbox
from tests.helpers import assert_eventually
from tests.workflows.lab import kinds
from workflows.audit import AuditBatch, AuditWritten
from workflows.incident import APPLY_LEVER, WRITE_AUDIT

TWO_LEVERS = """
playbook: carried
version: 1
title: Two levers
description: For the carried audit tests.
steps:
  - id: throttle
    do: recommender.throttle
    with: {region: GB, categories: [incitement_to_violence], reach_multiplier: 0.5}
  - id: threshold
    do: detection.set_threshold
    with: {classifier: incitement_to_violence, threshold: 0.3}
"""
APPLIED = ["incident.triggered", "step.started", "step.applied", "step.started", "step.applied"]
CLOSED = ["stand_down.requested", "step.undone", "step.undone", "incident.closed"]


class FailingOnceWriter(AuditWriter):
    """The product's writer, whose first write from a lever call fails as if the store were
    down for a moment."""

    def __init__(self, store: AuditStore, signer: Signer) -> None:
        super().__init__(store, signer)
        self.failed = 0

    async def write(self, batch: AuditBatch) -> AuditWritten:
        if not self.failed and not any(e.kind == "incident.closed" for e in batch.events):
            self.failed += 1
            raise AuditStoreError("database is locked")
        return await super().write(batch)


@asynccontextmanager
async def worker_with(
    client: Client, settings: Settings, store: AuditStore, audit: AuditWriter | None = None
) -> AsyncIterator[None]:
    async with (
        httpx.AsyncClient(timeout=settings.platform_timeout_s) as http,
        build_worker(client, settings=settings, http=http, store=store, audit=audit),
    ):
        yield


async def local_activities(client: Client, incident_id: str) -> list[str]:
    """The activity type of every local-activity marker in the history, in order."""
    history = await client.get_workflow_handle(incident_id).fetch_history()
    types = []
    for event in history.events:
        if event.HasField("marker_recorded_event_attributes"):
            marker = event.marker_recorded_event_attributes
            if marker.marker_name == "core_local_activity":
                types.append(json.loads(marker.details["data"].payloads[0].data)["activity_type"])
    return types


async def assert_audited(client: Client, store: AuditStore, incident_id: str) -> None:
    """The chain verifies, and a replay of the history reproduces every stored row."""
    assert store.verify(incident_id).ok
    report = await replay_incident(
        await export_history(client, incident_id), store.events(incident_id)
    )
    assert report.ok, report.as_dict()
    assert report.replay_vs_history.events == len(store.events(incident_id))


async def test_the_last_lever_call_of_each_phase_writes_the_trail(
    client: Client, settings: Settings, sqlite_store: AuditStore, sandbox: Sandbox, tmp_path: Path
) -> None:
    """No audit activity at all; what was applied is on record before the stand-down."""
    playbook = tmp_path / "carried.yaml"
    playbook.write_text(TWO_LEVERS)
    incidents = Incidents(client, settings)
    async with worker_with(client, settings, sqlite_store):
        incident = (await incidents.trigger(str(playbook), {}, actor="alice")).incident_id

        async def applied() -> None:
            assert kinds(sqlite_store.events(incident)) == APPLIED

        await assert_eventually(applied)
        await incidents.stand_down(incident, actor="bob", reason="over")
    assert kinds(sqlite_store.events(incident)) == APPLIED + CLOSED
    assert await local_activities(client, incident) == [APPLY_LEVER] * 4
    assert [s.reason for s in sqlite_store.seals(incident)] == ["closed"]
    await assert_audited(client, sqlite_store, incident)


async def test_a_stand_down_during_the_carrying_call_follows_its_outcome(
    client: Client, settings: Settings, sqlite_store: AuditStore, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Events recorded while the call is in flight wait for its outcome, then join the chain.
    (While a local activity runs, its workflow task stays open and is renewed every 8 s; an
    update sent meanwhile is delivered with the next renewal: a 19 s call takes one in.)"""
    playbook = tmp_path / "carried.yaml"
    playbook.write_text(TWO_LEVERS + "    timeout: 40s\n")  # the threshold's call
    settings = settings.model_copy(update={"platform_timeout_s": 30.0})
    incidents = Incidents(client, settings)
    await sandbox.fault(path_prefix="/detection/threshold", status=0, latency_ms=19_000, times=1)
    async with worker_with(client, settings, sqlite_store):
        incident = (await incidents.trigger(str(playbook), {}, actor="alice")).incident_id

        async def in_flight() -> None:
            steps = {s.id: s.state for s in (await incidents.status(incident)).steps}
            assert steps == {"throttle": "applied", "threshold": "running"}

        await assert_eventually(in_flight, timeout=30)
        await incidents.stand_down(incident, actor="bob", reason="over")
    events = sqlite_store.events(incident)
    assert kinds(events) == APPLIED + CLOSED
    applied, requested = events[4], events[5]
    assert requested.at < applied.at  # recorded while the call ran, chained after its outcome
    assert WRITE_AUDIT not in await local_activities(client, incident)
    await assert_audited(client, sqlite_store, incident)


async def test_a_carried_write_that_fails_is_written_by_the_workflow(
    client: Client, settings: Settings, sqlite_store: AuditStore, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The lever counts as applied; the events it could not write go in an audit write."""
    playbook = tmp_path / "carried.yaml"
    playbook.write_text(TWO_LEVERS)
    incidents = Incidents(client, settings)
    writer = FailingOnceWriter(sqlite_store, Signer(settings.signing_key_path))
    async with worker_with(client, settings, sqlite_store, writer):
        incident = (await incidents.trigger(str(playbook), {}, actor="alice")).incident_id

        async def applied() -> None:
            assert kinds(sqlite_store.events(incident)) == APPLIED

        await assert_eventually(applied)
        await incidents.stand_down(incident, actor="bob", reason="over")
    assert writer.failed == 1
    assert kinds(sqlite_store.events(incident)) == APPLIED + CLOSED
    assert (
        await local_activities(client, incident)
        == [APPLY_LEVER] * 2 + [WRITE_AUDIT] + [APPLY_LEVER] * 2
    )
    state = await sandbox.state()
    assert state["stats"]["duplicates"] == 0
    await assert_audited(client, sqlite_store, incident)


async def test_a_closing_undo_that_fails_leaves_the_close_to_the_workflow(
    client: Client, settings: Settings, sqlite_store: AuditStore, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The events the failed call carried are written with its failure and the close."""
    playbook = tmp_path / "carried.yaml"
    playbook.write_text(TWO_LEVERS)
    incidents = Incidents(client, settings)
    await sandbox.fault(path_prefix="/recommender/throttle/restore", status=400, times=1)
    async with worker_with(client, settings, sqlite_store):
        incident = (await incidents.trigger(str(playbook), {}, actor="alice")).incident_id

        async def applied() -> None:
            assert kinds(sqlite_store.events(incident)) == APPLIED

        await assert_eventually(applied)
        await incidents.stand_down(incident, actor="bob", reason="over")
    undo_failed = ["stand_down.requested", "step.undone", "step.undo_failed", "incident.closed"]
    assert kinds(sqlite_store.events(incident)) == APPLIED + undo_failed
    assert (await local_activities(client, incident))[-1] == WRITE_AUDIT
    await assert_audited(client, sqlite_store, incident)

"""Interpreter v5: the last lever call of a phase writes the phase's audit events itself, with its
own outcome's (and the close), so an incident's trail costs no audit activity of its own. A slow
or failing call writes the events it carries or was lent at once, so the incident board shows
them while it retries. Each test runs on the dev server and checks what auditors check: the
chain, and a replay of the history that reproduces the stored rows."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
from temporalio.client import Client

from activities.audit import AuditWriter
from core.settings import Settings
from engine.incidents import Incidents
from engine.integrity import check, check_store, check_with_replay
from engine.temporal import build_worker
from engine.verification import export_history, replay_incident
from store.audit_store import AuditStore
from store.errors import AuditStoreError
from store.seals import Signer
from tests.conftest import Sandbox
from tests.helpers import assert_eventually
from tests.workflows.lab import kinds
from workflows.audit import AuditBatch, AuditWritten
from workflows.crisis import CrisisWorkflow
from workflows.incident import APPLY_LEVER, WRITE_AUDIT, NoteRequest, RestoreRequest

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


Ready = Callable[[Incidents, str], Awaitable[None]]


async def stood_down_once_ready(
    client: Client,
    settings: Settings,
    store: AuditStore,
    playbook: Path,
    *,
    audit: AuditWriter | None = None,
    ready: Ready | None = None,
    standing_down: Ready | None = None,
    then: Ready | None = None,
) -> str:
    """Trigger the playbook on a worker of its own, wait for `ready` (by default: everything
    applied is on record), stand it down (waiting for `standing_down`, if given, before the
    stand-down has finished), then run `then`, if given; answer the incident id."""
    incidents = Incidents(client, settings)

    async def applied(_: Incidents, incident_id: str) -> None:
        assert kinds(store.events(incident_id)) == APPLIED

    async with (
        httpx.AsyncClient(timeout=settings.platform_timeout_s) as http,
        build_worker(client, settings=settings, http=http, store=store, audit=audit),
    ):
        incident = (await incidents.trigger(str(playbook), {}, actor="alice")).incident_id
        await assert_eventually(lambda: (ready or applied)(incidents, incident), timeout=30)
        stand_down = asyncio.create_task(incidents.stand_down(incident, actor="bob", reason="over"))
        if standing_down is not None:
            await assert_eventually(lambda: standing_down(incidents, incident), timeout=30)
            assert not stand_down.done()
        await stand_down
        if then is not None:
            await then(incidents, incident)
    return incident


def two_levers(tmp_path: Path, extra: str = "") -> Path:
    playbook = tmp_path / "carried.yaml"
    playbook.write_text(TWO_LEVERS + extra)
    return playbook


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
    incident = await stood_down_once_ready(client, settings, sqlite_store, two_levers(tmp_path))
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
    playbook = two_levers(tmp_path, "    timeout: 40s\n")  # the threshold's call
    settings = settings.model_copy(update={"platform_timeout_s": 30.0})
    await sandbox.fault(path_prefix="/detection/threshold", status=0, latency_ms=19_000, times=1)

    async def in_flight(incidents: Incidents, incident_id: str) -> None:
        steps = {s.id: s.state for s in (await incidents.status(incident_id)).steps}
        assert steps == {"throttle": "applied", "threshold": "running"}

    incident = await stood_down_once_ready(
        client, settings, sqlite_store, playbook, ready=in_flight
    )
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
    writer = FailingOnceWriter(sqlite_store, Signer(settings.signing_key_path))
    incident = await stood_down_once_ready(
        client, settings, sqlite_store, two_levers(tmp_path), audit=writer
    )
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
    """The events the failed call carried are written with its failure; the close waits for the
    measure to be restored (its undo retried), and is written by the workflow."""
    await sandbox.fault(path_prefix="/recommender/throttle/restore", status=400, times=1)

    async def retried(incidents: Incidents, incident: str) -> None:
        retry = RestoreRequest(step_id="throttle", actor="bob", reason="platform is back")
        assert "undone" == (await incidents.act(incident, CrisisWorkflow.restore, retry)).state

    incident = await stood_down_once_ready(
        client, settings, sqlite_store, two_levers(tmp_path), then=retried
    )
    undo_failed = ["stand_down.requested", "step.undone", "step.undo_failed"]
    restored = ["undo.retried", "step.undone", "incident.closed"]

    async def written() -> None:
        assert kinds(sqlite_store.events(incident)) == APPLIED + undo_failed + restored

    await assert_eventually(written)
    assert (await local_activities(client, incident))[-1] == WRITE_AUDIT
    await assert_audited(client, sqlite_store, incident)


async def test_a_call_near_its_deadline_leaves_the_write_to_the_workflow(
    client: Client, settings: Settings, sqlite_store: AuditStore, sandbox: Sandbox, tmp_path: Path
) -> None:
    """A write that could end after the call's deadline is not started: a timed-out attempt
    would be retried, with an outcome that contradicts the row it wrote."""
    playbook = two_levers(tmp_path, "    timeout: 5s\n")  # the threshold's call
    await sandbox.fault(path_prefix="/detection/threshold", status=0, latency_ms=4300, times=1)
    incident = await stood_down_once_ready(client, settings, sqlite_store, playbook)
    assert kinds(sqlite_store.events(incident)) == APPLIED + CLOSED
    assert (await local_activities(client, incident))[:3] == [APPLY_LEVER, APPLY_LEVER, WRITE_AUDIT]
    await assert_audited(client, sqlite_store, incident)


def board_state(store: AuditStore, incident_id: str) -> str | None:
    return next((r.state for r in store.search(limit=1000) if r.incident_id == incident_id), None)


async def test_a_slow_first_lever_call_puts_the_incident_on_the_board_meanwhile(
    client: Client, settings: Settings, sqlite_store: AuditStore, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Its trigger is on record while the platform takes 4 s to answer, not only afterwards,
    and auditors replaying the incident meanwhile find the table as the replay expects it."""
    await sandbox.fault(path_prefix="/recommender/throttle", status=0, latency_ms=4000, times=1)

    async def on_record_mid_call(_: Incidents, incident_id: str) -> None:
        stored = sqlite_store.events(incident_id)
        assert kinds(stored) == ["incident.triggered", "step.started"]
        assert board_state(sqlite_store, incident_id) == "running"
        report = await replay_incident(await export_history(client, incident_id), stored)
        assert report.ok, report.as_dict()
        assert (await sandbox.state())["applications"] == []  # the call is still waiting

    incident = await stood_down_once_ready(
        client, settings, sqlite_store, two_levers(tmp_path), ready=on_record_mid_call
    )
    assert kinds(sqlite_store.events(incident)) == APPLIED + CLOSED
    assert await local_activities(client, incident) == [APPLY_LEVER] * 4
    await assert_audited(client, sqlite_store, incident)


async def test_a_stand_down_is_on_the_board_while_its_first_undo_fails_and_retries(
    client: Client, settings: Settings, sqlite_store: AuditStore, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The undo's failed attempts write the stand-down; the undo then succeeds, once."""
    await sandbox.fault(path_prefix="/detection/threshold/restore", status=500, times=3)

    async def requested_on_record(_: Incidents, incident_id: str) -> None:
        assert kinds(sqlite_store.events(incident_id)) == [*APPLIED, "stand_down.requested"]
        assert board_state(sqlite_store, incident_id) == "standing_down"

    incident = await stood_down_once_ready(
        client, settings, sqlite_store, two_levers(tmp_path), standing_down=requested_on_record
    )
    assert kinds(sqlite_store.events(incident)) == APPLIED + CLOSED
    assert await local_activities(client, incident) == [APPLY_LEVER] * 4
    state = await sandbox.state()
    assert state["stats"]["duplicates"] == 0
    await assert_audited(client, sqlite_store, incident)


async def test_auditors_verifying_during_a_slow_undo_are_told_to_come_back_not_alarmed(
    client: Client, settings: Settings, sqlite_store: AuditStore, sandbox: Sandbox, tmp_path: Path
) -> None:
    """The stand-down's first undo takes 4 s: it writes the stand-down early, while the workflow
    task that took the request is still under way and its history not recorded. Verify says so,
    and calls nothing altered or complete; once the task ends, the replay shows every row."""
    await sandbox.fault(path_prefix="/detection/threshold/restore", status=0, latency_ms=4000)
    public_key = Signer(settings.signing_key_path).public_key

    async def verified_mid_undo(_: Incidents, incident_id: str) -> None:
        stored = sqlite_store.events(incident_id)
        assert kinds(stored) == [*APPLIED, "stand_down.requested"]
        integrity = check(incident_id, stored, sqlite_store.seals(incident_id), public_key)
        history = await export_history(client, incident_id)
        await check_with_replay(integrity, stored, history)
        assert integrity.replay is not None and 1 == integrity.replay.unreplayed_rows
        assert integrity.ok and integrity.complete is None, integrity.as_dict()
        said = integrity.verdict()["replay"]
        assert said.startswith("ok, but row 6 came from a workflow task still under way"), said
        assert "verify again" in integrity.summary()

    incident = await stood_down_once_ready(
        client, settings, sqlite_store, two_levers(tmp_path), standing_down=verified_mid_undo
    )
    await assert_audited(client, sqlite_store, incident)


async def test_auditors_verifying_while_commanders_act_are_not_alarmed(
    client: Client, settings: Settings, sqlite_store: AuditStore, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Verify reads a live incident's rows, then its history. A note landing between the two
    is in the history, and its row (written as its workflow task ended) only in a later read:
    the rows are read again after the history, so it is checked, not called missing. A note
    landing after the history was fetched is in no history yet: left for the next check."""
    public_key = Signer(settings.signing_key_path).public_key
    incidents = Incidents(client, settings)

    async def noted(incident_id: str, text: str) -> None:
        await incidents.act(
            incident_id, CrisisWorkflow.add_note, NoteRequest(actor="bob", text=text)
        )

    async with (
        httpx.AsyncClient(timeout=settings.platform_timeout_s) as http,
        build_worker(client, settings=settings, http=http, store=sqlite_store),
    ):
        playbook = two_levers(tmp_path)
        incident = (await incidents.trigger(str(playbook), {}, actor="alice")).incident_id

        async def applied() -> None:
            assert kinds(sqlite_store.events(incident)) == APPLIED

        await assert_eventually(applied, timeout=30)
        integrity, before = check_store(sqlite_store, incident, public_key)
        await noted(incident, "between the reads")
        history = await export_history(client, incident)
        await noted(incident, "after the history")
        assert kinds(sqlite_store.events(incident)) == [*APPLIED, "note.added", "note.added"]

        as_first_read = await replay_incident(history, before)  # the race a second read closes
        missing = "seq 6 (note.added) is missing from the audit table"
        assert missing == as_first_read.replay_vs_store.first_difference
        await check_with_replay(integrity, before, history, store=sqlite_store)
        assert integrity.ok and integrity.complete is None, integrity.as_dict()
        said = integrity.verdict()["replay"]
        assert said.startswith("ok, but row 7 came from a workflow task still under way, or one"), (
            said
        )
        await incidents.stand_down(incident, actor="bob", reason="over")
    await assert_audited(client, sqlite_store, incident)

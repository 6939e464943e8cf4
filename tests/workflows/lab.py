"""The lab the language tests run in: a worker on the time-skipping server, the platform sandbox
and the audit store, with helpers to let workflow time pass and wait for the results."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio.client import WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from engine.errors import IncidentConflict
from engine.incidents import Incidents
from engine.temporal import running_worker
from store.audit_store import AuditStore
from tests.conftest import Sandbox
from tests.helpers import assert_eventually
from workflows.audit import AuditEvent
from workflows.crisis import CrisisWorkflow
from workflows.incident import (
    ApproveRequest,
    IncidentStatus,
    LevelRequest,
    NoteRequest,
    StepRecord,
)

HEADER = """\
playbook: lang
version: 1
title: Language semantics
description: For tests.
levels: [elevated, severe, critical]
"""
# Parts of the sandbox state that record traffic rather than platform settings.
TRAFFIC = {"applications", "stats", "faults", "notifications", "hash_lists"}
TRANSIENT = {"running", "undoing"}


# --- the lab: a worker on the time-skipping server, the sandbox, the audit store -------------
@dataclass
class Lab:
    env: WorkflowEnvironment
    incidents: Incidents
    sandbox: Sandbox
    store: AuditStore
    directory: Path
    started: list[str] = field(default_factory=list)

    async def trigger(
        self,
        body: str,
        inputs: dict[str, Any] | None = None,
        *,
        level: str | None = None,
        history_limit: int | None = None,
    ) -> str:
        path = self.directory / f"playbook-{len(self.started)}.yaml"
        path.write_text(HEADER + body)
        triggered = await self.incidents.trigger(
            str(path), inputs or {}, actor="alice", level=level, history_limit=history_limit
        )
        self.started.append(triggered.incident_id)
        return triggered.incident_id

    async def act(self, incident_id: str, update: Any, request: BaseModel) -> Any:
        return await self.incidents.act(incident_id, update, request)

    async def status(self, incident_id: str) -> IncidentStatus:
        return await self.incidents.status(incident_id)

    async def settle(
        self,
        incident_id: str,
        steps: dict[str, str],
        *,
        state: str = "running",
        level: str | None = None,
        also: Callable[[IncidentStatus], None] | None = None,
    ) -> IncidentStatus:
        """Wait until the named steps are in these states (and nothing is mid-call)."""

        async def check() -> IncidentStatus:
            status = await self.status(incident_id)
            now = step_states(status)
            assert steps == {k: v for k, v in now.items() if k in steps}, now
            assert not TRANSIENT & set(now.values()), now
            assert state == status.state, status.state
            if level is not None:
                assert level == status.level
            if also is not None:
                also(status)
            return status

        return await assert_eventually(check, timeout=15, interval=0.05)

    async def advance(self, duration: timedelta) -> None:
        """Let workflow time pass (the server fires every timer on the way)."""
        await self.env.sleep(duration)

    async def now(self) -> datetime:
        return await self.env.get_current_time()

    async def sync(self, incident_id: str) -> IncidentStatus:
        """Make the workflow run a task now (so any timer that fired is handled), then wait for
        the calls that task started to finish."""
        await self.act(
            incident_id, CrisisWorkflow.add_note, NoteRequest(actor="tester", text="sync")
        )

        async def quiet() -> IncidentStatus:
            status = await self.status(incident_id)
            assert not TRANSIENT & set(step_states(status).values())
            return status

        return await assert_eventually(quiet, timeout=15, interval=0.05)

    async def audit(self, incident_id: str, *, until: str, count: int = 1) -> list[AuditEvent]:
        """The incident's audit events once `count` events of kind `until` have been written."""

        async def check() -> list[AuditEvent]:
            events = self.store.events(incident_id)
            assert count <= kinds(events).count(until)
            return events

        return await assert_eventually(check, timeout=15, interval=0.05)

    async def platform(self) -> dict[str, Any]:
        return await self.sandbox.state()


@pytest.fixture
async def lab(
    time_env: WorkflowEnvironment,
    settings: Settings,
    sandbox: Sandbox,
    sqlite_store: AuditStore,
    tmp_path: Path,
) -> AsyncIterator[Lab]:
    async with running_worker(time_env.client, settings=settings, store=sqlite_store):
        box = Lab(time_env, Incidents(time_env.client, settings), sandbox, sqlite_store, tmp_path)
        yield box
        for incident_id in box.started:
            await _close(time_env, box.incidents, incident_id)


async def _close(env: WorkflowEnvironment, incidents: Incidents, incident_id: str) -> None:
    """Stand down an incident a test left running. Not terminate: the test server's clock is
    shared, and terminating a run whose audit write is in flight leaves time skipping locked for
    every later test. A stand-down answers only once the audit trail is flushed."""
    handle = env.client.get_workflow_handle(incident_id)
    if (await handle.describe()).status != WorkflowExecutionStatus.RUNNING:
        return
    try:
        await asyncio.wait_for(
            incidents.stand_down(incident_id, actor="teardown", reason="test over"), timeout=15
        )
    except (IncidentConflict, TimeoutError):
        await handle.terminate(reason="test over")


def step_states(status: IncidentStatus) -> dict[str, str]:
    return {s.id: s.state for s in status.steps}


def step(status: IncidentStatus, step_id: str) -> StepRecord:
    return next(s for s in status.steps if s.id == step_id)


def kinds(events: list[AuditEvent]) -> list[str]:
    return [e.kind for e in events]


def settings_of(state: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in state.items() if k not in TRAFFIC}


def operations(state: dict[str, Any]) -> list[tuple[str, str]]:
    return [(a["step"], a["operation"]) for a in state["applications"]]


def at(text: str | None) -> datetime:
    assert text is not None
    return datetime.fromisoformat(text)


# --- commander requests and continue-as-new, as the language tests make them ------------------
def level(actor: str = "carol", to: str | None = None) -> LevelRequest:
    return LevelRequest(actor=actor, reason="situation changed", to_level=to)


def approve(step_id: str, actor: str = "alice", role: str = "commander") -> ApproveRequest:
    return ApproveRequest(step_id=step_id, actor=actor, role=role, comment=f"{actor} agrees")


def more_runs(status: IncidentStatus, runs: int) -> None:
    assert status.runs > runs, status.runs


async def history_length(lab: Lab, incident_id: str) -> int:
    description = await lab.env.client.get_workflow_handle(incident_id).describe()
    return description.raw_description.workflow_execution_info.history_length


async def continue_as_new(lab: Lab, incident: str) -> int:
    """Add notes until the incident continues as new (a small `history_limit`); the number of
    notes added."""
    runs = (await lab.status(incident)).runs
    for number in range(60):
        status = await lab.act(
            incident, CrisisWorkflow.add_note, NoteRequest(actor="bob", text=f"note {number}")
        )
        if status.runs > runs:
            return number + 1
    raise AssertionError("the incident never continued as new")

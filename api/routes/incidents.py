"""Incidents: trigger, status, stand down, audit trail."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from api.deps import IncidentsDep, SettingsDep, StoreDep
from engine.incidents import verify_audit
from engine.playbook_files import PlaybookNotFound
from workflows.audit import AuditEvent
from workflows.incident import IncidentStatus

router = APIRouter(prefix="/incidents", tags=["incidents"])


class TriggerBody(BaseModel):
    playbook: str = Field(description="Playbook name (from the library) to run")
    inputs: dict[str, Any] = Field(default_factory=dict)
    actor: str = Field("api", min_length=1, description="Who declares the incident")
    incident_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,100}$")


class TriggeredOut(BaseModel):
    incident_id: str
    playbook: str
    version: int
    playbook_hash: str
    inputs: dict[str, Any]


class StandDownBody(BaseModel):
    reason: str = Field(min_length=1)
    actor: str = Field("api", min_length=1)


class AuditOut(BaseModel):
    incident_id: str
    verified: bool
    problem: str | None
    events: list[AuditEvent]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=TriggeredOut)
async def trigger(
    body: TriggerBody, incidents: IncidentsDep, settings: SettingsDep
) -> TriggeredOut:
    if "/" in body.playbook or body.playbook.endswith((".yaml", ".yml")):
        raise PlaybookNotFound(f"playbooks are named, not paths: {body.playbook!r}")
    triggered = await incidents.trigger(
        body.playbook,
        body.inputs,
        actor=body.actor,
        incident_id=body.incident_id,
        eager=settings.api_embedded_worker,
    )
    return TriggeredOut(
        incident_id=triggered.incident_id,
        playbook=triggered.playbook,
        version=triggered.version,
        playbook_hash=triggered.playbook_hash,
        inputs=triggered.inputs,
    )


@router.get("/{incident_id}", response_model=IncidentStatus)
async def show(incident_id: str, incidents: IncidentsDep) -> IncidentStatus:
    return await incidents.status(incident_id)


@router.post("/{incident_id}/stand-down", response_model=IncidentStatus)
async def stand_down(
    incident_id: str, body: StandDownBody, incidents: IncidentsDep
) -> IncidentStatus:
    return await incidents.stand_down(incident_id, actor=body.actor, reason=body.reason)


@router.get("/{incident_id}/audit", response_model=AuditOut)
async def audit(incident_id: str, store: StoreDep) -> AuditOut:
    verification = await asyncio.to_thread(verify_audit, store, incident_id)
    events = await asyncio.to_thread(store.events, incident_id)
    return AuditOut(
        incident_id=incident_id,
        verified=verification.ok,
        problem=verification.problem,
        events=events,
    )

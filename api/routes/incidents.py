"""Incidents: trigger, status, commander actions, stand down, audit trail."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field

from api.deps import IncidentsDep, SettingsDep, StoreDep
from api.errors import ErrorOut
from engine.incidents import ACTIONS, Incidents, verify_audit
from engine.playbook_files import PlaybookNotFound
from workflows.audit import AuditEvent
from workflows.incident import IncidentStatus, StepRecord

router = APIRouter(prefix="/incidents", tags=["incidents"])


class TriggerBody(BaseModel):
    playbook: str = Field(description="Playbook name (from the library) to run")
    inputs: dict[str, Any] = Field(default_factory=dict)
    actor: str = Field("api", min_length=1, description="Who declares the incident")
    incident_id: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,100}$")
    level: str | None = Field(None, description="Starting level (default: the playbook's lowest)")


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
        level=body.level,
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


# --- commander actions ------------------------------------------------------------------------
# Each route runs one workflow Update from `engine.incidents.ACTIONS` through `_act`. The bodies
# are this API's own models, not the workflow's requests: today the actor comes from the body;
# once it comes from the authenticated principal, only `_act`'s `actor` argument changes.


class ActionBody(BaseModel):
    actor: str = Field("api", min_length=1, description="Who acts")


class ApproveBody(ActionBody):
    step_id: str = Field(min_length=1, description="The step awaiting approval")
    role: str = Field(min_length=1, description="The role the actor approves in")
    comment: str = ""


class RejectBody(ActionBody):
    step_id: str = Field(min_length=1, description="The step awaiting approval")
    role: str = Field(min_length=1, description="The role the actor rejects in")
    reason: str = Field(min_length=1)


class LevelBody(ActionBody):
    reason: str = Field(min_length=1)
    to_level: str | None = Field(None, description="Target level (default: the next one)")


class RenewBody(ActionBody):
    step_id: str = Field(min_length=1, description="The measure to renew")
    duration: str = Field(min_length=1, description="How long from now it holds, e.g. 24h")
    reason: str = Field(min_length=1)


class ReviewBody(ActionBody):
    note: str = ""


class NoteBody(ActionBody):
    text: str = Field(min_length=1)


ACTION_ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "No such incident (`incident_not_found`)"},
    409: {
        "model": ErrorOut,
        "description": "Refused by the incident, with its reason (`incident_conflict`)",
    },
}


async def _act(
    incidents: Incidents, action: str, incident_id: str, body: ActionBody, *, actor: str
) -> Any:
    update, request_model = ACTIONS[action]
    request = request_model.model_validate({**body.model_dump(exclude={"actor"}), "actor": actor})
    return await incidents.act(incident_id, update, request)


@router.post(
    "/{incident_id}/approve",
    response_model=StepRecord,
    summary="Approve a step awaiting approval",
    responses=ACTION_ERRORS,
)
async def approve(incident_id: str, body: ApproveBody, incidents: IncidentsDep) -> StepRecord:
    """One approval; the step runs once its quorum of distinct approvers is reached."""
    return await _act(incidents, "approve", incident_id, body, actor=body.actor)


@router.post(
    "/{incident_id}/reject",
    response_model=StepRecord,
    summary="Reject a step awaiting approval",
    responses=ACTION_ERRORS,
)
async def reject(incident_id: str, body: RejectBody, incidents: IncidentsDep) -> StepRecord:
    """The step is skipped and the playbook carries on."""
    return await _act(incidents, "reject", incident_id, body, actor=body.actor)


@router.post(
    "/{incident_id}/escalate",
    response_model=IncidentStatus,
    summary="Raise the incident's level",
    responses=ACTION_ERRORS,
)
async def escalate(incident_id: str, body: LevelBody, incidents: IncidentsDep) -> IncidentStatus:
    """To `to_level`, or one level up; steps the new level calls for run."""
    return await _act(incidents, "escalate", incident_id, body, actor=body.actor)


@router.post(
    "/{incident_id}/de-escalate",
    response_model=IncidentStatus,
    summary="Lower the incident's level",
    responses=ACTION_ERRORS,
)
async def de_escalate(incident_id: str, body: LevelBody, incidents: IncidentsDep) -> IncidentStatus:
    """To `to_level`, or one level down; measures above the new level are undone."""
    return await _act(incidents, "de-escalate", incident_id, body, actor=body.actor)


@router.post(
    "/{incident_id}/renew",
    response_model=StepRecord,
    summary="Renew a measure before it lapses",
    responses=ACTION_ERRORS,
)
async def renew(incident_id: str, body: RenewBody, incidents: IncidentsDep) -> StepRecord:
    """The measure now lapses `duration` from now; a lapsed one is applied again."""
    return await _act(incidents, "renew", incident_id, body, actor=body.actor)


@router.post(
    "/{incident_id}/confirm-review",
    response_model=IncidentStatus,
    summary="Confirm the periodic review",
    responses=ACTION_ERRORS,
)
async def confirm_review(
    incident_id: str, body: ReviewBody, incidents: IncidentsDep
) -> IncidentStatus:
    """The measures are still needed; the next review is due one period from now."""
    return await _act(incidents, "confirm-review", incident_id, body, actor=body.actor)


@router.post(
    "/{incident_id}/notes",
    response_model=IncidentStatus,
    summary="Add a note to the incident",
    responses=ACTION_ERRORS,
)
async def add_note(incident_id: str, body: NoteBody, incidents: IncidentsDep) -> IncidentStatus:
    """The note is recorded (and audited) with its actor and time."""
    return await _act(incidents, "note", incident_id, body, actor=body.actor)

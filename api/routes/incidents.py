"""Incidents: trigger, status, commander actions, stand down, audit trail."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, status
from pydantic import BaseModel, Field, StrictBool, field_validator

from api.approvers import approver_role
from api.auth import Commander, Principal, Reader
from api.bodies import RequestBody, WrittenText
from api.deps import IncidentsDep, SettingsDep, StoreDep
from api.errors import AUTH_ERRORS, TEMPORAL_ERRORS, documented
from engine.incidents import ACTIONS, INCIDENT_ID_PATTERN, Incidents, verify_audit
from engine.overlap import refuse_if_later_overlaps, refuse_restore_if_later_overlaps
from engine.playbook_files import library_playbook
from workflows.audit import AuditEvent
from workflows.durations import parse_renewal
from workflows.incident import IncidentStatus, StepRecord
from workflows.limits import MAX_INPUT_CHARS, MAX_NAME_CHARS, MAX_NOTE_CHARS, MAX_TEXT_CHARS

# Who acts is always the authenticated principal: no body here names an actor.
router = APIRouter(prefix="/incidents", tags=["incidents"], responses=AUTH_ERRORS)

# What every commander action (and the stand-down) may answer besides the auth errors.
ACTION_ERRORS = {
    **documented(
        {
            404: "No such incident (`incident_not_found`)",
            409: "Refused by the incident now, with its reason (`incident_conflict`)",
            422: "The body is invalid (`invalid_request`), or names a level, step or role the "
            "incident does not have (`action_invalid`)",
        }
    ),
    **TEMPORAL_ERRORS,
}


class TriggerBody(RequestBody):
    playbook: str = Field(
        max_length=MAX_NAME_CHARS, description="Playbook name (from the library) to run"
    )
    inputs: dict[str, Any] = Field(
        default_factory=dict,
        description=f"By name; each at most {MAX_INPUT_CHARS} characters as JSON",
    )
    incident_id: str | None = Field(None, pattern=INCIDENT_ID_PATTERN)
    level: str | None = Field(
        None,
        max_length=MAX_NAME_CHARS,
        description="Starting level (default: the playbook's lowest)",
    )


class TriggeredOut(BaseModel):
    incident_id: str
    playbook: str
    version: int
    playbook_hash: str
    inputs: dict[str, Any]
    warnings: list[str] = Field(
        default_factory=list,
        description="What may keep the incident from running now, e.g. no worker polling",
    )


class StandDownBody(RequestBody):
    reason: WrittenText = Field(max_length=MAX_TEXT_CHARS)
    # Strict: lifting another incident's measures takes a JSON `true`, never "yes" or 1.
    force: StrictBool = Field(
        False,
        description="Stand down even though a later open incident holds measures on the same "
        "settings: each measure taken back hands those settings to it, and it puts its own back "
        "at once; otherwise that is a 409 naming it",
    )


class AuditOut(BaseModel):
    incident_id: str
    verified: bool = Field(
        description="The hash chain alone: its rows link and hash as recorded. A chain "
        "rewritten whole passes this; only GET /v1/incidents/{id}/verify (seals and the replay "
        "of the Temporal history) shows the record unaltered and complete"
    )
    problem: str | None
    events: list[AuditEvent]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TriggeredOut,
    responses={
        **documented(
            {
                404: "No such playbook (`playbook_not_found`)",
                409: "An incident with this id exists (`incident_conflict`)",
                422: "A bad body, input value or playbook (`invalid_request`, `invalid_input`, "
                "`playbook_invalid`)",
                502: "Temporal did not take the trigger: it may have started all the same "
                "(`temporal_error`)",
                503: "The playbook library is broken (`library_invalid`)",
            }
        ),
    },
)
async def trigger(
    body: TriggerBody, incidents: IncidentsDep, settings: SettingsDep, principal: Commander
) -> TriggeredOut:
    triggered = await incidents.trigger(
        str(library_playbook(body.playbook, settings.playbooks_dir)),
        body.inputs,
        actor=principal.name,
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
        warnings=list(triggered.warnings),
    )


@router.get(
    "/{incident_id}",
    response_model=IncidentStatus,
    responses={**documented({404: "No such incident (`incident_not_found`)"}), **TEMPORAL_ERRORS},
)
async def show(incident_id: str, incidents: IncidentsDep, _: Reader) -> IncidentStatus:
    return await incidents.status(incident_id)


@router.post(
    "/{incident_id}/stand-down",
    response_model=IncidentStatus,
    responses=ACTION_ERRORS,
)
async def stand_down(
    incident_id: str,
    body: StandDownBody,
    incidents: IncidentsDep,
    store: StoreDep,
    principal: Commander,
) -> IncidentStatus:
    if not body.force:
        await refuse_if_later_overlaps(store, incident_id)
    return await incidents.stand_down(
        incident_id, actor=principal.name, reason=body.reason, force=body.force
    )


@router.get(
    "/{incident_id}/audit",
    response_model=AuditOut,
    responses=documented({404: "No audit trail for this incident (`incident_not_found`)"}),
)
async def audit(incident_id: str, store: StoreDep, _: Reader) -> AuditOut:
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
# are this API's own models, not the workflow's requests: the actor is the principal's name.
# Approving and rejecting need no commander: the principal must hold a role the step accepts.


class ActionBody(RequestBody):
    """What every action body shares (nothing yet: the actor is the authenticated principal)."""


_ROLE_HELP = (
    "The role you act in; you must hold it. Default: your first role that the step accepts."
)


class ApproveBody(ActionBody):
    step_id: str = Field(
        min_length=1, max_length=MAX_NAME_CHARS, description="The step awaiting approval"
    )
    role: str | None = Field(None, min_length=1, max_length=MAX_NAME_CHARS, description=_ROLE_HELP)
    comment: str = Field("", max_length=MAX_TEXT_CHARS)


class RejectBody(ActionBody):
    step_id: str = Field(
        min_length=1, max_length=MAX_NAME_CHARS, description="The step awaiting approval"
    )
    role: str | None = Field(None, min_length=1, max_length=MAX_NAME_CHARS, description=_ROLE_HELP)
    reason: WrittenText = Field(max_length=MAX_TEXT_CHARS)


class LevelBody(ActionBody):
    reason: WrittenText = Field(max_length=MAX_TEXT_CHARS)
    to_level: str | None = Field(
        None, max_length=MAX_NAME_CHARS, description="Target level (default: the next one)"
    )


class RenewBody(ActionBody):
    step_id: str = Field(
        min_length=1, max_length=MAX_NAME_CHARS, description="The measure to renew"
    )
    duration: str = Field(
        min_length=1,
        max_length=MAX_NAME_CHARS,
        description="How long from now it holds, past its current expiry, e.g. 24h",
    )
    reason: WrittenText = Field(max_length=MAX_TEXT_CHARS)

    @field_validator("duration")
    @classmethod
    def _a_renewal(cls, duration: str) -> str:
        parse_renewal(duration)  # a ValueError is the request's 422, as the workflow would refuse
        return duration


class RestoreBody(ActionBody):
    step_id: str = Field(
        min_length=1, max_length=MAX_NAME_CHARS, description="The measure whose undo failed"
    )
    reason: WrittenText = Field(max_length=MAX_TEXT_CHARS)
    by_hand: StrictBool = Field(
        False,
        description="Record that the setting was restored on the platform by hand, instead of "
        "retrying the undo",
    )


class ReviewBody(ActionBody):
    note: str = Field("", max_length=MAX_TEXT_CHARS)


class NoteBody(ActionBody):
    text: WrittenText = Field(max_length=MAX_NOTE_CHARS)


async def _act(
    incidents: Incidents,
    action: str,
    incident_id: str,
    body: ActionBody,
    *,
    actor: Principal,
    **fields: Any,
) -> Any:
    update, request_model = ACTIONS[action]
    request = request_model.model_validate({**body.model_dump(), **fields, "actor": actor.name})
    return await incidents.act(incident_id, update, request)


async def _approver_role(
    incidents: Incidents, incident_id: str, body: ApproveBody | RejectBody, principal: Principal
) -> str:
    """The role `principal` approves or rejects in; Forbidden if they hold none that may."""
    return await approver_role(
        incidents,
        incident_id,
        body.step_id,
        principal,
        role=body.role,
        verb="approve" if isinstance(body, ApproveBody) else "reject",
    )


@router.post(
    "/{incident_id}/approve",
    response_model=StepRecord,
    summary="Approve a step awaiting approval",
    responses=ACTION_ERRORS,
)
async def approve(
    incident_id: str,
    body: ApproveBody,
    incidents: IncidentsDep,
    principal: Reader,
) -> StepRecord:
    """One approval; the step runs once its quorum of distinct approvers is reached. Any
    principal holding a role the step accepts may approve."""
    role = await _approver_role(incidents, incident_id, body, principal)
    return await _act(incidents, "approve", incident_id, body, actor=principal, role=role)


@router.post(
    "/{incident_id}/reject",
    response_model=StepRecord,
    summary="Reject a step awaiting approval",
    responses=ACTION_ERRORS,
)
async def reject(
    incident_id: str,
    body: RejectBody,
    incidents: IncidentsDep,
    principal: Reader,
) -> StepRecord:
    """The step is skipped and the playbook carries on. Any principal holding a role the step
    accepts may reject."""
    role = await _approver_role(incidents, incident_id, body, principal)
    return await _act(incidents, "reject", incident_id, body, actor=principal, role=role)


@router.post(
    "/{incident_id}/escalate",
    response_model=IncidentStatus,
    summary="Raise the incident's level",
    responses=ACTION_ERRORS,
)
async def escalate(
    incident_id: str, body: LevelBody, incidents: IncidentsDep, principal: Commander
) -> IncidentStatus:
    """To `to_level`, or one level up; steps the new level calls for run."""
    return await _act(incidents, "escalate", incident_id, body, actor=principal)


@router.post(
    "/{incident_id}/de-escalate",
    response_model=IncidentStatus,
    summary="Lower the incident's level",
    responses=ACTION_ERRORS,
)
async def de_escalate(
    incident_id: str, body: LevelBody, incidents: IncidentsDep, principal: Commander
) -> IncidentStatus:
    """To `to_level`, or one level down; measures above the new level are undone."""
    return await _act(incidents, "de-escalate", incident_id, body, actor=principal)


@router.post(
    "/{incident_id}/renew",
    response_model=StepRecord,
    summary="Renew a measure before it lapses",
    responses=ACTION_ERRORS,
)
async def renew(
    incident_id: str, body: RenewBody, incidents: IncidentsDep, principal: Commander
) -> StepRecord:
    """The measure now lapses `duration` from now; a lapsed one is applied again."""
    return await _act(incidents, "renew", incident_id, body, actor=principal)


@router.post(
    "/{incident_id}/restore",
    response_model=StepRecord,
    summary="Restore a measure whose undo failed",
    responses=ACTION_ERRORS,
)
async def restore(
    incident_id: str,
    body: RestoreBody,
    incidents: IncidentsDep,
    store: StoreDep,
    principal: Commander,
) -> StepRecord:
    """Retry the undo on the platform (its answer says `undone` or `undo_failed` again), or with
    `by_hand` record that a person restored the setting there. A stand-down waiting for it
    closes once no measure is left unrestored. A retry is refused (409) while a later open
    incident holds measures over this one's settings: it would lift them (a restore by hand
    too, unless the measure hands the settings back)."""
    await refuse_restore_if_later_overlaps(
        store, incidents, incident_id, body.step_id, by_hand=body.by_hand
    )
    return await _act(incidents, "restore", incident_id, body, actor=principal)


@router.post(
    "/{incident_id}/confirm-review",
    response_model=IncidentStatus,
    summary="Confirm the periodic review",
    responses=ACTION_ERRORS,
)
async def confirm_review(
    incident_id: str, body: ReviewBody, incidents: IncidentsDep, principal: Commander
) -> IncidentStatus:
    """The measures are still needed; the next review is due one period from now."""
    return await _act(incidents, "confirm-review", incident_id, body, actor=principal)


@router.post(
    "/{incident_id}/notes",
    response_model=IncidentStatus,
    summary="Add a note to the incident",
    responses=ACTION_ERRORS,
)
async def add_note(
    incident_id: str, body: NoteBody, incidents: IncidentsDep, principal: Commander
) -> IncidentStatus:
    """The note is recorded (and audited) with its actor and time."""
    return await _act(incidents, "note", incident_id, body, actor=principal)

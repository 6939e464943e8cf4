"""What crosses the workflow boundary: its input, commander requests, status, lever calls."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from workflows.playbook import Playbook

# Activity names, shared by the workflow (which calls them by name to keep httpx and SQL out of
# the workflow sandbox) and the worker (which registers them); a test checks they agree.
APPLY_LEVER = "apply_lever"
WRITE_AUDIT = "write_audit"
WORKFLOW_NAME = "CrisisWorkflow"

IncidentState = Literal["running", "standing_down", "closed", "failed"]
StepState = Literal[
    "pending", "running", "applied", "failed", "skipped", "undoing", "undone", "undo_failed", "kept"
]


class IncidentInput(BaseModel):
    """The workflow's input: a frozen playbook snapshot and everything resolved at trigger."""

    model_config = ConfigDict(frozen=True)

    incident_id: str
    playbook: Playbook
    playbook_hash: str
    inputs: dict[str, Any]
    triggered_by: str


class StandDownRequest(BaseModel):
    actor: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class StepStatus(BaseModel):
    id: str
    lever: str
    state: StepState
    started_at: str | None = None
    finished_at: str | None = None
    undone_at: str | None = None
    error: str | None = None


class IncidentStatus(BaseModel):
    incident_id: str
    state: IncidentState
    playbook: str
    version: int
    playbook_hash: str
    inputs: dict[str, Any]
    triggered_by: str
    triggered_at: str
    stand_down: StandDownRequest | None = None
    closed_at: str | None = None
    steps: list[StepStatus]


class LeverRequest(BaseModel):
    """One call to the platform. `restore` set = put back that state instead of applying."""

    incident_id: str
    step_id: str
    operation: str  # part of the idempotency key: apply-1, undo-1, ...
    lever: str
    args: dict[str, Any]
    restore: dict[str, Any] | None = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.incident_id}/{self.step_id}/{self.operation}"


class LeverOutcome(BaseModel):
    previous: dict[str, Any] | None = None

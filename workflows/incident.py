"""What crosses the workflow boundary: its input, commander requests, status, lever calls."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from temporalio.common import SearchAttributeKey

from workflows.audit import AuditBatch, AuditCarry, AuditWritten
from workflows.notifications import Channel, MessageTemplate
from workflows.playbook import Playbook, Step

# Activity names, shared by the workflow (which calls them by name to keep httpx and SQL out of
# the workflow sandbox) and the worker (which registers them); a test checks they agree.
APPLY_LEVER = "apply_lever"
WRITE_AUDIT = "write_audit"
REASSERT_LATER = "reassert_later"
REASSERT_UPDATE = "reassert"  # the update a later incident is sent by that activity
# ... or, when putting its measures back is left to commanders, this one (LiftedNotice).
LIFTED_UPDATE = "overlap_lifted"
WAIT_CLOSED = "wait_closed"
WORKFLOW_NAME = "CrisisWorkflow"
# How a commander action's validator refuses (the failure's type): the incident cannot take it
# now (HTTP 409), or can never take it as asked (an unknown level, step or role: HTTP 422).
REFUSED_NOW = "InvalidRequest"
REFUSED_AS_ASKED = "InvalidArgument"

# Search attributes, so the Temporal UI and visibility queries can filter incidents. They must be
# registered on the namespace (the embedded dev server is started with them).
SEARCH_PLAYBOOK = SearchAttributeKey.for_keyword("CrisisPlaybook")
SEARCH_STATE = SearchAttributeKey.for_keyword("CrisisState")
SEARCH_LEVEL = SearchAttributeKey.for_keyword("CrisisLevel")
SEARCH_ATTRIBUTES = (SEARCH_PLAYBOOK, SEARCH_STATE, SEARCH_LEVEL)

IncidentState = Literal["running", "standing_down", "closed", "failed"]
StepState = Literal[
    "pending",  # not reached yet
    "dormant",  # reached, but its level or condition does not hold (may run later)
    "awaiting_approval",
    "running",
    "waiting",  # a wait step counting down
    "applied",
    "done",  # a wait or parallel step that finished
    "failed",
    "skipped",  # rejected, timed out with skip, or never reached before stand-down
    "undoing",
    "undone",
    "expired",  # lapsed: undone because its expiry passed without renewal
    "undo_failed",
    "kept",  # applied and cannot be taken back (a notification)
]
StepKind = Literal["lever", "wait", "parallel"]


class Approver(BaseModel):
    actor: str
    role: str
    at: str
    comment: str = ""


class DeliveryRecord(BaseModel):
    """One channel's delivery of a step's notification: a failure shows here, never silently."""

    operation: str  # apply-1, undo-1, ...: which call of the step it belongs to
    stakeholder: str
    channel: str
    target: str  # the channel described without secrets
    state: Literal["delivered", "failed"] = "failed"
    message_id: str | None = None
    error: str | None = None
    at: str


class StepRecord(BaseModel):
    """A step's life in one incident; also its status as commanders see it."""

    id: str
    kind: StepKind = "lever"
    lever: str | None = None
    parent: str | None = None
    level: str | None = None
    state: StepState = "pending"
    started_at: str | None = None
    finished_at: str | None = None
    undone_at: str | None = None
    error: str | None = None
    args: dict[str, Any] = Field(default_factory=dict)
    previous: dict[str, Any] | None = None
    applications: int = 0  # how many times applied: numbers the idempotency keys
    undos: int = 0
    expires_at: str | None = None
    # When this application of the measure began to hold; a measure put back after another
    # incident's restore lifted it keeps it (finished_at is when it was last applied).
    in_force_since: str | None = None
    wait_until: str | None = None
    approval_deadline: str | None = None
    approvals: list[Approver] = Field(default_factory=list)
    quorum: int | None = None  # approvals needed, for steps that need them
    outcome: str | None = None  # why it ended as it did: rejected by X, expired, ...
    deliveries: list[DeliveryRecord] = Field(default_factory=list)
    # Applied, but another incident's restore has since lifted it on the settings they share,
    # and putting it back was left to commanders (`overlap.left_lifted`); cleared when it is
    # applied again or taken back.
    lifted_by: str | None = None
    # Its undo failed for good: what that undo was for, so that a restore ends it the same way.
    failed_undo: FailedUndo | None = None
    # Its apply failed for good with no answer from the platform (timed out, or sent and never
    # answered): the platform may hold it all the same, so a stand-down asks before taking it
    # back.
    uncertain: bool = False

    @property
    def held_since(self) -> str | None:
        """When this application began to hold (ISO 8601 UTC, comparable as text)."""
        return self.in_force_since or self.finished_at


class FailedUndo(BaseModel):
    """How a measure's undo that failed for good was meant to end (a restore ends it so)."""

    at: str  # when it first failed
    final_state: Literal["undone", "expired", "dormant"]  # taken back, a lapse, a withdrawal
    hand_back: bool = False  # a forced stand-down's: hands the settings to a later incident
    # An earlier incident's restore was applied over it since (overlap_handoff): a retry of its
    # own restore would put that incident's measure back.
    overwritten_by: str | None = None
    # The undo was a message (an `undo:` notification) that was not delivered: nothing is left
    # in force on the platform, and there is nothing to restore.
    notice: bool = False


class Note(BaseModel):
    actor: str
    text: str
    at: str


class LevelChangeRecord(BaseModel):
    level: str | None
    at: str
    actor: str
    reason: str


class CarriedState(BaseModel):
    """Everything a continued-as-new run needs to carry on exactly where the last one stopped."""

    state: IncidentState
    level: str | None
    triggered_at: str
    steps: list[StepRecord]
    applied_order: list[str]
    cursor: int
    audit_seq: int
    audit_last_hash: str
    review_due: str | None
    reviews_missed: int
    notes: list[Note]
    level_history: list[LevelChangeRecord]
    stand_down: StandDownRequest | None = None
    runs: int = 1


class IncidentInput(BaseModel):
    """The workflow's input: a frozen playbook snapshot and everything resolved at trigger."""

    model_config = ConfigDict(frozen=True)

    incident_id: str
    playbook: Playbook
    playbook_hash: str
    inputs: dict[str, Any]
    triggered_by: str
    level: str | None = None
    carried: CarriedState | None = None
    # The message templates the playbook's notify.send steps use, frozen at trigger like the
    # playbook itself.
    templates: dict[str, MessageTemplate] = Field(default_factory=dict)
    # Every stakeholder's delivery channels (names of secrets, never secrets), frozen at trigger.
    # None: triggered before the directory had channels; such incidents notify via the platform.
    channels: dict[str, list[Channel]] | None = None
    # Continue-as-new once the history is this long (Temporal's own suggestion also counts).
    history_limit: int = 10_000
    # Keep CrisisState/CrisisLevel search attributes current (off where the namespace lacks them).
    search_attributes: bool = False


class StandDownRequest(BaseModel):
    actor: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    # Insisted on although a later open incident holds measures on the same settings: each
    # measure taken back hands those settings to it, as a lapse does (`overlap_handoff`).
    force: bool = False


class ApproveRequest(BaseModel):
    step_id: str
    actor: str = Field(min_length=1)
    role: str = Field(min_length=1)
    comment: str = ""


class RejectRequest(BaseModel):
    step_id: str
    actor: str = Field(min_length=1)
    role: str = Field(min_length=1)
    reason: str = Field(min_length=1)


class LevelRequest(BaseModel):
    actor: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    to_level: str | None = None  # default: one level up (escalate) or down (de-escalate)


class RenewRequest(BaseModel):
    step_id: str
    actor: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    duration: str  # e.g. 24h: the measure now lapses this long from now


class RestoreRequest(BaseModel):
    """A measure whose undo failed for good: take it back again (`by_hand` False: the undo is
    retried on the platform), or record that a person restored the setting there by hand."""

    step_id: str
    actor: str = Field(min_length=1)
    reason: str = Field(min_length=1)
    by_hand: bool = False


class ReviewRequest(BaseModel):
    actor: str = Field(min_length=1)
    note: str = ""


class NoteRequest(BaseModel):
    actor: str = Field(min_length=1)
    text: str = Field(min_length=1)


class IncidentStatus(BaseModel):
    incident_id: str
    state: IncidentState
    playbook: str
    version: int
    playbook_hash: str
    inputs: dict[str, Any]
    triggered_by: str
    triggered_at: str
    level: str | None = None
    levels: list[str] = Field(default_factory=list)
    stand_down: StandDownRequest | None = None
    closed_at: str | None = None
    next_review_due: str | None = None
    reviews_missed: int = 0
    notes: list[Note] = Field(default_factory=list)
    level_history: list[LevelChangeRecord] = Field(default_factory=list)
    runs: int = 1
    steps: list[StepRecord]


class IncidentOutcome(BaseModel):
    """What an incident's last run returns. Kept small: the history stores it once per incident,
    and the full status is the stand-down's answer, a query, and the audit trail."""

    incident_id: str
    state: IncidentState
    closed_at: str | None = None
    steps: dict[str, StepState]  # each step's final state, by id


# Kept as an alias: the first version's status called a step record StepStatus.
StepStatus = StepRecord


class LeverRequest(BaseModel):
    """One call to the platform. `restore` set = put back that state instead of applying."""

    incident_id: str
    step_id: str
    operation: str  # part of the idempotency key: apply-1, undo-1, ...
    lever: str
    args: dict[str, Any]
    restore: dict[str, Any] | None = None
    # notify.send: the template to render and what it may refer to.
    message: MessageTemplate | None = None
    context: dict[str, Any] = Field(default_factory=dict)
    # Interpreter v5: the audit events this call writes once the platform has answered.
    audit: AuditCarry | None = None
    # Events the workflow has yet to write, lent so the call writes them if the platform is slow
    # or fails: the incident board then shows them meanwhile. The workflow writes them anyway.
    lent: AuditBatch | None = None
    # When the workflow made the call (ISO 8601): it is timed from then if it was scheduled anew.
    began: str | None = None

    @property
    def idempotency_key(self) -> str:
        return f"{self.incident_id}/{self.step_id}/{self.operation}"


class LeverOutcome(BaseModel):
    previous: dict[str, Any] | None = None
    elapsed_s: float | None = None  # how long the call took, as the worker measured it
    audit: AuditWritten | None = None  # what it wrote of the events it carried; None: nothing


class ReassertRequest(BaseModel):
    """Sent by an earlier incident (an update): its restore lifted these measures. The later
    incident lifts them (restoring what they replaced), applies the earlier one's restore again
    and puts them back, so what each replaced is right when it is taken back in turn."""

    incident_id: str  # the earlier incident
    step_id: str  # its measure that was taken back
    reason: str  # why it was: "expiry reached", "level is now elevated"
    steps: list[str] = Field(default_factory=list)
    # The earlier measure's restore, as it made it.
    lever: str
    args: dict[str, Any]
    restore: dict[str, Any]
    operation: str  # names the later incident's own call of that restore (its idempotency key)


class LiftedNotice(BaseModel):
    """Sent by an earlier incident (an update) when putting these measures back is left to
    commanders: its restore lifted them, on the settings they share with its measure."""

    incident_id: str  # the earlier incident
    step_id: str  # its measure that was taken back
    reason: str  # why it was: "expiry reached", "level is now elevated"
    steps: list[str]  # the measures of the incident told that the restore lifted
    why: str  # why putting them back is left to commanders


class ReassertLaterRequest(BaseModel):
    """A measure this incident has just taken back (`reassert` without its `steps`), since when
    it was in force, and whether its restore restacked this incident's own later measures."""

    reassert: ReassertRequest
    applied_at: str
    restacked: bool = False
    # This incident's measures still in force as it asks (None in requests from before it):
    # the store may not hold its latest undos yet, and an undone one is over nobody's.
    in_force: list[str] | None = None


class ReassertLaterOutcome(BaseModel):
    told: str | None = None  # the later incident told
    steps: list[str] = Field(default_factory=list)  # its measures on these settings
    refused: bool = False  # it is standing down: its own restore puts this measure's back
    closed: bool = False  # it closed meanwhile: its own restore put this measure's state back
    # Left to commanders: by incident, the measures putting one back would disturb.
    unresolved: dict[str, list[str]] | None = None
    why_unresolved: str | None = None
    # Of those, the measures the restore lifted (on the settings they share with this one's),
    # by incident: each incident was told (LiftedNotice) unless it stands down or has closed.
    lifted: dict[str, list[str]] | None = None
    elapsed_s: float = 0.0


def message_context(
    *,
    incident: dict[str, Any],
    playbook: Playbook,
    inputs: dict[str, Any],
    step: Step,
    measures: list[dict[str, Any]],
    stand_down: StandDownRequest | None,
) -> dict[str, Any]:
    """What a message template may refer to (besides `data`): built here for the workflow and for
    validation's test render alike, so that a template valid at validation renders when sent.

    `incident` has id, level, state, triggered_by, triggered_at, triggered_level (the level it
    was declared at); each measure id, lever, expires_at. templates.yaml documents these names
    for authors.
    """
    return {
        "incident": incident,
        "playbook": {
            "name": playbook.playbook,
            "title": playbook.title,
            "version": playbook.version,
            "owner": playbook.owner,
        },
        "inputs": dict(inputs),
        "step": {"id": step.id, "description": step.description},
        "measures": measures,
        "stand_down": stand_down.model_dump() if stand_down else None,
    }


# Both name models defined after them. IncidentInput must be rebuilt too: left incomplete, every
# workflow run (each with a fresh payload converter) regenerated its whole validation schema.
CarriedState.model_rebuild()
IncidentInput.model_rebuild()

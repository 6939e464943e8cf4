"""What the incident page shows, and which actions it offers to whom.

Every button on the page is one the signed-in principal may press right now; the routes check
again on POST (and the workflow has the last word)."""

from __future__ import annotations

from dataclasses import dataclass, field

from api.auth import Permission, Principal
from engine.incidents import maybe_in_force, unrestored
from engine.report import TimelineEntry
from workflows.incident import Approver, DeliveryRecord, IncidentStatus, StepRecord
from workflows.levers import is_notification


@dataclass(frozen=True)
class PendingApprovalView:
    step: StepRecord
    roles: list[str]
    approvals: list[Approver]
    quorum: int
    role: str | None  # the role the principal would act in; None: they may not
    already_approved: bool

    @property
    def may_decide(self) -> bool:
        return self.role is not None and not self.already_approved


@dataclass(frozen=True)
class StepDeliveries:
    step: StepRecord
    deliveries: list[DeliveryRecord]

    @property
    def failed(self) -> int:
        return sum(1 for delivery in self.deliveries if delivery.state == "failed")


@dataclass(frozen=True)
class Typed:
    """What a commander typed into an action's form that was refused: shown again in that form,
    so a refusal never loses a reason or a note."""

    action: str = ""
    fields: dict[str, str] = field(default_factory=dict)

    def value(self, action: str, name: str, step_id: str | None = None) -> str:
        if action != self.action or (step_id is not None and self.fields.get("step_id") != step_id):
            return ""
        return self.fields.get(name, "")


@dataclass(frozen=True)
class IncidentView:
    status: IncidentStatus
    principal: Principal
    measures: list[StepRecord]  # applied and in force
    lapsed: list[StepRecord]  # undone because their expiry passed
    not_restored: list[StepRecord]  # their undo failed for good: may still be in force
    maybe_in_force: list[StepRecord]  # their apply had no answer: may be in force
    pending: list[PendingApprovalView]
    deliveries: list[StepDeliveries]
    timeline: list[TimelineEntry]
    escalate_to: list[str] = field(default_factory=list)
    de_escalate_to: list[str] = field(default_factory=list)
    can_renew: bool = False
    can_restore: bool = False
    can_review: bool = False
    can_note: bool = False
    can_stand_down: bool = False
    typed: Typed = field(default_factory=Typed)

    @property
    def commands(self) -> bool:
        """Whether the principal may take any of the incident-wide actions."""
        return bool(
            self.escalate_to
            or self.de_escalate_to
            or self.can_review
            or self.can_note
            or self.can_stand_down
        )

    @property
    def failed_deliveries(self) -> int:
        return sum(group.failed for group in self.deliveries)

    @property
    def last_seq(self) -> int:
        return self.timeline[-1].seq if self.timeline else 0


def is_measure(step: StepRecord) -> bool:
    """A lever step that changes the platform (a notification is told, not in force)."""
    return step.kind == "lever" and not is_notification(step.lever)


def incident_view(
    status: IncidentStatus,
    principal: Principal,
    *,
    approval_roles: dict[str, list[str]],
    timeline: list[TimelineEntry],
    typed: Typed | None = None,
) -> IncidentView:
    commands = principal.can(Permission.COMMAND)
    # As the workflow's `_check_open`: nothing but a note once stand-down has begun.
    in_play = status.stand_down is None and status.state not in ("standing_down", "closed")
    pending = []
    for step in status.steps:
        if step.state != "awaiting_approval":
            continue
        roles = approval_roles.get(step.id, [])
        held = [role for role in principal.roles if role in roles]
        pending.append(
            PendingApprovalView(
                step=step,
                roles=roles,
                approvals=step.approvals,
                quorum=step.quorum or 1,
                role=held[0] if held and in_play else None,
                already_approved=any(a.actor == principal.name for a in step.approvals),
            )
        )
    rank = status.levels.index(status.level) if status.level in status.levels else -1
    levels_open = in_play and commands and bool(status.levels)
    return IncidentView(
        status=status,
        principal=principal,
        # Being taken back is still in force until the platform has answered.
        measures=[s for s in status.steps if is_measure(s) and s.state in ("applied", "undoing")],
        lapsed=[s for s in status.steps if is_measure(s) and s.state == "expired"],
        not_restored=unrestored(status),
        maybe_in_force=maybe_in_force(status),
        pending=pending,
        deliveries=[StepDeliveries(s, s.deliveries) for s in status.steps if s.deliveries],
        timeline=timeline,
        escalate_to=status.levels[rank + 1 :] if levels_open else [],
        de_escalate_to=list(reversed(status.levels[:rank])) if levels_open and rank > 0 else [],
        can_renew=in_play and commands,
        can_restore=commands and status.state != "closed",
        can_review=in_play and commands and status.next_review_due is not None,
        can_note=commands and status.state != "closed",
        can_stand_down=commands and status.stand_down is None and status.state != "closed",
        typed=typed or Typed(),
    )

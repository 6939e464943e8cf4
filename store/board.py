"""What the incident board shows of an incident, folded from its audit events.

The board lists every open incident at once; asking each workflow would cost one query per
incident per page load. The audit trail already says everything the board needs, so the store
keeps this summary current as it writes the events (see `audit_store._project`).
"""

from __future__ import annotations

from typing import Any

from workflows.audit import AuditEvent
from workflows.levers import is_notification

# The states of an incident not yet closed.
OPEN_STATES = ["running", "standing_down", "failed"]
# Failed deliveries kept per incident: enough to show, bounded so a flapping channel can't grow
# the row without end.
MAX_FAILED_DELIVERIES = 20


def empty_summary() -> dict[str, Any]:
    return {"pending_approvals": {}, "measures": {}, "review_due": None, "failed_deliveries": []}


def fold(facts: dict[str, Any], event: AuditEvent) -> None:
    """Bring the summary up to date with one more event, in place (the store copies the row's
    summary once per write, not once per event)."""
    data, step = event.data, event.step_id
    pending, measures = facts["pending_approvals"], facts["measures"]
    match event.kind:
        case "incident.triggered":
            facts["review_due"] = data.get("review_due")
        case "approval.requested" if step:
            pending[step] = {
                "roles": data.get("roles", []),
                "quorum": data.get("quorum", 1),
                "deadline": data.get("deadline"),
                "approvals": 0,
                "since": event.at,
            }
        case "approval.given" if step in pending:
            pending[step]["approvals"] = data.get("count", pending[step]["approvals"] + 1)
        case "approval.granted" | "approval.rejected":
            pending.pop(step, None)
        case "approval.timed_out" if data.get("on_timeout") != "escalate":
            pending.pop(step, None)  # escalate keeps waiting for the same approval
        case "step.applied" if step and not is_notification(data.get("lever")):
            measures[step] = {"lever": data.get("lever"), "expires_at": data.get("expires_at")}
        case "step.failed" if step and data.get("unanswered"):
            # Its apply had no answer: the platform may have applied it (a stand-down learns).
            measures[step] = {"lever": data.get("lever"), "expires_at": None, "uncertain": True}
        case "overlap.left_lifted":
            for lifted in data.get("steps", []):
                if lifted in measures:
                    measures[lifted]["lifted_by"] = data.get("by")
            _settle_no_answer(measures, data)
        case "overlap.lifted":
            _settle_no_answer(measures, data)
        case "measure.renewed" if step in measures:
            measures[step]["expires_at"] = data.get("until")
        case "step.expired" | "step.undone" | "step.withdrawn" | "step.restored_by_hand":
            measures.pop(step, None)
        case "step.undo_failed" if step in measures:
            # Its undo failed for good: it may still be in force on the platform, closed or not.
            measures[step]["not_restored"] = data.get("error") or "undo failed"
            measures[step]["expires_at"] = None  # no lapse takes it back now: a restore does
            facts["not_restored"] = _not_restored(measures)
        case "step.dormant":
            pending.pop(step, None)  # a de-escalation withdrew the request
        case "review.confirmed":
            facts["review_due"] = data.get("next_due")
        case "review.missed":
            facts["review_due"] = data.get("next_due")
        case "notification.failed":
            failed = facts["failed_deliveries"]
            failed.append(
                {
                    "step_id": step,
                    "stakeholder": data.get("stakeholder"),
                    "target": data.get("target"),
                    "error": data.get("error"),
                    "at": event.at,
                }
            )
            del failed[:-MAX_FAILED_DELIVERIES]
        case "stand_down.requested":
            pending.clear()
            facts["review_due"] = None
        case "incident.failed":
            pending.clear()  # an approval still awaited is withdrawn: nothing new starts
        case "incident.closed":
            pending.clear()
            for left in [s for s, m in measures.items() if not m.get("not_restored")]:
                del measures[left]
            for kept in measures.values():
                kept["expires_at"] = None  # nothing lapses after the close: it stays as it is
            facts["review_due"] = None
    settled = (
        "step.applied",
        "step.undone",
        "step.expired",
        "step.withdrawn",
        "step.restored_by_hand",
    )
    if event.kind in settled and facts.get("not_restored"):  # applied again, or taken back
        facts["not_restored"] = _not_restored(measures)


def _settle_no_answer(measures: dict[str, Any], data: dict[str, Any]) -> None:
    """An earlier incident's restore went over these measures whose apply had no answer:
    whatever the calls did is gone from the platform."""
    for step in data.get("no_answer", []):
        measures.pop(step, None)


def _not_restored(measures: dict[str, Any]) -> int:
    """How many measures' undo failed for good: the board shows such an incident as open."""
    return sum(1 for m in measures.values() if m.get("not_restored"))

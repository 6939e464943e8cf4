"""Before a stand-down: measures a later incident holds on the same settings as this one.

Standing this incident down first would put back the setting from before both while the later
incident still counts on its own measure. Commanders are stopped before that happens (they may
insist), and told which incident to stand down first. (A measure that lapses or is withdrawn is
handled in the worker: the later incidents are told to put theirs back, see store.overlaps.)
"""

from __future__ import annotations

import asyncio

from engine.errors import IncidentConflict
from engine.incidents import Incidents
from store.audit_store import AuditStore
from store.board import empty_summary
from store.overlaps import Overlap, later_measures, measures_in


def later_overlaps(store: AuditStore, incident_id: str) -> list[Overlap]:
    """Measures other open incidents applied after ours on the same settings (from the audit
    store alone: the board says what is in force, the trail what each measure changed)."""
    row = store.incident(incident_id)
    if row is None or row.state == "closed":
        return []
    in_force = set((row.summary or empty_summary())["measures"])
    if not in_force:
        return []
    mine = measures_in(store.events(incident_id), in_force)
    return later_measures(store, incident_id, mine) if mine else []


async def refuse_if_later_overlaps(store: AuditStore, incident_id: str) -> None:
    """IncidentConflict naming the later incidents, if standing this one down would lift their
    measures; the commander stands those down first, or insists (force)."""
    overlaps = await asyncio.to_thread(later_overlaps, store, incident_id)
    if overlaps:
        later, what = _held_over(overlaps)
        raise IncidentConflict(
            f"standing {incident_id} down now would lift what other incidents put in force "
            f"after it on the same settings ({what}): stand {_in_order(later)} down first, or "
            "force the stand-down"
        )


async def refuse_restore_if_later_overlaps(
    store: AuditStore, incidents: Incidents, incident_id: str, step_id: str, *, by_hand: bool
) -> None:
    """IncidentConflict, if restoring this measure (whose undo failed) would lift what later
    incidents have put in force on its settings since: its restore puts back what was there
    before it, on the platform by a retry or by a person's hand alike, and the later incidents
    are not told. They are stood down first. (A lapse's, a withdrawal's or a forced
    stand-down's restore hands the settings back to them instead.)"""
    status = await incidents.status(incident_id)
    record = next((s for s in status.steps if s.id == step_id), None)
    if record is None or record.state != "undo_failed":
        return  # the incident refuses it itself, saying why
    failed = record.failed_undo
    if failed is not None and (failed.final_state != "undone" or failed.hand_back):
        return
    overlaps = await asyncio.to_thread(later_overlaps, store, incident_id)
    overlaps = [o for o in overlaps if o.ours.step_id == step_id]
    if overlaps:
        later, what = _held_over(overlaps)
        doing, then = (
            (f"restoring {step_id} by hand now", "then put the setting back and record it")
            if by_hand
            else (f"retrying the undo of {step_id} now", "then retry")
        )
        raise IncidentConflict(
            f"{doing} would lift what other incidents put in force after it on the same "
            f"settings ({what}): stand {_in_order(later)} down first (restore its own measures "
            f"first if it waits for that), {then}"
        )


def _in_order(incidents: list[str]) -> str:
    # Their measures newest first: the order that restores every setting exactly.
    if len(incidents) == 1:
        return incidents[0]
    return " then ".join(incidents) + " (newest measure first)"


def _held_over(overlaps: list[Overlap]) -> tuple[list[str], str]:
    """The later incidents, newest first (the order that restores every setting exactly), and
    what each holds over ours."""
    held: dict[str, list[str]] = {}  # a dict keeps the order incidents are first met in
    for overlap in sorted(overlaps, key=lambda o: o.theirs.applied_at, reverse=True):
        maybe = " (may be in force: its apply had no answer)" if overlap.theirs.uncertain else ""
        held.setdefault(overlap.incident_id, []).append(
            f"{overlap.theirs.lever} {', '.join(sorted(overlap.settings))} over "
            f"{overlap.ours.step_id}{maybe}"
        )
    later = list(held)
    return later, "; ".join(f"{other}: {' and '.join(held[other])}" for other in later)

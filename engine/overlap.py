"""Before a stand-down: measures a later incident holds on the same settings as this one.

Standing this incident down first would put back the setting from before both while the later
incident still counts on its own measure. Commanders are stopped before that happens (they may
insist), and told which incident to stand down first. (A measure that lapses or is withdrawn is
handled in the worker: the later incidents are told to put theirs back, see store.overlaps.)
"""

from __future__ import annotations

import asyncio

from engine.errors import IncidentConflict
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
    if not overlaps:
        return
    # Each later incident with what it holds over ours, newest first (the order that restores
    # every setting exactly): a dict keeps the order incidents are first met in.
    held: dict[str, list[str]] = {}
    for overlap in sorted(overlaps, key=lambda o: o.theirs.applied_at, reverse=True):
        held.setdefault(overlap.incident_id, []).append(
            f"{overlap.theirs.lever} {', '.join(sorted(overlap.settings))} over "
            f"{overlap.ours.step_id}"
        )
    later = list(held)
    what = "; ".join(f"{other}: {' and '.join(held[other])}" for other in later)
    raise IncidentConflict(
        f"standing {incident_id} down now would lift what later incidents put in force on the "
        f"same settings ({what}): stand {' then '.join(later)} down first (newest first), or "
        "force the stand-down"
    )

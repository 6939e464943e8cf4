"""Measures two incidents hold on the same platform settings.

Each incident restores the state its measures replaced. When a later incident changed the same
setting after this one, standing this one down first would put back the setting from before
both while the later incident still counts on its own measure. Commanders are stopped before
that happens (they may insist), and told which incident to stand down first.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from engine.board import board_page
from engine.errors import IncidentConflict
from store.audit_store import AuditStore
from workflows.audit import AuditEvent
from workflows.levers import LEVERS

# Open incidents looked at, newest first: far more than run at once anywhere.
OPEN_INCIDENTS_CHECKED = 200
EVERYTHING = frozenset({"*"})


@dataclass(frozen=True)
class Measure:
    """A measure in force: its lever, the settings it changed, when it was applied."""

    step_id: str
    lever: str
    settings: frozenset[str]
    applied_at: str


@dataclass(frozen=True)
class Overlap:
    """A later incident's measure on settings one of ours changed first."""

    incident_id: str
    theirs: Measure
    ours: Measure
    settings: frozenset[str]


def _measures(events: Iterable[AuditEvent], steps: set[str]) -> list[Measure]:
    """Of `steps` (the board's measures in force), those an undo would restore, with the
    settings each changed (its last `step.started` arguments) and when it was last applied."""
    args: dict[str, dict[str, Any]] = {}
    applied: dict[str, tuple[str, str]] = {}
    for event in events:
        step = event.step_id or ""
        if step not in steps:
            continue
        if event.kind == "step.started":
            args[step] = event.data.get("args") or {}
        elif event.kind == "step.applied":
            applied[step] = (str(event.data.get("lever") or ""), event.at)
    found = []
    for step, (name, at) in applied.items():
        lever = LEVERS.get(name)
        if lever is None or not lever.reversible:
            continue
        try:
            settings = lever.args.model_validate(args.get(step, {})).targets()
        except ValidationError:  # recorded by an older catalogue: assume the worst
            settings = EVERYTHING
        found.append(Measure(step, name, settings, at))
    return found


def _shared(ours: Measure, theirs: Measure) -> frozenset[str]:
    if ours.lever != theirs.lever:
        return frozenset()
    if EVERYTHING & (ours.settings | theirs.settings):
        return ours.settings | theirs.settings
    return ours.settings & theirs.settings


def later_overlaps(store: AuditStore, incident_id: str) -> list[Overlap]:
    """Measures other open incidents applied after ours on the same settings (from the audit
    store alone: the board says what is in force, the trail what each measure changed)."""
    board = {
        e.incident_id: e
        for e in board_page(store, state="open", limit=OPEN_INCIDENTS_CHECKED).items
    }
    entry = board.pop(incident_id, None)
    if entry is None or not entry.measures:
        return []
    mine = _measures(store.events(incident_id), {m.step_id for m in entry.measures})
    levers = {measure.lever for measure in mine}
    found = []
    for other, their_entry in board.items():
        steps = {m.step_id for m in their_entry.measures if m.lever in levers}
        if not steps:
            continue
        for theirs in _measures(store.events(other), steps):
            for ours in mine:
                shared = _shared(ours, theirs)
                if shared and theirs.applied_at > ours.applied_at:
                    found.append(Overlap(other, theirs, ours, shared))
    return found


async def refuse_if_later_overlaps(store: AuditStore, incident_id: str) -> None:
    """IncidentConflict naming the later incidents, if standing this one down would lift their
    measures; the commander stands those down first, or insists (force)."""
    overlaps = await asyncio.to_thread(later_overlaps, store, incident_id)
    if not overlaps:
        return
    first = overlaps[0]
    later = sorted({o.incident_id for o in overlaps})
    raise IncidentConflict(
        f"standing {incident_id} down now would lift what {', '.join(later)} put in force later "
        f"on the same settings ({first.theirs.lever} {', '.join(sorted(first.settings))}, over "
        f"{first.ours.step_id}): stand {' and '.join(later)} down first, or force the stand-down"
    )

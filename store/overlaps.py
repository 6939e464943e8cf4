"""Measures two open incidents hold on the same platform settings, read from the store alone:
an incident's board row says which of its measures are in force, its trail what each changed.

Each incident restores the state its measures replaced. When a later incident changed the same
setting after an earlier one, the earlier one's restore puts back the setting from before both
while the later incident still counts on its own measure. The API asks before a stand-down
(engine.overlap); the worker asks when a measure lapses or is withdrawn, and tells the later
incidents to put theirs back (activities.overlaps).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from store.audit_store import AuditStore
from store.board import OPEN_STATES
from workflows.audit import AuditEvent
from workflows.levers import EVERYTHING, LEVERS, shared_settings

# Open incidents looked at, newest first: far more than run at once anywhere.
OPEN_INCIDENTS_CHECKED = 200


@dataclass(frozen=True)
class Measure:
    """A measure in force: its lever, the settings it changed, when it was applied."""

    step_id: str
    lever: str
    settings: frozenset[str]
    applied_at: str
    uncertain: bool = False  # its apply had no answer: it may be in force


@dataclass(frozen=True)
class Overlap:
    """A later incident's measure on settings one of ours changed first."""

    incident_id: str
    theirs: Measure
    ours: Measure
    settings: frozenset[str]


def settings_changed(lever: str, args: dict[str, Any]) -> frozenset[str]:
    """The settings a call of `lever` with `args` changes (all of them if it cannot tell)."""
    try:
        return LEVERS[lever].args.model_validate(args).targets()
    except (KeyError, ValidationError):  # recorded by an older catalogue: assume the worst
        return EVERYTHING


def measures_in(events: Iterable[AuditEvent], steps: set[str]) -> list[Measure]:
    """Of `steps` (the board's measures in force), those an undo would restore, with the
    settings each changed (its last `step.started` arguments) and when it came into force (its
    last application, not counting one that put it back after another incident lifted it; for
    one whose apply had no answer, when its call began)."""
    args: dict[str, dict[str, Any]] = {}
    began: dict[str, str] = {}
    applied: dict[str, tuple[str, str, bool]] = {}
    for event in events:
        step = event.step_id or ""
        if step not in steps:
            continue
        if event.kind == "step.started":
            args[step], began[step] = event.data.get("args") or {}, event.at
        elif event.kind == "step.applied" and "put_back" not in event.data:
            applied[step] = (str(event.data.get("lever") or ""), event.at, False)
        elif event.kind == "step.failed" and event.data.get("unanswered"):
            # Maybe in force (its apply had no answer): since its call began, at the earliest.
            applied[step] = (str(event.data.get("lever") or ""), began.get(step, event.at), True)
    found = []
    for step, (name, at, uncertain) in applied.items():
        lever = LEVERS.get(name)
        if lever is None or not lever.reversible:
            continue
        changed = settings_changed(name, args.get(step, {}))
        found.append(Measure(step, name, changed, at, uncertain))
    return found


def _shared(ours: Measure, theirs: Measure) -> frozenset[str]:
    if ours.lever != theirs.lever:
        return frozenset()
    return shared_settings(ours.settings, theirs.settings)


def later_measures(store: AuditStore, incident_id: str, mine: list[Measure]) -> list[Overlap]:
    """Measures the other open incidents applied after ours on the same settings."""
    levers = {measure.lever for measure in mine}
    rows = store.search(state=OPEN_STATES, limit=OPEN_INCIDENTS_CHECKED)
    found = []
    for row in rows:
        if row.incident_id == incident_id or not row.summary:
            continue
        steps = {
            step for step, measure in row.summary["measures"].items() if measure["lever"] in levers
        }
        if not steps:
            continue
        for theirs in measures_in(store.events(row.incident_id), steps):
            for ours in mine:
                shared = _shared(ours, theirs)
                if shared and theirs.applied_at > ours.applied_at:
                    found.append(Overlap(row.incident_id, theirs, ours, shared))
    return found


def later_chain(store: AuditStore, incident_id: str, ours: Measure) -> list[Overlap]:
    """The measures later than ours on its settings (direct: `overlap.ours` is ours), then those
    later than each of them on theirs, and so on: everything that taking ours back and putting
    the later ones back again could disturb (our own incident's among them, if reached)."""
    found: list[Overlap] = []
    seen: set[tuple[str, str]] = set()
    frontier = [(incident_id, ours)]
    while frontier:
        owner, measure = frontier.pop()
        for overlap in later_measures(store, owner, [measure]):
            key = (overlap.incident_id, overlap.theirs.step_id)
            if key in seen:
                continue
            seen.add(key)
            found.append(overlap)
            if overlap.incident_id != incident_id:  # ours, reached again: not followed
                frontier.append((overlap.incident_id, overlap.theirs))
    return found

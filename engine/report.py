"""The post-incident report: what happened, how fast, who decided — from the audit trail alone.

`build_report` reads an incident's audit events (nothing else: no workflow query, no platform
state) and derives the facts, a timeline in plain sentences, every interval each measure was in
force, the key figures a regulator asks for, the post-incident review deadline and the integrity
verdict the caller obtained. Renderers turn the report into Markdown, a self-contained HTML page,
JSON, or an SVG Gantt chart (`engine/report_chart.py`).

Definitions used throughout (offsets are seconds from the `incident.triggered` event):

- *measure*: a lever step whose lever is not a notification (`notify.*`); notifications are
  listed separately. A step's lever comes from its `step.*` events, or from the playbook when
  one is given (a step that was rejected or stayed dormant never names its lever).
- *interval*: from a `step.applied` to the step's next `step.undone` / `step.expired` /
  `step.withdrawn`. An interval still open (never undone, or its undo failed) ends at the
  incident's close, or at `now` while the incident is open.
- *full mitigation*: the last *first* application of a step (re-applications excluded) before the
  first level change, stand-down request, failure or close — the moment the playbook's sequence at
  the starting level was entirely in force. Measures added by a later escalation do not move it.
- *regulator notified*: the first `step.applied` of a `notify.*` lever whose arguments (in the
  step's preceding `step.started`) have `to == "regulator"`, before the stand-down request (a
  closing notice is not the regulator being told of the incident).
- *review on time*: a `review.confirmed` (the supervisor records `review.missed` once the due
  time plus grace has passed, so a confirmation is by construction on time).
- *retry*: a step started again after its previous attempt failed; lever-call retries inside one
  attempt are Temporal's and are not in the audit trail. *Re-application*: a step applied again
  after it was undone, lapsed or withdrawn.

The playbook, when given, supplies only the post-incident review period and owner (default 14d,
the playbook's owner), the order of its levels, and the levers of steps that never started.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal

from jinja2 import Environment
from markupsafe import Markup
from pydantic import BaseModel, Field

from core.timestamps import as_utc, parse_utc
from engine.report_chart import chart_filename, human_duration, offset_label, render_chart_svg
from workflows.audit import AuditEvent
from workflows.durations import parse_duration
from workflows.levers import is_notification
from workflows.playbook import Playbook, describe_approval

__all__ = [
    "IncidentReport",
    "build_report",
    "chart_filename",
    "render_chart_svg",
    "render_html",
    "render_json",
    "render_markdown",
]

SYSTEM = "system"
DEFAULT_REVIEW_WITHIN = "14d"
NOT_CHECKED = "not checked"

# Events a commander causes; their actors are the commanders.
COMMANDER_KINDS = frozenset(
    {
        "incident.triggered",
        "level.escalated",
        "level.de_escalated",
        "measure.renewed",
        "review.confirmed",
        "note.added",
        "stand_down.requested",
    }
)
# Events an approver causes: someone who only approved did not lead the incident.
APPROVER_KINDS = frozenset({"approval.given", "approval.rejected"})
# Events that end the playbook's initial sequence for the "full mitigation" figure.
SEQUENCE_ENDS = frozenset(
    {
        "level.escalated",
        "level.de_escalated",
        "stand_down.requested",
        "incident.failed",
        "incident.closed",
    }
)

# As `crisis status` and the board name them.
# Events that end a measure's time in force.
TAKEN_OFF = ("step.undone", "step.expired", "step.withdrawn", "step.restored_by_hand")
IncidentStateName = Literal["running", "failed", "standing_down", "closed"]
EndKind = Literal[
    "undone_at_stand_down",
    "undone",
    "expired",
    "withdrawn",
    "still_active",
    "undo_failed",
    "restored_by_hand",
    "lifted",
]
Outcome = Literal[EndKind, "not_applied"]
ApprovalOutcome = Literal["granted", "rejected", "timed_out", "withdrawn", "stood_down", "pending"]

END_LABELS: dict[str, str] = {
    "undone_at_stand_down": "undone at stand-down",
    "undone": "undone before stand-down",
    "expired": "expired",
    "withdrawn": "withdrawn on de-escalation",
    "still_active": "still active",
    "undo_failed": "undo failed",
    "restored_by_hand": "restored by hand",
    "lifted": "lifted by another incident",
    "not_applied": "not applied",
}


# --- the report -------------------------------------------------------------------------------
class LevelChange(BaseModel):
    """The incident's level from this moment on, and who set it why."""

    at: str
    offset_seconds: float
    level: str | None
    actor: str | None
    reason: str


class Facts(BaseModel):
    incident_id: str
    playbook: str
    version: int | None
    playbook_hash: str
    inputs: dict[str, Any]
    triggered_by: str | None
    triggered_at: str
    level_at_start: str | None
    levels: list[str]  # least to most severe (the playbook's, else inferred from the events)
    level_history: list[LevelChange]  # starts with the level at trigger
    commanders: list[str]  # distinct people who commanded (triggered, escalated, noted, …)
    approvers: list[str] = Field(default_factory=list)  # who approved or rejected a step
    state: IncidentStateName
    stand_down_requested_at: str | None = None
    stand_down_by: str | None = None
    stand_down_reason: str | None = None
    closed_at: str | None = None
    closed_by: str | None = None
    duration_seconds: float  # trigger to close; to `as_of` while open
    runs: int = 1  # workflow runs (continue-as-new)
    events: int = 0
    last_seq: int = 0


class TimelineEntry(BaseModel):
    seq: int
    at: str
    offset_seconds: float
    kind: str
    step_id: str | None = None
    actor: str | None = None
    text: str


class Interval(BaseModel):
    """One stretch of time a measure was in force."""

    start: str
    end: str  # when it was taken off; for an open interval, close or `as_of`
    start_offset_seconds: float
    end_offset_seconds: float
    seconds: float
    ended: EndKind
    open: bool = False  # never taken off (still active, or its undo failed)


class Renewal(BaseModel):
    at: str
    actor: str | None
    until: str | None
    reason: str
    reapplied: bool = False


class Measure(BaseModel):
    step_id: str
    lever: str | None
    args: dict[str, Any] = Field(default_factory=dict)
    intervals: list[Interval] = Field(default_factory=list)
    active_seconds: float = 0.0
    applications: int = 0
    outcome: Outcome = "not_applied"
    outcome_text: str = "not applied"
    approved_by: list[str] = Field(default_factory=list)
    renewals: list[Renewal] = Field(default_factory=list)


class Notification(BaseModel):
    step_id: str
    lever: str
    to: str | None
    sent_at: str
    offset_seconds: float
    closing_sent_at: str | None = None  # its undo (e.g. "crisis concluded") was sent


class ApprovalVote(BaseModel):
    actor: str | None
    role: str | None
    at: str
    comment: str = ""


class ApprovalRound(BaseModel):
    """One request for approval of a step, from approval.requested to its settlement."""

    step_id: str
    requested_at: str
    requested_offset_seconds: float
    roles: list[str] = Field(default_factory=list)
    quorum: int = 1
    every_role: bool = False  # a holder of each role among the approvers
    deadline: str | None = None
    votes: list[ApprovalVote] = Field(default_factory=list)
    outcome: ApprovalOutcome = "pending"
    settled_at: str | None = None
    wait_seconds: float = 0.0  # requested to settled (to close / `as_of` while pending)
    timeouts: int = 0  # deadlines passed (on_timeout escalate keeps waiting)
    on_timeout: str | None = None
    rejected_by: str | None = None
    reason: str | None = None


class ReviewEntry(BaseModel):
    at: str
    offset_seconds: float
    outcome: Literal["confirmed", "missed"]
    actor: str | None = None
    due: str | None = None  # missed: the due time that passed
    next_due: str | None = None  # confirmed: the next one
    on_missed: str | None = None
    note: str = ""


class NoteEntry(BaseModel):
    at: str
    offset_seconds: float
    actor: str | None
    text: str


class KeyFigures(BaseModel):
    """Durations in seconds from the trigger; None = it did not happen."""

    to_first_lever: float | None = None
    to_first_measure: float | None = None  # first non-notification lever
    to_regulator_notified: float | None = None
    to_full_mitigation: float | None = None
    # Steps of the initial sequence still awaiting approval when it ended (or now): full
    # mitigation was not reached, whatever else was in force.
    full_mitigation_awaiting: list[str] = Field(default_factory=list)
    # The step whose failure ended the initial sequence: the rest of it never ran.
    full_mitigation_failed: str | None = None
    to_stand_down: float | None = None
    measures_active_seconds: float = 0.0
    longest_approval_wait_seconds: float | None = None
    approvals_granted: int = 0
    approvals_rejected: int = 0
    approvals_timed_out: int = 0
    reviews_on_time: int = 0
    reviews_missed: int = 0
    step_failures: int = 0
    undo_failures: int = 0
    incident_failed: bool = False
    retries: int = 0
    reapplications: int = 0
    renewals: int = 0


class PostIncidentReview(BaseModel):
    due_within: str
    owner: str
    due_at: str | None  # None while the incident is open
    status: Literal["pending", "due", "overdue"]
    remaining_seconds: float | None = None  # negative once overdue


class IncidentReport(BaseModel):
    as_of: str
    facts: Facts
    key_figures: KeyFigures
    measures: list[Measure]
    notifications: list[Notification]
    approvals: list[ApprovalRound]
    reviews: list[ReviewEntry]
    notes: list[NoteEntry]
    timeline: list[TimelineEntry]
    post_incident_review: PostIncidentReview
    integrity: dict[str, Any] | Literal["not checked"] = NOT_CHECKED

    def integrity_failed(self) -> str | None:
        """The checks the record failed, in one line (None: none failed, or none was made):
        every rendering says it first, since the facts then come from a record that lies."""
        if not isinstance(self.integrity, dict):
            return None
        failed = [
            f"{check}: {verdict}"
            for check, verdict in self.integrity.items()
            if isinstance(verdict, str) and verdict.startswith("FAILED")
        ]
        return "; ".join(failed) or None

    def integrity_banner(self) -> str | None:
        """What every rendering opens with when the record does not verify."""
        if (failed := self.integrity_failed()) is None:
            return None
        return (
            f"INTEGRITY FAILED: this audit record does not verify ({failed}); the facts below "
            "come from it and may be false"
        )


# --- building it ------------------------------------------------------------------------------
def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat()


def _clock(text: str | None, reference: str) -> str:
    """`HH:MM` (UTC; seconds when not zero), with the date when it is not `reference`'s."""
    if not text:
        return "?"
    moment, ref = parse_utc(text).astimezone(UTC), parse_utc(reference).astimezone(UTC)
    clock = f"{moment:%H:%M}" + (f":{moment:%S}" if moment.second else "")
    return clock if moment.date() == ref.date() else f"{moment:%Y-%m-%d} {clock}"


def _playbook_levers(playbook: Playbook | None) -> dict[str, str]:
    return {step.id: step.do for step in playbook.lever_steps()} if playbook else {}


class _Builder:
    """One pass over the events, in order; keeps what later sentences and figures need."""

    def __init__(self, events: list[AuditEvent], playbook: Playbook | None, now: datetime) -> None:
        self.events = events
        self.playbook = playbook
        self.now = now
        first = next(e for e in events if e.kind == "incident.triggered")
        self.t0 = parse_utc(first.at)
        self.trigger = first
        self.levers: dict[str, str] = {}  # step -> the lever it applies
        self.args: dict[str, dict[str, Any]] = {}
        self.quorum: dict[str, int] = {}
        self.level: str | None = first.data.get("level")
        self.levels: list[str] = [self.level] if self.level is not None else []
        self.stand_down_at: str | None = None
        self.closed_at: str | None = None
        self.step_order: list[str] = []
        self.applied: dict[str, list[dict[str, Any]]] = {}  # step -> interval drafts
        self.open_rounds: dict[str, ApprovalRound] = {}
        self.rounds: list[ApprovalRound] = []
        self.last_failure: dict[str, str] = {}  # step -> why it did not run / failed
        self.began: dict[str, str] = {}  # step -> when its latest call began (step.started)
        self.renewals: dict[str, list[Renewal]] = {}
        # Every send, in order (a notification re-sent at a level reached again is a row again),
        # and by step the one whose closing message is still to come.
        self.notifications: list[Notification] = []
        self.open_notifications: dict[str, Notification] = {}
        self.figures = KeyFigures()
        self.ever_applied: set[str] = set()
        self.sequence_open = True
        self.full_mitigation: float | None = None

    def offset(self, at: str) -> float:
        return (parse_utc(at) - self.t0).total_seconds()

    def describe(self, event: AuditEvent) -> str:
        return _describe(event, self)

    # The state changes; sentences are written before them (they describe what was known then)
    # except where noted.
    def absorb(self, event: AuditEvent) -> None:
        kind, step, data = event.kind, event.step_id, event.data
        if step is not None and step not in self.step_order:
            self.step_order.append(step)
        if kind in SEQUENCE_ENDS and self.sequence_open:
            if kind == "incident.failed":
                self.figures.full_mitigation_failed = step or "a step"
            self.sequence_open = False
            self.figures.full_mitigation_awaiting = sorted(self.open_rounds)
        if kind == "step.started" and step:
            self.began[step] = event.at
            if self.last_failure.get(step, "").startswith("failed"):
                self.figures.retries += 1
            self.levers[step] = data.get("lever") or self.levers.get(step, "")
            self.args[step] = dict(data.get("args") or {})
        elif kind == "step.applied" and step:
            self.levers[step] = data.get("lever") or self.levers.get(step, "")
            self._applied(event, step)
        elif kind == "step.failed" and step:
            self.levers.setdefault(step, data.get("lever") or "")
            self.figures.step_failures += 1
            self.last_failure[step] = f"failed: {data.get('error') or 'unknown error'}"
        elif kind in TAKEN_OFF and step:
            self._taken_off(event, step)
        elif kind == "overlap.left_lifted":
            # Another incident's restore lifted them and putting them back was left to
            # commanders: they no longer held on the settings they shared with its measure.
            for lifted in data.get("steps") or []:
                for draft in self.applied.get(lifted, []):
                    if draft["end"] is None:
                        draft.update(end=event.at, ended="lifted", undo_failed=None)
                        draft["by"] = data.get("by")
        elif kind == "step.undo_failed" and step:
            self.figures.undo_failures += 1
            for draft in self.applied.get(step, []):
                if draft["end"] is None:
                    draft["undo_failed"] = data.get("error") or "unknown error"
        elif kind == "step.dormant" and step:
            self.last_failure[step] = f"dormant: {_held_back(data)}"
            self._settle(step, "withdrawn", event)
        elif kind == "step.waiting" and step:
            self.last_failure[step] = _waiting(data)
        elif kind == "approval.requested" and step:
            self.quorum[step] = int(data.get("quorum") or 1)
            round_ = ApprovalRound(
                step_id=step,
                requested_at=event.at,
                requested_offset_seconds=self.offset(event.at),
                roles=list(data.get("roles") or []),
                quorum=self.quorum[step],
                every_role=bool(data.get("every_role")),
                deadline=data.get("deadline"),
            )
            self.rounds.append(round_)
            self.open_rounds[step] = round_
        elif kind == "approval.given" and step and step in self.open_rounds:
            self.open_rounds[step].votes.append(
                ApprovalVote(
                    actor=event.actor,
                    role=data.get("role"),
                    at=event.at,
                    comment=data.get("comment") or "",
                )
            )
        elif kind == "approval.granted" and step:
            self.figures.approvals_granted += 1
            self._settle(step, "granted", event)
        elif kind == "approval.rejected" and step:
            self.figures.approvals_rejected += 1
            round_ = self._settle(step, "rejected", event)
            if round_ is not None:
                round_.rejected_by, round_.reason = event.actor, data.get("reason")
            self.last_failure[step] = (
                f"rejected by {event.actor or 'someone'}: {data.get('reason') or 'no reason'}"
            )
        elif kind == "approval.timed_out" and step:
            self.figures.approvals_timed_out += 1
            on_timeout = data.get("on_timeout")
            round_ = self.open_rounds.get(step)
            if round_ is not None:
                round_.timeouts += 1
                round_.on_timeout = on_timeout
            if on_timeout != "escalate":  # escalate keeps waiting for a new period
                self._settle(step, "timed_out", event)
                if on_timeout != "proceed":
                    self.last_failure[step] = f"approval timed out ({on_timeout})"
                if on_timeout == "fail":  # the step fails (and the incident), with no step.failed
                    self.figures.step_failures += 1
        elif kind in ("level.escalated", "level.de_escalated"):
            self._level_change(kind, data.get("level"))
        elif kind == "measure.renewed" and step:
            self.figures.renewals += 1
            self.renewals.setdefault(step, []).append(
                Renewal(
                    at=event.at,
                    actor=event.actor,
                    until=data.get("until"),
                    reason=data.get("reason") or "",
                    reapplied=bool(data.get("reapply")),
                )
            )
        elif kind == "review.confirmed":
            self.figures.reviews_on_time += 1
        elif kind == "review.missed":
            self.figures.reviews_missed += 1
        elif kind == "stand_down.requested":
            if self.stand_down_at is None:
                self.stand_down_at = event.at
                self.figures.to_stand_down = self.offset(event.at)
            for open_step in list(self.open_rounds):
                self._settle(open_step, "stood_down", event)
        elif kind == "incident.failed":
            self.figures.incident_failed = True
        elif kind == "incident.closed":
            self.closed_at = event.at

    def _applied(self, event: AuditEvent, step: str) -> None:
        lever, offset = self.levers.get(step), self.offset(event.at)
        first_time = step not in self.ever_applied
        if not first_time:
            self.figures.reapplications += 1
        self.ever_applied.add(step)
        if self.figures.to_first_lever is None:
            self.figures.to_first_lever = offset
        if is_notification(lever):
            to = self.args.get(step, {}).get("to")
            told = to == "regulator" and self.stand_down_at is None
            if told and self.figures.to_regulator_notified is None:
                self.figures.to_regulator_notified = offset
            note = Notification(
                step_id=step, lever=lever or "", to=to, sent_at=event.at, offset_seconds=offset
            )
            self.notifications.append(note)
            self.open_notifications[step] = note
        else:
            if self.figures.to_first_measure is None:
                self.figures.to_first_measure = offset
            self.applied.setdefault(step, []).append(
                {"start": event.at, "end": None, "ended": None, "undo_failed": None}
            )
        if first_time and self.sequence_open:
            self.full_mitigation = offset
        self.last_failure.pop(step, None)

    def _taken_off(self, event: AuditEvent, step: str) -> None:
        if event.kind == "step.restored_by_hand":
            ended = "restored_by_hand"
        elif event.kind == "step.undone":
            ended = "undone_at_stand_down" if self.stand_down_at else "undone"
        else:
            ended = "expired" if event.kind == "step.expired" else "withdrawn"
        note = self.open_notifications.pop(step, None)
        if note is not None:
            note.closing_sent_at = event.at
        drafts = self.applied.get(step, [])
        for draft in drafts:
            if draft["end"] is None:
                draft["end"], draft["ended"], draft["undo_failed"] = event.at, ended, None
                draft["reason"] = event.data.get("reason") or ""
                draft["by"] = event.actor
        if drafts and drafts[-1]["ended"] == "lifted" and "then" not in drafts[-1]:
            drafts[-1]["then"] = ended  # taken back after it was lifted: said after the lift

    def _settle(self, step: str, outcome: str, event: AuditEvent) -> ApprovalRound | None:
        round_ = self.open_rounds.pop(step, None)
        if round_ is not None:
            round_.outcome = outcome  # type: ignore[assignment]
            round_.settled_at = event.at
            round_.wait_seconds = (
                parse_utc(event.at) - parse_utc(round_.requested_at)
            ).total_seconds()
        return round_

    def _level_change(self, kind: str, level: str | None) -> None:
        if level is not None and level not in self.levels:
            # Without the playbook the order is inferred: a level reached by escalation sits just
            # above the one it left, one reached by de-escalation just below.
            here = self.levels.index(self.level) if self.level in self.levels else -1
            at = here + 1 if kind == "level.escalated" else max(here, 0)
            self.levels.insert(at, level)
        self.level = level

    # --- after the pass -------------------------------------------------------------------
    def end_of_report(self) -> str:
        return self.closed_at or _iso(max(self.now, self.t0))

    def measures(self) -> list[Measure]:
        known = _playbook_levers(self.playbook)
        round_steps = {r.step_id for r in self.rounds}
        found: list[Measure] = []
        for step in self.step_order:
            lever = self.levers.get(step) or known.get(step)
            if is_notification(lever) or (not lever and step not in round_steps):
                continue
            found.append(self._measure(step, lever or None))
        return found

    def _measure(self, step: str, lever: str | None) -> Measure:
        end_of_report = self.end_of_report()
        intervals: list[Interval] = []
        for draft in self.applied.get(step, []):
            start = draft["start"]
            if draft["end"] is None:
                end, ended, still_open = (
                    # Its undo failed: it may be in force still, after the close too.
                    (_iso(max(self.now, self.t0)), "undo_failed", True)
                    if draft["undo_failed"]
                    else (end_of_report, "still_active", True)
                )
                if parse_utc(end) < parse_utc(start):
                    end = start
            else:
                end, ended, still_open = draft["end"], draft["ended"], False
            intervals.append(
                Interval(
                    start=start,
                    end=end,
                    start_offset_seconds=self.offset(start),
                    end_offset_seconds=self.offset(end),
                    seconds=(parse_utc(end) - parse_utc(start)).total_seconds(),
                    ended=ended,
                    open=still_open,
                )
            )
        measure = Measure(
            step_id=step,
            lever=lever,
            args=self.args.get(step, {}),
            intervals=intervals,
            active_seconds=sum(i.seconds for i in intervals),
            applications=len(intervals),
            approved_by=[
                v.actor or "?"
                for r in self.rounds
                if r.step_id == step and r.outcome == "granted"
                for v in r.votes
            ],
            renewals=self.renewals.get(step, []),
        )
        if intervals:
            last, drafts = intervals[-1], self.applied[step]
            measure.outcome = last.ended
            text = END_LABELS[last.ended]
            if last.ended == "expired":
                text = f"expired at {_clock(last.end, self.trigger.at)}"
            elif last.ended == "withdrawn" and drafts[-1].get("reason"):
                text += f" ({drafts[-1]['reason']})"
            elif last.ended == "restored_by_hand":
                by = drafts[-1].get("by") or "someone"
                text = f"undo failed; restored by hand ({by}): {drafts[-1].get('reason') or ''}"
            elif last.ended == "lifted":
                text = (
                    f"lifted by {drafts[-1].get('by') or 'another incident'}'s restore at "
                    f"{_clock(last.end, self.trigger.at)} (left to commanders)"
                )
                if then := drafts[-1].get("then"):
                    text += f", then {END_LABELS[then]}"
            elif last.ended == "undo_failed":
                text = f"undo failed: {drafts[-1]['undo_failed']} — may still be in force"
            elif last.ended == "still_active" and self.closed_at:
                text = "still active after close"
            measure.outcome_text = text
        else:
            why = self.last_failure.get(step)
            if why is None and self.figures.full_mitigation_failed:
                why = f"the incident failed at {self.figures.full_mitigation_failed} before it ran"
            elif why is None and self.stand_down_at:
                why = "not run before stand-down"
            measure.outcome_text = f"not applied: {why}" if why else "not applied"
        return measure

    def finish_rounds(self) -> None:
        end = self.end_of_report()
        for round_ in self.open_rounds.values():
            round_.wait_seconds = max(
                0.0, (parse_utc(end) - parse_utc(round_.requested_at)).total_seconds()
            )


def build_report(
    events: Iterable[AuditEvent | dict[str, Any]],
    *,
    playbook: Playbook | None = None,
    integrity: dict[str, Any] | None = None,
    now: datetime | None = None,
) -> IncidentReport:
    """The post-incident report of one incident, from its audit events (in any order)."""
    ordered = sorted(
        (e if isinstance(e, AuditEvent) else AuditEvent.model_validate(e) for e in events),
        key=lambda e: e.seq,
    )
    if not ordered:
        raise ValueError("no audit events: nothing to report")
    incidents = {e.incident_id for e in ordered}
    if len(incidents) > 1:
        raise ValueError(f"events of several incidents: {', '.join(sorted(incidents))}")
    # Normally the first; an action that reached an incident before its first workflow task
    # was recorded ahead of it until the patch `actions-recorded-after-the-trigger`.
    if not any(e.kind == "incident.triggered" for e in ordered):
        raise ValueError(
            f"the trail of {ordered[0].incident_id} has no incident.triggered: it is incomplete"
        )
    now = now or datetime.now(UTC)
    now = as_utc(now)

    builder = _Builder(ordered, playbook, now)
    timeline: list[TimelineEntry] = []
    reviews: list[ReviewEntry] = []
    notes: list[NoteEntry] = []
    history: list[LevelChange] = []
    commanders: list[str] = []
    approvers: list[str] = []
    runs = 1
    trigger = builder.trigger
    for event in ordered:
        offset = builder.offset(event.at)
        timeline.append(
            TimelineEntry(
                seq=event.seq,
                at=event.at,
                offset_seconds=offset,
                kind=event.kind,
                step_id=event.step_id,
                actor=event.actor,
                text=builder.describe(event),
            )
        )
        builder.absorb(event)
        people = (
            commanders
            if event.kind in COMMANDER_KINDS
            else approvers
            if event.kind in APPROVER_KINDS
            else None
        )
        actor = event.actor
        if people is not None and actor and actor != SYSTEM and actor not in people:
            people.append(actor)
        data = event.data
        if event.kind == "incident.triggered":
            history.append(
                LevelChange(
                    at=event.at,
                    offset_seconds=offset,
                    level=data.get("level"),
                    actor=event.actor,
                    reason="triggered",
                )
            )
        elif event.kind in ("level.escalated", "level.de_escalated"):
            history.append(
                LevelChange(
                    at=event.at,
                    offset_seconds=offset,
                    level=data.get("level"),
                    actor=event.actor,
                    reason=data.get("reason") or "",
                )
            )
        elif event.kind == "review.confirmed":
            reviews.append(
                ReviewEntry(
                    at=event.at,
                    offset_seconds=offset,
                    outcome="confirmed",
                    actor=event.actor,
                    next_due=data.get("next_due"),
                    note=data.get("note") or "",
                )
            )
        elif event.kind == "review.missed":
            reviews.append(
                ReviewEntry(
                    at=event.at,
                    offset_seconds=offset,
                    outcome="missed",
                    due=data.get("due"),
                    on_missed=data.get("on_missed"),
                )
            )
        elif event.kind == "note.added":
            notes.append(
                NoteEntry(
                    at=event.at, offset_seconds=offset, actor=event.actor, text=data.get("text", "")
                )
            )
        elif event.kind == "incident.continued":
            runs += 1
    builder.finish_rounds()

    stand_down = next((e for e in ordered if e.kind == "stand_down.requested"), None)
    closed = next((e for e in ordered if e.kind == "incident.closed"), None)
    state: IncidentStateName = (
        "closed"
        if closed
        else "standing_down"
        if stand_down
        else "failed"
        if builder.figures.incident_failed
        else "running"
    )
    end_of_report = builder.end_of_report()
    levels = list(playbook.levels) if playbook and playbook.levels else builder.levels
    facts = Facts(
        incident_id=trigger.incident_id,
        playbook=str(trigger.data.get("playbook", "")),
        version=trigger.data.get("version"),
        playbook_hash=str(trigger.data.get("playbook_hash", "")),
        inputs=dict(trigger.data.get("inputs") or {}),
        triggered_by=trigger.actor,
        triggered_at=trigger.at,
        level_at_start=trigger.data.get("level"),
        levels=levels,
        level_history=history,
        commanders=commanders,
        approvers=approvers,
        state=state,
        stand_down_requested_at=stand_down.at if stand_down else None,
        stand_down_by=stand_down.actor if stand_down else None,
        stand_down_reason=stand_down.data.get("reason") if stand_down else None,
        closed_at=closed.at if closed else None,
        closed_by=closed.actor if closed else None,
        duration_seconds=max(0.0, builder.offset(end_of_report)),
        runs=runs,
        events=len(ordered),
        last_seq=ordered[-1].seq,
    )

    measures = builder.measures()
    figures = builder.figures
    if builder.sequence_open:  # still running its first level: what is awaited now
        figures.full_mitigation_awaiting = sorted(builder.open_rounds)
    reached = not figures.full_mitigation_awaiting and not figures.full_mitigation_failed
    figures.to_full_mitigation = builder.full_mitigation if reached else None
    figures.measures_active_seconds = sum(m.active_seconds for m in measures)
    settled = [r.wait_seconds for r in builder.rounds if r.outcome != "pending"]
    figures.longest_approval_wait_seconds = max(settled) if settled else None

    return IncidentReport(
        as_of=_iso(now),
        facts=facts,
        key_figures=figures,
        measures=measures,
        notifications=builder.notifications,
        approvals=builder.rounds,
        reviews=reviews,
        notes=notes,
        timeline=timeline,
        post_incident_review=_post_incident_review(playbook, facts.closed_at, now),
        integrity=dict(integrity) if integrity is not None else NOT_CHECKED,
    )


def _post_incident_review(
    playbook: Playbook | None, closed_at: str | None, now: datetime
) -> PostIncidentReview:
    spec = playbook.post_incident_review if playbook else None
    due_within = spec.due_within if spec else DEFAULT_REVIEW_WITHIN
    owner = (spec.owner if spec and spec.owner else "") or (playbook.owner if playbook else "")
    if closed_at is None:
        return PostIncidentReview(due_within=due_within, owner=owner, due_at=None, status="pending")
    due = parse_utc(closed_at) + parse_duration(due_within)
    remaining = (due - now).total_seconds()
    return PostIncidentReview(
        due_within=due_within,
        owner=owner,
        due_at=_iso(due),
        status="due" if remaining >= 0 else "overdue",
        remaining_seconds=remaining,
    )


# --- sentences --------------------------------------------------------------------------------
def _who(actor: str | None) -> str:
    return actor or "someone"


def _describe(event: AuditEvent, ctx: _Builder) -> str:
    """One plain sentence for a timeline row, from the event and what came before it."""
    kind, step, data, actor = event.kind, event.step_id or "?", event.data, event.actor
    ref = ctx.trigger.at
    lever = data.get("lever") or ctx.levers.get(step)
    notify = is_notification(ctx.levers.get(step) or lever)
    if kind == "incident.triggered":
        level = data.get("level")
        return (
            f"{_who(actor)} triggered {data.get('playbook', '?')} v{data.get('version', '?')}"
            + (f" at level {level}" if level else "")
        )
    if kind == "incident.continued":
        return f"the incident carried on in a fresh workflow run (run {data.get('run', '?')})"
    if kind == "step.started":
        args = data.get("args") or {}
        again = " again" if step in ctx.ever_applied else ""
        if is_notification(lever):
            return f"sending {step}{again} ({lever} to {args.get('to', '?')})"
        return f"starting {step}{again} ({lever})"
    if kind == "step.applied":
        if notify:
            return f"{ctx.args.get(step, {}).get('to', '?')} notified ({step}, {lever})"
        if data.get("after_failure"):  # its apply had no answer: asked again at stand-down
            return (
                f"measure {step} in force ({lever}): its apply had had no answer; sent again, "
                "the platform said what it replaced (it may have held since the call began)"
            )
        lapses = data.get("expires_at")
        return f"measure {step} in force ({lever})" + (
            f", lapses at {_clock(lapses, ref)}" if lapses else ""
        )
    if kind == "step.failed":
        tried = _tried(data.get("attempts"), ctx.began.get(step or ""), event.at)
        return f"{step} failed ({lever}){tried}: {data.get('error') or 'unknown error'}"
    if kind == "notification.delivered":
        return (
            f"{data.get('stakeholder', '?')} told via {data.get('target', '?')} ({step}; "
            f"message id {data.get('message_id', '?')})"
        )
    if kind == "notification.failed":
        return (
            f"delivery to {data.get('stakeholder', '?')} via {data.get('target', '?')} FAILED "
            f"({step}): {data.get('error') or 'unknown error'}"
        )
    if kind == "step.undone":
        if notify:
            return f"closing message for {step} sent ({lever})"
        when = " at stand-down" if ctx.stand_down_at else ""
        # `restored` is kept even when None: an explicit undo call, not a restore.
        how = f" by its undo call ({lever})" if data.get("restored", {}) is None else ""
        reason = data.get("reason")
        return f"measure {step} undone{when}{how}" + (f" ({reason})" if reason else "")
    if kind == "step.expired":
        return f"measure {step} lapsed"
    if kind == "step.withdrawn":
        reason = data.get("reason")
        what = f"measure {step} withdrawn"
        if notify:
            what = f"message withdrawing {step} sent ({lever})"
        return what + (f" ({reason})" if reason else "")
    if kind == "step.undo_failed":
        error = data.get("error") or "unknown error"
        if notify:  # a message not delivered: nothing of it is left in force
            return f"closing message for {step} NOT delivered ({lever}): {error}"
        return f"undo of {step} failed: {error} — it may still be in force"
    if kind == "undo.retried":
        return f"{_who(actor)} retried the undo of {step}: {data.get('reason') or ''}"
    if kind == "step.restored_by_hand":
        return (
            f"{_who(actor)} recorded {step} restored by hand on the platform: "
            f"{data.get('reason') or ''}"
        )
    if kind == "step.dormant":
        return f"{step} held back: {_held_back(data)}"
    if kind == "step.waiting":
        return f"{step} {_waiting(data)}"
    if kind == "approval.requested":
        who = describe_approval(
            data.get("roles") or ["?"], data.get("quorum", 1), bool(data.get("every_role"))
        )
        return f"{step} needs approval by {who} (deadline {_clock(data.get('deadline'), ref)})"
    if kind == "approval.given":
        quorum = ctx.quorum.get(step)
        count = data.get("count")
        tally = f" ({count} of {quorum})" if count is not None and quorum else ""
        return f"{_who(actor)} approved {step} as {data.get('role', '?')}{tally}"
    if kind == "approval.granted":
        approvers = data.get("approvers") or []
        return f"{step} approved" + (f" by {_and(approvers)}" if approvers else "")
    if kind == "approval.rejected":
        return (
            f"{_who(actor)} rejected {step} as {data.get('role', '?')}: "
            f"{data.get('reason') or 'no reason given'}"
        )
    if kind == "approval.timed_out":
        if "deadline" in data:  # on_timeout: escalate, since interpreter v7
            again = f"approval asked again until {_clock(data['deadline'], ref)}"
            escalates_to = data.get("escalates_to")
            if escalates_to:
                return f"approval of {step} timed out: escalating to {escalates_to}; {again}"
            return (
                f"approval of {step} timed out: already at the highest level, which stays; {again}"
            )
        return f"approval of {step} timed out (on timeout: {data.get('on_timeout', '?')})"
    if kind in ("level.escalated", "level.de_escalated"):
        verb = "escalated" if kind == "level.escalated" else "de-escalated"
        reason = data.get("reason")
        who = f"{actor} {verb}" if actor and actor != SYSTEM else f"automatically {verb}"
        return f"{who} to {data.get('level')}" + (f": {reason}" if reason else "")
    if kind == "measure.renewed":
        reason = data.get("reason")
        text = f"{_who(actor)} renewed {step} until {_clock(data.get('until'), ref)}"
        if data.get("reapply"):
            text += " (re-applied after lapsing)"
        return text + (f": {reason}" if reason else "")
    if kind == "review.confirmed":
        note = data.get("note")
        return (
            f"{_who(actor)} confirmed the measures are still needed"
            f" (next review due {_clock(data.get('next_due'), ref)})"
            + (f": {note}" if note else "")
        )
    if kind == "review.missed":
        text = f"review missed (due {_clock(data.get('due'), ref)})"
        action = data.get("on_missed")
        return text + {"escalate": ", escalating", "stand_down": ", standing down"}.get(
            action or "", ""
        )
    if kind == "note.added":
        return f"{_who(actor)} noted: {data.get('text', '')}"
    if kind == "wait.started":
        return f"{step}: waiting until {_clock(data.get('until'), ref)}"
    if kind == "wait.finished":
        return f"{step}: wait over"
    if kind == "stand_down.requested":
        reason = data.get("reason")
        who = f"{actor} requested" if actor and actor != SYSTEM else "automatic"
        return f"{who} stand-down" + (f": {reason}" if reason else "")
    if kind == "incident.failed":
        return f"incident failed at step {step}"
    if kind == "incident.closed":
        return "incident closed" + (f" (stand-down by {actor})" if actor else "")
    if kind.startswith("overlap."):
        return _overlap_text(kind, step, data)
    return kind + (f" ({step})" if event.step_id else "")


def _overlap_text(kind: str, step: str | None, data: dict[str, Any]) -> str:
    """Events of measures on the same settings as another incident's (README: "Two incidents
    on the same setting")."""
    if kind == "overlap.reasserting":
        told = data.get("incident", "?")
        if data.get("refused") or data.get("closed"):
            return f"{step}'s restore lifted {told}'s measures; it was closing: restoring again"
        return f"{step}'s restore lifted {told}'s measures there: it puts them back"
    if kind == "overlap.lifted":
        lifted = _and(data.get("steps") or []) if data.get("steps") else "nothing in force"
        return (
            f"{data.get('by', '?')} took back {data.get('step', '?')}: lifting {lifted} "
            "to put it back over that restore"
        )
    if kind == "overlap.restored":
        return f"{data.get('incident', '?')}'s restore of {data.get('step', '?')} applied again"
    if kind == "overlap.restore_failed":
        return (
            f"{data.get('incident', '?')}'s restore of {data.get('step', '?')} FAILED: "
            f"{data.get('error') or 'unknown error'}"
        )
    if kind == "overlap.unresolved":
        incidents = ", ".join(sorted(data.get("incidents") or {})) or "?"
        return (
            f"{step}'s restore lifted measures of {incidents}; putting them back is left to "
            f"commanders ({data.get('reason') or 'no reason given'})"
        )
    if kind == "overlap.left_lifted":
        lifted = _and(data.get("steps") or []) if data.get("steps") else "no measure in force"
        return (
            f"{data.get('by', '?')} took back {data.get('step', '?')}, lifting {lifted} where "
            "they overlap; putting it back is left to commanders"
        )
    if kind == "overlap.check_failed":
        return f"looking for later incidents on {step}'s settings failed: {data.get('error')}"
    return kind + (f" ({step})" if step else "")


def _and(names: list[str]) -> str:
    names = [str(n) for n in names]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


# --- JSON -------------------------------------------------------------------------------------
def render_json(report: IncidentReport) -> dict[str, Any]:
    """The report as plain JSON data; `IncidentReport.model_validate` reads it back."""
    return report.model_dump(mode="json")


# --- shared rendering helpers -----------------------------------------------------------------
def _time(text: str | None) -> str:
    """A recorded time as `YYYY-MM-DD HH:MM:SS UTC`."""
    if not text:
        return "—"
    return f"{parse_utc(text).astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def _tried(attempts: int | None, began: str | None, failed: str) -> str:
    """How hard a failed step tried, as far as its events say: " after 2 attempts over 1.9s"."""
    said = []
    if attempts:
        said.append(f"{attempts} attempt{'s' if attempts != 1 else ''}")
    if began is not None:
        took = (parse_utc(failed) - parse_utc(began)).total_seconds()
        said.append(("over " if said else "") + _figure(took))
    return f" after {' '.join(said)}" if said else ""


def _figure(seconds: float | None) -> str:
    """A time from the trigger. Under a minute it keeps its fraction: how fast the first
    measures came is the figure a reader looks for, and "0s" would hide it."""
    if seconds is None:
        return "did not happen"
    if 0 <= seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if 0 <= seconds < 60:
        return f"{seconds:.1f}".removesuffix(".0") + "s"
    return human_duration(seconds)


def _key_figure_rows(report: IncidentReport) -> list[tuple[str, str]]:
    f = report.key_figures
    waits = f.longest_approval_wait_seconds
    return [
        ("Trigger → first lever applied", _figure(f.to_first_lever)),
        ("Trigger → first measure in force", _figure(f.to_first_measure)),
        ("Trigger → regulator notified", _figure(f.to_regulator_notified)),
        (
            "Trigger → full mitigation (initial sequence in force)",
            (
                f"not reached: {', '.join(f.full_mitigation_awaiting)} awaiting approval"
                if f.full_mitigation_awaiting
                else f"not reached: {f.full_mitigation_failed} failed"
                if f.full_mitigation_failed
                else _figure(f.to_full_mitigation)
            ),
        ),
        ("Trigger → stand-down requested", _figure(f.to_stand_down)),
        (
            "Measures' total active time (sum over measures)",
            human_duration(f.measures_active_seconds),
        ),
        ("Longest approval wait", "none" if waits is None else human_duration(waits)),
        (
            "Approvals granted / rejected / timed out",
            f"{f.approvals_granted} / {f.approvals_rejected} / {f.approvals_timed_out}",
        ),
        ("Reviews on time / missed", f"{f.reviews_on_time} / {f.reviews_missed}"),
        ("Renewals", str(f.renewals)),
        (
            "Step failures / undo failures / retries",
            f"{f.step_failures} / {f.undo_failures} / {f.retries}",
        ),
        ("Re-applications", str(f.reapplications)),
        ("Incident failed", "yes" if f.incident_failed else "no"),
    ]


def _integrity_rows(report: IncidentReport) -> list[tuple[str, str]]:
    if not isinstance(report.integrity, dict):
        return [("verdict", NOT_CHECKED)]
    return [
        (str(k), v if isinstance(v, str) else json.dumps(v, ensure_ascii=False))
        for k, v in report.integrity.items()
    ]


def _review_line(report: IncidentReport) -> str:
    pir = report.post_incident_review
    owner = pir.owner or "unassigned"
    if pir.status == "pending":
        return f"due {pir.due_within} after close (incident not closed yet); owner {owner}"
    remaining = pir.remaining_seconds or 0.0
    when = (
        f"{human_duration(remaining)} left"
        if pir.status == "due"
        else f"overdue by {human_duration(-remaining)}"
    )
    return f"due {_time(pir.due_at)} ({when}); owner {owner}"


def _intervals_text(measure: Measure) -> str:
    if not measure.intervals:
        return "never in force"
    return "; ".join(
        f"{offset_label(i.start_offset_seconds)} → {offset_label(i.end_offset_seconds)}"
        + (" (open)" if i.open else "")
        for i in measure.intervals
    )


def _level_history_text(report: IncidentReport) -> str:
    return " → ".join(str(change.level) for change in report.facts.level_history)


# --- Markdown ---------------------------------------------------------------------------------
def _cell(value: Any) -> str:
    """Text for a Markdown table cell: its own pipes and backslashes escaped, and HTML too
    (renderers pass raw HTML through: a note holding a <script> must stay text)."""
    text = _md_text("" if value is None else str(value))
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip() or " "


def _md_text(text: str) -> str:
    """People's words in Markdown: HTML in them stays text (a code span already is). No tag
    or entity starts without `<` or `&`, so `>` stays as typed (conditions read `level >= x`)."""
    if len(text) > 1 and text[0] == text[-1] == "`" and "`" not in text[1:-1]:
        return text
    return text.replace("&", "&amp;").replace("<", "&lt;")


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def render_markdown(report: IncidentReport, chart_path: str | None = None) -> str:
    """The report as Markdown; `chart_path` (written by the caller) is embedded as an image."""
    facts = report.facts
    out: list[str] = [
        f"# Post-incident report: {facts.incident_id}",
        "",
        f"*{facts.playbook} v{facts.version} · {facts.state} · from {facts.events} audit events"
        f" · as of {_time(report.as_of)}*",
        "",
    ]
    if (banner := report.integrity_banner()) is not None:
        out += [f"> **{banner}**", ""]
    if chart_path:
        out += [f"![Measures and level over time for {facts.incident_id}]({chart_path})", ""]
    out += ["## Facts", ""]
    stand_down = (
        f"{_time(facts.stand_down_requested_at)} by {facts.stand_down_by}: "
        f"{facts.stand_down_reason}"
        if facts.stand_down_requested_at
        else "not requested"
    )
    out += _table(
        ["Fact", "Value"],
        [
            ["Incident", facts.incident_id],
            ["Playbook", f"{facts.playbook} v{facts.version}"],
            ["Playbook content hash", f"`{facts.playbook_hash}`"],
            ["Inputs", f"`{json.dumps(facts.inputs, sort_keys=True, ensure_ascii=False)}`"],
            ["Triggered", f"{_time(facts.triggered_at)} by {facts.triggered_by}"],
            ["Level at start", facts.level_at_start or "—"],
            ["Levels over time", _level_history_text(report)],
            ["Commanders", ", ".join(facts.commanders) or "—"],
            ["Approvers", ", ".join(facts.approvers) or "—"],
            ["State", facts.state],
            ["Stand-down", stand_down],
            ["Closed", _time(facts.closed_at) if facts.closed_at else "not closed"],
            [
                "Duration",
                human_duration(facts.duration_seconds) + ("" if facts.closed_at else " so far"),
            ],
            ["Workflow runs", facts.runs],
        ],
    )
    out += ["", "## Key figures", ""]
    out += _table(["Figure", "Value"], [list(row) for row in _key_figure_rows(report)])
    out += ["", "## Integrity", ""]
    out += _table(["Check", "Verdict"], [list(row) for row in _integrity_rows(report)])
    status = report.post_incident_review.status
    out += ["", "## Post-incident review", "", f"**{status}**: {_review_line(report)}", ""]
    out += ["## Levels", ""]
    out += _table(
        ["Offset", "At", "Level", "By", "Reason"],
        [
            [offset_label(c.offset_seconds), _time(c.at), c.level, c.actor, c.reason]
            for c in facts.level_history
        ],
    )
    out += ["", "## Measures", ""]
    out += _table(
        ["Measure", "Lever", "In force (from trigger)", "Active time", "How it ended", "Decided"],
        [
            [
                f"`{m.step_id}`",
                m.lever or "?",
                _intervals_text(m),
                human_duration(m.active_seconds),
                m.outcome_text,
                _decided(m),
            ]
            for m in report.measures
        ],
    )
    if report.notifications:
        out += ["", "## Notifications", ""]
        out += _table(
            ["Step", "To", "Sent", "Offset", "Closing message"],
            [
                [
                    f"`{n.step_id}`",
                    n.to,
                    _time(n.sent_at),
                    offset_label(n.offset_seconds),
                    _time(n.closing_sent_at) if n.closing_sent_at else "—",
                ]
                for n in report.notifications
            ],
        )
    if report.approvals:
        out += ["", "## Approvals", ""]
        out += _table(
            ["Step", "Requested", "Needed", "Given by", "Outcome", "Waited"],
            [[f"`{row[0]}`", *row[1:]] for row in map(_approval_row, report.approvals)],
        )
    if report.reviews:
        out += ["", "## Reviews", ""]
        out += _table(
            ["Offset", "Outcome", "By", "Details"],
            [
                [offset_label(r.offset_seconds), r.outcome, r.actor or "—", _review_details(r)]
                for r in report.reviews
            ],
        )
    if report.notes:
        out += ["", "## Notes", ""]
        out += _table(
            ["Offset", "By", "Note"],
            [[offset_label(n.offset_seconds), n.actor, n.text] for n in report.notes],
        )
    out += ["", "## Timeline", ""]
    out += _table(
        ["#", "Offset", "At (UTC)", "Event", "Step", "Actor", "What happened"],
        [
            [
                e.seq,
                offset_label(e.offset_seconds),
                _time(e.at).removesuffix(" UTC"),
                e.kind,
                f"`{e.step_id}`" if e.step_id else "",
                e.actor or "",
                e.text,
            ]
            for e in report.timeline
        ],
    )
    return "\n".join(out) + "\n"


def _decided(measure: Measure) -> str:
    parts = []
    if measure.approved_by:
        parts.append("approved by " + _and(measure.approved_by))
    for renewal in measure.renewals:
        parts.append(f"renewed by {renewal.actor} ({renewal.reason})")
    return "; ".join(parts) or "—"


def _approval_row(r: ApprovalRound) -> list[Any]:
    given = ", ".join(f"{v.actor} ({v.role})" for v in r.votes) or "—"
    outcome = r.outcome.replace("_", " ")
    if r.outcome == "rejected":
        outcome += f" by {r.rejected_by}: {r.reason}"
    if r.timeouts:
        outcome += f" (deadline passed {r.timeouts} times, on timeout: {r.on_timeout})"
    return [
        r.step_id,
        offset_label(r.requested_offset_seconds),
        describe_approval(r.roles, r.quorum, r.every_role),
        given,
        outcome,
        human_duration(r.wait_seconds),
    ]


def _review_details(r: ReviewEntry) -> str:
    if r.outcome == "missed":
        return f"due {_time(r.due)} passed (then: {r.on_missed})"
    return f"next due {_time(r.next_due)}" + (f"; {r.note}" if r.note else "")


# --- HTML -------------------------------------------------------------------------------------
_HTML = """\
<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Post-incident report {{ f.incident_id }}</title>
<style>
  :root { --ink: #1d2430; --muted: #5b6473; --rule: #d5dae1; --band: #f4f6f8; }
  * { box-sizing: border-box; }
  body { font: 14px/1.45 -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
         color: var(--ink); margin: 0 auto; max-width: 1040px; padding: 24px; }
  h1 { font-size: 24px; margin: 0 0 4px; }
  h2 { font-size: 17px; margin: 28px 0 8px; padding-bottom: 4px;
       border-bottom: 2px solid var(--ink); }
  .sub { color: var(--muted); margin: 0 0 16px; }
  table { border-collapse: collapse; width: 100%; margin: 4px 0 8px; }
  th, td { text-align: left; vertical-align: top; padding: 4px 8px;
           border-bottom: 1px solid var(--rule); }
  th { background: var(--band); font-weight: 600; }
  table.kv th { width: 34%; background: none; font-weight: 500; color: var(--muted); }
  code { font: 12px/1.3 ui-monospace, Menlo, Consolas, monospace; word-break: break-all; }
  .num { white-space: nowrap; font-variant-numeric: tabular-nums; }
  .badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-weight: 600;
           font-size: 12px; border: 1px solid currentColor; }
  .closed, .ok, .due { color: #2e7d32; }
  .open, .running, .standing_down, .pending { color: #8a6d00; }
  .failed, .overdue, .bad { color: #b3261e; }
  .chart { overflow-x: auto; margin: 8px 0; }
  .chart svg { max-width: 100%; height: auto; }
  .grid { display: grid; grid-template-columns: 1fr 1fr; gap: 0 24px; }
  footer { margin-top: 32px; color: var(--muted); font-size: 12px; }
  @media (max-width: 760px) { .grid { grid-template-columns: 1fr; } }
  @page { size: A4; margin: 14mm; }
  @media print {
    body { font-size: 10pt; max-width: none; padding: 0; }
    h2 { break-after: avoid; }
    tr, .chart, table.kv { break-inside: avoid; }
    thead { display: table-header-group; }
    .chart, .badge { -webkit-print-color-adjust: exact; print-color-adjust: exact; }
    a { color: inherit; text-decoration: none; }
  }
  .integrity-failed { border: 2px solid #c0392b; padding: .5em; color: #c0392b; }
</style>
</head>
<body>
<header>
  <h1>Post-incident report: {{ f.incident_id }}</h1>
  <p class="sub">{{ f.playbook }} v{{ f.version }} ·
    <span class="badge {{ f.state }}">{{ f.state }}</span> ·
    from {{ f.events }} audit events · as of {{ time(r.as_of) }}</p>
  {% if integrity_banner %}
  <p class="integrity-failed" role="alert"><strong>{{ integrity_banner }}</strong></p>
  {% endif %}
</header>

<section class="grid">
<div>
<h2>Facts</h2>
<table class="kv">
  <tr><th>Incident</th><td>{{ f.incident_id }}</td></tr>
  <tr><th>Playbook</th><td>{{ f.playbook }} v{{ f.version }}</td></tr>
  <tr><th>Content hash</th><td><code>{{ f.playbook_hash }}</code></td></tr>
  <tr><th>Inputs</th><td><code>{{ inputs }}</code></td></tr>
  <tr><th>Triggered</th><td>{{ time(f.triggered_at) }} by {{ f.triggered_by }}</td></tr>
  <tr><th>Level at start</th><td>{{ f.level_at_start or "—" }}</td></tr>
  <tr><th>Levels over time</th><td>{{ levels }}</td></tr>
  <tr><th>Commanders</th><td>{{ f.commanders | join(", ") or "—" }}</td></tr>
  <tr><th>Approvers</th><td>{{ f.approvers | join(", ") or "—" }}</td></tr>
  <tr><th>Stand-down</th><td>{% if f.stand_down_requested_at -%}
    {{ time(f.stand_down_requested_at) }} by {{ f.stand_down_by }}: {{ f.stand_down_reason }}
    {%- else %}not requested{% endif %}</td></tr>
  <tr><th>Closed</th><td>{{ time(f.closed_at) if f.closed_at else "not closed" }}</td></tr>
  <tr><th>Duration</th>
    <td>{{ dur(f.duration_seconds) }}{{ "" if f.closed_at else " so far" }}</td></tr>
  <tr><th>Workflow runs</th><td>{{ f.runs }}</td></tr>
</table>
</div>
<div>
<h2>Key figures</h2>
<table class="kv">
{% for label, value in figures %}  <tr><th>{{ label }}</th><td class="num">{{ value }}</td></tr>
{% endfor %}</table>
<h2>Integrity</h2>
<table class="kv">
{% for label, value in integrity %}  <tr><th>{{ label }}</th>
    <td class="{{ verdict_class(value) }}">{{ value }}</td></tr>
{% endfor %}</table>
<h2>Post-incident review</h2>
<p><span class="badge {{ r.post_incident_review.status }}">
  {{- r.post_incident_review.status }}</span> {{ review_line }}</p>
</div>
</section>

<section>
<h2>Measures and level over time</h2>
<div class="chart">{{ chart }}</div>
</section>

<section>
<h2>Measures</h2>
<table>
  <thead><tr><th>Measure</th><th>Lever</th><th>In force (from trigger)</th><th>Active time</th>
    <th>How it ended</th><th>Decided</th></tr></thead>
  <tbody>
{% for m in r.measures %}  <tr><td><code>{{ m.step_id }}</code></td><td>{{ m.lever or "?" }}</td>
    <td class="num">{{ intervals(m) }}</td><td class="num">{{ dur(m.active_seconds) }}</td>
    <td class="{{ 'bad' if flagged(m, f.closed_at) else '' }}">{{ m.outcome_text }}</td>
    <td>{{ decided(m) }}</td></tr>
{% endfor %}  </tbody>
</table>
</section>

{% if r.notifications %}<section>
<h2>Notifications</h2>
<table>
  <thead><tr><th>Step</th><th>To</th><th>Sent</th><th>Offset</th><th>Closing message</th>
    </tr></thead>
  <tbody>
{% for n in r.notifications %}  <tr><td><code>{{ n.step_id }}</code></td><td>{{ n.to }}</td>
    <td class="num">{{ time(n.sent_at) }}</td><td class="num">{{ offset(n.offset_seconds) }}</td>
    <td class="num">{{ time(n.closing_sent_at) if n.closing_sent_at else "—" }}</td></tr>
{% endfor %}  </tbody>
</table>
</section>{% endif %}

{% if r.approvals %}<section>
<h2>Approvals</h2>
<table>
  <thead><tr><th>Step</th><th>Requested</th><th>Needed</th><th>Given by</th><th>Outcome</th>
    <th>Waited</th></tr></thead>
  <tbody>
{% for row in approvals %}  <tr><td><code>{{ row[0] }}</code></td>
    {%- for cell in row[1:] %}<td>{{ cell }}</td>{% endfor %}</tr>
{% endfor %}  </tbody>
</table>
</section>{% endif %}

{% if r.reviews %}<section>
<h2>Reviews</h2>
<table>
  <thead><tr><th>Offset</th><th>Outcome</th><th>By</th><th>Details</th></tr></thead>
  <tbody>
{% for v in r.reviews %}  <tr><td class="num">{{ offset(v.offset_seconds) }}</td>
    <td class="{{ 'bad' if v.outcome == 'missed' else '' }}">{{ v.outcome }}</td>
    <td>{{ v.actor or "—" }}</td><td>{{ review_details(v) }}</td></tr>
{% endfor %}  </tbody>
</table>
</section>{% endif %}

{% if r.notes %}<section>
<h2>Notes</h2>
<table>
  <thead><tr><th>Offset</th><th>By</th><th>Note</th></tr></thead>
  <tbody>
{% for n in r.notes %}  <tr><td class="num">{{ offset(n.offset_seconds) }}</td>
    <td>{{ n.actor }}</td><td>{{ n.text }}</td></tr>
{% endfor %}  </tbody>
</table>
</section>{% endif %}

<section>
<h2>Timeline</h2>
<table>
  <thead><tr><th>#</th><th>Offset</th><th>At (UTC)</th><th>Event</th><th>Step</th><th>Actor</th>
    <th>What happened</th></tr></thead>
  <tbody>
{% for e in r.timeline %}  <tr><td class="num">{{ e.seq }}</td>
    <td class="num">{{ offset(e.offset_seconds) }}</td>
    <td class="num">{{ time(e.at) }}</td><td><code>{{ e.kind }}</code></td>
    <td>{% if e.step_id %}<code>{{ e.step_id }}</code>{% endif %}</td><td>{{ e.actor or "" }}</td>
    <td>{{ e.text }}</td></tr>
{% endfor %}  </tbody>
</table>
</section>

<footer>Computed from the incident's audit trail only (events 1 to {{ f.last_seq }}); integrity:
  {{ "not checked" if r.integrity == "not checked" else "as verified by the caller" }}.</footer>
</body>
</html>
"""

_ENV = Environment(autoescape=True, keep_trailing_newline=True)
_TEMPLATE = _ENV.from_string(_HTML)


def _flagged(measure: Measure, closed_at: str | None) -> bool:
    """A finding: a measure whose undo failed, or one still on after the incident closed."""
    return measure.outcome == "undo_failed" or (
        measure.outcome == "still_active" and closed_at is not None
    )


def _verdict_class(value: str) -> str:
    lowered = value.lower()
    if lowered in ("ok", "true", "pass", "passed"):
        return "ok"
    if lowered in (NOT_CHECKED, "null", "none", "skipped"):
        return ""
    return "bad" if lowered.startswith(("false", "fail", "broken", "mismatch")) else ""


def render_html(report: IncidentReport) -> str:
    """One self-contained page: inline CSS, the chart as inline SVG, fit to print."""
    return _TEMPLATE.render(
        r=report,
        f=report.facts,
        inputs=json.dumps(report.facts.inputs, sort_keys=True, ensure_ascii=False),
        levels=_level_history_text(report),
        figures=_key_figure_rows(report),
        integrity=_integrity_rows(report),
        review_line=_review_line(report),
        chart=Markup(render_chart_svg(report)),  # built by us with every text escaped
        approvals=[_approval_row(a) for a in report.approvals],
        time=_time,
        dur=human_duration,
        offset=offset_label,
        intervals=_intervals_text,
        decided=_decided,
        review_details=_review_details,
        verdict_class=_verdict_class,
        flagged=_flagged,
        integrity_banner=report.integrity_banner(),
    )


def _waiting(data: dict[str, Any]) -> str:
    """A step waiting for an earlier one held off the sequence (interpreter v7)."""
    return f"waits for {data.get('for', '?')}, which changes the same settings"


def _held_back(data: dict[str, Any]) -> str:
    """Why a step went dormant: its condition (recorded since it says so), else the level."""
    if data.get("condition"):
        return f"its condition is false ({data['condition']})"
    return f"not called for at level {data.get('level')}"

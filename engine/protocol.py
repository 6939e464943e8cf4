"""The written crisis response protocol, generated from the playbooks that actually run.

`build_protocol` turns playbooks (with the file each came from and the library of stakeholders and
message templates it uses) into one typed document: activation criteria, levels, roles and
approvers, every measure in plain words with its parameters, approvals, time limit and undo,
notifications at open, escalation and close, the review cadence, how the crisis is concluded and
the post-incident review. Every playbook's version and content hash head the document, so it is
tied to exactly what runs. `render_markdown` and `render_html` render that one model through the
Jinja2 templates in `engine/templates/`, so the two formats cannot disagree.

Which step applies at which level comes from `engine.plan.make_plan`, run once per level with the
inputs' defaults; a condition on an input that has no default is shown as "depends".
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import structlog
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from markupsafe import Markup, escape

from engine.errors import PlaybookNotFound
from engine.library import Library, library_for
from engine.plan import PlannedStep, make_plan
from engine.playbook_files import find_playbook, load_playbook, playbook_files
from engine.report import DEFAULT_REVIEW_WITHIN
from workflows.expressions import names as expression_names
from workflows.expressions import parse as parse_expression
from workflows.levers import LEVERS, is_notification
from workflows.playbook import ParallelStep, Playbook, Step, WaitStep, walk_steps
from workflows.substitution import references

__all__ = [
    "FORMATS",
    "Format",
    "NoPlaybooks",
    "PlaybookDoc",
    "ProtocolDocument",
    "ProtocolSource",
    "StepDoc",
    "build_protocol",
    "levers_used",
    "load_sources",
    "render",
    "render_html",
    "render_markdown",
]

log = structlog.get_logger(__name__)

Format = Literal["md", "html"]
FORMATS: tuple[Format, ...] = ("md", "html")
StepKind = Literal["measure", "notification", "action", "wait", "parallel"]
Stage = Literal["open", "escalation", "close"]
UndoKind = Literal["restore", "explicit", "none"]
YES, NO, DEPENDS = "yes", "no", "depends"
NO_LEVELS = "every incident"  # the one column of a playbook without levels

_ON_TIMEOUT = {
    "escalate": (
        "the incident is escalated one level (at the highest it stays there) and a new approval "
        "period starts"
    ),
    "skip": "the step is skipped",
    "fail": "the step fails and the playbook stops",
    "proceed": "the step runs without the approvals",
}
_ON_FAILURE = {
    "stop": "the playbook stops; measures already in force stay until stand-down",
    "continue": "the failure is recorded and the playbook carries on",
    "undo": (
        "the playbook stops; once the lever calls under way have landed, every measure in "
        "force is undone, newest first"
    ),
}
_ON_MISSED = {
    "escalate": "the incident is escalated one level",
    "stand_down": "the incident is stood down",
    "record": "the miss is recorded in the audit trail",
}
_INCIDENT_FIELDS = {
    "id": "the incident's id",
    "playbook": "the playbook's name",
    "triggered_by": "who declared the incident",
}


class NoPlaybooks(PlaybookNotFound):
    """The library has no playbook to document."""


# --- the document model -----------------------------------------------------------------------
@dataclass(frozen=True)
class ProtocolSource:
    """A playbook as it runs: its file, the parsed playbook and the library it uses."""

    path: Path
    playbook: Playbook
    library: Library
    # How the document names the file: `playbooks/x.yaml` for one in the library, not the
    # generating machine's absolute path.
    shown_path: str = ""


@dataclass(frozen=True)
class InputDoc:
    name: str
    type: str
    default: str | None  # as text; None = must be given at trigger
    description: str
    choices: str | None


@dataclass(frozen=True)
class ParameterDoc:
    name: str
    value: str  # as written
    note: str  # what each `${...}` in it stands for: an input's default, an incident field
    meaning: str  # the lever argument's description
    lever_default: bool  # not written in the playbook: the lever's default applies


@dataclass(frozen=True)
class ApprovalDoc:
    roles: list[str]
    quorum: int
    timeout: str
    on_timeout: str
    rule: str  # the whole rule in one sentence
    who: str  # e.g. "2 of commander, policy-lead" or "a commander and a policy-lead"


@dataclass
class StepDoc:
    """One step of the sequence; lever steps carry everything a reader needs about the measure."""

    order: str  # "1", "3.2" for a parallel branch, "close.1" for on_stand_down
    id: str
    kind: StepKind
    description: str
    parent: str | None = None
    closing: bool = False  # an on_stand_down step
    level: str | None = None
    when: str | None = None
    condition: str = ""  # level and `when:` in words; "" = always
    applies: list[str] = field(default_factory=list)  # yes / no / depends, per level column
    summary: str = ""  # one line for the sequence table
    lever: str | None = None
    lever_summary: str = ""
    reversible: bool = False
    parameters: list[ParameterDoc] = field(default_factory=list)
    approval: ApprovalDoc | None = None
    # The earlier step that asks for approval and changes the same settings: this one waits for
    # it (computed at the highest level, with the inputs' defaults, as `crisis playbook plan`).
    after: str | None = None
    expires_after: str | None = None
    time_limit: str = ""
    undo_kind: UndoKind | None = None
    undo: str = ""
    on_failure: str = ""
    attempts: str = ""
    wait: str | None = None
    branches: list[str] = field(default_factory=list)

    @property
    def is_lever(self) -> bool:
        return self.lever is not None


@dataclass(frozen=True)
class NotificationDoc:
    stage: Stage
    when_sent: str
    step_id: str
    order: str
    lever: str
    to: str
    recipient: str  # the directory's name for the stakeholder, and whether external
    channels: list[str]  # where the message goes
    severity: str
    template: str | None
    subject: str | None  # the template's subject (Jinja2, filled in when sent)
    message: str | None  # a webhook's message, as written
    condition: str


@dataclass(frozen=True)
class LevelDoc:
    name: str
    rank: int  # 1 = least severe
    adds: list[str]  # steps that first apply at this level


@dataclass(frozen=True)
class RoleDoc:
    role: str
    duties: list[str]


@dataclass
class PlaybookDoc:
    name: str
    title: str
    version: int
    content_hash: str
    file: str
    owner: str
    description: str
    inputs: list[InputDoc]
    levels: list[LevelDoc]
    columns: list[str]  # the level columns of `applies`
    roles: list[RoleDoc]
    steps: list[StepDoc]
    notifications: list[NotificationDoc]
    reviews: str | None
    conclusion: list[str]
    post_incident_review: str
    levers: list[str]

    @property
    def anchor(self) -> str:
        return f"pb-{self.name}"

    @property
    def measures(self) -> list[StepDoc]:
        return [s for s in self.steps if s.is_lever]

    @property
    def waits(self) -> list[StepDoc]:
        return [s for s in self.steps if s.kind == "wait"]

    def notifications_at(self, stage: Stage) -> list[NotificationDoc]:
        return [n for n in self.notifications if n.stage == stage]


@dataclass
class ProtocolDocument:
    generated_at: datetime
    playbooks: list[PlaybookDoc]

    @property
    def generated(self) -> str:
        return self.generated_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


# --- loading ----------------------------------------------------------------------------------
def load_sources(refs: Iterable[str], playbooks_dir: Path) -> list[ProtocolSource]:
    """Playbooks by name or path, or the whole library when `refs` is empty; every one checked.

    Raises PlaybookInvalid, PlaybookNotFound (NoPlaybooks) or LibraryError: nothing is half-built.
    """
    wanted = list(refs)
    paths = (
        [find_playbook(ref, playbooks_dir) for ref in wanted]
        if wanted
        else playbook_files(playbooks_dir)
    )
    if not paths:
        raise NoPlaybooks(f"no playbooks to document in {playbooks_dir}")
    # A playbook named twice (by name and by path, say) is documented once, as first named.
    first: dict[Path, Path] = {}
    for path in paths:
        first.setdefault(path.resolve(), path)
    paths = list(first.values())
    return [
        ProtocolSource(
            path=path,
            playbook=load_playbook(path, playbooks_dir),
            library=library_for(path, playbooks_dir),
            shown_path=_shown(path, playbooks_dir),
        )
        for path in paths
    ]


def _shown(path: Path, playbooks_dir: Path) -> str:
    library = playbooks_dir.resolve()
    if path.resolve().is_relative_to(library):
        return str(path.resolve().relative_to(library.parent))
    return str(path)


def levers_used(playbook: Playbook) -> list[str]:
    """The distinct levers a playbook pulls (undo calls included), in order of first use."""
    found: dict[str, None] = {}
    for step in playbook.lever_steps():
        found[step.do] = None
        if step.undo is not None:
            found[step.undo.do] = None
    return list(found)


# --- building ---------------------------------------------------------------------------------
def build_protocol(
    sources: Iterable[ProtocolSource], *, generated_at: datetime | None = None
) -> ProtocolDocument:
    """The protocol document for these playbooks, in the order given."""
    docs = [_playbook_doc(source) for source in sources]
    log.debug("protocol built", playbooks=[d.name for d in docs])
    return ProtocolDocument(generated_at=generated_at or datetime.now(UTC), playbooks=docs)


def _playbook_doc(source: ProtocolSource) -> PlaybookDoc:
    playbook, library = source.playbook, source.library
    columns = list(playbook.levels) or [NO_LEVELS]
    orders, applies, waits = _applicability(playbook)
    steps = [
        _step_doc(playbook, step, orders[step.id], applies[step.id], at[0] == "on_stand_down")
        for at, step in walk_steps(playbook)
    ]
    parents = {
        branch.id: step.id
        for step in playbook.steps
        if isinstance(step, ParallelStep)
        for branch in step.parallel
    }
    by_id = {doc.id: doc for doc in steps}
    for doc in steps:
        doc.parent = parents.get(doc.id)
        doc.after = waits.get(doc.id)
        if doc.parent is not None:  # a branch runs only when its parallel step does
            doc.condition = "; ".join(c for c in (by_id[doc.parent].condition, doc.condition) if c)
    return PlaybookDoc(
        name=playbook.playbook,
        title=playbook.title,
        version=playbook.version,
        content_hash=playbook.content_hash,
        file=source.shown_path or str(source.path),
        owner=playbook.owner,
        description=playbook.description,
        inputs=[_input_doc(name, spec) for name, spec in playbook.inputs.items()],
        levels=_level_docs(playbook, steps),
        columns=columns,
        roles=_roles(playbook),
        steps=steps,
        notifications=_notifications(playbook, library, steps, columns),
        reviews=_reviews(playbook),
        conclusion=_conclusion(playbook, steps),
        post_incident_review=_post_incident_review(playbook),
        levers=levers_used(playbook),
    )


def _required_inputs(playbook: Playbook) -> set[str]:
    return {name for name, spec in playbook.inputs.items() if spec.default is None}


def _plan_inputs(playbook: Playbook) -> dict[str, Any]:
    # Defaults where there are any; an input without one is a placeholder that only fills `with:`
    # (conditions that read it are reported as "depends", never as the placeholder's verdict).
    return {name: spec.default for name, spec in playbook.inputs.items()}


def _reads_required_input(playbook: Playbook, when: str | None) -> bool:
    if when is None:
        return False
    needed = {f"inputs.{name}" for name in _required_inputs(playbook)}
    return bool(needed & expression_names(parse_expression(when)))


def _applicability(
    playbook: Playbook,
) -> tuple[dict[str, str], dict[str, list[str]], dict[str, str]]:
    """Every step's place in the plan ("3.2"), whether it runs at each level (yes / no / depends,
    with the inputs' defaults), and at the highest level the earlier step each one waits for."""
    levels: list[str | None] = list(playbook.levels) or [None]
    parent_of = {
        branch.id: step
        for step in playbook.steps
        if isinstance(step, ParallelStep)
        for branch in step.parallel
    }
    by_id = {step.id: step for _, step in walk_steps(playbook)}
    table: dict[str, list[str]] = {step_id: [] for step_id in by_id}
    orders: dict[str, str] = {}
    waits: dict[str, str] = {}
    for level in levels:  # lowest first: the last plan is the highest level's
        cells: dict[str, str] = {}
        planned = make_plan(playbook, _plan_inputs(playbook), level).steps
        for item in planned:
            orders[item.id] = item.order
            cells[item.id] = _cell(playbook, item, by_id[item.id].when, parent_of, cells)
            table[item.id].append(cells[item.id])
        waits = {item.id: item.after for item in planned if item.after}
    return orders, table, waits


def _cell(
    playbook: Playbook,
    item: PlannedStep,
    when: str | None,
    parent_of: dict[str, ParallelStep],
    cells: dict[str, str],
) -> str:
    if not item.runs and item.why_not.startswith("needs level"):
        return NO
    parent = parent_of.get(item.id)
    if parent is not None and cells.get(parent.id) == NO:
        return NO
    if _reads_required_input(playbook, when) or (
        parent is not None and cells.get(parent.id) == DEPENDS
    ):
        return DEPENDS
    return YES if item.runs else NO


def _input_doc(name: str, spec: Any) -> InputDoc:
    return InputDoc(
        name=name,
        type=f"list of {spec.items}" if spec.type == "list" else spec.type,
        default=None if spec.default is None else _text(spec.default),
        description=spec.description,
        choices=", ".join(_text(c) for c in spec.choices) if spec.choices else None,
    )


def _kind(step: Step | WaitStep | ParallelStep) -> StepKind:
    if isinstance(step, WaitStep):
        return "wait"
    if isinstance(step, ParallelStep):
        return "parallel"
    if is_notification(step.do):
        return "notification"
    return "measure" if LEVERS[step.do].reversible else "action"


def _step_doc(
    playbook: Playbook,
    step: Step | WaitStep | ParallelStep,
    order: str,
    applies: list[str],
    closing: bool,
) -> StepDoc:
    doc = StepDoc(
        order=order,
        id=step.id,
        kind=_kind(step),
        description=step.description,
        closing=closing,
        level=step.level,
        when=step.when,
        condition=_condition(playbook, step),
        applies=applies,
    )
    if isinstance(step, WaitStep):
        doc.wait = step.wait
        doc.summary = f"pause {step.wait} before the next step"
    elif isinstance(step, ParallelStep):
        doc.branches = [branch.id for branch in step.parallel]
        doc.summary = "at once: " + ", ".join(doc.branches)
    else:
        _lever_details(playbook, step, doc)
    return doc


def _lever_details(playbook: Playbook, step: Step, doc: StepDoc) -> None:
    lever = LEVERS[step.do]
    doc.lever, doc.reversible = step.do, lever.reversible
    doc.lever_summary = " ".join(lever.summary.split())
    doc.parameters = _parameters(playbook, step.do, step.with_)
    doc.summary = step.description or doc.lever_summary
    if step.approval is not None:
        a = step.approval
        people = "1 approval" if a.quorum == 1 else f"{a.quorum} approvals from distinct people"
        needs = f"{people} holding {' or '.join(a.roles)}"
        if a.every_role:  # "a commander and a policy-lead": two people, one of each role
            needs = f"approval by {a.describe()} (distinct people)"
        doc.approval = ApprovalDoc(
            roles=list(a.roles),
            quorum=a.quorum,
            timeout=a.timeout,
            on_timeout=a.on_timeout,
            who=a.describe(),
            rule=(
                f"Needs {needs} within {a.timeout}; one rejection skips it; "
                f"if the approvals do not come in time, {_ON_TIMEOUT[a.on_timeout]}."
            ),
        )
    doc.expires_after = step.expires_after
    if step.expires_after is not None:
        doc.time_limit = (
            f"Lapses (is undone) {step.expires_after} after it is applied unless the commander "
            "renews it (`crisis renew`); a lapsed measure can be renewed and is applied again."
        )
    elif doc.kind == "notification":
        doc.time_limit = "None: a message is sent once."
    else:
        doc.time_limit = "None: in force until stand-down (or until its level no longer applies)."
    doc.undo_kind, doc.undo = _undo(step, gated=_gated(playbook, step))
    doc.on_failure = f"If it fails: {_ON_FAILURE[step.on_failure]}."
    if doc.closing:  # every measure is taken back by then, whatever on_failure says
        doc.on_failure = (
            "If it fails: the failure is recorded; the other stand-down steps still run and "
            "the incident closes."
        )
    retry = step.retry
    doc.attempts = (
        f"Each attempt times out after {step.timeout}; up to {retry.max_attempts} attempts, "
        f"{retry.initial_interval} to {retry.max_interval} apart."
    )


def _closes_with_a_message(step: Step | WaitStep | ParallelStep) -> bool:
    """A step whose undo is a message (`undo:` a notification), sent after the measures."""
    undo = getattr(step, "undo", None)
    return undo is not None and is_notification(undo.do)


def _gated(playbook: Playbook, step: Step) -> bool:
    """Whether the step (or the parallel step it is a branch of) has a level or a condition."""
    if step.level is not None or step.when is not None:
        return True
    return any(
        isinstance(top, ParallelStep)
        and step in top.parallel
        and (top.level is not None or top.when is not None)
        for top in playbook.steps
    )


def _undo(step: Step, *, gated: bool) -> tuple[UndoKind, str]:
    earlier = []
    if step.expires_after is not None:
        earlier.append("when it lapses")
    if gated:
        earlier.append("when its level or condition no longer holds")
    also = f" (and earlier, {' or '.join(earlier)})" if earlier else ""
    if step.undo is not None:
        args = ", ".join(f"{k}: {_text(v)}" for k, v in step.undo.with_.items())
        return "explicit", f"On stand-down{also}: `{step.undo.do}` ({args})."
    if LEVERS[step.do].reversible:
        return "restore", f"Restored to the prior state on stand-down{also}."
    return "none", "None: cannot be taken back."


def _condition(playbook: Playbook, step: Step | WaitStep | ParallelStep) -> str:
    parts = []
    if step.level is not None:
        parts.append(f"from level {step.level} upwards")
    if step.when is not None:
        parts.append(f"only if {_annotated(playbook, step.when)}")
    return "; ".join(parts)


def _annotated(playbook: Playbook, when: str) -> str:
    """A condition with the defaults of the inputs it reads: `inputs.notify (default: false)`."""
    notes = []
    for name in sorted(expression_names(parse_expression(when))):
        if name.startswith("inputs."):
            notes.append(_default_note(playbook, name.removeprefix("inputs.")))
    return f"{when} ({'; '.join(notes)})" if notes else when


def _default_note(playbook: Playbook, name: str) -> str:
    spec = playbook.inputs.get(name)
    if spec is None or spec.default is None:
        return f"inputs.{name} is given at trigger, no default"
    return f"inputs.{name} defaults to {_text(spec.default)}"


def _parameters(playbook: Playbook, lever_name: str, given: dict[str, Any]) -> list[ParameterDoc]:
    fields = LEVERS[lever_name].args.model_fields
    found = [
        ParameterDoc(
            name=name,
            value=_text(value),
            note=_reference_notes(playbook, value),
            meaning=(fields[name].description or "") if name in fields else "",
            lever_default=False,
        )
        for name, value in given.items()
    ]
    for name, spec in fields.items():
        if name in given or spec.is_required():
            continue
        default = spec.get_default(call_default_factory=True)
        if default in ({}, []):  # nothing to say: the lever adds nothing by default
            continue
        found.append(
            ParameterDoc(
                name=name,
                value=_text(default),
                note="",
                meaning=spec.description or "",
                lever_default=True,
            )
        )
    return found


def _reference_notes(playbook: Playbook, value: Any) -> str:
    """What each `${...}` in a value stands for: `inputs.region (default: GB)`."""
    notes: dict[str, None] = {}
    for _, namespace, name in references(value):
        if namespace == "inputs":
            notes[_default_note(playbook, name)] = None
        elif namespace == "incident":
            notes[f"incident.{name}: {_INCIDENT_FIELDS.get(name, name)}"] = None
    return "; ".join(notes)


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _level_docs(playbook: Playbook, steps: list[StepDoc]) -> list[LevelDoc]:
    docs = []
    for rank, name in enumerate(playbook.levels):
        adds = [
            s.id
            for s in steps
            if not s.closing  # stand-down steps run at the close, whatever the level
            and s.applies[rank] != NO
            and all(cell == NO for cell in s.applies[:rank])
        ]
        docs.append(LevelDoc(name=name, rank=rank + 1, adds=adds))
    return docs


def _roles(playbook: Playbook) -> list[RoleDoc]:
    """The commander, the owner, the review owner and every approving role, with their duties."""
    duties: dict[str, list[str]] = {
        "incident commander": [
            "declares the incident and its level (`crisis trigger`)",
            "escalates and de-escalates (`crisis escalate`, `crisis de-escalate`)",
            "renews measures before they lapse (`crisis renew`)",
            "confirms reviews (`crisis review`) and records notes (`crisis note`)",
            "stands the incident down (`crisis stand-down`)",
        ]
    }
    if playbook.owner:
        duties.setdefault(playbook.owner, []).append("owns and maintains this playbook (owner)")
    review = playbook.post_incident_review
    review_owner = (review.owner if review else "") or playbook.owner
    if review_owner:
        duties.setdefault(review_owner, []).append("owns the post-incident review")
    for _, step in walk_steps(playbook):
        if isinstance(step, Step) and step.approval is not None:
            a = step.approval
            needed = "1 approval" if a.quorum == 1 else f"{a.quorum} approvals"
            source = a.describe() if a.every_role else f"{needed} from {', '.join(a.roles)}"
            for role in a.roles:
                duties.setdefault(role, []).append(
                    f"approves `{step.id}` (needs {source} within {a.timeout})"
                )
    return [RoleDoc(role, items) for role, items in duties.items()]


def _notifications(
    playbook: Playbook, library: Library, steps: list[StepDoc], columns: list[str]
) -> list[NotificationDoc]:
    docs = {doc.id: doc for doc in steps}
    found: list[NotificationDoc] = []
    for at, step in walk_steps(playbook):
        if not isinstance(step, Step):
            continue
        doc = docs[step.id]
        closing = at[0] == "on_stand_down"
        if is_notification(step.do):
            if closing:
                stage: Stage = "close"
                when_sent = "at stand-down, after every measure is undone"
            else:
                first = next((i for i, cell in enumerate(doc.applies) if cell != NO), 0)
                stage = "escalation" if first > 0 else "open"
                when_sent = (
                    f"on escalation to {columns[first]}"
                    if stage == "escalation"
                    else "when the incident is declared"
                )
            found.append(
                _notification(library, stage, when_sent, doc, step.do, step.with_, doc.condition)
            )
        if step.undo is not None and is_notification(step.undo.do):
            found.append(
                _notification(
                    library,
                    "close",
                    f"when `{step.id}` is undone: at stand-down at the latest",
                    doc,
                    step.undo.do,
                    step.undo.with_,
                    doc.condition,
                )
            )
    order = {"open": 0, "escalation": 1, "close": 2}
    return sorted(found, key=lambda n: order[n.stage])  # stable: playbook order within a stage


def _notification(
    library: Library,
    stage: Stage,
    when_sent: str,
    doc: StepDoc,
    lever: str,
    args: dict[str, Any],
    condition: str,
) -> NotificationDoc:
    to = _text(args.get("to", ""))
    stakeholder = library.stakeholders.get(to)
    recipient = f"{stakeholder.name} ({stakeholder.kind})" if stakeholder else to
    if lever == "notify.send" and stakeholder is not None:
        channels = [channel.describe() for channel in stakeholder.channels]
    else:  # notify.webhook posts to the notify connector's endpoint for the stakeholder
        channels = ["webhook:notify-connector"]
    template_name = args.get("template")
    template = library.templates.get(template_name) if isinstance(template_name, str) else None
    return NotificationDoc(
        stage=stage,
        when_sent=when_sent,
        step_id=doc.id,
        order=doc.order,
        lever=lever,
        to=to,
        recipient=recipient,
        channels=channels,
        severity=_text(args.get("severity", "warning")),
        template=_text(template_name) if template_name is not None else None,
        subject=template.subject if template else None,
        message=_text(args["message"]) if "message" in args else None,
        condition=condition,
    )


def _reviews(playbook: Playbook) -> str | None:
    reviews = playbook.reviews
    if reviews is None:
        return None
    return (
        f"Every {reviews.every} from the declaration, the incident commander confirms that the "
        f"measures are still needed (`crisis review`); the next review is due {reviews.every} "
        f"after each confirmation. A review not confirmed within {reviews.grace} of its due "
        f"time is missed: {_ON_MISSED[reviews.on_missed]}."
    )


def _conclusion(playbook: Playbook, steps: list[StepDoc]) -> list[str]:
    in_sequence = [s for s in steps if s.is_lever and not s.closing]
    newest_first = list(reversed(in_sequence))  # applied in the playbook's order, as a rule
    notices = {step.id for _, step in walk_steps(playbook) if _closes_with_a_message(step)}
    restored = [f"`{s.id}`" for s in newest_first if s.undo_kind == "restore"]
    explicit = [
        f"`{s.id}`" for s in newest_first if s.undo_kind == "explicit" and s.id not in notices
    ]
    messages = [f"`{s.id}`" for s in newest_first if s.id in notices]
    kept = [f"`{s.id}`" for s in in_sequence if s.undo_kind == "none"]
    lines = [
        "The incident commander stands the incident down (`crisis stand-down INCIDENT "
        "--reason ...`); steps not yet reached are skipped.",
    ]
    undo = "Every measure still in force is then undone, newest first"
    if restored:
        undo += f": {', '.join(restored)} restored to the prior state"
    if explicit:
        undo += f"; {', '.join(explicit)} by their explicit undo call"
    lines.append(undo + ".")
    if len(restored) + len(explicit) > 1:
        lines.append(
            "An undo the platform errs on (an outage, not a refusal) is retried after the other "
            "measures are taken back (those on the same settings under it wait for it), so its "
            "retries do not hold them in force."
        )
    lines.append(
        "If the platform refuses to take a measure back, the incident waits, standing down, "
        "before any closing message: the commander retries the undo (`crisis restore INCIDENT "
        "STEP --reason ...`) or restores the setting by hand and records it (`--by-hand`)."
    )
    if messages:
        # After every measure (a message retrying on a dead channel must not hold one).
        lines.append(f"Then the closing messages are sent, newest first: {', '.join(messages)}.")
    if kept:
        lines.append(f"Sent messages stay sent: {', '.join(kept)}.")
    closing = [f"`{s.id}`" for s in steps if s.closing]
    if closing:
        lines.append(f"Then the stand-down steps run: {', '.join(closing)}.")
    lapsing = [f"`{s.id}` after {s.expires_after}" for s in in_sequence if s.expires_after]
    if lapsing:
        lines.append(
            "Before that, measures lapse by themselves unless renewed: " + ", ".join(lapsing) + "."
        )
    if playbook.reviews is not None and playbook.reviews.on_missed == "stand_down":
        lines.append("A missed review stands the incident down without a person.")
    lines.append("The incident is closed once every undo has been made and recorded.")
    return lines


def _post_incident_review(playbook: Playbook) -> str:
    review = playbook.post_incident_review
    due = review.due_within if review else DEFAULT_REVIEW_WITHIN
    owner = (review.owner if review and review.owner else "") or playbook.owner
    text = f"Due within {due} of the incident's close"
    text += f", owned by {owner}." if owner else ", owner not named."
    if review is None:
        text += " (Not set in the playbook: the default applies.)"
    return (
        text + " It records what happened, how fast the measures took effect, who decided, "
        "who was told and what changes (`crisis audit report` drafts it from the audit trail)."
    )


# --- rendering --------------------------------------------------------------------------------
_ENV = Environment(
    loader=FileSystemLoader(Path(__file__).resolve().parent / "templates"),
    autoescape=select_autoescape(enabled_extensions=("html.j2",), default=False),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)


def _md_cell(value: Any) -> str:
    """Text safe inside a Markdown table cell: one line, pipes escaped."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _md_code(value: Any) -> str:
    """Inline code that survives backticks inside the value."""
    text = " ".join(str(value).split())
    fence = "``" if "`" in text else "`"
    return f"{fence} {text} {fence}" if fence == "``" else f"`{text}`"


_CODE_SPAN = re.compile(r"`([^`]+)`")


def _html_text(value: Any) -> Markup:
    """Escaped text whose `code spans` become <code> (escaping first keeps it safe)."""
    return Markup(_CODE_SPAN.sub(r"<code>\1</code>", str(escape(value))))


_ENV.filters["cell"] = _md_cell
_ENV.filters["code"] = _md_code
_ENV.filters["prose"] = _html_text


def render_markdown(document: ProtocolDocument) -> str:
    return _ENV.get_template("protocol.md.j2").render(doc=document)


def render_html(document: ProtocolDocument) -> str:
    """One self-contained page: inline CSS, no external assets, fit to print and to a phone."""
    return _ENV.get_template("protocol.html.j2").render(doc=document)


def render(document: ProtocolDocument, fmt: Format) -> str:
    return render_html(document) if fmt == "html" else render_markdown(document)

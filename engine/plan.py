"""`crisis playbook plan`: what a playbook would do, in which order, without touching anything."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from pydantic import ValidationError

from workflows.durations import format_duration, parse_duration
from workflows.expressions import ExpressionError, evaluate
from workflows.expressions import parse as parse_expression
from workflows.levers import LEVERS, is_notification, shared_settings
from workflows.playbook import ParallelStep, Playbook, Step, WaitStep
from workflows.substitution import substitute


@dataclass
class PlannedStep:
    order: str  # "1", "3.2" for a parallel branch, "close.1" for on_stand_down
    id: str
    kind: str
    runs: bool  # at the planned level and inputs
    why_not: str = ""
    lever: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    level: str | None = None
    when: str | None = None
    approval: str | None = None
    lapses_after: str | None = None
    undo: str = ""
    wait: str | None = None
    # An earlier step that asks for approval and changes some of the same settings: this one
    # waits until it is applied or given up (the interpreter never lets the looser earlier
    # measure land on top of this one).
    after: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    playbook: str
    version: int
    playbook_hash: str
    level: str | None
    inputs: dict[str, Any]
    steps: list[PlannedStep]
    reviews: str | None
    post_incident_review: str | None

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps": [s.as_dict() for s in self.steps]}


def make_plan(playbook: Playbook, inputs: dict[str, Any], level: str | None) -> Plan:
    """Resolve every step for these inputs and level: arguments, conditions, approvals, expiry."""
    level = level or (playbook.levels[0] if playbook.levels else None)
    context = {
        "inputs": inputs,
        "incident": {"id": "INC-PLAN", "playbook": playbook.playbook, "triggered_by": "plan"},
    }
    planned: list[PlannedStep] = []
    for index, step in enumerate(playbook.steps, start=1):
        parent = _plan_step(playbook, step, str(index), inputs, level, context)
        planned.append(parent)
        if isinstance(step, ParallelStep):
            for j, branch in enumerate(step.parallel, start=1):
                item = _plan_step(playbook, branch, f"{index}.{j}", inputs, level, context)
                if not parent.runs and item.runs:  # a branch runs only when its parallel step does
                    item.runs, item.why_not = False, f"its parallel step {step.id} does not run"
                planned.append(item)
    _mark_held_back(planned)
    for index, step in enumerate(playbook.on_stand_down, start=1):
        planned.append(_plan_step(playbook, step, f"close.{index}", inputs, level, context))
    reviews = playbook.reviews
    return Plan(
        playbook=playbook.playbook,
        version=playbook.version,
        playbook_hash=playbook.content_hash,
        level=level,
        inputs=inputs,
        steps=planned,
        reviews=(
            f"every {reviews.every} (grace {reviews.grace}; if missed: {reviews.on_missed})"
            if reviews
            else None
        ),
        post_incident_review=(
            f"due within {playbook.post_incident_review.due_within}"
            + (
                f", owner {playbook.post_incident_review.owner}"
                if playbook.post_incident_review.owner
                else ""
            )
            if playbook.post_incident_review
            else None
        ),
    )


def _mark_held_back(planned: list[PlannedStep]) -> None:
    """Set `after` as the interpreter holds steps back: a step of the sequence that asks for an
    approval (in any branch), or waits itself, holds back the later lever steps that change
    some of the same settings with the same lever."""
    tops = {p.order: p.id for p in planned if "." not in p.order}
    running = [p for p in planned if p.runs and p.lever]
    held: set[str] = set()  # the orders of the top steps held back
    for number, item in enumerate(running):
        top = item.order.split(".")[0]
        mine = None if is_notification(item.lever) else _settings(item)
        if mine is not None:
            for earlier in running[:number]:
                other = earlier.order.split(".")[0]
                theirs = _settings(earlier) if earlier.lever == item.lever else None
                if other in held and other != top and theirs and shared_settings(theirs, mine):
                    item.after = tops[other]
                    break
        if item.approval or item.after:
            held.add(top)


def _settings(item: PlannedStep) -> frozenset[str] | None:
    """None where the arguments are not known here (an input without a default)."""
    try:
        return LEVERS[str(item.lever)].args.model_validate(item.args).targets()
    except ValidationError:
        return None


def _plan_step(
    playbook: Playbook,
    step: Step | WaitStep | ParallelStep,
    order: str,
    inputs: dict[str, Any],
    level: str | None,
    context: dict[str, Any],
) -> PlannedStep:
    runs, why_not = True, ""
    if step.level is not None and playbook.level_rank(step.level) > playbook.level_rank(level):
        runs, why_not = False, f"needs level {step.level}"
    elif step.when is not None:
        try:
            if not evaluate(
                parse_expression(step.when), inputs=inputs, level=level, levels=playbook.levels
            ):
                runs, why_not = False, f"condition false: {step.when}"
        except ExpressionError as error:
            runs, why_not = False, f"condition error: {error}"
    item = PlannedStep(
        order=order,
        id=step.id,
        kind="lever",
        runs=runs,
        why_not=why_not,
        level=step.level,
        when=step.when,
    )
    if isinstance(step, WaitStep):
        item.kind, item.wait = "wait", step.wait
    elif isinstance(step, ParallelStep):
        item.kind = "parallel"
    else:
        item.lever, item.args = step.do, substitute(step.with_, context)
        if step.approval:
            a = step.approval
            item.approval = f"{a.describe()} within {a.timeout} (then {a.on_timeout})"
        if step.expires_after:
            item.lapses_after = _spelled_out(step.expires_after)
        if step.undo is not None:
            item.undo = f"{step.undo.do}"
        elif LEVERS[step.do].reversible:
            item.undo = "restore the previous state"
        else:
            item.undo = "none (cannot be taken back)"
    return item


def _spelled_out(duration: str) -> str:
    """`48h (2d)`, `90m (1h30m)`: the playbook's duration and, where it reads differently, the
    same length in days, hours, minutes and seconds; `12h` as it is."""
    exact = format_duration(parse_duration(duration).total_seconds())
    return duration if exact == duration.replace(" ", "") else f"{duration} ({exact})"

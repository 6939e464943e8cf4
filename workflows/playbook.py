"""The playbook language: models for the YAML files engineers author, and their checks.

Pure pydantic, so the workflow can receive a playbook as a frozen snapshot. Reading files (and
turning a problem's path into `file:line:column`) is the loader's job in `engine/playbook_files.py`.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SerializerFunctionWrapHandler,
    StrictInt,
    Tag,
    ValidationError,
    field_validator,
    model_serializer,
)

from workflows.durations import parse_duration
from workflows.expressions import ExpressionError, evaluate, level_literals
from workflows.expressions import names as expression_names
from workflows.expressions import parse as parse_expression
from workflows.levers import LEVERS, is_notification
from workflows.limits import MAX_INPUT_CHARS, MAX_SNAPSHOT_BYTES
from workflows.substitution import (
    NAME,
    NAMESPACES,
    ReferenceError_,
    in_keys,
    malformed,
    references,
    substitute,
)

Path = tuple[str | int, ...]
InputType = Literal["string", "number", "integer", "boolean", "list"]
ItemType = Literal["string", "number", "integer", "boolean"]
INCIDENT_FIELDS = ("id", "playbook", "triggered_by")

ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
# A role, in playbooks and in the tokens that hold it (store.tokens): one pattern for both, so
# an approval never names a role no token could hold.
ROLE_PATTERN = re.compile(r"^[a-z][a-z0-9-]{0,63}$")


MAX_LEVEL_CHARS = 64  # a level name (the audit store's column)
MAX_VERSION = 2**63 - 1  # a 64-bit integer, as the audit store holds it


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class InputSpec(_Strict):
    """A typed playbook input; without a default it must be given at trigger."""

    type: InputType = "string"
    items: ItemType | None = None
    default: Any = None
    description: str = ""
    choices: list[Any] | None = None


class RetrySpec(_Strict):
    max_attempts: int = Field(5, ge=1, le=100)
    initial_interval: str = "500ms"
    max_interval: str = "30s"
    backoff: float = Field(2.0, ge=1.0, le=10.0)

    _check = field_validator("initial_interval", "max_interval")(lambda value: _duration(value))


class LeverCall(_Strict):
    do: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


def _duration(value: str | None) -> str | None:
    if value is not None:
        parse_duration(value)
    return value


OnFailure = Literal["stop", "continue", "undo"]
OnTimeout = Literal["escalate", "skip", "fail", "proceed"]
OnMissedReview = Literal["escalate", "stand_down", "record"]


class Approval(_Strict):
    """People who must approve a step before it runs: `quorum` distinct holders of `roles`;
    with `every_role`, a holder of each of the roles among them (two people, two roles)."""

    roles: list[str] = Field(min_length=1)
    quorum: int = Field(1, ge=1, le=10)
    every_role: bool = False
    timeout: str = "15m"
    on_timeout: OnTimeout = "escalate"

    _check = field_validator("timeout")(_duration)

    @model_serializer(mode="wrap")
    def _without_default_rule(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Left out unless set: playbooks written before the field existed keep their content
        # hash, and incidents started with them their workflow input.
        data: dict[str, Any] = handler(self)
        if not self.every_role:
            data.pop("every_role", None)
        return data

    def describe(self) -> str:
        return describe_approval(self.roles, self.quorum, self.every_role)


def describe_approval(roles: list[str], quorum: int, every_role: bool = False) -> str:
    """Who must approve, in words: "2 of commander, policy-lead", "a commander and a policy-lead"
    (for the playbook's readers, and for the trail's, from its approval.requested event)."""
    if not every_role:
        return f"{quorum} of {', '.join(roles)}"
    each = " and ".join(f"{_article(role)} {role}" for role in dict.fromkeys(roles))
    extra = quorum - len(set(roles))
    return each + (f", {extra} more of them" if extra else "")


def _article(word: str) -> str:
    # By its first letter: "an executive", "an ads-policy-lead"; a "u" mostly sounds "you".
    return "an" if word[:1].lower() in "aeio" else "a"


class Reviews(_Strict):
    """The commander confirms, every `every`, that the measures are still needed."""

    every: str
    grace: str = "30m"
    on_missed: OnMissedReview = "escalate"

    _check = field_validator("every", "grace")(_duration)


class PostIncidentReview(_Strict):
    due_within: str = "14d"
    owner: str = ""

    _check = field_validator("due_within")(_duration)


class _StepBase(_Strict):
    id: str = Field(pattern=ID_PATTERN, max_length=64)
    description: str = ""
    # Runs only at or above this level; undone when the incident drops below it.
    level: str | None = None
    # A safe expression over `inputs` and `level` (workflows/expressions.py).
    when: str | None = None


class Step(_StepBase):
    """One measure: pull lever `do` with arguments `with`; undo it on stand-down."""

    do: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    undo: LeverCall | None = None
    retry: RetrySpec = RetrySpec()
    timeout: str = "10s"
    approval: Approval | None = None
    # The measure lapses (is undone) this long after it is applied, unless renewed.
    expires_after: str | None = None
    on_failure: OnFailure = "stop"

    _check = field_validator("timeout", "expires_after")(_duration)


class WaitStep(_StepBase):
    """Let time pass before the next step (e.g. let a measure settle)."""

    wait: str

    _check = field_validator("wait")(_duration)


class ParallelStep(_StepBase):
    """Run lever steps at once (e.g. tell the regulator and the police together)."""

    parallel: list[Step] = Field(min_length=1)


def _step_kind(value: Any) -> str:
    if isinstance(value, dict):
        return (
            "parallel-step"
            if "parallel" in value
            else "wait-step"
            if "wait" in value
            else "lever-step"
        )
    return {ParallelStep: "parallel-step", WaitStep: "wait-step"}.get(type(value), "lever-step")


AnyStep = Annotated[
    Annotated[Step, Tag("lever-step")]
    | Annotated[ParallelStep, Tag("parallel-step")]
    | Annotated[WaitStep, Tag("wait-step")],
    Discriminator(_step_kind),
]
STEP_TAGS = ("lever-step", "parallel-step", "wait-step")


class Playbook(_Strict):
    """A crisis playbook: what to do, in order, when an incident of this kind is declared."""

    playbook: str = Field(pattern=ID_PATTERN, max_length=64, description="The playbook's name")
    version: StrictInt = Field(ge=1)  # `true` or "2" is no version
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    owner: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    # Ordered from least to most severe; an incident starts at the one given at trigger.
    levels: list[str] = Field(default_factory=list)
    reviews: Reviews | None = None
    steps: list[AnyStep] = Field(min_length=1)
    on_stand_down: list[Step] = Field(default_factory=list)
    post_incident_review: PostIncidentReview | None = None

    def lever_steps(self) -> list[Step]:
        """Every lever step, parallel branches included, in playbook order."""
        found: list[Step] = []
        for step in [*self.steps, *self.on_stand_down]:
            if isinstance(step, ParallelStep):
                found += step.parallel
            elif isinstance(step, Step):
                found.append(step)
        return found

    @cached_property
    def trigger_checked_calls(self) -> list[tuple[str, str, dict[str, Any], str]]:
        """(step id, lever, arguments, where) of each lever call whose arguments refer to inputs
        or the incident: only these can break at trigger. check_playbook has checked the rest,
        which no trigger changes."""
        return [
            (step.id, call.do, call.with_, where)
            for step in self.lever_steps()
            for call, where in ((step, "with"), (step.undo, "undo.with"))
            if call is not None and next(references(call.with_), None) is not None
        ]

    def level_rank(self, level: str | None) -> int:
        return self.levels.index(level) if level in self.levels else -1

    @property
    def name(self) -> str:
        return self.playbook

    def snapshot(self) -> dict[str, Any]:
        """The playbook as data, in the form its content hash is computed from."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=False)

    @cached_property
    def canonical_snapshot(self) -> bytes:
        """The snapshot as compact JSON with sorted keys: what the content hash is taken of, and
        about the size of what every incident of it carries in its workflow input."""
        return json.dumps(self.snapshot(), sort_keys=True, separators=(",", ":")).encode()

    @cached_property
    def content_hash(self) -> str:
        """sha256 of the snapshot; worked out once per playbook (it is frozen, and the loader
        keeps one per file version), not on every trigger."""
        return "sha256:" + hashlib.sha256(self.canonical_snapshot).hexdigest()


@dataclass(frozen=True)
class Problem:
    """A validation problem at a path inside the playbook document."""

    path: Path
    message: str


class InputError(ValueError):
    """An input given at trigger that the playbook does not accept."""


def walk_steps(playbook: Playbook) -> list[tuple[Path, Step | WaitStep | ParallelStep]]:
    """Every step with its path in the document, parallel branches and on_stand_down included."""
    found: list[tuple[Path, Step | WaitStep | ParallelStep]] = []
    for index, step in enumerate(playbook.steps):
        found.append((("steps", index), step))
        if isinstance(step, ParallelStep):
            found += [
                (("steps", index, "parallel", j), branch) for j, branch in enumerate(step.parallel)
            ]
    found += [(("on_stand_down", k), step) for k, step in enumerate(playbook.on_stand_down)]
    return found


def check_playbook(playbook: Playbook) -> list[Problem]:
    """Cross-field checks the models alone cannot do: ids, levers, levels, conditions, arguments."""
    problems: list[Problem] = []
    problems += _check_input_defaults(playbook)
    problems += _check_levels(playbook)
    if (size := _carried_size(playbook)) > MAX_SNAPSHOT_BYTES:
        problems.append(
            Problem(
                ("playbook",),
                f"the playbook is {-(-size // 1024)} KiB as every incident carries it, at most "
                f"{MAX_SNAPSHOT_BYTES // 1024} KiB: Temporal would refuse its trigger",
            )
        )
    problems += _check_durations(playbook)
    inputs = sample_inputs(playbook)  # what each condition is evaluated with
    seen: dict[str, Path] = {}
    for at, step in walk_steps(playbook):
        if step.id in seen:
            problems.append(
                Problem(
                    (*at, "id"), f"duplicate step id {step.id!r} (first at {_where(seen[step.id])})"
                )
            )
        seen.setdefault(step.id, at)
        if step.level is not None and step.level not in playbook.levels:
            problems.append(Problem((*at, "level"), _unknown_level(playbook, step.level)))
        if step.when is not None:
            problems += [
                Problem((*at, "when"), message)
                for message in _check_when(playbook, step.when, inputs)
            ]
        if isinstance(step, Step) and at[0] == "on_stand_down":
            problems += _check_closing(step, at)
        if isinstance(step, Step) and step.approval is not None:
            problems += [
                Problem(
                    (*at, "approval", "roles", index),
                    f"invalid role {role!r}: roles are lowercase letters, digits and '-', "
                    "starting with a letter, as tokens hold them (e.g. commander, policy-lead)",
                )
                for index, role in enumerate(step.approval.roles)
                if not ROLE_PATTERN.fullmatch(role)
            ]
            roles = len(set(step.approval.roles))
            if step.approval.every_role and step.approval.quorum < roles:
                problems.append(
                    Problem(
                        (*at, "approval", "quorum"),
                        f"every_role needs a quorum of at least {roles}, one person per role",
                    )
                )
        if isinstance(step, Step):
            problems += _check_call(playbook, step.do, step.with_, at)
            lever = LEVERS.get(step.do)
            lapses_to_nothing = lever is not None and not lever.reversible and step.undo is None
            if step.expires_after is not None and lapses_to_nothing and at[0] != "on_stand_down":
                problems.append(
                    Problem(
                        (*at, "expires_after"),
                        f"{step.do} cannot be taken back and the step has no `undo:`: "
                        "`expires_after` would lapse nothing (a message cannot be unsent; give "
                        "it an `undo:` notice to send at the lapse, or leave expires_after out)",
                    )
                )
            if step.undo is not None:
                problems += _check_call(playbook, step.undo.do, step.undo.with_, (*at, "undo"))
                if _undo_leaves_a_measure(playbook, step, inputs):
                    problems.append(
                        Problem(
                            (*at, "undo", "do"),
                            f"undo: {step.undo.do} would change settings the step did not, and "
                            "nothing takes them back at stand-down: an undo sends a notice or "
                            "sets the step's own settings (or leave `undo:` out: they are "
                            "restored)",
                        )
                    )
            if step.retry is not None:
                first, most = (
                    parse_duration(step.retry.initial_interval),
                    parse_duration(step.retry.max_interval),
                )
                if most < first:
                    problems.append(
                        Problem(
                            (*at, "retry", "max_interval"),
                            f"max_interval {step.retry.max_interval} is shorter than "
                            f"initial_interval {step.retry.initial_interval}",
                        )
                    )
            if step.approval and step.approval.on_timeout == "escalate" and not playbook.levels:
                written = "on_timeout" in step.approval.model_fields_set
                problems.append(
                    Problem(
                        (*at, "approval", "on_timeout"),
                        "on_timeout: escalate needs `levels:` to escalate through"
                        + ("" if written else " (it is the default: set skip, fail or proceed)"),
                    )
                )
    return problems


def _check_durations(playbook: Playbook) -> list[Problem]:
    """A zero length is a mistake wherever a playbook gives one: a measure that lapses as it is
    applied, a call or an approval that times out at once, a wait for nothing, a review due
    every instant. (Only a review's `grace` may be zero.)"""
    given: list[tuple[Path, str | None]] = []
    if playbook.reviews is not None:
        given.append((("reviews", "every"), playbook.reviews.every))
    if playbook.post_incident_review is not None:
        given.append(
            (("post_incident_review", "due_within"), playbook.post_incident_review.due_within)
        )
    for at, step in walk_steps(playbook):
        if isinstance(step, WaitStep):
            given.append(((*at, "wait"), step.wait))
        elif isinstance(step, Step):
            given += [
                ((*at, "timeout"), step.timeout),
                ((*at, "expires_after"), step.expires_after),
                ((*at, "retry", "initial_interval"), step.retry.initial_interval),
                ((*at, "retry", "max_interval"), step.retry.max_interval),
            ]
            if step.approval is not None:
                given.append(((*at, "approval", "timeout"), step.approval.timeout))
    return [
        Problem(where, f"{where[-1]} must be longer than zero, not {value!r}")
        for where, value in given
        if value is not None and parse_duration(value) <= timedelta(0)
    ]


def _undo_leaves_a_measure(playbook: Playbook, step: Step, inputs: dict[str, Any]) -> bool:
    """An undo that is a measure on other settings than the step's (another lever, or the same
    lever elsewhere) stays in force after the incident closes."""
    assert step.undo is not None
    lever = LEVERS.get(step.undo.do)
    if lever is None or not lever.reversible:
        return False  # a notice, or an unknown lever (reported as such)
    if step.undo.do != step.do:
        return True
    context = {**default_context(playbook), "inputs": inputs}
    try:
        mine = lever.args.model_validate(substitute(step.with_, context)).targets()
        undone = lever.args.model_validate(substitute(step.undo.with_, context)).targets()
    except (ValidationError, ReferenceError_, ValueError):
        return False  # the arguments' own problems are reported by _check_call
    return not undone <= mine


def _check_closing(step: Step, at: Path) -> list[Problem]:
    """on_stand_down steps run once every measure is undone, as the incident closes: nothing is
    undone, lapses or is approved after that, so a measure there would stay on the platform."""
    lever = LEVERS.get(step.do)
    problems = []
    if lever is not None and lever.reversible:
        problems.append(
            Problem(
                (*at, "do"),
                f"{step.do} in on_stand_down would stay in force after the incident closes "
                "(nothing undoes it then): put the measure in `steps`, or send a notification",
            )
        )
    for field, value in (
        ("undo", step.undo),
        ("approval", step.approval),
        ("expires_after", step.expires_after),
    ):
        if value is not None:
            problems.append(
                Problem(
                    (*at, field),
                    f"on_stand_down steps run as the incident closes: `{field}` cannot apply "
                    "there (nothing is undone, approved or lapses after the close)",
                )
            )
    return problems


def _where(path: Path) -> str:
    """A step's place in words: `step 2`, `step 3, branch 1`, `on_stand_down step 1`."""
    if path[0] == "on_stand_down":
        return f"on_stand_down step {int(path[1]) + 1}"
    text = f"step {int(path[1]) + 1}"
    return f"{text}, branch {int(path[3]) + 1}" if len(path) > 3 else text


def _unknown_level(playbook: Playbook, level: str) -> str:
    declared = ", ".join(playbook.levels) or "none declared"
    return f"unknown level {level!r} (levels: {declared})"


def _carried_size(playbook: Playbook) -> int:
    """About the bytes of the playbook in a workflow input: UTF-8, where the canonical snapshot
    (what the hash is taken of) escapes every non-ASCII character six bytes long."""
    if b"\\u" not in playbook.canonical_snapshot:  # no escapes: the same bytes
        return len(playbook.canonical_snapshot)
    compact = json.dumps(playbook.snapshot(), ensure_ascii=False, separators=(",", ":"))
    return len(compact.encode())


def _check_levels(playbook: Playbook) -> list[Problem]:
    # Bounded as the audit store's columns are: a value it cannot hold would fail the incident's
    # every audit write after its levers were pulled. Checked here, not in the model, which
    # also reads the playbooks of incidents already running.
    problems = [
        Problem(
            ("levels", index), f"a level name is 1 to {MAX_LEVEL_CHARS} characters, not {len(name)}"
        )
        for index, name in enumerate(playbook.levels)
        if not 0 < len(name) <= MAX_LEVEL_CHARS
    ]
    if playbook.version > MAX_VERSION:
        problems.append(Problem(("version",), f"version is at most {MAX_VERSION}"))

    if len(set(playbook.levels)) != len(playbook.levels):
        problems.append(Problem(("levels",), "levels must be distinct"))
    if playbook.reviews and playbook.reviews.on_missed == "escalate" and not playbook.levels:
        problems.append(Problem(("reviews", "on_missed"), "on_missed: escalate needs `levels:`"))
    return problems


def _check_when(playbook: Playbook, text: str, inputs: dict[str, Any]) -> list[str]:
    try:
        expression = parse_expression(text)
    except ExpressionError as error:
        return [f"invalid condition: {error}"]
    problems = []
    for name in sorted(expression_names(expression)):
        if name == "level" and not playbook.levels:
            problems.append("condition uses `level` but the playbook declares no `levels:`")
        elif name.startswith("inputs.") and name.removeprefix("inputs.") not in playbook.inputs:
            problems.append(f"condition uses undefined input {name.removeprefix('inputs.')!r}")
    for literal in level_literals(expression):
        if literal not in playbook.levels:
            problems.append(f"condition compares level with {_unknown_level(playbook, literal)}")
    if problems:
        return problems
    # Evaluated as a trigger would, at every level: a comparison of an input with a value of
    # another type fails every time, and the step would never run. A required text input's
    # stand-in may be compared with `level`: a level then stands in for it.
    as_levels = _levels_for_required_text(playbook, inputs)
    for level in playbook.levels or [None]:
        try:
            evaluate(
                expression, inputs=inputs, level=level, levels=playbook.levels, every_operand=True
            )
        except ExpressionError as error:
            try:
                evaluate(
                    expression,
                    inputs=as_levels,
                    level=level,
                    levels=playbook.levels,
                    every_operand=True,
                )
            except ExpressionError:
                return [f"condition cannot be evaluated: {error}"]
    return problems


def _levels_for_required_text(playbook: Playbook, inputs: dict[str, Any]) -> dict[str, Any]:
    """The example inputs with the first level for each required text input (or list of text)
    that has no choices: what a trigger gives when a condition compares it with `level`."""
    if not playbook.levels:
        return inputs
    first = playbook.levels[0]
    swapped = dict(inputs)
    for name, spec in playbook.inputs.items():
        if spec.default is None and not spec.choices:
            if spec.type == "string":
                swapped[name] = first
            elif spec.type == "list" and spec.items in (None, "string"):
                swapped[name] = [first]
    return swapped


# A lever call's attempt gives up 0.2 s before its step's timeout to say it had no answer
# (activities.platform); shorter timeouts leave that to Temporal, which says neither.
SHORTEST_CALL_WARNED = timedelta(seconds=1)


def playbook_warnings(playbook: Playbook) -> list[Problem]:
    """Things that are allowed but usually wrong in a crisis protocol."""
    warnings: list[Problem] = []
    for at, step in walk_steps(playbook):
        if not isinstance(step, Step) or at[0] == "on_stand_down":
            continue
        lever = LEVERS.get(step.do)
        if lever is None:
            continue
        if lever.reversible and step.expires_after is None:
            warnings.append(
                Problem(
                    (*at, "do"),
                    f"measure {step.id!r} has no expires_after: emergency "
                    "measures should lapse unless renewed",
                )
            )
        if not lever.reversible and step.undo is None and step.expires_after is None:
            warnings.append(
                Problem((*at, "do"), f"step {step.id!r} ({step.do}) has no undo and no expiry")
            )
        if parse_duration(step.timeout) < SHORTEST_CALL_WARNED:
            warnings.append(
                Problem(
                    (*at, "timeout"),
                    f"step {step.id!r} gives each platform call {step.timeout}: so short that "
                    "one with no answer may be cut off without saying how long it waited or "
                    "how often (give it 1s or more)",
                )
            )
        if step.approval and step.approval.quorum > 1 and len(step.approval.roles) == 1:
            warnings.append(
                Problem(
                    (*at, "approval", "quorum"),
                    f"quorum {step.approval.quorum} from the single role "
                    f"{step.approval.roles[0]!r}: make sure that many people hold it",
                )
            )
    claims = (playbook.description + " " + playbook.title).lower()
    told = {
        str(s.with_.get("to", ""))
        for _, s in walk_steps(playbook)
        if isinstance(s, Step) and is_notification(s.do)
    }
    for word, stakeholder in (
        ("regulator", "regulator"),
        ("police", "law-enforcement"),
        ("law enforcement", "law-enforcement"),
    ):
        if word in claims and stakeholder not in told:
            warnings.append(
                Problem(
                    ("description",),
                    f"the description mentions {word!r} but no step notifies {stakeholder!r}",
                )
            )
    return warnings


def _check_call(
    playbook: Playbook, lever_name: str, args: dict[str, Any], at: Path
) -> list[Problem]:
    lever = LEVERS.get(lever_name)
    if lever is None:
        known = ", ".join(sorted(LEVERS))
        return [Problem((*at, "do"), f"unknown lever {lever_name!r} (known: {known})")]
    references = _reference_problems(playbook, args)
    problems = [Problem((*at, "with", *path), message) for path, message in references]
    # The other arguments are checked too: a typo in one reference must not hide them.
    broken = {path[0] for path, _ in references if path}
    try:
        resolved = substitute(
            {k: v for k, v in args.items() if k not in broken}, default_context(playbook)
        )
    except ReferenceError_:
        # An input without a default: its type is checked when the incident is triggered.
        return problems
    return problems + [
        Problem((*at, "with", *path), message)
        for path, message in lever_arg_problems(lever_name, resolved)
        if not (path and path[0] in broken)
    ]


def lever_arg_problems(lever_name: str, args: dict[str, Any]) -> list[tuple[Path, str]]:
    """Validate resolved arguments against the lever's model; paths are inside `with`. Strictly:
    a boolean or a text is no number here (`false` would be a threshold of 0)."""
    try:
        LEVERS[lever_name].args.model_validate(args, strict=True)
    except ValidationError as error:
        return [(tuple(e["loc"]), _pydantic_message(e)) for e in error.errors()]
    return []


SHOWN_CHARS = 60


def shown(value: Any) -> str:
    """A value as a problem quotes it: JSON, cut short (a pasted page is no message)."""
    text = json.dumps(value, default=str)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def _pydantic_message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown argument {error['loc'][-1]!r}"
    if error["type"] == "missing":
        return f"missing argument {error['loc'][-1]!r}"
    # Named: the line and column point at the value, and a reader should not have to count.
    name = ".".join(str(part) for part in error["loc"])
    if error["type"].endswith("_type"):  # say what was given: `false` is no number
        return f"{name}: {error['msg']}, not {shown(error['input'])}"
    message = error["msg"].removeprefix("Value error, ")  # a validator's own words
    return f"{name}: {message}" if name else message


def _reference_problems(playbook: Playbook, args: dict[str, Any]) -> list[tuple[Path, str]]:
    problems = [
        (path, f"malformed reference {text!r}: write ${{inputs.NAME}} or ${{incident.FIELD}}")
        for path, text in malformed(args)
    ]
    problems += [
        (path, f"a reference in a key ({key!r}) is never substituted: only values are")
        for path, key in in_keys(args)
    ]
    for path, namespace, name in references(args):
        if namespace not in NAMESPACES:
            problems.append(
                (path, f"unknown reference namespace {namespace!r} in ${{{namespace}.{name}}}")
            )
        elif namespace == "inputs" and name not in playbook.inputs:
            problems.append((path, f"undefined input {name!r} in ${{inputs.{name}}}"))
        elif namespace == "incident" and name not in INCIDENT_FIELDS:
            problems.append(
                (path, f"unknown incident field {name!r} (known: {', '.join(INCIDENT_FIELDS)})")
            )
    return problems


def _check_input_defaults(playbook: Playbook) -> list[Problem]:
    problems = []
    for name, spec in playbook.inputs.items():
        if not NAME.fullmatch(name):
            problems.append(
                Problem(
                    ("inputs", name),
                    f"input name {name!r} could never be referred to as ${{inputs.{name}}}: "
                    "letters, digits and '_', not starting with a digit",
                )
            )
        if spec.type == "list" and spec.items is None:
            problems.append(Problem(("inputs", name, "type"), "a list input needs `items:`"))
        if spec.choices is not None and not spec.choices:
            empty = "no choices: nothing could be given"
            problems.append(Problem(("inputs", name, "choices"), empty))
        kind = (spec.items if spec.type == "list" else spec.type) or "string"
        # Written in the file, a choice or a default is of the input's type as it stands (a CLI
        # value is text read as the type; `"0.5"` here is a string, as it is in a lever's args).
        for index, choice in enumerate(spec.choices or []):
            if (wrong := _not_written_as(kind, choice)) is not None:
                problems.append(
                    Problem(("inputs", name, "choices", index), f"input {name!r}: {wrong}")
                )
        if spec.default is None:
            continue
        if spec.type == "list" and not isinstance(spec.default, list):
            wrong = f"the default must be a list of {kind}, not {shown(spec.default)}"
        else:
            items = spec.default if spec.type == "list" else [spec.default]
            wrong = next((w for item in items if (w := _not_written_as(kind, item))), None)
        if wrong is not None:
            problems.append(Problem(("inputs", name, "default"), f"input {name!r}: {wrong}"))
            continue
        try:
            coerce_input(name, spec, spec.default)  # its choices, and no blank item
        except InputError as error:
            problems.append(Problem(("inputs", name, "default"), str(error)))
    return problems


def _not_written_as(kind: str, value: Any) -> str | None:
    """What is wrong with a value written for an input of this kind, or None."""
    fits = {
        "string": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": isinstance(value, int) and not isinstance(value, bool),
        "number": isinstance(value, int | float) and not isinstance(value, bool),
    }.get(kind, True)
    return None if fits else f"expected {kind}, got {shown(value)}"


def default_context(playbook: Playbook) -> dict[str, dict[str, Any]]:
    """A substitution context from the inputs' defaults, for checking before any trigger."""
    inputs = {
        name: spec.default for name, spec in playbook.inputs.items() if spec.default is not None
    }
    return {
        "inputs": inputs,
        "incident": {"id": "INC-CHECK", "playbook": playbook.playbook, "triggered_by": "check"},
    }


def sample_inputs(playbook: Playbook) -> dict[str, Any]:
    """The inputs as a trigger resolves them: defaults, and for a required input a stand-in of
    its type (its first choice, when it has choices)."""
    inputs: dict[str, Any] = {}
    for name, spec in playbook.inputs.items():
        if spec.default is not None:
            try:
                inputs[name] = coerce_input(name, spec, spec.default)
            except InputError:  # reported against the playbook's default
                inputs[name] = spec.default
            continue
        kind = spec.items if spec.type == "list" else spec.type
        value = spec.choices[0] if spec.choices else _STAND_INS[kind or "string"]
        inputs[name] = [value] if spec.type == "list" else value  # choices are its items
    return inputs


_STAND_INS: dict[str, Any] = {"string": "example", "number": 1.5, "integer": 1, "boolean": True}


def resolve_inputs(playbook: Playbook, given: dict[str, Any]) -> dict[str, Any]:
    """Apply defaults and types to trigger inputs; raise InputError naming the bad one."""
    unknown = sorted(set(given) - set(playbook.inputs))
    if unknown:
        known = ", ".join(sorted(playbook.inputs)) or "none"
        raise InputError(
            f"unknown input {unknown[0]!r} for playbook {playbook.playbook} (inputs: {known})"
        )
    resolved: dict[str, Any] = {}
    for name, spec in playbook.inputs.items():
        if given.get(name) is not None:  # an explicit null means "not given"
            size = len(json.dumps(given[name], ensure_ascii=False, default=str))
            if size > MAX_INPUT_CHARS:
                raise InputError(
                    f"input {name!r} is too long: {size} characters as JSON "
                    f"(at most {MAX_INPUT_CHARS})"
                )
            if spec.type != "list" and isinstance(given[name], str) and not given[name].strip():
                raise InputError(f"input {name!r} is blank")
            resolved[name] = coerce_input(name, spec, given[name])
            if resolved[name] == [] and spec.default != []:
                # An empty list would widen a measure it narrows ("empty = every post"), whether
                # or not the input has a default (the default is what was meant by "none").
                leave = "" if spec.default is None else " (or leave it out for its default)"
                raise InputError(f"input {name!r} is required: give at least one item{leave}")
        elif spec.default is not None:
            resolved[name] = coerce_input(name, spec, spec.default)
        else:
            raise InputError(f"input {name!r} is required (no default)")
    return resolved


def coerce_input(name: str, spec: InputSpec, value: Any) -> Any:
    """Coerce a value (possibly a CLI string) to the input's declared type."""
    if spec.type == "list":
        items = _split_list(name, value)
        kind = spec.items or "string"
        result: Any = []
        for number, item in enumerate(items, start=1):
            try:
                result.append(_coerce_scalar(name, kind, item))
            except InputError as error:
                if not isinstance(value, list | str):  # a lone value: not a list at all
                    raise InputError(
                        f"input {name!r}: expected a list of {kind}, got {shown(value)}"
                    ) from None
                if len(items) == 1:
                    raise
                said = str(error).removeprefix(f"input {name!r}: ")
                raise InputError(f"input {name!r}: item {number}: {said}") from None
    else:
        result = _coerce_scalar(name, spec.type, value)
    if spec.choices is not None:
        chosen = result if isinstance(result, list) else [result]
        for item in chosen:
            if item not in spec.choices:
                raise InputError(f"input {name!r}: {item!r} is not one of {spec.choices}")
    return result


def _split_list(name: str, value: Any) -> list[Any]:
    """A list from a JSON list, `a,b` or `[a, b]` (a CLI string); a lone value is a list of one."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return _no_blank_items(name, parsed)
            if not text.endswith("]"):
                raise InputError(
                    f"input {name!r}: {value!r} opens a list with '[' but never closes it"
                )
            text = text[1:-1]
        parts = [part.strip() for part in text.split(",")]
        if not any(parts):
            return []  # nothing but commas: an empty list, refused where one is required
        if not parts[-1]:
            parts.pop()  # a trailing comma ends the list; `a,,b` is a slip, refused below
        return _no_blank_items(name, parts)
    if isinstance(value, list):
        return _no_blank_items(name, value)
    return [value]


def _no_blank_items(name: str, items: list[Any]) -> list[Any]:
    for number, item in enumerate(items, start=1):
        if isinstance(item, str) and not item.strip():  # no measure names a blank category
            raise InputError(f"input {name!r}: item {number} is blank")
    return items


def _coerce_scalar(name: str, kind: str, value: Any) -> Any:
    """Text (a CLI value, a form field, a JSON string) is read as the type; any other value
    must be of the type already: a JSON `true` or `55` is no region name."""

    def bad() -> InputError:
        shown = repr(value) if isinstance(value, str) else json.dumps(value, default=str)
        return InputError(f"input {name!r}: expected {kind}, got {shown}")

    if kind == "string":
        if not isinstance(value, str):
            raise bad()
        return value.strip()  # " GB " names no region (a list's items are trimmed alike)
    if kind == "boolean":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise bad()
    if isinstance(value, bool):
        raise bad()
    if kind == "integer" and isinstance(value, int):
        return value
    if kind == "integer" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise bad() from None
    if not math.isfinite(number):  # "nan", "inf", a JSON 1e999: no threshold or multiplier
        raise bad()
    if kind == "integer":
        if not number.is_integer():
            raise bad()
        return int(number)
    return number


def retry_timings(spec: RetrySpec) -> tuple[timedelta, timedelta]:
    return parse_duration(spec.initial_interval), parse_duration(spec.max_interval)

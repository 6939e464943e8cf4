"""The playbook language: models for the YAML files engineers author, and their checks.

Pure pydantic, so the workflow can receive a playbook as a frozen snapshot. Reading files (and
turning a problem's path into `file:line:column`) is the loader's job in `engine/playbook_files.py`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workflows.durations import parse_duration
from workflows.levers import LEVERS
from workflows.substitution import NAMESPACES, ReferenceError_, references, substitute

Path = tuple[str | int, ...]
InputType = Literal["string", "number", "integer", "boolean", "list"]
ItemType = Literal["string", "number", "integer", "boolean"]
INCIDENT_FIELDS = ("id", "playbook", "triggered_by")

_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


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

    _check = field_validator("initial_interval", "max_interval")(
        lambda value: (parse_duration(value), value)[1]
    )


class LeverCall(_Strict):
    do: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")


class Step(_Strict):
    """One measure: pull lever `do` with arguments `with`; undo it on stand-down."""

    id: str = Field(pattern=_ID_PATTERN, max_length=64)
    do: str
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    undo: LeverCall | None = None
    description: str = ""
    retry: RetrySpec = RetrySpec()
    timeout: str = "10s"

    _check_timeout = field_validator("timeout")(lambda value: (parse_duration(value), value)[1])


class Playbook(_Strict):
    """A crisis playbook: what to do, in order, when an incident of this kind is declared."""

    playbook: str = Field(pattern=_ID_PATTERN, max_length=64, description="The playbook's name")
    version: int = Field(ge=1)
    title: str = Field(min_length=1)
    description: str = Field(min_length=1)
    owner: str = ""
    inputs: dict[str, InputSpec] = Field(default_factory=dict)
    steps: list[Step] = Field(min_length=1)

    @property
    def name(self) -> str:
        return self.playbook

    def snapshot(self) -> dict[str, Any]:
        """The playbook as data, in the form its content hash is computed from."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=False)

    def content_hash(self) -> str:
        canonical = json.dumps(self.snapshot(), sort_keys=True, separators=(",", ":"))
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class Problem:
    """A validation problem at a path inside the playbook document."""

    path: Path
    message: str


class InputError(ValueError):
    """An input given at trigger that the playbook does not accept."""


def check_playbook(playbook: Playbook) -> list[Problem]:
    """Cross-field checks the models alone cannot do: ids, levers, references, lever arguments."""
    problems: list[Problem] = []
    problems += _check_input_defaults(playbook)
    seen: dict[str, int] = {}
    for index, step in enumerate(playbook.steps):
        at: Path = ("steps", index)
        if step.id in seen:
            problems.append(
                Problem(
                    (*at, "id"),
                    f"duplicate step id {step.id!r} (first at step {seen[step.id] + 1})",
                )
            )
        seen.setdefault(step.id, index)
        problems += _check_call(playbook, step.do, step.with_, at)
        if step.undo is not None:
            problems += _check_call(playbook, step.undo.do, step.undo.with_, (*at, "undo"))
    return problems


def _check_call(
    playbook: Playbook, lever_name: str, args: dict[str, Any], at: Path
) -> list[Problem]:
    lever = LEVERS.get(lever_name)
    if lever is None:
        known = ", ".join(sorted(LEVERS))
        return [Problem((*at, "do"), f"unknown lever {lever_name!r} (known: {known})")]
    problems = [
        Problem((*at, "with", *path), message)
        for path, message in _reference_problems(playbook, args)
    ]
    if problems:
        return problems
    try:
        resolved = substitute(args, default_context(playbook))
    except ReferenceError_:
        # An input without a default: its type is checked when the incident is triggered.
        return []
    return [
        Problem((*at, "with", *path), message)
        for path, message in lever_arg_problems(lever_name, resolved)
    ]


def lever_arg_problems(lever_name: str, args: dict[str, Any]) -> list[tuple[Path, str]]:
    """Validate resolved arguments against the lever's model; paths are inside `with`."""
    try:
        LEVERS[lever_name].args.model_validate(args)
    except ValidationError as error:
        return [(tuple(e["loc"]), _pydantic_message(e)) for e in error.errors()]
    return []


def _pydantic_message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown argument {error['loc'][-1]!r}"
    if error["type"] == "missing":
        return f"missing argument {error['loc'][-1]!r}"
    return str(error["msg"])


def _reference_problems(playbook: Playbook, args: dict[str, Any]) -> list[tuple[Path, str]]:
    problems = []
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
        if spec.type == "list" and spec.items is None:
            problems.append(Problem(("inputs", name, "type"), "a list input needs `items:`"))
        if spec.default is not None:
            try:
                coerce_input(name, spec, spec.default)
            except InputError as error:
                problems.append(Problem(("inputs", name, "default"), str(error)))
    return problems


def default_context(playbook: Playbook) -> dict[str, dict[str, Any]]:
    """A substitution context from the inputs' defaults, for checking before any trigger."""
    inputs = {
        name: spec.default for name, spec in playbook.inputs.items() if spec.default is not None
    }
    return {
        "inputs": inputs,
        "incident": {"id": "INC-CHECK", "playbook": playbook.playbook, "triggered_by": "check"},
    }


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
            resolved[name] = coerce_input(name, spec, given[name])
        elif spec.default is not None:
            resolved[name] = coerce_input(name, spec, spec.default)
        else:
            raise InputError(f"input {name!r} is required (no default)")
    return resolved


def coerce_input(name: str, spec: InputSpec, value: Any) -> Any:
    """Coerce a value (possibly a CLI string) to the input's declared type."""
    if spec.type == "list":
        items = _split_list(value)
        result: Any = [_coerce_scalar(name, spec.items or "string", item) for item in items]
    else:
        result = _coerce_scalar(name, spec.type, value)
    if spec.choices is not None:
        chosen = result if isinstance(result, list) else [result]
        for item in chosen:
            if item not in spec.choices:
                raise InputError(f"input {name!r}: {item!r} is not one of {spec.choices}")
    return result


def _split_list(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            try:
                parsed = json.loads(text)
            except json.JSONDecodeError:
                parsed = None
            if isinstance(parsed, list):
                return parsed
        return [part.strip() for part in text.split(",") if part.strip()]
    return [value]


def _coerce_scalar(name: str, kind: str, value: Any) -> Any:
    def bad() -> InputError:
        return InputError(f"input {name!r}: expected {kind}, got {value!r}")

    if kind == "string":
        if isinstance(value, (dict, list)):
            raise bad()
        return str(value)
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
    if kind == "integer":
        if not number.is_integer():
            raise bad()
        return int(number)
    return number


def retry_timings(spec: RetrySpec) -> tuple[timedelta, timedelta]:
    return parse_duration(spec.initial_interval), parse_duration(spec.max_interval)

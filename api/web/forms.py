"""Forms: the trigger form a playbook's inputs call for, and the fields of each commander action
read from a posted form (the actor is never one of them: it is the signed-in principal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from workflows.playbook import InputSpec, Playbook

FieldKind = Literal["text", "number", "integer", "boolean", "list", "choice"]
INPUT_PREFIX = "input."


@dataclass(frozen=True)
class InputField:
    """One input of a playbook as a form field."""

    name: str
    kind: FieldKind
    value: str  # what the field shows: the posted value, else the default
    required: bool
    description: str
    choices: list[str]
    items: str | None = None

    @property
    def field_name(self) -> str:
        return f"{INPUT_PREFIX}{self.name}"

    @property
    def dom_id(self) -> str:
        return f"input-{self.name}"


def _shown(spec: InputSpec, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return ", ".join(_shown(spec, item) for item in value)  # list inputs: comma-separated
    return str(value)


def _kind(spec: InputSpec) -> FieldKind:
    if spec.choices and spec.type != "list":
        return "choice"
    return {"string": "text"}.get(spec.type, spec.type)  # type: ignore[return-value]


def input_fields(playbook: Playbook, posted: dict[str, str] | None = None) -> list[InputField]:
    """The playbook's inputs in declaration order, showing what was posted or the defaults."""
    fields = []
    for name, spec in playbook.inputs.items():
        key = f"{INPUT_PREFIX}{name}"
        value = posted[key] if posted is not None and key in posted else _shown(spec, spec.default)
        fields.append(
            InputField(
                name=name,
                kind=_kind(spec),
                value=value,
                required=spec.default is None,
                description=spec.description,
                choices=[_shown(spec, choice) for choice in spec.choices or []],
                items=spec.items,
            )
        )
    return fields


def inputs_from_form(playbook: Playbook, form: dict[str, str]) -> dict[str, Any]:
    """The given inputs as `resolve_inputs` takes them (strings it coerces; a list as
    comma-separated text). An empty field is not given, so its default applies; one of blanks
    only is given, and refused as blank as the CLI and the JSON API refuse it (a stray space must
    not start an incident on the default's settings). A field the playbook has no input for is
    passed on, so it is refused as the JSON API refuses it."""
    given: dict[str, Any] = {}
    for key, value in form.items():
        name = key.removeprefix(INPUT_PREFIX)
        if name == key:
            continue  # not an input: the CSRF token, the level
        if value or name not in playbook.inputs:
            given[name] = value.strip() or value
    return given


# --- commander actions ------------------------------------------------------------------------
class ActionRefused(ValueError):
    """A form the action cannot take (a required field left empty): one line for the page."""


@dataclass(frozen=True)
class ActionForm:
    """What one action reads from its form, and what it needs filled in."""

    fields: tuple[str, ...]
    required: dict[str, str]  # field → what to say when it is empty
    optional_none: tuple[str, ...] = ()  # fields whose empty value means "not given"


ACTION_FORMS: dict[str, ActionForm] = {
    "approve": ActionForm(("step_id", "comment"), {"step_id": "which step to approve"}),
    "reject": ActionForm(
        ("step_id", "reason"),
        {"step_id": "which step to reject", "reason": "a reason to reject"},
    ),
    "escalate": ActionForm(
        ("reason", "to_level"), {"reason": "a reason to escalate"}, optional_none=("to_level",)
    ),
    "de-escalate": ActionForm(
        ("reason", "to_level"), {"reason": "a reason to de-escalate"}, optional_none=("to_level",)
    ),
    "renew": ActionForm(
        ("step_id", "duration", "reason"),
        {
            "step_id": "which measure to renew",
            "duration": "how long the measure holds (e.g. 24h)",
            "reason": "a reason to renew",
        },
    ),
    "restore": ActionForm(
        ("step_id", "reason"),
        {"step_id": "which measure to restore", "reason": "a reason to restore"},
    ),
    "confirm-review": ActionForm(("note",), {}),
    "note": ActionForm(("text",), {"text": "the note's text"}),
    "stand-down": ActionForm(("reason",), {"reason": "a reason to stand down"}),
}


def action_fields(action: str, form: dict[str, str]) -> dict[str, Any]:
    """The action's fields from the form, stripped; ActionRefused naming a missing one."""
    spec = ACTION_FORMS[action]
    fields: dict[str, Any] = {}
    for name in spec.fields:
        value = form.get(name, "").strip()
        if not value and name in spec.required:
            raise ActionRefused(f"{action}: {spec.required[name]} is required")
        fields[name] = None if not value and name in spec.optional_none else value
    return fields


def build_request(model: type[BaseModel], fields: dict[str, Any], *, actor: str) -> BaseModel:
    """The workflow's request, acting as `actor` whatever the form held."""
    try:
        return model.model_validate({**fields, "actor": actor})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ActionRefused(f"{where}: {first['msg']}") from None

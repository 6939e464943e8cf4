"""Rendering notification templates: Jinja2 in its sandbox, strict about undefined names."""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from workflows.incident import MessageTemplate

# Templates come from the playbook library, not from users, but a sandbox costs nothing and
# keeps a careless template from reaching into Python objects.
ENVIRONMENT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class MessageError(ValueError):
    """A template that cannot be rendered (syntax error, unknown name)."""


def check_template(name: str, template: MessageTemplate) -> None:
    """Parse both parts; raise MessageError naming the template."""
    for part in ("subject", "body"):
        try:
            ENVIRONMENT.parse(getattr(template, part))
        except TemplateError as error:
            raise MessageError(f"template {name!r} {part}: {error}") from error


def render_message(
    template: MessageTemplate, context: dict[str, Any], data: dict[str, Any]
) -> tuple[str, str]:
    """The (subject, body) of a message for this incident."""
    values = {**context, "data": data}
    try:
        subject = ENVIRONMENT.from_string(template.subject).render(values).strip()
        body = ENVIRONMENT.from_string(template.body).render(values).strip()
    except TemplateError as error:
        raise MessageError(f"cannot render message: {error}") from error
    return subject, body

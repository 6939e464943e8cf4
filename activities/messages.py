"""Rendering notification templates: Jinja2 in its sandbox, strict about undefined names."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import SandboxedEnvironment

from workflows.incident import MessageTemplate

# Templates come from the playbook library, not from users, but a sandbox costs nothing and
# keeps a careless template from reaching into Python objects.
ENVIRONMENT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


class MessageError(ValueError):
    """A template that cannot be rendered (syntax error, unknown name); `part` says which."""

    def __init__(self, message: str, part: str = "") -> None:
        super().__init__(message)
        self.part = part  # "subject" or "body", when known


@lru_cache(maxsize=256)
def _compiled(source: str) -> Template:
    # Every delivery renders one of a few library templates: compile each text once per worker.
    return ENVIRONMENT.from_string(source)


def check_template(name: str, template: MessageTemplate) -> None:
    """Parse both parts; raise MessageError naming the template."""
    for part in ("subject", "body"):
        try:
            ENVIRONMENT.parse(getattr(template, part))
        except TemplateError as error:
            raise MessageError(f"template {name!r} {part}: {error}", part) from error


def check_render(
    name: str, template: MessageTemplate, context: dict[str, Any], data: dict[str, Any]
) -> None:
    """Render each part as `render_message` would; raise MessageError naming the part."""
    values = {**context, "data": data}
    for part in ("subject", "body"):
        try:
            _compiled(getattr(template, part)).render(values)
        # Not only TemplateError: a filter given the wrong type (`join` of a number) raises
        # TypeError, and fails the send just the same.
        except Exception as error:
            raise MessageError(f"template {name!r} {part}: {error}", part) from error


def render_message(
    template: MessageTemplate, context: dict[str, Any], data: dict[str, Any]
) -> tuple[str, str]:
    """The (subject, body) of a message for this incident."""
    values = {**context, "data": data}
    try:
        subject = _compiled(template.subject).render(values).strip()
        body = _compiled(template.body).render(values).strip()
    # As in `check_render`: a filter given the wrong type raises TypeError (or ValueError), and
    # rendering the same template with the same values fails again: a retry cannot help.
    except Exception as error:
        raise MessageError(f"cannot render message: {error}") from error
    return subject, body

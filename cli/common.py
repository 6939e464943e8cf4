"""What every command shares: settings, the acting person, inputs, output."""

from __future__ import annotations

import getpass
import os
import sys
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console

from cli.output import fail
from core.logging import configure_logging
from core.settings import Settings, get_settings

# Piped output keeps whole lines (Rich would wrap tables at 80 columns).
console = Console(width=None if sys.stdout.isatty() else 200)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def actor_name(actor: str | None) -> str:
    return actor or os.environ.get("CRISIS_ACTOR") or getpass.getuser()


def settings_or_fail() -> Settings:
    try:
        settings = get_settings()
    except ValidationError as error:
        first = error.errors()[0]
        fail(f"invalid settings: {first['msg'].removeprefix('Value error, ')}")
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return settings


def parse_inputs(pairs: list[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--input {pair!r}: expected key=value")
        inputs[key.strip()] = value
    return inputs

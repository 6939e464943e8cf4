"""What every command shares: settings, the acting person, inputs, output."""

from __future__ import annotations

import getpass
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.text import Text

from cli.output import fail, misuse, user_errors
from core.logging import configure_logging
from core.settings import Settings, get_settings
from workflows.limits import PRINCIPAL_PATTERN, PRINCIPAL_RULE

if TYPE_CHECKING:
    from cli.remote import RemoteApi, RemoteIncidents

# Piped output keeps whole lines (Rich would wrap tables at 80 columns).
console = Console(width=None if sys.stdout.isatty() else 200)

# Set by the global `--api` option: commander commands then go through that API as the token's
# principal instead of straight to Temporal.
API: dict[str, str] = {}

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def literal_row(*cells: str | None) -> list[Text]:
    """Table cells shown as they are: Rich would read `[bold]` in a reason or a platform's error
    as markup, and a stray closing tag like `[/x]` fails the whole print."""
    return [Text(cell or "") for cell in cells]


def actor_name(actor: str | None, ctx: typer.Context | None = None) -> str:
    """Who acts: --actor, else CRISIS_ACTOR (empty: unset), else the login name; named as token
    principals are, so that "alice" and "alice " never count as two approvers."""
    if actor is not None:
        name, source = actor, "--actor"
    elif os.environ.get("CRISIS_ACTOR"):
        name, source = os.environ["CRISIS_ACTOR"], "CRISIS_ACTOR"
    else:
        name, source = getpass.getuser(), "the login name (set CRISIS_ACTOR)"
    if not PRINCIPAL_PATTERN.fullmatch(name):
        message = f"{source}: {name!r} cannot name who acts: {PRINCIPAL_RULE}"
        misuse(ctx, message) if ctx is not None else fail(message, status=2)
    return name


def settings_or_fail() -> Settings:
    try:
        settings = get_settings()
    except ValidationError as error:
        first = error.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if first["loc"]:  # the environment variable, and what it holds
            message = f"{first['loc'][0]}={first['input']!r}: {message}"
        fail(f"invalid settings: {message}")
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return settings


def remote_api() -> RemoteApi | None:
    """The API client for commands other than the commander's when `--api` was given."""
    if "url" not in API:
        return None
    from cli.remote import RemoteApi

    with user_errors():
        return RemoteApi(API["url"], os.environ.get("CRISIS_TOKEN", ""))


def remote_incidents(ctx: typer.Context, actor: str | None = None) -> RemoteIncidents | None:
    """The remote API client when `--api` was given; None for direct mode. `actor`: the
    command's --actor, which the API cannot take (a usage error of `ctx`'s command)."""
    if "url" not in API:
        return None
    if actor:
        misuse(ctx, "--actor cannot be used with --api: the API acts as the token's principal")
    from cli.remote import RemoteIncidents

    with user_errors():
        return RemoteIncidents(API["url"], os.environ.get("CRISIS_TOKEN", ""))


def existing_store_url(settings: Settings, *, through_api: bool = True) -> str:
    """The audit store's URL for a command that only reads it: a SQLite file that is not there
    is the wrong data directory, not an empty store to create. `through_api`: the command can
    also go through `--api` instead."""
    url = settings.resolved_database_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        instead = ", or use --api" if through_api else ""
        if settings.database_url:  # named by CRISIS_DATABASE_URL, not found in the data directory
            fail(f"no audit store at {url} (CRISIS_DATABASE_URL names no file{instead})")
        fail(
            f"no audit store in {settings.data_dir.resolve()} (set CRISIS_DATA_DIR or "
            f"CRISIS_DATABASE_URL, run from the directory `crisis up` ran in{instead})"
        )
    return url


def parse_inputs(ctx: typer.Context, pairs: list[str]) -> dict[str, Any]:
    """`--input key=value` pairs; a malformed or repeated one is a usage error."""
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            misuse(ctx, f"--input {pair!r}: expected key=value")
        if key.strip() in inputs:
            misuse(ctx, f"--input {key.strip()!r} is given twice")
        inputs[key.strip()] = value
    return inputs

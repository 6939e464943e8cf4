"""How the CLI speaks: one-line errors on stderr, JSON or a table on stdout, a safe exit."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import typer

from engine.errors import (
    BundleError,
    HistoryError,
    IncidentError,
    LibraryError,
    PlaybookError,
    ScenarioError,
)
from store.errors import AuditStoreError, SealError
from workflows.playbook import InputError

T = TypeVar("T")
# Named errors a user can cause: each is one `error:` line, never a traceback.
KNOWN_ERRORS = (
    IncidentError,
    PlaybookError,
    InputError,
    AuditStoreError,
    LibraryError,
    ScenarioError,
    BundleError,
    HistoryError,
    SealError,
)


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def fail(message: str, status: int = 1) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    hard_exit(status)


def write_output(path: Path, text: str) -> None:
    """Write a file the user named; a missing directory or a directory in the way is one line."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        fail(f"cannot write {path}: {error.strerror or error}")


HTML_SUFFIXES = {".html": "html", ".htm": "html"}


def format_from_suffix(output: Path | None, by_suffix: dict[str, str], default: str) -> str:
    """The format a file name asks for (`report.html` is HTML), when --format is not given."""
    suffix = output.suffix.lower() if output is not None else ""
    return by_suffix.get(suffix, default)


def usage_error(error: typer.TyperException) -> NoReturn:
    """A command used wrongly: one line naming the mistake and where its help is."""
    message = " ".join(error.format_message().split()).rstrip(".").replace("Value error, ", "")
    context = getattr(error, "ctx", None)  # usage errors carry the command's context
    command = context.command_path if context is not None else "crisis"
    fail(f"{message[:1].lower()}{message[1:]} (see {command} --help)", error.exit_code)


def misuse(ctx: typer.Context, message: str) -> NoReturn:
    """A value the command cannot take, seen by the command itself: as a usage error (exit 2)."""
    fail(f"{message} (see {ctx.command_path} --help)", 2)


def hard_exit(status: int) -> NoReturn:
    # The Temporal SDK can crash the interpreter at exit (sdk-python#300); leave without teardown.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, sort_keys=False, default=str))


@contextmanager
def user_errors() -> Iterator[None]:
    try:
        yield
    except KNOWN_ERRORS as error:
        fail(str(error))
    except CliError as error:
        fail(str(error))


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine that talks to Temporal; a connection failure is one clear line."""
    with user_errors():
        try:
            return asyncio.run(make())  # type: ignore[arg-type]
        except KNOWN_ERRORS:
            raise  # their own line (an audit store's refused connection is not Temporal's)
        except RuntimeError as error:
            if "connect" in str(error).lower():
                fail(
                    f"cannot reach Temporal{_connect_problem(str(error))} (is `crisis up` running?)"
                )
            raise


# The transport's own words inside the client's connect error, e.g. `ConnectError("tcp connect
# error", 127.0.0.1:7233, Os { code: 111, kind: ConnectionRefused, message: "Connection
# refused" })`.
_CONNECT_ERROR = re.compile(r'ConnectError\("([^"]+)", ([^,()]+), Os \{[^}]*message: "([^"]+)"')


def _connect_problem(error: str) -> str:
    """` at ADDRESS: what failed (why)` from the client's connect error, else `: ERROR` whole."""
    found = _CONNECT_ERROR.search(error)
    if found is None:
        return f": {error}"
    what, address, why = found.groups()
    return f" at {address}: {what} ({why.lower()})"

"""`crisis`: the command line for engineers, commanders and auditors."""

from __future__ import annotations

import asyncio
import getpass
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from cli.output import CliError, fail, hard_exit, print_json, run_async, user_errors
from core.logging import configure_logging
from core.settings import Settings, get_settings
from engine.incidents import Incidents, prepare_incident, verify_audit
from engine.playbook_files import find_playbook, load_playbook, playbook_files, validate_file
from engine.temporal import connect, running_worker
from store.audit_store import AuditStore
from workflows.incident import IncidentStatus
from workflows.playbook import Playbook

app = typer.Typer(
    help="Crisis response engine: playbooks, incidents, audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
playbook_app = typer.Typer(help="Author and check playbooks.", no_args_is_help=True)
audit_app = typer.Typer(help="Check the audit trail.", no_args_is_help=True)
app.add_typer(playbook_app, name="playbook")
app.add_typer(audit_app, name="audit")
# Piped output keeps whole lines (Rich would wrap tables at 80 columns).
console = Console(width=None if sys.stdout.isatty() else 200)

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")]


def _actor(actor: str | None) -> str:
    return actor or os.environ.get("CRISIS_ACTOR") or getpass.getuser()


def _settings() -> Settings:
    try:
        settings = get_settings()
    except ValidationError as error:
        first = error.errors()[0]
        fail(f"invalid settings: {first['msg'].removeprefix('Value error, ')}")
    configure_logging(level=settings.log_level, fmt=settings.log_format)
    return settings


# --- playbooks --------------------------------------------------------------------------------
@playbook_app.command("validate")
def playbook_validate(
    paths: Annotated[list[Path], typer.Argument(help="Playbook files (or directories) to check.")],
    as_json: JsonFlag = False,
) -> None:
    """Check playbook files; print each problem as file:line:column: message."""
    files = [f for p in paths for f in (playbook_files(p) if p.is_dir() else [p])]
    if not files:
        fail("no playbook files given")
    problems = {str(f): validate_file(f) for f in files}
    bad = sum(1 for found in problems.values() if found)
    if as_json:
        print_json(
            {
                "files": [
                    {
                        "file": f,
                        "valid": not found,
                        "problems": [
                            {"line": p.line, "column": p.column, "message": p.message}
                            for p in found
                        ],
                    }
                    for f, found in problems.items()
                ],
                "valid": bad == 0,
            }
        )
    else:
        for found in problems.values():
            for problem in found:
                typer.echo(str(problem), err=True)
        if not bad:
            typer.echo(f"ok: {len(files)} playbook(s) valid")
    raise typer.Exit(1 if bad else 0)


@playbook_app.command("schema")
def playbook_schema(output: Annotated[Path | None, typer.Option("-o", "--output")] = None) -> None:
    """Print (or write) the JSON Schema of the playbook language, for editors."""
    text = json.dumps(Playbook.model_json_schema(by_alias=True), indent=2) + "\n"
    if output:
        output.write_text(text)
    else:
        typer.echo(text, nl=False)


@playbook_app.command("list")
def playbook_list(as_json: JsonFlag = False) -> None:
    """List the playbooks in the library."""
    settings = _settings()
    rows = []
    for path in playbook_files(settings.playbooks_dir):
        with user_errors():
            pb = load_playbook(path)
        rows.append(
            {
                "name": pb.playbook,
                "version": pb.version,
                "title": pb.title,
                "steps": len(pb.steps),
                "file": str(path),
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table("name", "version", "title", "steps")
    for row in rows:
        table.add_row(row["name"], str(row["version"]), row["title"], str(row["steps"]))
    console.print(table)


# --- incidents --------------------------------------------------------------------------------
def _parse_inputs(pairs: list[str]) -> dict[str, Any]:
    inputs: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            fail(f"--input {pair!r}: expected key=value")
        inputs[key.strip()] = value
    return inputs


@app.command()
def trigger(
    playbook: Annotated[str, typer.Argument(help="Playbook name or path to a playbook file.")],
    inputs: Annotated[list[str], typer.Option("--input", "-i", help="key=value (repeatable)")] = [],  # noqa: B006
    actor: Annotated[str | None, typer.Option(help="Who declares the incident.")] = None,
    incident_id: Annotated[
        str | None, typer.Option("--id", help="Incident id (default: generated).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Declare an incident: start the playbook's workflow."""
    settings = _settings()
    given = _parse_inputs(inputs)
    with user_errors():  # check the playbook and inputs before connecting anywhere
        playbook_path = find_playbook(playbook, settings.playbooks_dir)
        prepare_incident(load_playbook(playbook_path), given, actor=_actor(actor))

    async def go() -> Any:
        client = await connect(settings)
        return await Incidents(client, settings).trigger(
            str(playbook_path), given, actor=_actor(actor), incident_id=incident_id
        )

    triggered = run_async(go)
    if as_json:
        print_json(
            {
                "incident_id": triggered.incident_id,
                "playbook": triggered.playbook,
                "version": triggered.version,
                "playbook_hash": triggered.playbook_hash,
                "inputs": triggered.inputs,
            }
        )
    else:
        typer.echo(
            f"incident {triggered.incident_id} triggered: {triggered.playbook} v{triggered.version}"
        )
    hard_exit(0)


def _clock(iso: str | None) -> str:
    """Time of day to the millisecond (UTC); the full timestamps are in --json."""
    return iso[11:23] if iso else ""


def _print_status(status: IncidentStatus) -> None:
    console.print(
        f"[bold]{status.incident_id}[/bold]  state: [bold]{status.state}[/bold]  "
        f"playbook: {status.playbook} v{status.version} ({status.playbook_hash[:19]}…)"
    )
    console.print(f"triggered by {status.triggered_by} at {status.triggered_at}")
    if status.stand_down:
        console.print(f"stand-down by {status.stand_down.actor}: {status.stand_down.reason}")
    table = Table("step", "lever", "state", "started", "finished", "undone", "error")
    for step in status.steps:
        table.add_row(
            step.id,
            step.lever,
            step.state,
            _clock(step.started_at),
            _clock(step.finished_at),
            _clock(step.undone_at),
            step.error or "",
        )
    console.print(table)


@app.command()
def status(incident_id: str, as_json: JsonFlag = False) -> None:
    """Show an incident's state and each step's state and times."""
    settings = _settings()

    async def go() -> IncidentStatus:
        return await Incidents(await connect(settings), settings).status(incident_id)

    result = run_async(go)
    print_json(result.model_dump(mode="json")) if as_json else _print_status(result)
    hard_exit(0)


@app.command("stand-down")
def stand_down(
    incident_id: str,
    reason: Annotated[
        str, typer.Option(help="Why the crisis is over (recorded in the audit trail).")
    ],
    actor: Annotated[str | None, typer.Option(help="Who stands the incident down.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Stand an incident down: undo every applied measure in reverse order, then close it."""
    settings = _settings()
    if not reason.strip():
        fail("--reason must not be empty")

    async def go() -> IncidentStatus:
        return await Incidents(await connect(settings), settings).stand_down(
            incident_id, actor=_actor(actor), reason=reason
        )

    result = run_async(go)
    print_json(result.model_dump(mode="json")) if as_json else _print_status(result)
    hard_exit(0)


# --- audit ------------------------------------------------------------------------------------
@audit_app.command("verify")
def audit_verify(incident_id: str, as_json: JsonFlag = False) -> None:
    """Recompute an incident's hash chain; exit non-zero naming the first bad row."""
    settings = _settings()
    store = AuditStore(settings.resolved_database_url)
    with user_errors():
        result = verify_audit(store, incident_id)
    if as_json:
        print_json(result.as_dict())
    elif result.ok:
        typer.echo(f"ok: {incident_id}: {result.events} audit events, chain intact")
    else:
        typer.echo(f"error: {incident_id}: {result.problem}", err=True)
    raise typer.Exit(0 if result.ok else 1)


# --- processes --------------------------------------------------------------------------------
@app.command()
def worker() -> None:
    """Run a worker: executes incident workflows and their levers until SIGINT/SIGTERM."""
    settings = _settings()

    async def go() -> None:
        client = await connect(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with running_worker(client, settings=settings):
            console.print(
                f"worker polling {settings.task_queue!r} on {settings.temporal_address}",
                highlight=False,
            )
            await stop.wait()

    run_async(go)
    hard_exit(0)


@app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Interface (default CRISIS_API_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CRISIS_API_PORT).")] = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /docs)."""
    import uvicorn

    from api.main import create_app

    settings = _settings()
    uvicorn.run(
        create_app(settings),
        host=host or settings.api_host,
        port=port or settings.api_port,
        log_level="warning",
    )
    hard_exit(0)


@app.command()
def sandbox(
    host: Annotated[
        str | None, typer.Option(help="Interface (default CRISIS_SANDBOX_HOST).")
    ] = None,
    port: Annotated[int | None, typer.Option(help="Port (default CRISIS_SANDBOX_PORT).")] = None,
) -> None:
    """Serve the platform sandbox: a stand-in platform with real state and fault injection."""
    from sandbox.server import run_sandbox

    settings = _settings()
    run_sandbox(host=host or settings.sandbox_host, port=port or settings.sandbox_port)


@app.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (CRISIS_DATA_DIR).")] = None,
    temporal_port: Annotated[int | None, typer.Option(help="Temporal port (default 7233).")] = None,
    ui_port: Annotated[
        int | None, typer.Option(help="Temporal UI port (TEMPORAL_UI_PORT).")
    ] = None,
    api_port: Annotated[int | None, typer.Option(help="API port (CRISIS_API_PORT).")] = None,
    sandbox_port: Annotated[
        int | None, typer.Option(help="Sandbox port (CRISIS_SANDBOX_PORT).")
    ] = None,
) -> None:
    """Run the embedded stack: Temporal dev server, sandbox, worker, API. Ctrl-C stops it all."""
    from cli.up import run_stack

    settings = _settings()
    overrides: dict[str, Any] = {
        "data_dir": data_dir,
        "api_port": api_port,
        "sandbox_port": sandbox_port,
        "temporal_ui_port": ui_port,
    }
    if temporal_port is not None:
        overrides["temporal_address"] = f"127.0.0.1:{temporal_port}"
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    try:
        status_code = run_stack(settings)
    except CliError as error:
        fail(str(error))
    hard_exit(status_code)


def main() -> None:
    app()

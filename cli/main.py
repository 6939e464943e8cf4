"""`crisis`: the command line for engineers, commanders and auditors."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from cli import audit, board, playbooks, tokens
from cli.common import (
    API,
    JsonFlag,
    actor_name,
    console,
    existing_store_url,
    literal_row,
    parse_inputs,
    settings_or_fail,
)
from cli.common import remote_incidents as _remote_incidents
from cli.output import (
    CliError,
    fail,
    hard_exit,
    misuse,
    print_json,
    run_async,
    usage_error,
    user_errors,
)

if TYPE_CHECKING:
    from core.settings import Settings
    from engine.incidents import Incidents
    from workflows.incident import IncidentStatus, StepRecord

# Each command imports the engine parts it uses when it runs: the Temporal client, SQLAlchemy and
# FastAPI together take seconds to import, which every `crisis --help` would otherwise pay.

app = typer.Typer(
    help="Crisis response engine: playbooks, incidents, audit.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(playbooks.app, name="playbook")
app.add_typer(audit.app, name="audit")
app.add_typer(audit.history_app, name="history")
app.add_typer(tokens.app, name="tokens")
app.command("replay")(audit.replay)
app.command("incidents")(board.incidents)


@app.callback()
def _options(
    api_url: Annotated[
        str | None,
        typer.Option(
            "--api",
            envvar="CRISIS_API",
            help="Act through this API (e.g. http://crisis.example:8000) as the principal of "
            "the token in CRISIS_TOKEN, instead of talking to Temporal directly.",
        ),
    ] = None,
) -> None:
    if api_url:
        API["url"] = api_url


async def _direct_incidents(settings: Settings) -> Incidents:
    """Incidents over a direct Temporal connection (no `--api`)."""
    from engine.incidents import Incidents
    from engine.temporal import connect

    return Incidents(await connect(settings), settings)


# --- incidents --------------------------------------------------------------------------------
@app.command()
def trigger(
    ctx: typer.Context,
    playbook: Annotated[
        str,
        typer.Argument(help="Playbook name, or a path to a playbook file (not with --api)."),
    ],
    inputs: Annotated[list[str], typer.Option("--input", "-i", help="key=value (repeatable)")] = [],  # noqa: B006
    actor: Annotated[str | None, typer.Option(help="Who declares the incident.")] = None,
    incident_id: Annotated[
        str | None, typer.Option("--id", help="Incident id (default: generated).")
    ] = None,
    level: Annotated[
        str | None, typer.Option(help="Starting level (default: the playbook's lowest).")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Declare an incident: start the playbook's workflow."""
    settings = settings_or_fail()
    given = parse_inputs(ctx, inputs)
    remote = _remote_incidents(ctx, actor)
    if remote is not None:  # the server's library and checks, the token's principal
        if incident_id is not None:
            from engine.incidents import check_incident_id

            with user_errors():  # said of --id here, not of the API's request body
                check_incident_id(incident_id)
        answer = run_async(
            lambda: remote.trigger(playbook, given, incident_id=incident_id, level=level)
        )
        _print_triggered(answer, level, as_json)
        hard_exit(0)
    from engine.incidents import prepare_incident
    from engine.playbook_files import find_playbook, load_playbook

    with user_errors():  # check the playbook and inputs before connecting anywhere
        playbook_path = find_playbook(playbook, settings.playbooks_dir)
        # With the library, as validate, plan and the worker's own trigger read it.
        loaded = load_playbook(playbook_path, settings.playbooks_dir)
        prepare_incident(
            loaded, given, actor=actor_name(actor, ctx), incident_id=incident_id, level=level
        )

    async def go() -> Any:
        return await (await _direct_incidents(settings)).trigger(
            str(playbook_path),
            given,
            actor=actor_name(actor, ctx),
            incident_id=incident_id,
            level=level,
        )

    triggered = run_async(go)
    _print_triggered(
        {
            "incident_id": triggered.incident_id,
            "playbook": triggered.playbook,
            "version": triggered.version,
            "playbook_hash": triggered.playbook_hash,
            "inputs": triggered.inputs,
            "warnings": list(triggered.warnings),
        },
        level,
        as_json,
    )
    hard_exit(0)


def _print_triggered(triggered: dict[str, Any], level: str | None, as_json: bool) -> None:
    for warning in triggered.get("warnings", []):  # on stderr: --json output stays parseable
        typer.echo(f"warning: {warning}", err=True)
    if as_json:
        print_json(triggered)
        return
    at_level = f" at level {level}" if level else ""
    typer.echo(
        f"incident {triggered['incident_id']} triggered: {triggered['playbook']} "
        f"v{triggered['version']}{at_level}"
    )


def _restore_hint(incident_id: str) -> str:
    return f" (crisis restore {incident_id} STEP --reason TEXT [--by-hand])"


def _clock(iso: str | None) -> str:
    """Time of day to the millisecond (UTC); the full timestamps are in --json."""
    return iso[11:23] if iso else ""


def _print_status(status: IncidentStatus) -> None:
    console.print(
        f"[bold]{status.incident_id}[/bold]  state: [bold]{status.state}[/bold]  "
        f"playbook: {status.playbook} v{status.version} ({status.playbook_hash[:19]}…)"
    )
    console.print(
        f"triggered by {escape(status.triggered_by or '')} at {_moment(status.triggered_at)} UTC"
    )
    if status.stand_down:
        down = status.stand_down
        console.print(f"stand-down by {escape(down.actor)}: {escape(down.reason)}")
    from engine.incidents import maybe_in_force, unrestored

    if unknown := [s.id for s in maybe_in_force(status)]:
        console.print(
            "[bold yellow]MAY BE IN FORCE[/bold yellow] (the apply had no answer; the platform "
            f"may have applied it, and a stand-down takes it back): {escape(', '.join(unknown))}"
        )
    left = [s.id for s in unrestored(status)]
    if left and status.state != "closed":
        waiting = status.state == "standing_down"
        closes = ": the incident closes once none is left" if waiting else ""
        console.print(
            f"[bold red]NOT RESTORED[/bold red] (undo failed for good): {escape(', '.join(left))}"
            f"{closes}{_restore_hint(status.incident_id)}"
        )
    _print_command_state(status)
    table = Table("step", "lever", "state", "started", "finished", "undone", "expires", "error")
    for step in status.steps:
        state = f"{step.state}, LIFTED by {step.lifted_by}" if step.lifted_by else step.state
        table.add_row(
            *literal_row(
                step.id,
                step.lever,
                f"{state} ({step.outcome})" if step.outcome else state,
                _clock(step.started_at),
                _clock(step.finished_at),
                _clock(step.undone_at),
                _moment(step.expires_at),
                step.error,
            )
        )
    console.print(table)


@app.command()
def status(ctx: typer.Context, incident_id: str, as_json: JsonFlag = False) -> None:
    """Show an incident's state and each step's state and times."""
    settings = settings_or_fail()
    remote = _remote_incidents(ctx)

    async def go() -> IncidentStatus:
        if remote is not None:
            return await remote.status(incident_id)
        return await (await _direct_incidents(settings)).status(incident_id)

    result = run_async(go)
    print_json(result.model_dump(mode="json")) if as_json else _print_status(result)
    hard_exit(0)


@app.command("stand-down")
def stand_down(
    ctx: typer.Context,
    incident_id: str,
    reason: Annotated[
        str, typer.Option(help="Why the crisis is over (recorded in the audit trail).")
    ],
    actor: Annotated[str | None, typer.Option(help="Who stands the incident down.")] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Even if a later open incident holds measures on the same settings: each "
            "measure taken back hands those settings to it, and it puts its own back at once.",
        ),
    ] = False,
    as_json: JsonFlag = False,
) -> None:
    """Stand an incident down: undo every applied measure in reverse order, then close it.

    Refused if a later open incident changed the same settings since (standing this one down
    first would lift its measures): stand that one down first, or pass --force."""
    settings = settings_or_fail()
    if not reason.strip():
        misuse(ctx, "--reason must not be empty")
    _check_length(ctx, "reason", reason)
    remote = _remote_incidents(ctx, actor)

    async def go() -> Any:
        if remote is not None:
            return await remote.act(incident_id, "stand-down", {"reason": reason, "force": force})
        incidents = await _direct_incidents(settings)
        if not force:
            from engine.overlap import refuse_if_later_overlaps
            from store.audit_store import AuditStore

            store = AuditStore(existing_store_url(settings))
            try:
                await refuse_if_later_overlaps(store, incident_id)
            finally:
                store.dispose()
        return await incidents.stand_down(
            incident_id, actor=actor_name(actor, ctx), reason=reason, force=force
        )

    result = run_async(go)
    print_json(result.model_dump(mode="json")) if as_json else _print_status(result)
    from engine.incidents import not_restored, undelivered

    unsent = undelivered(result)  # told no one, but nothing left in force by it
    if (left := not_restored(result)) is not None:  # not all put back
        how = "" if result.state == "closed" else _restore_hint(incident_id)
        also = f"; and {unsent}" if unsent else ""
        fail(f"incident {incident_id} is {result.state.replace('_', ' ')}, but {left}{how}{also}")
    if unsent is not None:
        typer.echo(f"warning: incident {incident_id}: {unsent}", err=True)
    hard_exit(0)


# === commander actions ========================================================================
# Every command here is one workflow Update from `engine.incidents.ACTIONS`: a command only gathers
# its arguments and says how to describe the answer; `_act` builds the request, runs it, prints.
# (Kept together; other command groups go in their own sections.)

# How each request field is spelled on the command line, for error messages.
_FLAGS = {
    "step_id": "STEP",
    "text": "TEXT",
    "role": "--role",
    "reason": "--reason",
    "comment": "--comment",
    "to_level": "--to",
    "duration": "--for",
    "note": "--note",
    "actor": "--actor",
}
ActorOption = Annotated[
    str | None, typer.Option(help="Who acts (default: CRISIS_ACTOR, else the login name).")
]
ReasonOption = Annotated[str, typer.Option(help="Why (recorded in the audit trail).")]
RoleOption = Annotated[str, typer.Option(help="The role you act in (one the step accepts).")]
# Module-level: Typer resolves the annotations of the commands `_level_command` makes by name.
ToOption = Annotated[
    str | None, typer.Option("--to", help="Target level (default: the next one that way).")
]


def _act(
    ctx: typer.Context,
    action: str,
    incident_id: str,
    *,
    as_json: bool,
    say: Callable[[Any], str],
    actor: str | None,
    failed: Callable[[Any], str | None] | None = None,
    **fields: Any,
) -> None:
    """Run the commander action `action` (a key of ACTIONS) and print its answer or one error.
    `failed`: what went wrong, if the answer says the action was taken but did not succeed (the
    answer is printed, then that line, and the exit is non-zero)."""
    from engine.incidents import ACTIONS

    settings = settings_or_fail()
    update, request_model = ACTIONS[action]
    remote = _remote_incidents(ctx, actor)
    # Checked here; a remote API uses its principal instead.
    fields["actor"] = actor_name(actor, ctx)
    for name, value in fields.items():
        required = request_model.model_fields[name].is_required()
        if required and isinstance(value, str) and not value.strip():
            misuse(ctx, f"{_FLAGS.get(name, name)} must not be empty")
        _check_length(ctx, name, value)
    try:
        request = request_model(**fields)
    except ValidationError as error:
        first = error.errors()[0]
        fail(f"{_FLAGS.get(str(first['loc'][0]), first['loc'][0])}: {first['msg']}")

    async def go() -> Any:
        if remote is not None:
            return await remote.act(incident_id, action, request.model_dump())
        return await (await _direct_incidents(settings)).act(incident_id, update, request)

    result = run_async(go)
    print_json(result.model_dump(mode="json")) if as_json else typer.echo(say(result))
    if failed is not None and (problem := failed(result)) is not None:
        fail(problem)
    hard_exit(0)


def _check_length(ctx: typer.Context, name: str, value: Any) -> None:
    """Refuse text over the limits the workflow keeps (workflows.limits) before sending it,
    naming the option, as a usage error."""
    from workflows.limits import MAX_NAME_CHARS, MAX_NOTE_CHARS, MAX_TEXT_CHARS

    texts = {"text": MAX_NOTE_CHARS} | dict.fromkeys(("reason", "comment", "note"), MAX_TEXT_CHARS)
    limit = texts.get(name, MAX_NAME_CHARS)  # the rest are names: actor, role, step, level
    if isinstance(value, str) and len(value) > limit:
        misuse(
            ctx, f"{_FLAGS.get(name, name)} is too long: {len(value)} characters (at most {limit})"
        )


def _approvers(record: StepRecord) -> str:
    return ", ".join(f"{a.actor} ({a.role})" for a in record.approvals) or "none yet"


def _moment(iso: str | None) -> str:
    """Date and time to the second (UTC), for deadlines that may be days away."""
    return f"{iso[:10]} {iso[11:19]}" if iso else ""


def _print_command_state(status: IncidentStatus) -> None:
    """What a commander acts on: level, approvals awaited, next review, notes."""
    if status.levels:
        console.print(
            f"level: [bold]{escape(status.level or 'none')}[/bold] "
            f"(levels: {escape(', '.join(status.levels))})"
        )
    for step in status.steps:
        if step.state == "awaiting_approval":
            console.print(
                f"awaiting approval: {step.id} — {len(step.approvals)} of {step.quorum or 1}: "
                f"{escape(_approvers(step))}; deadline {_moment(step.approval_deadline)} UTC"
            )
    for step in status.steps:
        for delivery in step.deliveries:
            if delivery.state == "failed":
                console.print(
                    f"[red]delivery FAILED[/red]: {step.id} to {escape(delivery.target)}: "
                    f"{escape(delivery.error or '')}"
                )
    if status.next_review_due:
        missed = f" ({status.reviews_missed} missed)" if status.reviews_missed else ""
        console.print(f"next review due {_moment(status.next_review_due)} UTC{missed}")
    console.print(f"notes: {len(status.notes)}")


@app.command()
def approve(
    ctx: typer.Context,
    incident_id: str,
    step: Annotated[str, typer.Argument(help="The step awaiting approval.")],
    role: RoleOption,
    comment: Annotated[str, typer.Option(help="A comment for the record.")] = "",
    actor: ActorOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Approve a step awaiting approval; it runs once enough distinct people approved it."""

    def say(record: StepRecord) -> str:
        return (
            f"approved {record.id} ({len(record.approvals)} of {record.quorum}: "
            f"{_approvers(record)})"
        )

    _act(
        ctx,
        "approve",
        incident_id,
        as_json=as_json,
        say=say,
        actor=actor,
        step_id=step,
        role=role,
        comment=comment,
    )


@app.command()
def reject(
    ctx: typer.Context,
    incident_id: str,
    step: Annotated[str, typer.Argument(help="The step awaiting approval.")],
    role: RoleOption,
    reason: ReasonOption,
    actor: ActorOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Reject a step awaiting approval: it is skipped and the playbook carries on."""

    def say(record: StepRecord) -> str:
        return f"rejected {record.id} (now {record.state})"

    _act(
        ctx,
        "reject",
        incident_id,
        as_json=as_json,
        say=say,
        actor=actor,
        step_id=step,
        role=role,
        reason=reason,
    )


def _level_command(
    action: str,
    done: str,
    default: str,
    failed: Callable[[IncidentStatus], str | None] | None = None,
) -> None:
    """`escalate` and `de-escalate` take the same arguments; only the direction differs (and a
    de-escalation also answers for the measures it withdraws: `failed`)."""

    @app.command(action, help=f"Change the incident's level ({default} by default).")
    def change_level(
        ctx: typer.Context,
        incident_id: str,
        reason: ReasonOption,
        to: ToOption = None,
        actor: ActorOption = None,
        as_json: JsonFlag = False,
    ) -> None:
        def say(status: IncidentStatus) -> str:
            return f"{done} {status.incident_id} to {status.level}"

        _act(
            ctx,
            action,
            incident_id,
            as_json=as_json,
            say=say,
            actor=actor,
            failed=failed,
            reason=reason,
            to_level=to,
        )


def _not_withdrawn(status: IncidentStatus) -> str | None:
    from engine.incidents import not_withdrawn

    left = not_withdrawn(status)
    return None if left is None else f"incident {status.incident_id}: {left}"


_level_command("escalate", "escalated", "one level up")
_level_command("de-escalate", "de-escalated", "one level down", failed=_not_withdrawn)


@app.command()
def renew(
    ctx: typer.Context,
    incident_id: str,
    step: Annotated[str, typer.Argument(help="The measure to renew.")],
    duration: Annotated[
        str,
        typer.Option(
            "--for", help="How long from now it holds (past its current expiry), e.g. 24h."
        ),
    ],
    reason: ReasonOption,
    actor: ActorOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Renew a measure before it lapses (or re-apply one that has lapsed)."""

    def say(record: StepRecord) -> str:
        if record.state == "expired":
            return f"renewed {record.id}: re-applying the lapsed measure"
        return f"renewed {record.id} until {_moment(record.expires_at)} UTC"

    from workflows.durations import parse_renewal

    try:  # here too, so that direct mode and --api refuse it with the same line
        parse_renewal(duration)
    except ValueError as error:
        misuse(ctx, f"--for: {error}")
    _act(
        ctx,
        "renew",
        incident_id,
        as_json=as_json,
        say=say,
        actor=actor,
        step_id=step,
        duration=duration,
        reason=reason,
    )


@app.command()
def restore(
    ctx: typer.Context,
    incident_id: str,
    step: Annotated[str, typer.Argument(help="The measure whose undo failed for good.")],
    reason: ReasonOption,
    by_hand: Annotated[
        bool,
        typer.Option(
            "--by-hand",
            help="Record that the setting was restored on the platform by hand; the undo is "
            "not retried.",
        ),
    ] = False,
    actor: ActorOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Restore a measure whose undo failed: retry the undo, or record a restore by hand.

    A stand-down waiting for it closes once none is left. A retry is refused while a later open
    incident holds measures on its settings (it would lift them)."""

    def say(record: StepRecord) -> str:
        if record.state == "undo_failed":
            return f"retried the undo of {record.id}"
        how = "recorded as restored by hand" if by_hand else "taken back on the platform"
        return f"{record.id} {how} (now {record.state})"

    def failed(record: StepRecord) -> str | None:
        if record.state != "undo_failed":
            return None
        return (
            f"the undo of {record.id} failed again ({record.error or 'no reason given'}): it may "
            "still be in force; retry later, or restore it by hand and record that with --by-hand"
        )

    if _remote_incidents(ctx, actor) is None:  # the API checks it itself
        _refuse_restore_over_later(incident_id, step, by_hand=by_hand)
    _act(
        ctx,
        "restore",
        incident_id,
        as_json=as_json,
        say=say,
        actor=actor,
        failed=failed,
        step_id=step,
        reason=reason,
        by_hand=by_hand,
    )


def _refuse_restore_over_later(incident_id: str, step: str, *, by_hand: bool) -> None:
    from engine.overlap import refuse_restore_if_later_overlaps
    from store.audit_store import AuditStore

    settings = settings_or_fail()
    store = AuditStore(existing_store_url(settings))

    async def check() -> None:
        incidents = await _direct_incidents(settings)
        await refuse_restore_if_later_overlaps(store, incidents, incident_id, step, by_hand=by_hand)

    try:
        run_async(check)
    finally:
        store.dispose()


@app.command()
def review(
    ctx: typer.Context,
    incident_id: str,
    note: Annotated[str, typer.Option(help="What the review found.")] = "",
    actor: ActorOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Confirm the periodic review: the measures are still needed."""

    def say(status: IncidentStatus) -> str:
        return f"review confirmed; next due {_moment(status.next_review_due)} UTC"

    _act(ctx, "confirm-review", incident_id, as_json=as_json, say=say, actor=actor, note=note)


@app.command()
def note(
    ctx: typer.Context,
    incident_id: str,
    text: Annotated[str, typer.Argument(help="The note.")],
    actor: ActorOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Add a note to the incident's record."""

    def say(status: IncidentStatus) -> str:
        return f"note added to {status.incident_id} (notes: {len(status.notes)})"

    _act(ctx, "note", incident_id, as_json=as_json, say=say, actor=actor, text=text)


# === end of commander actions =================================================================


# --- audit ------------------------------------------------------------------------------------
# --- processes --------------------------------------------------------------------------------
@app.command()
def worker() -> None:
    """Run a worker: executes incident workflows and their levers until SIGINT/SIGTERM."""
    from core.heap import freeze_startup_heap
    from engine.temporal import connect, running_worker

    settings = settings_or_fail()

    async def go() -> None:
        client = await connect(settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with running_worker(client, settings=settings):
            freeze_startup_heap()
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
    from engine.temporal import connect
    from store.audit_store import AuditStore

    settings = settings_or_fail()

    async def reachable() -> None:
        # Checked first, for one error line: a failed app start prints the server's traceback.
        AuditStore(settings.resolved_database_url).dispose()
        await connect(settings)

    run_async(reachable)
    uvicorn.run(
        create_app(settings, freeze_heap=True),
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

    settings = settings_or_fail()
    run_sandbox(host=host or settings.sandbox_host, port=port or settings.sandbox_port)


@app.command()
def up(
    data_dir: Annotated[Path | None, typer.Option(help="Data directory (CRISIS_DATA_DIR).")] = None,
    temporal_port: Annotated[
        int | None,
        typer.Option(
            min=1, max=65535, help="Temporal port (default: the port of TEMPORAL_ADDRESS, 7233)."
        ),
    ] = None,
    ui_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Temporal UI port (TEMPORAL_UI_PORT).")
    ] = None,
    api_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="API port (CRISIS_API_PORT).")
    ] = None,
    sandbox_port: Annotated[
        int | None, typer.Option(min=1, max=65535, help="Sandbox port (CRISIS_SANDBOX_PORT).")
    ] = None,
) -> None:
    """Run the embedded stack: Temporal dev server, sandbox, worker, API. Ctrl-C stops it all."""
    from cli.up import run_stack

    settings = settings_or_fail()
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
    """Run `crisis`; a usage mistake is one `error:` line (exit 2) instead of a boxed message."""
    try:
        status = app(prog_name="crisis", standalone_mode=False)
    except typer.TyperException as error:  # Typer's (vendored Click's) usage errors
        if type(error).__name__ == "NoArgsIsHelpError":  # the help is printed already
            hard_exit(error.exit_code)
        usage_error(error)
    except typer.Abort:
        fail("aborted")
    # Without standalone mode Typer returns `typer.Exit`'s code, or the command's result (None).
    hard_exit(status if isinstance(status, int) else 0)

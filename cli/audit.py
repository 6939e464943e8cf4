"""For auditors: `crisis audit verify|export|report`, `crisis history export`, `crisis replay`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer
from rich.markup import escape

from cli.common import JsonFlag, console, existing_store_url, settings_or_fail
from cli.output import (
    HTML_SUFFIXES,
    fail,
    format_from_suffix,
    hard_exit,
    misuse,
    print_json,
    run_async,
    user_errors,
    write_output,
)
from engine.errors import BundleError, HistoryError
from store.errors import SealError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from core.settings import Settings
    from engine.integrity import Integrity
    from engine.verification import IncidentHistory, ReplayReport

# Commands import the store, the Temporal client and the replayer when they run (see cli/main.py).

# Archive formats a bundle is not written as (FILE.tar.gz is): refused, not made a directory.
OTHER_ARCHIVES = frozenset({".zip", ".tgz", ".tar", ".gz", ".bz2", ".xz", ".7z"})

app = typer.Typer(help="Prove what happened: verify, export, report.", no_args_is_help=True)
history_app = typer.Typer(help="Temporal histories of incidents.", no_args_is_help=True)


def _engine_key(settings: Settings, *, or_else: str = "") -> Ed25519PublicKey:
    """The engine's public key, from its signing key on this machine; never creates one.
    `or_else`: what else the command accepts instead (said in the error)."""
    from store.seals import engine_public_key

    try:
        return engine_public_key(settings.signing_key_path)
    except SealError as error:
        fail(f"{error}: set CRISIS_SIGNING_KEY to the engine's key file{or_else}")


def _write(path: Path, text: str) -> None:
    """Write a file the user named, making its directory as `audit export` does."""
    try:
        if not path.parent.is_dir():
            path.parent.mkdir(parents=True)
    except FileExistsError:
        pass  # made meanwhile by another export, or a file in the way: the write says which
    except OSError as error:
        fail(f"cannot write {path}: {error.strerror or error}")
    write_output(path, text)


def _sealed(seals: int, through: int) -> str:
    counted = f"{seals} seal" + ("" if seals == 1 else "s")
    return f"{counted}, through row {through}" if through else f"{counted}, none verified"


def _print_integrity(integrity: Integrity) -> None:
    verdict = integrity.verdict()
    console.print(
        f"[bold]{integrity.incident_id}[/bold]  key {integrity.key_id} "
        f"(trusted: {escape(integrity.trusted_key)})"
    )
    if integrity.bundle_key_id is not None:
        console.print(f"  key     {verdict['key']}")
    chain = integrity.chain
    console.print(f"  chain   {verdict['chain']}  ({chain.events} events)")
    seals = integrity.seals
    console.print(f"  seals   {verdict['seals']}  ({_sealed(seals.seals, seals.sealed_through)})")
    if integrity.replay is not None:
        replay = integrity.replay
        console.print(
            f"  replay  {verdict['replay']}  ({replay.runs} run(s), {replay.history_events} "
            f"history events; {replay.replay_vs_store.events} audit events match the "
            f"{replay.stored_in})"
        )
    else:
        console.print(f"  replay  {escape(verdict['replay'])}")
    if "board" in verdict:
        console.print(f"  board   {escape(verdict['board'])}  (the incidents table's row)")
    if integrity.ok:
        typer.echo(integrity.summary())
        return
    typer.echo(f"error: {integrity.incident_id}: {integrity.failure()}", err=True)


@app.command("verify")
def verify(
    ctx: typer.Context,
    incident_id: Annotated[
        str | None, typer.Argument(help="Incident to verify in the store.")
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Verify an export bundle offline instead.")
    ] = None,
    public_key: Annotated[
        Path | None,
        typer.Option(
            help="The engine's public key (PEM) to trust; default: the engine's own, when this "
            "machine holds its signing key. A bundle's own key is never trusted."
        ),
    ] = None,
    replay: Annotated[bool, typer.Option(help="Also replay the Temporal history.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """Check the hash chain, the seals and (by default) the replay; non-zero exit on any failure."""
    from engine.integrity import (
        BUNDLE_EVENTS,
        check_bundle,
        check_with_replay,
        read_bundle,
        verify_incident,
    )
    from engine.temporal import connect
    from store.audit_store import AuditStore
    from store.seals import load_public_key

    settings = settings_or_fail()
    if incident_id is not None and bundle is not None:
        misuse(ctx, "give an incident id or --bundle PATH, not both")
    if incident_id is None and bundle is None:
        misuse(ctx, "give an incident id or --bundle PATH")
    trusted: Ed25519PublicKey | None = None
    if public_key is not None:
        trusted_key = f"--public-key {public_key}"
        with user_errors():
            try:
                trusted = load_public_key(public_key.read_text())
            except (OSError, SealError) as error:
                fail(f"--public-key {public_key}: {error}")
    else:
        trusted_key = f"the engine's signing key {settings.signing_key_path}"
        if settings.signing_key_path.is_file():
            trusted = _engine_key(settings)
        elif bundle is not None:
            # The key inside a bundle proves nothing: a forger re-signs and ships their own.
            fail(
                "no engine signing key on this machine to trust: pass --public-key ENGINE.pem "
                "(the engine's public key, from its operator)"
            )

    async def go() -> Integrity:
        if bundle is not None:
            try:
                loaded = read_bundle(bundle)
            except (BundleError, HistoryError) as error:
                fail(str(error))
            assert trusted is not None
            integrity = check_bundle(loaded, trusted, trusted_key=trusted_key)
            if not replay:
                integrity.replay_skipped = "--no-replay"
            elif loaded.history is not None:
                integrity = await check_with_replay(
                    integrity, loaded.events, loaded.history, stored_in=BUNDLE_EVENTS
                )
            return integrity
        assert incident_id is not None
        store = AuditStore(existing_store_url(settings, through_api=False))
        key = trusted or _engine_key(settings, or_else=", or pass --public-key ENGINE.pem")
        client = await connect(settings) if replay else None
        return await verify_incident(
            client,
            store,
            key,
            incident_id,
            replay=replay,
            trusted_key=trusted_key,
            skipped_because="--no-replay",
        )

    integrity = run_async(go)
    print_json(integrity.as_dict()) if as_json else _print_integrity(integrity)
    hard_exit(0 if integrity.ok else 1)


@app.command("export")
def export(
    incident_id: str,
    output: Annotated[Path, typer.Option("-o", "--output", help="A directory, or FILE.tar.gz.")],
    with_history: Annotated[bool, typer.Option("--history/--no-history")] = True,
) -> None:
    """Write an export bundle (rows, seals, public key, history) an outside auditor can verify."""
    from engine.integrity import write_bundle
    from engine.temporal import connect
    from engine.verification import export_history
    from store.audit_store import AuditStore
    from store.seals import Signer

    settings = settings_or_fail()
    if output.exists() and not output.is_dir() and not output.name.endswith(".tar.gz"):
        fail(f"cannot write {output}: it is a file (give a directory or FILE.tar.gz)")
    if output.suffix in OTHER_ARCHIVES and not output.name.endswith(".tar.gz"):
        # It would be written as a directory of that name, which no one would expect.
        fail(f"cannot write {output}: a bundle is a directory or FILE.tar.gz, not {output.suffix}")

    async def go() -> Path:
        store = AuditStore(existing_store_url(settings, through_api=False))
        _engine_key(settings)  # never made here: Signer would create a missing key
        signer = Signer(settings.signing_key_path)
        events = store.events(incident_id)
        if not events:
            fail(f"no audit trail for incident {incident_id}")
        history = (
            await export_history(await connect(settings), incident_id) if with_history else None
        )
        try:
            return write_bundle(
                output,
                incident_id=incident_id,
                events=events,
                seals=store.seals(incident_id),
                public_key=signer.public_key,
                history=history,
                signer=signer,
            )
        except OSError as error:
            fail(f"cannot write {output}: {error.strerror or error}")

    written = run_async(go)
    typer.echo(f"exported {incident_id} to {written}")
    hard_exit(0)


@app.command("report")
def report(
    incident_id: str,
    format: Annotated[
        Literal["md", "html", "json"] | None,
        typer.Option(
            "--format", "-f", help="md, html or json (default: from -o's suffix, else md)."
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "-o",
            "--output",
            help="File to write (default: stdout); Markdown writes its SVG chart beside it "
            "(on stdout it has no chart).",
        ),
    ] = None,
) -> None:
    """The post-incident report: facts, timeline, chart, key figures, review due, integrity."""
    from engine.report import render_markdown
    from engine.reporting import incident_report
    from engine.temporal import connect
    from store.audit_store import AuditStore

    settings = settings_or_fail()

    async def go():
        store = AuditStore(existing_store_url(settings, through_api=False))
        key = _engine_key(settings)
        return await incident_report(
            await connect(settings), store, key, incident_id, settings=settings
        )

    if format is None:  # as `crisis playbook doc` does: report.html is HTML
        format = format_from_suffix(output, {**HTML_SUFFIXES, ".json": "json"}, "md")  # type: ignore[assignment]
    built = run_async(go)
    text = {"md": built.markdown, "html": built.html, "json": json.dumps(built.json, indent=2)}[
        format
    ]
    if output is None:
        # No chart file is written beside stdout: a link to one would point at nothing.
        typer.echo(render_markdown(built.report) if format == "md" else text)
    else:
        _write(output, text)
        if format == "md":
            write_output(output.parent / built.chart_name, built.svg)
            typer.echo(f"wrote {output} and {output.parent / built.chart_name}")
        else:
            typer.echo(f"wrote {output}")
    if (failed := built.report.integrity_failed()) is not None:  # written, for forensics
        fail(f"{incident_id}: the report is of a record that does not verify: {failed}")
    hard_exit(0)


@history_app.command("export")
def history_export(
    incident_id: str,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="File (default: stdout).")
    ] = None,
) -> None:
    """Write the incident's Temporal history as JSON, every run across continue-as-new."""
    from engine.temporal import connect
    from engine.verification import export_history

    settings = settings_or_fail()

    async def go() -> IncidentHistory:
        return await export_history(await connect(settings), incident_id)

    history = run_async(go)
    text = history.to_json()
    if output is None:
        typer.echo(text)
    else:
        _write(output, text)
        events = sum(len(run.events) for run in history.runs)
        typer.echo(f"exported {len(history.runs)} run(s), {events} events to {output}")
    hard_exit(0)


def replay(
    ctx: typer.Context,
    incident_id: Annotated[str | None, typer.Argument(help="Incident to fetch and replay.")] = None,
    history: Annotated[
        Path | None,
        typer.Option(
            "--history",
            help="An exported history file, a directory of them, or an export bundle (its "
            "history.json is replayed against its events.json, with no store needed).",
        ),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Replay through today's code: deterministic? do its audit events equal the audit table?"""
    from rich.console import Console
    from rich.progress import Progress

    from engine.integrity import BUNDLE_EVENTS, is_bundle, read_bundle, rows_after_history
    from engine.temporal import connect
    from engine.verification import UNREPLAYED, IncidentHistory, export_history, replay_incident
    from store.audit_store import AuditStore

    settings = settings_or_fail()
    if incident_id is not None and history is not None:
        misuse(ctx, "give an incident id or --history FILE|DIR, not both")
    if incident_id is None and history is None:
        misuse(ctx, "give an incident id or --history FILE|DIR")

    async def go() -> list[ReplayReport]:
        if history is not None and is_bundle(history):
            try:
                bundle = read_bundle(history)
            except (BundleError, HistoryError) as error:
                fail(str(error))
            if bundle.history is None:
                fail(f"{history}: the bundle has no history.json (exported with --no-history)")
            return [await replay_incident(bundle.history, bundle.events, stored_in=BUNDLE_EVENTS)]
        store = AuditStore(existing_store_url(settings, through_api=False))
        if incident_id is not None:
            before = store.events(incident_id)
            exported = await export_history(await connect(settings), incident_id)
            rows, meanwhile = rows_after_history(store, incident_id, before)
            return [await replay_incident(exported, rows, written_meanwhile=meanwhile)]
        assert history is not None
        files = sorted(history.glob("*.json")) if history.is_dir() else [history]
        if not files:
            fail(f"no history files in {history}")
        reports = []
        # Progress goes to stderr: stdout carries the verdict alone (a blank line was left there).
        progress_to = Console(stderr=True)
        with Progress(console=progress_to, transient=True, disable=as_json) as progress:
            task = progress.add_task("replaying", total=len(files))
            for path in files:
                try:
                    loaded = IncidentHistory.from_file(path)
                except HistoryError as error:
                    fail(str(error))
                reports.append(await replay_incident(loaded, store.events(loaded.incident_id)))
                progress.advance(task)
        return reports

    reports = run_async(go)
    ok = all(r.ok for r in reports)
    if as_json:
        print_json({"ok": ok, "incidents": [r.as_dict() for r in reports]})
    else:
        for r in reports:
            if r.ok:
                later = (
                    f"; the last {r.unreplayed_rows} row(s) {UNREPLAYED}"
                    if r.unreplayed_rows
                    else ""
                )
                typer.echo(
                    f"ok: {r.incident_id}: deterministic, {r.replay_vs_store.events} events "
                    f"match{later}"
                )
            else:
                problem = (
                    r.divergence
                    or r.replay_vs_store.first_difference
                    or r.replay_vs_history.first_difference
                )
                typer.echo(f"FAILED: {r.incident_id}: {problem}")
        if len(reports) > 1:
            typer.echo(f"{sum(r.ok for r in reports)} of {len(reports)} histories ok")
    hard_exit(0 if ok else 1)

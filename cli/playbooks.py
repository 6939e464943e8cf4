"""`crisis playbook ...`: author and check playbooks before a crisis, not during one."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from cli.common import (
    JsonFlag,
    actor_name,
    console,
    literal_row,
    parse_inputs,
    settings_or_fail,
)
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
from core.logging import configure_logging
from engine.errors import FileProblem, ScenarioError
from engine.plan import make_plan
from engine.playbook_files import (
    FileCheck,
    check_file,
    find_playbook,
    load_playbook,
    not_a_playbook,
    playbook_files,
)
from workflows.playbook import Playbook

if TYPE_CHECKING:
    from engine.protocol import Format
    from engine.simulate import SimulationResult

# The simulator (a whole time-skipping server and worker) and the protocol renderer load only for
# the commands that use them (see cli/main.py).

app = typer.Typer(help="Author and check playbooks.", no_args_is_help=True)


# --- playbooks --------------------------------------------------------------------------------
@app.command("validate")
def playbook_validate(
    paths: Annotated[list[Path], typer.Argument(help="Playbook files (or directories) to check.")],
    as_json: JsonFlag = False,
) -> None:
    """Check playbook files; print each problem as file:line:column: message."""
    settings = settings_or_fail()
    files: list[Path] = []
    skipped: list[dict[str, str]] = []
    empty: list[Path] = []
    for path in paths:
        if path.is_dir():
            found = playbook_files(path)
            if not found:  # a mistyped or emptied drafts directory must not pass as valid
                empty.append(path)
            files.extend(found)
        elif reason := not_a_playbook(path):
            # `validate playbooks/*.yaml` names these too: say so, rather than fail them.
            if not as_json:
                typer.echo(f"{path}: skipped: {reason}", err=True)
            skipped.append({"file": str(path), "reason": reason})
        else:
            files.append(path)
    if not files and not empty:
        fail(
            f"no playbook to check ({len(skipped)} file(s) skipped)"
            if skipped
            else "no playbook files given"
        )
    checks = {str(f): check_file(f, settings.playbooks_dir) for f in files}
    nothing = "no playbook files (*.yaml, *.yml) in this directory"
    checks |= {str(d): FileCheck([FileProblem(d, 1, 1, nothing)], []) for d in empty}
    problems = {name: check.problems for name, check in checks.items()}
    warnings = {name: check.warnings for name, check in checks.items()}
    bad = sum(1 for found in problems.values() if found)
    if as_json:
        print_json(
            {
                "files": [
                    {
                        "file": f,
                        "valid": not found,
                        "problems": [_problem(f, p) for p in found],
                        "warnings": [
                            {"line": w.line, "column": w.column, "message": w.message}
                            for w in warnings[f]
                        ],
                    }
                    for f, found in problems.items()
                ],
                "skipped": skipped,
                "valid": bad == 0,
            }
        )
    else:
        shown: set[str] = set()  # a library file's problem, once for all the playbooks using it
        for name, found in problems.items():
            for problem in found:
                line = str(problem)
                if str(problem.file) != name and line in shown:
                    continue
                shown.add(line)
                typer.echo(line, err=True)
            for warning in warnings[name]:
                typer.echo(
                    f"{warning.file}:{warning.line}:{warning.column}: warning: {warning.message}",
                    err=True,
                )
        if not bad:
            typer.echo(f"ok: {len(files)} playbook(s) valid")
    raise typer.Exit(1 if bad else 0)


def _problem(file: str, problem: FileProblem) -> dict[str, str | int]:
    """A problem as JSON; `file` only when it is in another file (a library file)."""
    found: dict[str, str | int] = {
        "line": problem.line,
        "column": problem.column,
        "message": problem.message,
    }
    if str(problem.file) != file:
        found["file"] = str(problem.file)
    return found


@app.command("schema")
def playbook_schema(output: Annotated[Path | None, typer.Option("-o", "--output")] = None) -> None:
    """Print (or write) the JSON Schema of the playbook language, for editors."""
    text = json.dumps(Playbook.model_json_schema(by_alias=True), indent=2) + "\n"
    if output:
        write_output(output, text)
    else:
        typer.echo(text, nl=False)


@app.command("list")
def playbook_list(as_json: JsonFlag = False) -> None:
    """List the playbooks in the library: version, owner, levels, levers and content hash."""
    from engine.protocol import levers_used

    settings = settings_or_fail()
    if not settings.playbooks_dir.is_dir():
        fail(f"no playbooks directory at {settings.playbooks_dir} (CRISIS_PLAYBOOKS_DIR)")
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
                "owner": pb.owner,
                "levels": list(pb.levels),
                "levers": levers_used(pb),
                "content_hash": pb.content_hash,
            }
        )
    if as_json:
        print_json(rows)
        return
    table = Table("name", "version", "title", "owner", "levels", "levers", "steps", "hash")
    for row in rows:
        table.add_row(
            row["name"],
            str(row["version"]),
            escape(row["title"]),
            escape(row["owner"] or "-"),
            escape(", ".join(row["levels"]) or "-"),
            ", ".join(row["levers"]),
            str(row["steps"]),
            row["content_hash"][:19] + "…",  # as `playbook plan` shows it
        )
    console.print(table)


@app.command("doc")
def playbook_doc(
    ctx: typer.Context,
    playbooks: Annotated[
        list[str] | None,
        typer.Argument(help="Playbook names or files; none = every playbook in the library."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", help="md or html (default: from -o's suffix, else md)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("-o", "--output", help="Write the document to this file.")
    ] = None,
) -> None:
    """The written crisis response protocol, generated from the playbooks that run."""
    from engine.protocol import build_protocol, load_sources, render

    settings = settings_or_fail()
    chosen = _doc_format(ctx, fmt, output)
    with user_errors():  # every playbook is checked before anything is written
        sources = load_sources(playbooks or [], settings.playbooks_dir)
    document = build_protocol(sources)
    text = render(document, chosen)
    if output is None:
        typer.echo(text, nl=False)
        return
    write_output(output, text)
    names = ", ".join(f"{pb.name} v{pb.version}" for pb in document.playbooks)
    typer.echo(f"wrote {output} ({chosen}): crisis response protocol for {names}")


def _doc_format(ctx: typer.Context, fmt: str | None, output: Path | None) -> Format:
    from engine.protocol import FORMATS

    if fmt is None:
        return "html" if format_from_suffix(output, HTML_SUFFIXES, "md") == "html" else "md"
    for known in FORMATS:
        if fmt.lower() == known:
            return known
    misuse(ctx, f"--format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _load(file: Path) -> Playbook:
    settings = settings_or_fail()
    with user_errors():
        return load_playbook(
            find_playbook(str(file), settings.playbooks_dir), settings.playbooks_dir
        )


@app.command("plan")
def plan(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="Playbook file (or a name from the library).")],
    inputs: Annotated[list[str], typer.Option("--input", "-i", help="key=value (repeatable)")] = [],  # noqa: B006
    level: Annotated[str | None, typer.Option(help="The level to plan for.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """What would run, in which order, who must approve, when measures lapse; touches nothing."""
    from engine.incidents import prepare_incident

    playbook = _load(file)
    with user_errors():  # the inputs and level exactly as `crisis trigger` checks them
        prepared = prepare_incident(
            playbook, parse_inputs(ctx, inputs), actor=actor_name(None, ctx), level=level
        )
    made = make_plan(playbook, prepared.inputs, level)
    if as_json:
        print_json(made.as_dict())
        return
    console.print(
        f"[bold]{made.playbook}[/bold] v{made.version} at level {made.level or 'n/a'}  "
        f"({made.playbook_hash[:19]}…)"
    )
    console.print(f"inputs: {escape(json.dumps(made.inputs, ensure_ascii=False))}", highlight=False)
    table = Table("#", "step", "runs", "lever / kind", "approval", "lapses after", "undo")
    for item in made.steps:
        runs = "yes" if item.runs else f"no: {item.why_not}"
        if item.after:
            runs += f", once {item.after} is settled (same settings)"
        what = item.lever or (f"wait {item.wait}" if item.wait else item.kind)
        table.add_row(
            *literal_row(
                item.order, item.id, runs, what, item.approval, item.lapses_after, item.undo
            )
        )
    console.print(table)
    if made.reviews:
        console.print(f"reviews: {escape(made.reviews)}")
    if made.post_incident_review:
        console.print(f"post-incident review: {escape(made.post_incident_review)}")


@app.command("simulate")
def simulate(
    file: Annotated[Path, typer.Argument(help="Playbook file (or a name from the library).")],
    script: Annotated[
        Path | None,
        typer.Option(help="Scenario YAML: inputs, level, actions and checks at offsets."),
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Run a playbook for real, days passing in seconds, with scripted actions and checks."""
    from temporalio.service import RPCError

    from engine.simulate import Scenario, format_offset, load_scenario
    from engine.simulate import simulate as run_simulation

    settings = settings_or_fail()
    configure_logging(level="warning", fmt=settings.log_format)  # the timeline is the output
    with user_errors():
        path = find_playbook(str(file), settings.playbooks_dir)
        load_playbook(path, settings.playbooks_dir)
        try:
            scenario = load_scenario(script) if script else Scenario()
        except ScenarioError as error:
            fail(str(error))

    async def go() -> SimulationResult:
        try:
            return await run_simulation(
                path,
                scenario,
                progress=None if as_json else _say,
                library_dir=settings.playbooks_dir,
            )
        except ScenarioError as error:
            fail(str(error))
        except RPCError as error:  # the test server gave up (a skip it could not make, ...)
            fail(
                f"simulation stopped: the time-skipping test server answered "
                f"{error.status.name}: {error.message}"
            )

    result = run_async(go)
    if as_json:
        print_json({**asdict(result), "ok": result.ok})
        hard_exit(0 if result.ok else 1)
    table = Table("at", "event", "step", "actor", "detail")
    for entry in result.timeline:
        detail = {
            k: v
            for k, v in entry.data.items()
            if k in ("level", "reason", "error", "until", "lever")
        }
        table.add_row(
            *literal_row(
                format_offset(entry.offset_s),
                entry.kind,
                entry.step_id,
                entry.actor,
                ", ".join(f"{k}={v}" for k, v in detail.items()),
            )
        )
    console.print(table)
    _print_checks(result)
    refused = [a for a in result.actions if not a.ok]
    console.print(
        f"{result.incident_id}: {result.final_state} after {format_offset(result.simulated_s)} "
        f"simulated in {result.wall_s:.1f}s; {len(result.actions)} actions, {len(refused)} refused",
        highlight=False,
    )
    if not result.ok:
        failed = result.failed_checks
        named = ", ".join(f"{c.name!r} at {c.at}" for c in failed)
        fail(f"{len(failed)} of {len(result.checks)} checks failed: {named}")
    hard_exit(0)


def _print_checks(result: SimulationResult) -> None:
    """Each check's verdict and, for a failed one, every difference found."""
    table = Table("at", "check", "verdict", "what differed")
    for check in result.checks:
        verdict = "skipped" if check.skipped else "ok" if check.passed else "FAILED"
        shown = check.differences if not check.passed or check.skipped else []
        table.add_row(check.at, escape(check.name), verdict, escape("\n".join(shown)))
    console.print(table)
    passed = sum(1 for c in result.checks if c.passed and not c.skipped)
    skipped = sum(1 for c in result.checks if c.skipped)
    console.print(
        f"checks: {passed} passed, {len(result.failed_checks)} failed, {skipped} skipped",
        highlight=False,
    )


def _say(message: str) -> None:
    console.print(f"[dim]{message}[/dim]", highlight=False)

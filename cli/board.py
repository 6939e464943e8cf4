"""`crisis incidents`: the incident board on the command line, as `GET /v1/incidents` serves it."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, get_args

import typer
from rich.table import Table

from cli.common import (
    JsonFlag,
    console,
    existing_store_url,
    literal_row,
    remote_incidents,
    settings_or_fail,
)
from cli.output import hard_exit, misuse, print_json, run_async

if TYPE_CHECKING:
    from engine.board import BoardEntry, BoardPage


def incidents(
    ctx: typer.Context,
    state: Annotated[
        str,
        typer.Option(help="open (not closed yet), all, running, standing_down, closed or failed."),
    ] = "open",
    playbook: Annotated[str | None, typer.Option(help="Only this playbook's incidents.")] = None,
    level: Annotated[str | None, typer.Option(help="Only incidents at this level.")] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=200, help="At most this many, newest first.")
    ] = 50,
    offset: Annotated[int, typer.Option(min=0, help="Skip this many (for the next page).")] = 0,
    as_json: JsonFlag = False,
) -> None:
    """List incidents, newest first: state, level, approvals waiting, measures in force."""
    from engine.board import StateFilter  # not at import: it loads the store

    if state not in (states := get_args(StateFilter)):
        misuse(ctx, f"--state {state!r}: expected one of {', '.join(states)}")
    settings = settings_or_fail()
    remote = remote_incidents(ctx)
    filters = {"state": state, "playbook": playbook, "level": level, "limit": limit}

    async def go() -> BoardPage:
        if remote is not None:
            return await remote.board({**filters, "offset": offset})
        from engine.board import board_page
        from store.audit_store import AuditStore

        store = AuditStore(existing_store_url(settings))
        try:
            return board_page(store, offset=offset, **filters)  # type: ignore[arg-type]
        finally:
            store.dispose()

    page = run_async(go)
    if as_json:
        print_json(page.model_dump(mode="json"))
    else:
        _print_board(page)
    hard_exit(0)


def _print_board(page: BoardPage) -> None:
    if not page.items:
        console.print("no incidents")
        return
    table = Table(
        "incident", "playbook", "state", "level", "triggered", "waiting", "in force", "attention"
    )
    for entry in page.items:
        table.add_row(
            *literal_row(
                entry.incident_id,
                f"{entry.playbook} v{entry.version}",
                entry.state,
                entry.level,
                _when(entry.triggered_at),
                _waiting(entry),
                _in_force(entry),
                _attention(entry),
            )
        )
    console.print(table)
    if page.next_offset is not None:
        console.print(f"more: --offset {page.next_offset}")


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _waiting(entry: BoardEntry) -> str:
    return ", ".join(f"{p.step_id} ({p.approvals}/{p.quorum})" for p in entry.pending_approvals)


def _in_force(entry: BoardEntry) -> str:
    if not entry.measures:
        return ""
    soonest = f", next lapse {_when(entry.next_expiry)}" if entry.next_expiry else ""
    lifted = sum(1 for m in entry.measures if m.lifted_by)
    stuck = sum(1 for m in entry.measures if m.not_restored)
    maybe = sum(1 for m in entry.measures if m.uncertain)
    return (
        f"{len(entry.measures) - maybe}{soonest}"
        + (f", {lifted} LIFTED" if lifted else "")
        + (f", {stuck} NOT RESTORED" if stuck else "")
        + (f", {maybe} MAY BE" if maybe else "")
    )


def _attention(entry: BoardEntry) -> str:
    """What the console board flags beside the measures: the review, failed deliveries."""
    said = []
    if entry.review_due is not None:
        due = _when(entry.review_due)
        said.append(f"review OVERDUE since {due}" if entry.review_overdue else f"review due {due}")
    if entry.failed_deliveries:
        failed = len(entry.failed_deliveries)
        said.append(f"{failed} deliver{'y' if failed == 1 else 'ies'} FAILED")
    return ", ".join(said)

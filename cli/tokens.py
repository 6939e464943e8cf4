"""`crisis tokens create|list|revoke`: the API tokens people and services call the API with."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from cli.common import JsonFlag, console, literal_row, remote_api, settings_or_fail
from cli.output import fail, misuse, print_json, run_async
from store.errors import TokenError

if TYPE_CHECKING:
    from store.tokens import TokenStore

app = typer.Typer(
    help="API tokens: issue, list, revoke (roles: commander, engineer, auditor, admin, or an "
    "approver role a playbook names). With --api, on the API's database, as an admin.",
    no_args_is_help=True,
)


def _through_api(method: str, path: str, body: dict[str, Any] | None = None, **params: Any) -> Any:
    """The answer of an admin route when `--api` was given; None in direct mode."""
    remote = remote_api()
    if remote is None:
        return None
    query = {k: v for k, v in params.items() if v is not None}
    return run_async(lambda: remote.call(method, path, body, params=query or None))


@contextmanager
def _token_store() -> Iterator[TokenStore]:
    """The token store of the configured database; its errors are one line each."""
    # SQLAlchemy loads only for token commands (see cli/main.py).
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import SQLAlchemyError

    from store.tokens import TokenStore

    settings = settings_or_fail()
    try:
        store = TokenStore(settings.resolved_database_url)
    except SQLAlchemyError as error:
        where = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
        fail(f"cannot open the database {where}: {_first_line(error)}")
    try:
        yield store
    except TokenError as error:
        fail(str(error))
    except SQLAlchemyError as error:
        fail(f"database error: {_first_line(error)}")
    finally:
        store.dispose()


def _first_line(error: Exception) -> str:
    # The driver's own message, without SQLAlchemy's SQL echo and background link.
    return (str(error.__cause__ or error).strip().splitlines() or ["unknown error"])[0]


def _moment(moment: object) -> str:
    return f"{moment:%Y-%m-%d %H:%M:%S}" if moment else ""


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="The principal: who the token speaks for.")],
    roles: Annotated[
        list[str], typer.Option("--role", help="A role of the principal (repeatable).")
    ],
    as_json: JsonFlag = False,
) -> None:
    """Issue a token for NAME. It is printed once: only its hash is kept."""
    from store.tokens import IssuedToken, TokenInfo

    answer = _through_api("POST", "/tokens", {"principal": name, "roles": roles})
    if answer is not None:
        issued = IssuedToken(TokenInfo.from_dict(answer), answer["token"])
    else:
        with _token_store() as store:
            issued = store.create(name, roles)
    warning = "warning: this token is shown once and cannot be shown again: store it now"
    if as_json:
        print_json({**issued.info.as_dict(), "token": issued.token})
    else:
        info = issued.info
        typer.echo(f"token {info.id} for {info.principal} (roles: {', '.join(info.roles)}):")
        typer.echo(issued.token)
    typer.echo(warning, err=True)


@app.command("list")
def list_tokens(
    principal: Annotated[str | None, typer.Option(help="Only this principal's tokens.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Every token, oldest first, with its principal, roles and use (never a secret)."""
    from store.tokens import TokenInfo

    answer = _through_api("GET", "/tokens", principal=principal)
    if answer is not None:
        found = [TokenInfo.from_dict(item) for item in answer]
    else:
        with _token_store() as store:
            found = store.list(principal=principal)
    if as_json:
        print_json([info.as_dict() for info in found])
        return
    table = Table("id", "principal", "roles", "created", "last used", "state")
    for info in found:
        state = "active" if info.active else f"revoked {_moment(info.revoked_at)}"
        table.add_row(
            *literal_row(
                info.id,
                info.principal,
                ", ".join(info.roles),
                _moment(info.created_at),
                _moment(info.last_used_at),
                state,
            )
        )
    console.print(table)


@app.command("revoke")
def revoke(
    ctx: typer.Context,
    token_id: Annotated[
        str | None, typer.Argument(help="The token's id (`crisis tokens list`).")
    ] = None,
    principal: Annotated[
        str | None, typer.Option(help="Revoke every active token of this principal instead.")
    ] = None,
    as_json: JsonFlag = False,
) -> None:
    """Revoke a token (or all of a principal's): the API refuses it from the next request on."""
    if (token_id is None) == (principal is None):
        misuse(ctx, "give a TOKEN_ID or --principal NAME (one of them)")
    from store.tokens import TokenInfo

    answer = _through_api("POST", "/tokens/revoke", {"token_id": token_id, "principal": principal})
    if answer is not None:
        revoked = [TokenInfo.from_dict(item) for item in answer]
    else:
        with _token_store() as store:
            revoked = store.revoke(token_id, principal=principal)
    if as_json:
        print_json([info.as_dict() for info in revoked])
        return
    for info in revoked:
        typer.echo(f"revoked token {info.id} of {info.principal}")

"""`crisis tokens create|list|revoke` as real subprocesses, on SQLite and PostgreSQL, and the API
accepting (then refusing) what they issue (then revoke)."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from api.main import create_app
from core.settings import Settings
from store.tokens import TokenStore
from tests.cli.test_cli import Run, assert_one_line_error, assert_usage_error, crisis, run_cli
from tests.conftest import postgres_schema
from tests.helpers import serve_app

WARNING = "warning: this token is shown once and cannot be shown again: store it now"


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'data' / 'audit.db'}"
    else:
        with postgres_schema() as url:
            yield url


def _env(database_url: str, tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CRISIS_", "TEMPORAL_"))}
    return {**clean, "CRISIS_DATA_DIR": str(tmp_path / "data"), "CRISIS_DATABASE_URL": database_url}


@pytest.fixture
def env(database_url: str, tmp_path: Path) -> dict[str, str]:
    """A `crisis` environment holding only a data directory and a database (each backend)."""
    return _env(database_url, tmp_path)


@pytest.fixture
def sqlite_env(tmp_path: Path) -> dict[str, str]:
    """The same on SQLite only: for what the CLI itself decides (tests/store/test_tokens.py
    holds the store to both backends)."""
    return _env(f"sqlite:///{tmp_path / 'data' / 'audit.db'}", tmp_path)


def ok(run: Run) -> Run:
    assert 0 == run.code, run
    return run


def logged_lines(run: Run) -> list[str]:
    """stderr without the structured log lines (which name tokens by id only)."""
    return [line for line in run.error_lines if "tokens." not in line]


def test_create_prints_the_token_once(env: dict[str, str], database_url: str) -> None:
    """The text form prints the id, principal and roles, then the token, with a warning on
    stderr; --json holds the same; each token works, and the database holds neither."""
    run = ok(run_cli(env, "tokens", "create", "alice", "--role", "commander", "--role", "legal"))
    heading, token = run.stdout.splitlines()
    token_id = token.split("_")[1]
    assert f"token {token_id} for alice (roles: commander, legal):" == heading
    assert [WARNING] == logged_lines(run)
    assert token not in run.stderr

    as_json = ok(run_cli(env, "tokens", "create", "bob", "--role", "auditor", "--json")).json()
    assert ("bob", ["auditor"], True) == (as_json["principal"], as_json["roles"], as_json["active"])
    assert as_json["token"].startswith(f"crt_{as_json['id']}_")

    store = TokenStore(database_url)
    try:
        found = store.authenticate(token)
        assert found is not None
        assert ("alice", ("commander", "legal")) == (found.name, found.roles)
        assert "bob" == getattr(store.authenticate(as_json["token"]), "name", None)
        with store.engine.connect() as connection:
            rows = connection.exec_driver_sql("SELECT * FROM api_tokens").all()
        dumped = repr(rows)
        assert token.split("_", 2)[2] not in dumped and as_json["token"] not in dumped
    finally:
        store.dispose()


def test_list_shows_tokens_without_secrets(sqlite_env: dict[str, str]) -> None:
    env = sqlite_env
    """Text and --json list every token with principal, roles and state; no secret anywhere."""
    alice = ok(run_cli(env, "tokens", "create", "alice", "--role", "commander")).stdout
    carol = ok(run_cli(env, "tokens", "create", "carol", "--role", "auditor", "--json")).json()
    text = ok(run_cli(env, "tokens", "list")).stdout
    listed = ok(run_cli(env, "tokens", "list", "--json")).json()
    assert [("alice", ["commander"], True), ("carol", ["auditor"], True)] == [
        (t["principal"], t["roles"], t["active"]) for t in listed
    ]
    assert {"token", "secret_hash"}.isdisjoint(listed[0])
    secrets = [alice.splitlines()[1].split("_", 2)[2], carol["token"].split("_", 2)[2]]
    for secret in secrets:
        assert secret not in text and secret not in str(listed)
    assert carol["id"] in text and "auditor" in text and "active" in text
    only = ok(run_cli(env, "tokens", "list", "--principal", "carol", "--json")).json()
    assert [carol["id"]] == [t["id"] for t in only]


def test_revoke_by_id_and_by_principal(env: dict[str, str], database_url: str) -> None:
    """A revoked token stops authenticating and is listed as revoked; --principal revokes all
    of a principal's active tokens."""
    first = ok(run_cli(env, "tokens", "create", "alice", "--role", "commander", "--json")).json()
    second = ok(run_cli(env, "tokens", "create", "alice", "--role", "admin", "--json")).json()
    other = ok(run_cli(env, "tokens", "create", "bob", "--role", "policy-lead", "--json")).json()

    revoked = ok(run_cli(env, "tokens", "revoke", first["id"]))
    assert f"revoked token {first['id']} of alice" == revoked.stdout.strip()
    states = {t["id"]: t["active"] for t in ok(run_cli(env, "tokens", "list", "--json")).json()}
    assert {first["id"]: False, second["id"]: True, other["id"]: True} == states

    by_name = ok(run_cli(env, "tokens", "revoke", "--principal", "alice", "--json")).json()
    assert [(second["id"], False)] == [(t["id"], t["active"]) for t in by_name]
    store = TokenStore(database_url)
    try:
        assert [None, None] == [store.authenticate(t["token"]) for t in (first, second)]
        assert store.authenticate(other["token"]) is not None
    finally:
        store.dispose()


def test_mistakes_are_one_line_errors(sqlite_env: dict[str, str]) -> None:
    """A bad role or name, an unknown or already revoked id: one `error:` line and exit 1;
    neither or both of id and --principal: a usage error (exit 2)."""
    env = sqlite_env
    assert_one_line_error(
        run_cli(env, "tokens", "create", "alice", "--role", "Commander"),
        "invalid role 'Commander'",
    )
    assert_one_line_error(
        run_cli(env, "tokens", "create", "al ice", "--role", "commander"),
        "invalid principal name 'al ice'",
    )
    assert_one_line_error(run_cli(env, "tokens", "revoke", "0123456789ab"), "no token 0123456789ab")
    assert_one_line_error(
        run_cli(env, "tokens", "revoke", "--principal", "nobody"),
        "no active token for principal nobody",
    )
    assert_usage_error(run_cli(env, "tokens", "revoke"), "TOKEN_ID or --principal")
    made = ok(run_cli(env, "tokens", "create", "alice", "--role", "commander", "--json")).json()
    assert_usage_error(
        run_cli(env, "tokens", "revoke", made["id"], "--principal", "alice"),
        "TOKEN_ID or --principal",
    )
    ok(run_cli(env, "tokens", "revoke", made["id"]))
    assert_one_line_error(run_cli(env, "tokens", "revoke", made["id"]), "already revoked")
    assert [] == [t for t in ok(run_cli(env, "tokens", "list", "--json")).json() if t["active"]]


@pytest.mark.usefixtures("sandbox")
async def test_the_api_accepts_an_issued_token_until_it_is_revoked(
    settings: Settings, sqlite_url: str, tmp_path: Path
) -> None:
    """A token from `crisis tokens create` opens the API (as its principal); after `crisis
    tokens revoke` the same request is 401."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CRISIS_", "TEMPORAL_"))}
    env = {**clean, "CRISIS_DATA_DIR": str(tmp_path / "cli"), "CRISIS_DATABASE_URL": sqlite_url}
    made = ok(await crisis(env, "tokens", "create", "dana", "--role", "auditor", "--json")).json()
    headers = {"Authorization": f"Bearer {made['token']}"}
    with serve_app(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30, headers=headers) as http:
            read = await http.get("/v1/incidents/INC-NO-SUCH-INCIDENT")
            assert "incident_not_found" == read.json()["error"]["code"], read.text
            trigger = await http.post("/v1/incidents", json={"playbook": "violent-disorder"})
            assert 403 == trigger.status_code, trigger.text
            assert "dana" in trigger.json()["error"]["message"]

            ok(await crisis(env, "tokens", "revoke", made["id"]))
            refused = await http.get("/v1/incidents/INC-NO-SUCH-INCIDENT")
            assert (401, "unauthenticated") == (
                refused.status_code,
                refused.json()["error"]["code"],
            )


async def test_through_the_api_tokens_live_in_the_apis_database(
    settings: Settings, tmp_path: Path
) -> None:
    """With --api, an admin manages tokens on the API's own database (not the local one), so
    what is issued works there at once; a non-admin is refused in one line."""
    api_tokens = TokenStore(settings.resolved_database_url)
    admin = api_tokens.create("root", ["admin"]).token
    commander = api_tokens.create("cmd", ["commander"]).token
    api_tokens.dispose()
    # The CLI's own data directory is elsewhere and stays empty.
    local = _env(f"sqlite:///{tmp_path / 'local' / 'audit.db'}", tmp_path / "local")
    dana_name = f"dana-{uuid.uuid4().hex[:8]}"  # the API's database outlives this test
    with serve_app(create_app(settings)) as url:
        as_admin = {**local, "CRISIS_API": url, "CRISIS_TOKEN": admin}
        run = await crisis(
            as_admin, "tokens", "create", dana_name, "--role", "policy-lead", "--json"
        )
        assert 0 == run.code, run
        dana = run.json()
        assert (dana_name, ["policy-lead"]) == (dana["principal"], dana["roles"])
        async with httpx.AsyncClient(base_url=url) as http:
            works = await http.get(
                "/v1/incidents", headers={"Authorization": f"Bearer {dana['token']}"}
            )
            assert 200 == works.status_code, works.text

        listed = await crisis(as_admin, "tokens", "list", "--principal", dana_name, "--json")
        assert [dana["id"]] == [t["id"] for t in listed.json()]
        revoked = await crisis(as_admin, "tokens", "revoke", dana["id"])
        assert 0 == revoked.code and f"revoked token {dana['id']} of {dana_name}" in revoked.stdout

        refused = await crisis({**as_admin, "CRISIS_TOKEN": commander}, "tokens", "list")
        assert_one_line_error(refused, "403", "forbidden")
    assert not (tmp_path / "local" / "audit.db").exists()

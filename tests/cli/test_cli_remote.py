"""`crisis --api URL ...`: the commander commands through a remote API with a token, acting as
the token's principal (the API checks roles), with the same one-line errors as direct mode."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from api.main import create_app
from core.net import free_port
from core.settings import Settings
from store.audit_store import AuditStore
from store.tokens import TokenStore
from tests.cli.test_cli import assert_one_line_error, assert_usage_error, crisis
from tests.cli.test_cli import cli_env as cli_env  # the fixture, re-exported for these tests
from tests.helpers import assert_eventually, serve_app


@pytest.fixture
def remote(settings: Settings) -> Iterator[str]:
    """The API over loopback (with its embedded worker), on this test's services."""
    with serve_app(create_app(settings)) as url:
        yield url


@pytest.fixture
def issued(sqlite_store: AuditStore) -> dict[str, str]:
    tokens = TokenStore(sqlite_store.engine)
    return {
        "alice": tokens.create("alice", ["commander"]).token,
        "carol": tokens.create("carol", ["auditor"]).token,
    }


def as_(env: dict[str, str], token: str | None) -> dict[str, str]:
    """The CLI's environment with CRISIS_TOKEN set to `token` (or unset)."""
    env = {k: v for k, v in env.items() if k != "CRISIS_TOKEN"}
    return {**env, "CRISIS_TOKEN": token} if token else env


async def test_a_commander_triggers_reads_and_stands_down_through_the_api(
    cli_env: dict[str, str], remote: str, issued: dict[str, str]
) -> None:
    alice = as_(cli_env, issued["alice"])
    run = await crisis(alice, "--api", remote, "trigger", "violent-disorder", "--json")
    assert 0 == run.code, run
    incident = run.json()["incident_id"]

    async def applied() -> dict[str, object]:
        status = await crisis(alice, "--api", remote, "status", incident, "--json")
        assert 0 == status.code, status
        body = status.json()
        assert ["applied"] * 5 == [s["state"] for s in body["steps"]]
        return body

    body = await assert_eventually(applied, timeout=30)
    # The principal acted, not the name CRISIS_ACTOR gives in direct mode.
    assert ("alice", "cli-tester") == (body["triggered_by"], cli_env["CRISIS_ACTOR"])

    text = await crisis(alice, "--api", remote, "status", incident)
    assert 0 == text.code and incident in text.stdout, text

    refused = await crisis(
        as_(cli_env, issued["carol"]), "--api", remote, "stand-down", incident, "--reason", "x"
    )
    assert_one_line_error(refused, "403", "forbidden")

    done = await crisis(
        alice, "--api", remote, "stand-down", incident, "--reason", "calm", "--json"
    )
    assert 0 == done.code, done
    assert ("closed", "alice") == (done.json()["state"], done.json()["stand_down"]["actor"])


async def test_remote_mistakes_are_one_line_each(
    cli_env: dict[str, str], remote: str, issued: dict[str, str]
) -> None:
    alice = as_(cli_env, issued["alice"])
    assert_one_line_error(
        await crisis(as_(cli_env, None), "--api", remote, "status", "INC-X"), "CRISIS_TOKEN"
    )
    assert_one_line_error(
        await crisis(as_(cli_env, "crt_nope_nope"), "--api", remote, "status", "INC-X"), "401"
    )
    assert_usage_error(
        await crisis(alice, "--api", remote, "note", "INC-X", "hi", "--actor", "bob"),
        "--actor cannot be used with --api",
    )
    assert_one_line_error(
        await crisis(alice, "--api", remote, "status", "INC-NO-SUCH-ONE"), "INC-NO-SUCH-ONE"
    )
    # An empty id or level is refused as in direct mode, not dropped for a default.
    assert_one_line_error(
        await crisis(alice, "--api", remote, "trigger", "violent-disorder", "--id", ""),
        "incident id ''",
    )
    # Said of the id given, as in direct mode, not of the API request's body field.
    assert_one_line_error(
        await crisis(alice, "--api", remote, "trigger", "violent-disorder", "--id", "bad id/x"),
        "incident id 'bad id/x': use 3 to 101 letters",
    )
    assert_one_line_error(
        await crisis(alice, "--api", remote, "trigger", "violent-disorder", "--level", ""),
        "unknown level ''",
    )
    # Ids no incident can have never reach a URL, where they named another route or none.
    for odd in ("", "INC#x", "INC?x=1", "a/b"):
        assert_one_line_error(
            await crisis(alice, "--api", remote, "status", odd), f"no incident {odd!r} ("
        )
    assert_one_line_error(
        await crisis(alice, "--api", remote, "note", "INC#x", "hi"), "no incident 'INC#x' ("
    )
    nowhere = f"http://127.0.0.1:{free_port()}"
    assert_one_line_error(
        await crisis(alice, "--api", nowhere, "status", "INC-X"), "cannot reach the API"
    )
    # The environment variable works like the flag.
    via_env = await crisis({**alice, "CRISIS_API": remote}, "status", "INC-NO-SUCH-ONE")
    assert_one_line_error(via_env, "INC-NO-SUCH-ONE")


@contextmanager
def hanging_up() -> Iterator[str]:
    """An HTTP server over loopback that reads each request and closes the connection without
    answering, as an API process killed mid-request does."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn:
                conn.recv(65536)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        listener.close()


async def test_an_api_that_hangs_up_on_an_action_may_have_carried_it_out(
    cli_env: dict[str, str],
) -> None:
    """The request went out and the connection dropped unanswered: a stand-down may have been
    taken, so the error says to check the status before sending it again; a read just failed."""
    env = {**cli_env, "CRISIS_TOKEN": "crt_x_y"}
    with hanging_up() as api:
        action = await crisis(env, "--api", api, "stand-down", "INC-X", "--reason", "calm")
        read = await crisis(env, "--api", api, "status", "INC-X")
        trigger = await crisis(env, "--api", api, "trigger", "violent-disorder")
    assert_one_line_error(
        action,
        f"no answer from the API at {api}/v1 (",
        "it may have carried the request out all the same: check the incident's status before",
    )
    assert_one_line_error(read, f"no answer from the API at {api}/v1: ")
    assert "may have carried" not in read.stderr
    assert_one_line_error(trigger, "check the board (crisis incidents) before triggering again")

"""Authentication and authorisation of the HTTP API: real tokens from the token store, the real
API over loopback with its embedded worker, the dev server and the sandbox."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import json
import re
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs

from api.auth import (
    Admin,
    Author,
    Commander,
    CurrentPrincipal,
    Permission,
    Principal,
    Reader,
    require,
)
from api.errors import install_error_handlers
from api.main import create_app
from core.settings import Settings
from store.audit_store import AuditStore
from store.tokens import TokenStore
from tests.api.conftest import PRINCIPALS, Tokens, bearer
from tests.helpers import assert_eventually, serve_app

pytestmark = pytest.mark.usefixtures("sandbox")

NONE = "INC-NO-SUCH-INCIDENT"
EVERYONE = frozenset(PRINCIPALS)
COMMANDERS = frozenset({"alice", "admin"})

# `notice` needs legal or policy-lead; `surge-hate` needs a commander (holding the role itself).
APPROVALS_PLAYBOOK = """\
playbook: approvals
version: 1
title: Approvals
description: For tests of who may approve.
steps:
  - id: notice
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 2}
    approval: {roles: [legal, policy-lead], timeout: 1h, on_timeout: skip}
  - id: surge-hate
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 3}
    approval: {roles: [commander], timeout: 1h, on_timeout: skip}
"""


@pytest.fixture
async def http(settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """The API over real HTTP, sending no token unless a request says so."""
    library = tmp_path / "library"
    library.mkdir()
    (library / "approvals.yaml").write_text(APPROVALS_PLAYBOOK)
    app = create_app(settings.model_copy(update={"playbooks_dir": library}))
    with serve_app(app) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client


def assert_denied(response: httpx.Response, status: int, code: str) -> str:
    assert status == response.status_code, response.text
    assert {"error": {"code", "message"}} == {k: set(v) for k, v in response.json().items()}
    assert code == response.json()["error"]["code"], response.text
    return response.json()["error"]["message"]


def cookie(token: str) -> dict[str, str]:
    """The header a browser sends once the console has set its sign-in cookie."""
    return {"Cookie": f"crisis_token={token}"}


def denials(logs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [entry for entry in logs if entry["event"] == "auth.denied"]


async def trigger(http: httpx.AsyncClient, tokens: Tokens, **body: Any) -> str:
    response = await http.post(
        "/v1/incidents", json={"playbook": "approvals", **body}, headers=tokens.headers("alice")
    )
    assert 201 == response.status_code, response.text
    return response.json()["incident_id"]


async def steps_when(
    http: httpx.AsyncClient, tokens: Tokens, incident_id: str, check: Callable[[dict], bool]
) -> dict[str, str]:
    async def reached() -> dict[str, str]:
        response = await http.get(f"/v1/incidents/{incident_id}", headers=tokens.headers("carol"))
        assert 200 == response.status_code, response.text
        states = {s["id"]: s["state"] for s in response.json()["steps"]}
        assert check(states), states
        return states

    return await assert_eventually(reached)


async def stand_down(http: httpx.AsyncClient, tokens: Tokens, incident_id: str) -> dict[str, Any]:
    response = await http.post(
        f"/v1/incidents/{incident_id}/stand-down",
        json={"reason": "test over"},
        headers=tokens.headers("admin"),
    )
    assert 200 == response.status_code, response.text
    return response.json()


# --- who is calling ---------------------------------------------------------------------------
async def test_health_is_open_for_liveness_probes(http: httpx.AsyncClient) -> None:
    """GET /v1/health answers without a token (ok once the app's worker has polled)."""

    async def healthy() -> None:
        assert 200 == (await http.get("/v1/health")).status_code

    await assert_eventually(healthy)
    misspelt = await http.get("/v1/health", params={"verbose": "1"})
    assert 422 == misspelt.status_code, misspelt.text
    assert misspelt.json()["error"]["message"].startswith("query.verbose: not a parameter")


async def test_every_other_v1_route_needs_a_token(http: httpx.AsyncClient) -> None:
    """Every operation of the OpenAPI document under /v1 but health is 401 without a token, with
    a Bearer challenge, and says so in the document (a route added without auth fails here). A
    query parameter the route does not take changes nothing: a stranger learns nothing of it."""
    document = (await http.get("/openapi.json")).json()
    assert {"HTTPBearer", "APIKeyCookie"} <= set(document["components"]["securitySchemes"])
    checked = []
    for path, operations in document["paths"].items():
        if not path.startswith("/v1/"):
            continue
        for method, operation in operations.items():
            if path == "/v1/health":
                assert "security" not in operation
                continue
            assert operation.get("security"), f"{method} {path} declares no security"
            concrete = re.sub(r"\{[^}]+\}", NONE, path)
            response = await http.request(method, concrete, json={}, params={"nosuch": "1"})
            assert_denied(response, 401, "unauthenticated")
            assert "Bearer" == response.headers["www-authenticate"], f"{method} {path}"
            checked.append(f"{method.upper()} {path}")
    assert {
        "POST /v1/incidents",
        "GET /v1/incidents/{incident_id}",
        "POST /v1/incidents/{incident_id}/stand-down",
        "GET /v1/incidents/{incident_id}/audit",
        "GET /v1/incidents/{incident_id}/history",
        "GET /v1/incidents/{incident_id}/verify",
        "GET /v1/incidents/{incident_id}/report",
        "POST /v1/incidents/{incident_id}/approve",
        "POST /v1/incidents/{incident_id}/notes",
    } <= set(checked)


async def test_bad_tokens_are_401_and_logged(http: httpx.AsyncClient, tokens: Tokens) -> None:
    """No token, garbage, a malformed header, an unknown token, a wrong secret and a revoked
    token are each 401 unauthenticated, logged as auth.denied with the route and the reason
    (and the principal where the token names one), never with the token."""
    revoked = tokens.issue("rita", "commander")
    tokens.store.revoke(revoked.split("_")[1])
    alice = tokens.token("alice")
    wrong_secret = alice[: alice.rindex("_") + 1] + "A" * 43
    cases: list[tuple[dict[str, str], str, str | None]] = [
        ({}, "no token", None),
        (bearer("garbage"), "unknown token", None),
        ({"Authorization": f"Basic {alice}"}, "malformed header", None),
        ({"Authorization": "Bearer"}, "malformed header", None),
        (bearer(f"crt_{'0' * 12}_{'x' * 43}"), "unknown token", None),
        (bearer(wrong_secret), "unknown token", None),
        (bearer(revoked), "revoked token", "rita"),
        (cookie("garbage"), "unknown token", None),
    ]
    for headers, reason, principal in cases:
        with capture_logs() as logs:
            response = await http.get(f"/v1/incidents/{NONE}", headers=headers)
        assert_denied(response, 401, "unauthenticated")
        assert [
            {
                "principal": principal,
                "route": "GET /v1/incidents/{incident_id}",
                "reason": reason,
                "status": 401,
            }
        ] == [
            {k: entry[k] for k in ("principal", "route", "reason", "status")}
            for entry in denials(logs)
        ], headers
        assert alice not in json.dumps(logs, default=str)
    message = assert_denied(
        await http.get(f"/v1/incidents/{NONE}", headers=bearer(revoked)), 401, "unauthenticated"
    )
    assert "revoked" in message


async def test_the_console_cookie_authenticates_but_not_across_sites(
    http: httpx.AsyncClient, tokens: Tokens
) -> None:
    """The crisis_token cookie is as good as the header; a state-changing request carrying it
    from another site's page is 403, while the same request with a bearer token goes through."""
    signed_in = cookie(tokens.token("alice"))
    # 404 incident_not_found: past authentication, answered by the engine.
    read = await http.get(f"/v1/incidents/{NONE}", headers=signed_in)
    assert_denied(read, 404, "incident_not_found")
    note = f"/v1/incidents/{NONE}/notes"
    host = http.base_url.netloc.decode()
    same_site = await http.post(
        note, json={"text": "x"}, headers={**signed_in, "Origin": f"http://{host}"}
    )
    assert_denied(same_site, 404, "incident_not_found")
    with capture_logs() as logs:
        cross_site = await http.post(
            note, json={"text": "x"}, headers={**signed_in, "Origin": "https://evil.example"}
        )
    assert "cross-site" in assert_denied(cross_site, 403, "forbidden")
    assert [("alice", "cross-site cookie")] == [
        (e["principal"], e["reason"]) for e in denials(logs)
    ]
    with_header = await http.post(
        note,
        json={"text": "x"},
        headers={**tokens.headers("alice"), "Origin": "https://evil.example"},
    )
    assert_denied(with_header, 404, "incident_not_found")


# --- what each role may do --------------------------------------------------------------------
ROUTES: list[tuple[str, str, dict[str, Any] | None, frozenset[str]]] = [
    ("POST", "/v1/incidents", {"playbook": "no-such-playbook"}, COMMANDERS),
    ("GET", f"/v1/incidents/{NONE}", None, EVERYONE),
    ("POST", f"/v1/incidents/{NONE}/stand-down", {"reason": "x"}, COMMANDERS),
    ("GET", f"/v1/incidents/{NONE}/audit", None, EVERYONE),
    ("GET", f"/v1/incidents/{NONE}/history", None, EVERYONE),
    ("GET", f"/v1/incidents/{NONE}/verify?replay=false", None, EVERYONE),
    ("GET", f"/v1/incidents/{NONE}/report?format=json", None, EVERYONE),
    # Approving needs a role the step accepts, not a commander (checked on a real step below).
    ("POST", f"/v1/incidents/{NONE}/approve", {"step_id": "s"}, EVERYONE),
    ("POST", f"/v1/incidents/{NONE}/reject", {"step_id": "s", "reason": "x"}, EVERYONE),
    ("POST", f"/v1/incidents/{NONE}/escalate", {"reason": "x"}, COMMANDERS),
    ("POST", f"/v1/incidents/{NONE}/de-escalate", {"reason": "x"}, COMMANDERS),
    (
        "POST",
        f"/v1/incidents/{NONE}/renew",
        {"step_id": "s", "duration": "1h", "reason": "x"},
        COMMANDERS,
    ),
    ("POST", f"/v1/incidents/{NONE}/restore", {"step_id": "s", "reason": "x"}, COMMANDERS),
    ("POST", f"/v1/incidents/{NONE}/confirm-review", {}, COMMANDERS),
    ("POST", f"/v1/incidents/{NONE}/notes", {"text": "x"}, COMMANDERS),
]


async def test_who_may_call_each_route(http: httpx.AsyncClient, tokens: Tokens) -> None:
    """Each principal is let through (and answered 404 by the engine: no such incident or
    playbook) exactly where its roles allow, and is 403 forbidden everywhere else."""
    seen: dict[str, set[str]] = {}
    for method, path, body, allowed in ROUTES:
        for name in PRINCIPALS:
            response = await http.request(method, path, json=body, headers=tokens.headers(name))
            if response.status_code == 403:
                message = assert_denied(response, 403, "forbidden")
                assert name in message, message
            else:
                assert 404 == response.status_code, f"{name} {method} {path}: {response.text}"
                seen.setdefault(f"{method} {path}", set()).add(name)
        assert allowed == seen.get(f"{method} {path}", set()), f"{method} {path}"


async def test_an_auditor_cannot_trigger_and_an_engineer_cannot_stand_down(
    http: httpx.AsyncClient, tokens: Tokens
) -> None:
    """carol (auditor) is 403 on trigger and nothing starts; erin (engineer) is 403 on stand-down
    and the incident keeps running; both denials are logged with principal, route and reason."""
    wanted = f"INC-AUTH-{uuid.uuid4().hex[:8]}"
    with capture_logs() as logs:
        refused = await http.post(
            "/v1/incidents",
            json={"playbook": "approvals", "incident_id": wanted},
            headers=tokens.headers("carol"),
        )
    message = assert_denied(refused, 403, "forbidden")
    assert "carol" in message and "commander" in message, message
    assert [("carol", "POST /v1/incidents", "lacks permission command", 403)] == [
        (e["principal"], e["route"], e["reason"], e["status"]) for e in denials(logs)
    ]
    missing = await http.get(f"/v1/incidents/{wanted}", headers=tokens.headers("carol"))
    assert_denied(missing, 404, "incident_not_found")

    incident_id = await trigger(http, tokens)
    with capture_logs() as logs:
        refused = await http.post(
            f"/v1/incidents/{incident_id}/stand-down",
            json={"reason": "not mine to call"},
            params={"nosuch": "1"},  # a route she may not call: she learns nothing of it
            headers=tokens.headers("erin"),
        )
    assert "erin" in assert_denied(refused, 403, "forbidden")
    assert [("erin", "POST /v1/incidents/{incident_id}/stand-down")] == [
        (e["principal"], e["route"]) for e in denials(logs)
    ]
    status = await http.get(f"/v1/incidents/{incident_id}", headers=tokens.headers("erin"))
    assert ("running", None) == (status.json()["state"], status.json()["stand_down"])
    assert "closed" == (await stand_down(http, tokens, incident_id))["state"]


async def test_approvals_need_a_role_the_step_accepts(
    http: httpx.AsyncClient, tokens: Tokens
) -> None:
    """A commander cannot approve a step for legal or policy-lead (named role or not), an auditor
    cannot reject it, an admin is not thereby a commander; bob approves as policy-lead without
    naming it, and the commander rejects the step that commanders approve."""
    incident_id = await trigger(http, tokens)
    await steps_when(http, tokens, incident_id, lambda s: s["notice"] == "awaiting_approval")
    approve = f"/v1/incidents/{incident_id}/approve"
    reject = f"/v1/incidents/{incident_id}/reject"

    with capture_logs() as logs:
        unnamed = await http.post(
            approve, json={"step_id": "notice"}, headers=tokens.headers("alice")
        )
    message = assert_denied(unnamed, 403, "forbidden")
    assert "alice (roles: commander) holds no role that may approve notice" in message, message
    assert "legal, policy-lead" in message, message
    assert [("alice", "no role to approve notice")] == [
        (e["principal"], e["reason"]) for e in denials(logs)
    ]
    named = await http.post(
        approve, json={"step_id": "notice", "role": "legal"}, headers=tokens.headers("alice")
    )
    assert "alice does not hold the role 'legal'" in assert_denied(named, 403, "forbidden")
    auditor = await http.post(
        reject, json={"step_id": "notice", "reason": "no"}, headers=tokens.headers("carol")
    )
    assert "may reject notice" in assert_denied(auditor, 403, "forbidden")

    approved = await http.post(
        approve, json={"step_id": "notice", "comment": "lawful"}, headers=tokens.headers("bob")
    )
    assert 200 == approved.status_code, approved.text
    assert [("bob", "policy-lead", "lawful")] == [
        (a["actor"], a["role"], a["comment"]) for a in approved.json()["approvals"]
    ]

    await steps_when(
        http,
        tokens,
        incident_id,
        lambda s: s["notice"] == "applied" and s["surge-hate"] == "awaiting_approval",
    )
    as_admin = await http.post(
        approve, json={"step_id": "surge-hate"}, headers=tokens.headers("admin")
    )
    assert "(roles: commander)" in assert_denied(as_admin, 403, "forbidden")
    as_approver = await http.post(
        reject, json={"step_id": "surge-hate", "reason": "no"}, headers=tokens.headers("bob")
    )
    assert_denied(as_approver, 403, "forbidden")
    rejected = await http.post(
        reject,
        json={"step_id": "surge-hate", "reason": "too broad"},
        headers=tokens.headers("alice"),
    )
    assert 200 == rejected.status_code, rejected.text
    assert ("skipped", "rejected by alice: too broad") == (
        rejected.json()["state"],
        rejected.json()["outcome"],
    )
    await stand_down(http, tokens, incident_id)


async def test_the_actor_is_always_the_principal(http: httpx.AsyncClient, tokens: Tokens) -> None:
    """A body naming an `actor` is refused (422 naming the field), never taken: the trigger, the
    note, the approval and the stand-down are recorded, in status and audit trail, under the
    token's principal."""
    named = await http.post(
        "/v1/incidents",
        json={"playbook": "approvals", "actor": "mallory"},
        headers=tokens.headers("alice"),
    )
    assert (422, "invalid_request") == (named.status_code, named.json()["error"]["code"])
    assert named.json()["error"]["message"].startswith("body.actor: "), named.text
    incident_id = await trigger(http, tokens)
    await steps_when(http, tokens, incident_id, lambda s: s["notice"] == "awaiting_approval")
    for route, body, who in (
        ("notes", {"text": "regulator informed"}, "alice"),
        ("approve", {"step_id": "notice"}, "bob"),
    ):
        refused = await http.post(
            f"/v1/incidents/{incident_id}/{route}",
            json={**body, "actor": "mallory"},
            headers=tokens.headers(who),
        )
        assert 422 == refused.status_code, refused.text
        assert "body.actor" in refused.json()["error"]["message"], refused.text
    noted = await http.post(
        f"/v1/incidents/{incident_id}/notes",
        json={"text": "regulator informed"},
        headers=tokens.headers("alice"),
    )
    assert [("alice", "regulator informed")] == [
        (n["actor"], n["text"]) for n in noted.json()["notes"]
    ]
    approved = await http.post(
        f"/v1/incidents/{incident_id}/approve",
        json={"step_id": "notice"},
        headers=tokens.headers("bob"),
    )
    assert ["bob"] == [a["actor"] for a in approved.json()["approvals"]], approved.text
    closed = await stand_down(http, tokens, incident_id)
    assert ("alice", "admin") == (closed["triggered_by"], closed["stand_down"]["actor"])

    async def audited() -> list[dict[str, Any]]:
        response = await http.get(
            f"/v1/incidents/{incident_id}/audit", headers=tokens.headers("carol")
        )
        events = response.json()["events"]
        assert "incident.closed" == events[-1]["kind"], [e["kind"] for e in events]
        return events

    events = await assert_eventually(audited)
    actors = {e["kind"]: e["actor"] for e in events if e["actor"] is not None}
    assert {
        "incident.triggered": "alice",
        "note.added": "alice",
        "approval.given": "bob",
        "stand_down.requested": "admin",
    }.items() <= actors.items(), actors
    assert "mallory" not in json.dumps(events)


# --- the interface other routes build on ------------------------------------------------------
def test_principal_roles_and_permissions() -> None:
    """`has` is the role itself; READ is everyone's, AUTHOR engineers', commanders' and admins',
    COMMAND commanders' and admins', ADMIN admins' only."""
    cast = {
        name: Principal(name=name, roles=roles, token_id="t") for name, roles in PRINCIPALS.items()
    }
    table = {
        permission: {name for name, p in cast.items() if p.can(permission)}
        for permission in Permission
    }
    assert {
        Permission.READ: set(PRINCIPALS),
        Permission.AUTHOR: {"alice", "erin", "admin"},
        Permission.COMMAND: {"alice", "admin"},
        Permission.ADMIN: {"admin"},
    } == table
    assert cast["bob"].has("policy-lead") and not cast["admin"].has("commander")


@pytest.fixture
def probe_url(sqlite_store: AuditStore) -> Iterator[str]:
    """A small app whose routes use each alias of `api.auth`, as a new route file would."""
    app = FastAPI()
    app.state.tokens = TokenStore(sqlite_store.engine)
    install_error_handlers(app)

    @app.get("/whoami")
    async def whoami(principal: CurrentPrincipal) -> Principal:
        return principal

    @app.get("/read")
    async def read(principal: Reader) -> str:
        return principal.name

    @app.post("/author")
    async def author(principal: Author) -> str:
        return principal.name

    @app.post("/command")
    async def command(principal: Commander) -> str:
        return principal.name

    @app.post("/admin")
    async def admin(principal: Admin) -> str:
        return principal.name

    @app.post("/bare", dependencies=[require(Permission.COMMAND)])
    async def bare() -> str:
        return "done"

    with serve_app(app) as url:
        yield url


async def test_the_aliases_let_in_exactly_their_roles(probe_url: str, tokens: Tokens) -> None:
    """Reader, Author, Commander, Admin and require(...) answer the principal to the route or
    403; CurrentPrincipal is the token's principal."""
    async with httpx.AsyncClient(base_url=probe_url, timeout=10) as client:
        whoami = await client.get("/whoami", headers=tokens.headers("bob"))
        assert {"name": "bob", "roles": ["policy-lead"]} == {
            k: whoami.json()[k] for k in ("name", "roles")
        }
        assert_denied(await client.get("/whoami"), 401, "unauthenticated")
        expected = {
            ("GET", "/read"): set(PRINCIPALS),
            ("POST", "/author"): {"alice", "erin", "admin"},
            ("POST", "/command"): {"alice", "admin"},
            ("POST", "/admin"): {"admin"},
            ("POST", "/bare"): {"alice", "admin"},
        }
        for (method, path), allowed in expected.items():
            let_in = set()
            for name in PRINCIPALS:
                response = await client.request(method, path, headers=tokens.headers(name))
                if response.status_code == 200:
                    assert (name if path != "/bare" else "done") == response.json()
                    let_in.add(name)
                else:
                    assert_denied(response, 403, "forbidden")
            assert allowed == let_in, path

"""Token management through the API (`/v1/tokens`): admins only, on the database the API checks
tokens against, so a token issued there works at once and a revoked one stops at once."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import httpx
import pytest

from api.main import create_app
from core.settings import Settings
from tests.api.conftest import Tokens, bearer
from tests.helpers import serve_app


@pytest.fixture
async def http(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    with serve_app(create_app(settings)) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield client


async def test_an_admin_issues_lists_and_revokes_a_token(
    http: httpx.AsyncClient, tokens: Tokens
) -> None:
    admin = tokens.headers("admin")
    name = f"dana-{uuid.uuid4().hex[:8]}"  # the test database outlives this test
    issued = await http.post(
        "/v1/tokens", json={"principal": name, "roles": ["policy-lead"]}, headers=admin
    )
    assert 201 == issued.status_code, issued.text
    body = issued.json()
    assert (name, ["policy-lead"], True) == (body["principal"], body["roles"], body["active"])
    # The new token works at once, as dana.
    dana = bearer(body["token"])
    assert 200 == (await http.get("/v1/incidents", headers=dana)).status_code

    listed = await http.get("/v1/tokens", params={"principal": name}, headers=admin)
    assert 200 == listed.status_code, listed.text
    assert [body["id"]] == [t["id"] for t in listed.json()]
    assert all("token" not in t for t in listed.json())  # never a secret

    revoked = await http.post("/v1/tokens/revoke", json={"token_id": body["id"]}, headers=admin)
    assert 200 == revoked.status_code, revoked.text
    assert [False] == [t["active"] for t in revoked.json()]
    assert 401 == (await http.get("/v1/incidents", headers=dana)).status_code


async def test_only_admins_manage_tokens_and_mistakes_are_json(
    http: httpx.AsyncClient, tokens: Tokens
) -> None:
    for name in ("alice", "carol", "erin"):
        response = await http.get("/v1/tokens", headers=tokens.headers(name))
        assert 403 == response.status_code, response.text
    admin = tokens.headers("admin")
    cases = [
        ({"principal": "x", "roles": ["Not A Role"]}, 422, "invalid_request", "invalid role"),
        ({"principal": "x", "roles": []}, 422, "invalid_request", "roles"),
        ({"principal": "bad name!", "roles": ["auditor"]}, 422, "invalid_request", "principal"),
    ]
    for body, status, code, fragment in cases:
        response = await http.post("/v1/tokens", json=body, headers=admin)
        assert (status, code) == (response.status_code, response.json()["error"]["code"]), body
        assert fragment in response.json()["error"]["message"], response.text
    unknown = await http.post("/v1/tokens/revoke", json={"token_id": "tok_nope"}, headers=admin)
    assert (404, "token_not_found") == (unknown.status_code, unknown.json()["error"]["code"])
    both = await http.post(
        "/v1/tokens/revoke", json={"token_id": "a", "principal": "b"}, headers=admin
    )
    assert (422, "invalid_request") == (both.status_code, both.json()["error"]["code"])

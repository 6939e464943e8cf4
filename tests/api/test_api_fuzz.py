"""Schema-driven fuzzing of the HTTP API from its own OpenAPI document (schemathesis).

Every operation of `/openapi.json` is called with generated requests (valid and invalid) over
real HTTP, by real principals, against the real dev server, sandbox and store. The property: no
response is a 5xx, and every 4xx is the JSON error shape `{"error": {"code", "message"}}`.

Path parameters and bodies are sometimes steered to things that exist (seeded incidents, the
library's playbooks, their step ids), so the fuzzing reaches the workflows and not only 404s.
`GET /v1/incidents/{incident_id}/events` is fuzzed with generated ids only: on a live incident it
streams until the incident closes, which is no request/response property to check.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, CheckContext, Response
from schemathesis.checks import not_a_server_error

from api.main import create_app
from core.settings import Settings
from tests.api.conftest import PRINCIPALS, Tokens, bearer
from tests.cli.test_cli_actions import ACTIONS_PLAYBOOK, PLAIN_PLAYBOOK
from tests.conftest import make_settings
from tests.helpers import serve_app

EVENTS_PATH = "/v1/incidents/{incident_id}/events"
PLAYBOOKS = ["commander-actions", "plain"]
LEVELS = ["elevated", "severe", "critical"]
# Body fields worth sometimes filling with what exists rather than random text.
STEERED_FIELDS: dict[str, list[str]] = {
    "playbook": PLAYBOOKS,
    "step_id": ["surge", "tighten", "throttle", "surge-hate"],
    "level": LEVELS,
    "to_level": LEVELS,
}
# Each request may take a Temporal round trip; a stream that never ends fails, not hangs.
REQUEST_TIMEOUT_S = 20.0

# Small enough for about a minute on 2 cores for all operations; shrinking is off because each
# shrink step is another round of real requests (the failing example is reported as is).
FUZZ_CONFIG: dict[str, Any] = {
    "request-timeout": REQUEST_TIMEOUT_S,
    "generation": {"mode": "all", "max-examples": 15, "no-shrink": True, "database": "none"},
    "phases": {"coverage": {"enabled": False}, "stateful": {"enabled": False}},
}


@dataclass(frozen=True)
class Seeded:
    """Incidents that exist before the fuzzing starts, by what state they are in."""

    awaiting: str  # commander-actions: `throttle` waits for two approvals
    running: str  # plain: its one measure in force
    closed: str  # plain, stood down and completed
    doomed: str  # plain: the only live incident `stand-down` may pick

    def live(self) -> list[str]:
        return [self.awaiting, self.running, self.closed]


@pytest.fixture(scope="module")
def api_url(
    temporal_address: str,
    sandbox_url: str,
    sqlite_url: str,
    tokens: Tokens,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The API over real HTTP, with a library of the test playbooks."""
    root = tmp_path_factory.mktemp("fuzz")
    library = root / "library"
    library.mkdir()
    (library / "commander-actions.yaml").write_text(ACTIONS_PLAYBOOK)
    (library / "plain.yaml").write_text(PLAIN_PLAYBOOK)
    settings = make_settings(
        temporal_address=temporal_address,
        sandbox_url=sandbox_url,
        database_url=sqlite_url,
        data_dir=root / "data",
        playbooks_dir=library,
    )
    with serve_app(create_app(settings)) as url:
        yield url


def _until(check: Callable[[], bool], what: str, *, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


@pytest.fixture(scope="module")
def seeded(api_url: str, tokens: Tokens) -> Seeded:
    with httpx.Client(base_url=api_url, timeout=30, headers=tokens.headers("alice")) as http:

        def trigger(playbook: str, **extra: Any) -> str:
            response = http.post("/v1/incidents", json={"playbook": playbook, **extra})
            assert 201 == response.status_code, response.text
            return response.json()["incident_id"]

        def step_state(incident_id: str, step_id: str) -> str:
            status = http.get(f"/v1/incidents/{incident_id}").json()
            return next(s["state"] for s in status["steps"] if s["id"] == step_id)

        seeded = Seeded(
            awaiting=trigger("commander-actions", level="elevated"),
            running=trigger("plain"),
            closed=trigger("plain"),
            doomed=trigger("plain"),
        )
        _until(lambda: step_state(seeded.awaiting, "throttle") == "awaiting_approval", "approval")
        for incident_id in (seeded.running, seeded.closed, seeded.doomed):
            _until(lambda i=incident_id: step_state(i, "surge") == "applied", f"{incident_id}")
        response = http.post(
            f"/v1/incidents/{seeded.closed}/stand-down", json={"reason": "seeded closed"}
        )
        assert 200 == response.status_code, response.text
        _until(
            lambda: http.get(f"/v1/incidents/{seeded.closed}").json()["state"] == "closed",
            "stand-down",
        )
        return seeded


def _steer(case: Case, seeded: Seeded, data: st.DataObject) -> None:
    """Sometimes swap a generated value for one that exists, so requests reach the workflows."""
    path = case.operation.path
    parameters = case.path_parameters
    if parameters and "incident_id" in parameters and path != EVENTS_PATH:
        ids = [seeded.closed, seeded.doomed] if path.endswith("/stand-down") else seeded.live()
        if data.draw(st.booleans(), label="existing incident"):
            parameters["incident_id"] = data.draw(st.sampled_from(ids), label="incident_id")
    if parameters and "name" in parameters and data.draw(st.booleans(), label="known playbook"):
        parameters["name"] = data.draw(st.sampled_from(PLAYBOOKS), label="name")
    if isinstance(case.body, dict):
        for key, known in STEERED_FIELDS.items():
            if key in case.body and data.draw(st.booleans(), label=f"known {key}"):
                case.body[key] = data.draw(st.sampled_from(known), label=key)


def json_error_shape(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """Every 4xx answers `{"error": {"code": str, "message": str}}` as JSON."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    if not (
        isinstance(error, dict)
        and isinstance(error.get("code"), str)
        and isinstance(error.get("message"), str)
        and error["code"]
        and error["message"]
    ):
        raise AssertionError(
            f"{response.status_code} is not the JSON error shape: {response.text[:300]!r}"
        )
    return None


def _load(config: dict[str, Any]) -> BaseSchema:
    # The document does not depend on the services, only on the routes: build it without them.
    document = create_app(Settings()).openapi()
    return schemathesis.openapi.from_dict(document, config=schemathesis.Config.from_dict(config))


schema = _load(FUZZ_CONFIG)


@schema.parametrize()
@schema.given(principal=st.sampled_from(sorted(PRINCIPALS)), data=st.data())
def test_no_server_error_and_errors_are_json(
    case: Case,
    principal: str,
    data: st.DataObject,
    api_url: str,
    seeded: Seeded,
    tokens: Tokens,
) -> None:
    """Generated requests to every operation, as each principal: never a 5xx, every 4xx the
    JSON error shape."""
    _steer(case, seeded, data)
    response = case.call(
        base_url=api_url, headers=tokens.headers(principal), timeout=REQUEST_TIMEOUT_S
    )
    case.validate_response(response, checks=[not_a_server_error, json_error_shape])


# Valid requests only: an invalid body is refused (422) before anyone is authenticated.
unauthenticated_schema = _load(
    {
        **FUZZ_CONFIG,
        "generation": {**FUZZ_CONFIG["generation"], "mode": "positive", "max-examples": 3},
    }
).exclude(path="/v1/health")
CREDENTIALS: dict[str, dict[str, str]] = {
    "absent": {},
    "unknown": bearer("not-a-token"),
    "malformed": {"Authorization": "Token abc"},
}


@unauthenticated_schema.parametrize()
@unauthenticated_schema.given(credentials=st.sampled_from(sorted(CREDENTIALS)), data=st.data())
def test_without_a_valid_token_is_401_json(
    case: Case, credentials: str, data: st.DataObject, api_url: str, seeded: Seeded
) -> None:
    """Every authenticated operation answers 401 with the JSON error shape to a request with no
    token, an unknown one or a malformed Authorization header."""
    _steer(case, seeded, data)
    case.headers = {
        name: value
        for name, value in (case.headers or {}).items()
        if name.lower() != "authorization"
    }
    case.cookies = {}
    response = case.call(
        base_url=api_url, headers=CREDENTIALS[credentials], timeout=REQUEST_TIMEOUT_S
    )
    assert 401 == response.status_code, f"{case.operation.label}: {response.text[:300]}"
    assert "unauthenticated" == response.json()["error"]["code"], response.text
    assert response.json()["error"]["message"]

"""Schema-driven fuzzing of the HTTP API from its own OpenAPI document (schemathesis).

Every operation of the document is called over real HTTP with generated requests, valid and
invalid, by the real principals of `tests/api/conftest.py`, against the real dev server, sandbox
and store. The property: no response is a 5xx, and every 4xx is the JSON error shape
`{"error": {"code", "message"}}` of `api/errors.py`.

- Fuzzing (`test_generated_requests_...`): random cases per operation, each by a random principal;
  path parameters and body fields are half the time steered to things that exist (seeded
  incidents, the library's playbooks, their steps, levels and roles) so requests reach the
  workflows and not only 404s.
- Coverage (`test_boundary_requests_...`): schemathesis's deterministic boundary and
  schema-violating cases for every operation, as admin, with generated ids.
- Without a valid token (`test_without_a_valid_token_...`): valid requests to every
  authenticated operation answer 401 JSON. `/v1/health` is excluded: it is open by design.

`GET /v1/incidents/{incident_id}/events` is called with generated ids only (404 or 422): on a live
incident it streams until the incident closes, which is no request/response to check. Shrinking is
off: each shrink step is another round of real requests; the failing case is reported as is.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis import BaseSchema, Case, CheckContext, Response
from schemathesis.checks import not_a_server_error

from api.main import create_app
from core.settings import Settings
from tests.api.conftest import Tokens, bearer
from tests.cli.test_cli_actions import ACTIONS_PLAYBOOK, PLAIN_PLAYBOOK
from tests.conftest import make_settings
from tests.helpers import serve_app

EVENTS_PATH = "/v1/incidents/{incident_id}/events"
PLAYBOOKS = ["commander-actions", "plain"]
LEVELS = ["elevated", "severe", "critical"]
# Body fields worth filling, half the time, with what exists rather than random text.
STEERED_FIELDS: dict[str, list[str | None]] = {
    "playbook": [*PLAYBOOKS],
    "step_id": ["surge", "tighten", "throttle", "surge-hate"],
    "level": [*LEVELS],
    "to_level": [None, *LEVELS],
    "role": [None, "commander", "policy-lead"],
    "duration": ["1h", "0s", "36500d", "9999999d"],
}
# Most operations command incidents: commanders are drawn most often, the others still reach
# every 403 (and bob every approval as a policy-lead).
PRINCIPAL_DRAWS = ["alice", "alice", "alice", "admin", "bob", "bob", "carol", "erin"]
# Each request may cost a Temporal round trip; a response that never ends fails, not hangs.
REQUEST_TIMEOUT_S = 20.0

FUZZ_CONFIG: dict[str, Any] = {
    "request-timeout": REQUEST_TIMEOUT_S,
    "suppress-health-check": ["too_slow"],  # generation time on a busy 2-core machine
    "generation": {"mode": "all", "max-examples": 25, "no-shrink": True, "database": "none"},
    "phases": {
        "examples": {"enabled": False},
        "coverage": {"enabled": False},
        "fuzzing": {"enabled": True},
        "stateful": {"enabled": False},
    },
}
COVERAGE_CONFIG: dict[str, Any] = {
    **FUZZ_CONFIG,
    "phases": {
        **FUZZ_CONFIG["phases"],
        "coverage": {"enabled": True},
        "fuzzing": {"enabled": False},
    },
}
# Valid requests only: an invalid body is refused (422) before anyone is authenticated.
UNAUTHENTICATED_CONFIG: dict[str, Any] = {
    **FUZZ_CONFIG,
    "generation": {**FUZZ_CONFIG["generation"], "mode": "positive", "max-examples": 3},
}
CREDENTIALS: dict[str, dict[str, str]] = {
    "absent": {},
    "unknown": bearer("not-a-token"),
    "malformed": {"Authorization": "Token abc"},
}


@dataclass(frozen=True)
class Seeded:
    """Incidents that exist before the fuzzing starts, by the state they start in."""

    awaiting: str  # commander-actions at `elevated`: `throttle` waits for two approvals
    running: str  # plain: its one measure in force
    closed: str  # plain, stood down and completed
    doomed: str  # plain: the only live incident `stand-down` is steered to

    def targets(self, path: str) -> list[str]:
        """The incidents a request to `path` is steered to."""
        if path.endswith("/stand-down"):
            return [self.closed, self.doomed]
        return [self.awaiting, self.running, self.closed]


@pytest.fixture(scope="module")
def api_url(
    temporal_address: str,
    sandbox_url: str,
    sqlite_url: str,
    tokens: Tokens,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[str]:
    """The API over real HTTP (embedded worker), with a library of the test playbooks, on the
    database the test tokens live in."""
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

        awaiting, running, doomed = (
            trigger("commander-actions", level="elevated"),
            trigger("plain"),
            trigger("plain"),
        )
        for incident_id in (running, doomed):
            _until(lambda i=incident_id: "applied" == step_state(i, "surge"), f"{incident_id}")
        # The one stood down is applied last (triggered last is not enough: their lever calls
        # race): an older incident on the same settings as a newer one still open is refused a
        # stand-down (it would lift the newer's measures).
        closed = trigger("plain")
        seeded = Seeded(awaiting=awaiting, running=running, closed=closed, doomed=doomed)
        _until(lambda: "awaiting_approval" == step_state(seeded.awaiting, "throttle"), "approval")
        _until(lambda: "applied" == step_state(closed, "surge"), f"{closed}")
        response = http.post(f"/v1/incidents/{seeded.closed}/stand-down", json={"reason": "seed"})
        assert 200 == response.status_code, response.text
        _until(
            lambda: "closed" == http.get(f"/v1/incidents/{seeded.closed}").json()["state"],
            "the stand-down",
        )
        return seeded


def _steer(case: Case, seeded: Seeded, data: st.DataObject) -> None:
    """Half the time, swap a generated value for one that exists."""
    path, parameters = case.operation.path, case.path_parameters
    steerable = bool(parameters) and "incident_id" in parameters and path != EVENTS_PATH
    if steerable and data.draw(st.booleans(), label="an existing incident"):
        targets = seeded.targets(path)
        parameters["incident_id"] = data.draw(st.sampled_from(targets), label="incident_id")
    if parameters and "name" in parameters and data.draw(st.booleans(), label="a known playbook"):
        parameters["name"] = data.draw(st.sampled_from(PLAYBOOKS), label="name")
    if isinstance(case.body, dict):
        for key, known in STEERED_FIELDS.items():
            if key in case.body and data.draw(st.booleans(), label=f"a known {key}"):
                case.body[key] = data.draw(st.sampled_from(known), label=key)


def json_error_shape(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A schemathesis check: every 4xx answers `{"error": {"code": str, "message": str}}`."""
    if not 400 <= response.status_code < 500:
        return None
    try:
        body = response.json()
    except ValueError:
        body = None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    if not (isinstance(code, str) and code and isinstance(message, str) and message):
        raise AssertionError(
            f"{response.status_code} is not the JSON error shape: {response.text[:300]!r}"
        )
    return None


def _load(config: dict[str, Any]) -> BaseSchema:
    # The document depends on the routes only, not on the services: build it without them.
    document = create_app(Settings()).openapi()
    return schemathesis.openapi.from_dict(document, config=schemathesis.Config.from_dict(config))


def test_validate_reports_text_no_reader_accepts(api_url: str, tokens: Tokens) -> None:
    """Found by fuzzing (both were a 500): a control character and deep nesting are problems
    of the submitted playbook, placed where they are."""
    cases = {
        "a: 1\nb: \x19": (2, 4, "YAML: unacceptable character '\\x19'"),
        "[" * 5000: (1, 1, "YAML: nested too deeply"),
    }
    with httpx.Client(base_url=api_url, timeout=30, headers=tokens.headers("erin")) as http:
        for text, (line, column, message) in cases.items():
            response = http.post("/v1/playbooks/validate", json={"text": text})
            assert 200 == response.status_code, response.text
            assert {
                "valid": False,
                "problems": [{"line": line, "column": column, "message": message}],
                "warnings": [],
            } == response.json()


def test_renewal_past_the_calendar_is_refused(api_url: str, seeded: Seeded, tokens: Tokens) -> None:
    """Found by fuzzing: `9999999d` parsed, then failed the workflow task (a date past the year
    9999), and every later query or action on the incident was a 502. It is refused (422, before
    the incident is asked; the workflow refuses it too) and the incident carries on."""
    with httpx.Client(base_url=api_url, timeout=30, headers=tokens.headers("alice")) as http:
        renew = f"/v1/incidents/{seeded.running}/renew"
        body = {"step_id": "surge", "reason": "fuzz"}
        refused = http.post(renew, json={**body, "duration": "9999999d"})
        assert 422 == refused.status_code, refused.text
        assert "invalid_request" == refused.json()["error"]["code"]
        assert "'9999999d' is longer than 36500d" in refused.json()["error"]["message"]
        renewed = http.post(renew, json={**body, "duration": "36500d"})
        assert 200 == renewed.status_code, renewed.text
        assert "applied" == renewed.json()["state"]
        assert 200 == http.get(f"/v1/incidents/{seeded.running}").status_code


schema = _load(FUZZ_CONFIG)


@schema.parametrize()
@schema.given(principal=st.sampled_from(PRINCIPAL_DRAWS), data=st.data())
def test_generated_requests_never_5xx_and_errors_are_json(
    case: Case,
    principal: str,
    data: st.DataObject,
    api_url: str,
    seeded: Seeded,
    tokens: Tokens,
) -> None:
    """Generated requests to every operation, by every kind of principal: never a 5xx, every
    4xx the JSON error shape."""
    _steer(case, seeded, data)
    response = case.call(
        base_url=api_url, headers=tokens.headers(principal), timeout=REQUEST_TIMEOUT_S
    )
    case.validate_response(response, checks=[not_a_server_error, json_error_shape])


coverage_schema = _load(COVERAGE_CONFIG)


@coverage_schema.parametrize()
def test_boundary_requests_never_5xx_and_errors_are_json(
    case: Case, api_url: str, tokens: Tokens
) -> None:
    """Schemathesis's boundary and schema-violating cases for every operation, as admin: never a
    5xx, every 4xx the JSON error shape."""
    response = case.call(
        base_url=api_url, headers=tokens.headers("admin"), timeout=REQUEST_TIMEOUT_S
    )
    case.validate_response(response, checks=[not_a_server_error, json_error_shape])


unauthenticated_schema = _load(UNAUTHENTICATED_CONFIG).exclude(path="/v1/health")


@unauthenticated_schema.parametrize()
@unauthenticated_schema.given(credentials=st.sampled_from(sorted(CREDENTIALS)))
def test_without_a_valid_token_is_401_json(
    case: Case, credentials: str, api_url: str, seeded: Seeded
) -> None:
    """Valid requests to every authenticated operation answer 401 with the JSON error shape
    when the token is absent, unknown, or not sent as `Bearer`."""
    # An existing incident or playbook, so the route is matched and only the token is wrong.
    if case.path_parameters and "incident_id" in case.path_parameters:
        case.path_parameters["incident_id"] = seeded.awaiting
    if case.path_parameters and "name" in case.path_parameters:
        case.path_parameters["name"] = PLAYBOOKS[0]
    case.headers = {
        name: value
        for name, value in (case.headers or {}).items()
        if name.lower() != "authorization"
    }
    case.cookies = {}  # nor the console's sign-in cookie
    response = case.call(
        base_url=api_url, headers=CREDENTIALS[credentials], timeout=REQUEST_TIMEOUT_S
    )
    assert 401 == response.status_code, f"{case.operation.label}: {response.text[:300]}"
    error = response.json()["error"]
    assert "unauthenticated" == error["code"], response.text
    assert error["message"], response.text
    assert ["Bearer"] == response.headers.get("www-authenticate")

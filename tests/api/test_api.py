"""The HTTP API served by uvicorn over loopback, with its embedded worker, server and sandbox."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app
from core.settings import Settings
from engine.devserver import free_port, start_dev_server
from store.audit_store import AuditStore
from tests.api.conftest import Tokens
from tests.conftest import Sandbox
from tests.helpers import assert_eventually, serve_app
from workflows.audit import GENESIS_HASH, make_event


@pytest.fixture
async def api(settings: Settings, tokens: Tokens) -> AsyncIterator[httpx.AsyncClient]:
    """The app from `create_app(settings)` (its own worker on a fresh task queue) over real HTTP,
    called as alice, a commander (other principals: `headers=tokens.headers(name)`)."""
    with serve_app(create_app(settings)) as url:
        async with httpx.AsyncClient(
            base_url=url, timeout=30, headers=tokens.headers("alice")
        ) as http:
            yield http


def assert_error(response: httpx.Response, status: int, code: str) -> str:
    assert status == response.status_code, response.text
    body = response.json()
    assert ["error"] == list(body), body
    assert {"code", "message"} == set(body["error"]), body
    assert code == body["error"]["code"], body
    assert body["error"]["message"], body
    return body["error"]["message"]


async def trigger(api: httpx.AsyncClient, **inputs: Any) -> dict[str, Any]:
    response = await api.post(
        "/v1/incidents", json={"playbook": "violent-disorder", "inputs": inputs}
    )
    assert 201 == response.status_code, response.text
    return response.json()


async def wait_until_applied(api: httpx.AsyncClient, incident_id: str) -> dict[str, Any]:
    async def applied() -> dict[str, Any]:
        response = await api.get(f"/v1/incidents/{incident_id}")
        assert 200 == response.status_code, response.text
        status = response.json()
        assert ["applied"] * 5 == [s["state"] for s in status["steps"]], status
        return status

    return await assert_eventually(applied)


async def test_health_reports_every_check_ok(api: httpx.AsyncClient) -> None:
    """With Temporal, the app's worker and the audit store up, health is 200 and every check is
    ok (the worker's first poll may reach the server a moment after the app is up)."""

    async def healthy() -> None:
        response = await api.get("/v1/health")
        assert 200 == response.status_code, response.text
        checks = {"temporal": "ok", "workers": "ok", "audit_store": "ok"}
        assert {"status": "ok", "checks": checks} == response.json()

    await assert_eventually(healthy)


async def test_without_a_worker_health_is_degraded_and_a_trigger_says_so(
    settings: Settings, tokens: Tokens
) -> None:
    """An API whose workers are elsewhere (as in the compose file), with none running: health
    names the task queue nobody polls (503), and a trigger is accepted, durably, with a warning
    that it starts once a worker polls."""
    alone = settings.model_copy(update={"api_embedded_worker": False})
    with serve_app(create_app(alone)) as url:
        async with httpx.AsyncClient(
            base_url=url, timeout=30, headers=tokens.headers("alice")
        ) as http:
            response = await http.get("/v1/health")
            assert 503 == response.status_code, response.text
            body = response.json()
            assert "degraded" == body["status"]
            assert ["audit_store", "temporal"] == sorted(
                k for k, v in body["checks"].items() if v == "ok"
            )
            assert repr(settings.task_queue) in body["checks"]["workers"]

            triggered = await trigger(http)
            (warning,) = triggered["warnings"]
            assert repr(settings.task_queue) in warning and "starts once one polls" in warning
            # Its status needs a worker too: the reason comes in seconds, not after the
            # query's 30 s.
            shown = await http.get(f"/v1/incidents/{triggered['incident_id']}")
            message = assert_error(shown, 504, "incident_busy")
            assert repr(settings.task_queue) in message, message


async def test_incident_lifecycle_over_http(
    api: httpx.AsyncClient, sandbox: Sandbox, tokens: Tokens
) -> None:
    """Trigger, follow, stand down and audit an incident; the platform is changed then restored.
    Each action's actor is the principal whose token made the request."""
    before = await sandbox.state()
    response = await api.post(
        "/v1/incidents", json={"playbook": "violent-disorder", "inputs": {"region": "GB"}}
    )
    assert 201 == response.status_code, response.text
    triggered = response.json()
    incident_id = triggered["incident_id"]
    assert ("violent-disorder", 1, "GB") == (
        triggered["playbook"],
        triggered["version"],
        triggered["inputs"]["region"],
    )
    assert triggered["playbook_hash"].startswith("sha256:")
    assert [] == triggered["warnings"]  # the app's own worker took it

    status = await wait_until_applied(api, incident_id)
    assert ("running", "alice", incident_id) == (
        status["state"],
        status["triggered_by"],
        status["incident_id"],
    )
    during = await sandbox.state()
    policy = during["recommender"]["GB"]["incitement_to_violence"]
    assert (0.25, 5) == (policy["reach_multiplier"], policy["reshare_limit"])
    assert 0.25 == during["detection"]["incitement_to_violence"]
    reviewers = before["moderation"]["hate"]["reviewers"]
    assert reviewers + 25 == during["moderation"]["hate"]["reviewers"]

    response = await api.post(
        f"/v1/incidents/{incident_id}/stand-down",
        json={"reason": "disorder over"},
        headers=tokens.headers("admin"),
    )
    assert 200 == response.status_code, response.text
    closed = response.json()
    assert "closed" == closed["state"]
    assert {"actor": "admin", "reason": "disorder over", "force": False} == closed["stand_down"]
    assert ["undone"] * 5 == [s["state"] for s in closed["steps"]]
    after = await sandbox.state()
    for part in ("recommender", "detection", "moderation"):
        assert before[part] == after[part], part

    async def audited() -> dict[str, Any]:
        response = await api.get(f"/v1/incidents/{incident_id}/audit")
        assert 200 == response.status_code, response.text
        audit = response.json()
        assert "incident.closed" == audit["events"][-1]["kind"], audit
        return audit

    audit = await assert_eventually(audited)
    assert (incident_id, True, None) == (audit["incident_id"], audit["verified"], audit["problem"])
    events = audit["events"]
    assert list(range(1, len(events) + 1)) == [e["seq"] for e in events]
    assert "0" * 64 == events[0]["prev_hash"]
    assert [e["hash"] for e in events[:-1]] == [e["prev_hash"] for e in events[1:]]
    kinds = [e["kind"] for e in events]
    assert ("incident.triggered", "alice") == (kinds[0], events[0]["actor"])
    assert (5, 5) == (kinds.count("step.applied"), kinds.count("step.undone"))
    assert kinds.index("stand_down.requested") < kinds.index("step.undone")

    again = await api.post(f"/v1/incidents/{incident_id}/stand-down", json={"reason": "again"})
    message = assert_error(again, 409, "incident_conflict")
    assert incident_id in message and "closed" in message, message


async def test_trigger_errors(api: httpx.AsyncClient, settings: Settings) -> None:
    """A bad trigger is refused with a stable error code and nothing is started."""
    unknown = await api.post("/v1/incidents", json={"playbook": "no-such-playbook"})
    message = assert_error(unknown, 404, "playbook_not_found")
    assert message.startswith("no playbook named 'no-such-playbook' (known: "), message
    assert str(settings.playbooks_dir) not in message  # the server's files are not the client's
    path = await api.post("/v1/incidents", json={"playbook": "../playbooks/violent-disorder.yaml"})
    assert_error(path, 404, "playbook_not_found")
    out_of_range = await api.post(
        "/v1/incidents", json={"playbook": "violent-disorder", "inputs": {"reach_multiplier": 3}}
    )
    assert "with.reach_multiplier" in assert_error(out_of_range, 422, "invalid_input")
    wrong_type = await api.post(
        "/v1/incidents", json={"playbook": "violent-disorder", "inputs": {"flag_threshold": "high"}}
    )
    assert "flag_threshold" in assert_error(wrong_type, 422, "invalid_input")
    unknown_input = await api.post(
        "/v1/incidents", json={"playbook": "violent-disorder", "inputs": {"colour": "red"}}
    )
    assert "colour" in assert_error(unknown_input, 422, "invalid_input")
    no_playbook = await api.post("/v1/incidents", json={"inputs": {}})
    assert "playbook" in assert_error(no_playbook, 422, "invalid_request")
    bad_id = await api.post(
        "/v1/incidents", json={"playbook": "violent-disorder", "incident_id": "a b"}
    )
    assert "incident_id" in assert_error(bad_id, 422, "invalid_request")
    # JSON values of another type are not read as text: `true` is no region.
    not_text = await api.post(
        "/v1/incidents", json={"playbook": "violent-disorder", "inputs": {"region": True}}
    )
    message = assert_error(not_text, 422, "invalid_input")
    assert "input 'region': expected string, got true" == message
    # A misspelt field is refused, not dropped (the incident would start at the lowest level).
    misspelt = await api.post("/v1/incidents", json={"playbook": "violent-disorder", "levle": "x"})
    message = assert_error(misspelt, 422, "invalid_request")
    assert message.startswith("body.levle: "), message


async def test_temporal_gone_is_a_json_error_naming_what_may_have_happened(
    settings: Settings, tokens: Tokens, sqlite_store: AuditStore, tmp_path: Path
) -> None:
    """The API's Temporal server stops answering: a trigger is a 502 saying the incident may
    have started all the same, and a history read is a 502 too: never a bare 500."""
    port = free_port()
    server = start_dev_server(db_file=tmp_path / "temporal.db", port=port)
    gone = settings.model_copy(
        update={"temporal_address": f"127.0.0.1:{port}", "api_embedded_worker": False}
    )
    try:
        with serve_app(create_app(gone)) as url:
            async with httpx.AsyncClient(
                base_url=url, timeout=60, headers=tokens.headers("alice")
            ) as http:
                server.kill()
                server.wait()
                response = await http.post(
                    "/v1/incidents", json={"playbook": "violent-disorder", "inputs": {}}
                )
                message = assert_error(response, 502, "temporal_error")
                assert "it may have started all the same: check its status" in message
                known = f"INC-GONE-{uuid.uuid4().hex[:8]}"  # recorded, so the store knows it
                sqlite_store.append(
                    [
                        make_event(
                            incident_id=known,
                            seq=1,
                            kind="incident.triggered",
                            at="2026-12-01T10:00:00+00:00",
                            prev_hash=GENESIS_HASH,
                            data={"playbook": "violent-disorder", "version": 1},
                        )
                    ]
                )
                read = await http.get(
                    f"/v1/incidents/{known}/history", headers=tokens.headers("carol")
                )
                assert "did not answer" in assert_error(read, 502, "temporal_error")
                health = await http.get("/v1/health")
                assert 503 == health.status_code, health.text
                checks = health.json()["checks"]
                assert (
                    checks["temporal"].startswith("unavailable: ") and len(checks["temporal"]) > 13
                )
                assert "unknown: Temporal did not answer" == checks["workers"]
    finally:
        server.kill()
        server.wait()


async def test_plan_refuses_inputs_as_trigger_does(api: httpx.AsyncClient) -> None:
    """An input a lever refuses is the same 422 from plan as from trigger."""
    body = {"inputs": {"reach_multiplier": 2}}
    planned = await api.post("/v1/playbooks/violent-disorder/plan", json=body)
    triggered = await api.post("/v1/incidents", json={"playbook": "violent-disorder", **body})
    message = assert_error(planned, 422, "invalid_input")
    assert "with.reach_multiplier" in message
    assert assert_error(triggered, 422, "invalid_input") == message


async def test_unknown_incident_is_not_found_everywhere(api: httpx.AsyncClient) -> None:
    """Status, stand-down and audit of an incident that never existed are 404 incident_not_found."""
    status = await api.get("/v1/incidents/INC-NO-SUCH-INCIDENT")
    assert "INC-NO-SUCH-INCIDENT" in assert_error(status, 404, "incident_not_found")
    stand_down = await api.post(
        "/v1/incidents/INC-NO-SUCH-INCIDENT/stand-down", json={"reason": "x"}
    )
    assert_error(stand_down, 404, "incident_not_found")
    audit = await api.get("/v1/incidents/INC-NO-SUCH-INCIDENT/audit")
    assert_error(audit, 404, "incident_not_found")


async def test_stand_down_needs_a_reason(api: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """A stand-down without a reason (or an empty one) is 422 and the incident keeps running."""
    incident_id = (await trigger(api, region="FR"))["incident_id"]
    missing = await api.post(f"/v1/incidents/{incident_id}/stand-down", json={})
    assert "reason" in assert_error(missing, 422, "invalid_request")
    empty = await api.post(f"/v1/incidents/{incident_id}/stand-down", json={"reason": ""})
    assert "reason" in assert_error(empty, 422, "invalid_request")
    misspelt = await api.post(
        f"/v1/incidents/{incident_id}/stand-down", json={"reason": "x", "forse": True}
    )
    assert "body.forse" in assert_error(misspelt, 422, "invalid_request")
    status = await wait_until_applied(api, incident_id)
    assert ("running", None) == (status["state"], status["stand_down"])
    done = await api.post(f"/v1/incidents/{incident_id}/stand-down", json={"reason": "test over"})
    assert 200 == done.status_code, done.text


async def test_a_duplicate_incident_id_is_a_conflict(
    api: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """Triggering with an id already in use is 409, not a second incident."""
    body = {"playbook": "violent-disorder", "incident_id": f"INC-API-DUP-{uuid.uuid4().hex[:8]}"}
    first = await api.post("/v1/incidents", json=body)
    assert 201 == first.status_code, first.text
    second = await api.post("/v1/incidents", json=body)
    assert "already exists" in assert_error(second, 409, "incident_conflict")
    await api.post(f"/v1/incidents/{body['incident_id']}/stand-down", json={"reason": "test over"})


async def test_unknown_route_is_a_json_error(api: httpx.AsyncClient) -> None:
    """A path the API does not serve is a 404, and a method a path does not take a 405, in the
    same error shape with a stable code."""
    assert "nothing is served at /v1/nothing-here" in assert_error(
        await api.get("/v1/nothing-here"), 404, "not_found"
    )
    assert "DELETE is not allowed on /v1/incidents" == assert_error(
        await api.delete("/v1/incidents"), 405, "method_not_allowed"
    )


async def test_a_body_that_is_not_json_is_an_invalid_request(api: httpx.AsyncClient) -> None:
    """A body JSON cannot read (a syntax error, bytes that are no text, nesting deeper than the
    parser goes) is 422 `invalid_request` saying so, as any other bad body is."""
    path = "/v1/incidents/INC-NO-SUCH-INCIDENT/stand-down"
    json_header = {"Content-Type": "application/json"}
    for body in (b"[" * 100_000, b'"\xff\xfe"'):
        response = await api.post(path, content=body, headers=json_header)
        assert "body: not valid JSON" == assert_error(response, 422, "invalid_request")
    syntax = await api.post(path, content=b"{reason: x}", headers=json_header)
    message = assert_error(syntax, 422, "invalid_request")
    assert message.startswith("body: not valid JSON (Expecting property name"), message


async def test_openapi_lists_the_v1_paths(api: httpx.AsyncClient) -> None:
    """The OpenAPI document describes every /v1 route with its method."""
    response = await api.get("/openapi.json")
    assert 200 == response.status_code, response.text
    paths = response.json()["paths"]
    assert {
        "/v1/health": {"get"},
        "/v1/playbooks": {"get"},
        "/v1/playbooks/{name}": {"get"},
        "/v1/playbooks/validate": {"post"},
        "/v1/playbooks/{name}/plan": {"post"},
        "/v1/incidents": {"get", "post"},
        "/v1/incidents/{incident_id}": {"get"},
        "/v1/incidents/{incident_id}/timeline": {"get"},
        "/v1/incidents/{incident_id}/events": {"get"},
        "/v1/incidents/{incident_id}/stand-down": {"post"},
        "/v1/incidents/{incident_id}/audit": {"get"},
        "/v1/incidents/{incident_id}/history": {"get"},
        "/v1/incidents/{incident_id}/verify": {"get"},
        "/v1/incidents/{incident_id}/report": {"get"},
        "/v1/tokens": {"get", "post"},
        "/v1/tokens/revoke": {"post"},
        **{
            f"/v1/incidents/{{incident_id}}/{action}": {"post"}
            for action in (
                "approve",
                "reject",
                "escalate",
                "de-escalate",
                "renew",
                "restore",
                "confirm-review",
                "notes",
            )
        },
    } == {path: set(methods) for path, methods in paths.items()}


async def test_openapi_describes_the_error_bodies_and_statuses_answered(
    api: httpx.AsyncClient,
) -> None:
    """Every error is an ErrorOut, FastAPI's own 422 body included (the API never sends it);
    the trigger and the stand-down list the refusals a client must handle."""
    document = (await api.get("/openapi.json")).json()
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])
    error_out = {"$ref": "#/components/schemas/ErrorOut"}
    for path, operations in document["paths"].items():
        if path == "/v1/health":  # degraded is a 503 with the health answer itself
            assert {"200", "503"} == set(operations["get"]["responses"])
            continue
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert error_out == schema, (method, path, status)
    responses = {
        (path, method): set(document["paths"][path][method]["responses"])
        for path, method in (
            ("/v1/incidents", "post"),
            ("/v1/incidents/{incident_id}/stand-down", "post"),
            ("/v1/incidents/{incident_id}/history", "get"),
        )
    }
    assert {"404", "409", "422", "502"} <= responses[("/v1/incidents", "post")]
    assert {"404", "409", "422", "504"} <= responses[
        ("/v1/incidents/{incident_id}/stand-down", "post")
    ]
    assert {"401", "403", "404", "502"} <= responses[("/v1/incidents/{incident_id}/history", "get")]

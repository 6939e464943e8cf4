"""Auditors over HTTP: an incident's Temporal history, its integrity verdict and its post-incident
report under /v1/incidents/{id}/, against the real dev server, sandbox and embedded worker."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app
from core.settings import Settings
from store.seals import Signer, key_id
from tests.api.conftest import Tokens, bearer
from tests.api.test_api import api as api  # the fixture, re-exported for these tests
from tests.api.test_api import assert_error, trigger
from tests.helpers import assert_eventually, serve_app

pytestmark = pytest.mark.usefixtures("sandbox")

NONE = "INC-NO-SUCH-INCIDENT"


async def audit_events(api: httpx.AsyncClient, incident_id: str) -> list[dict[str, Any]]:
    response = await api.get(f"/v1/incidents/{incident_id}/audit")
    assert 200 == response.status_code, response.text
    return response.json()["events"]


async def close_an_incident(
    api: httpx.AsyncClient, stand_down_token: str | None = None
) -> list[dict[str, Any]]:
    """Trigger, let every step apply, stand down (as the principal of `stand_down_token`, else
    as the client's); the audit events once the trail is closed."""
    incident_id = (await trigger(api, region="GB"))["incident_id"]

    # Followed in the audit trail, not by status queries: a query during the first workflow task
    # can leave a history that does not replay to the same audit events.
    async def applied() -> None:
        kinds = [e["kind"] for e in await audit_events(api, incident_id)]
        assert 5 == kinds.count("step.applied"), kinds

    await assert_eventually(applied)
    response = await api.post(
        f"/v1/incidents/{incident_id}/stand-down",
        json={"reason": "test over"},
        headers=bearer(stand_down_token) if stand_down_token else None,
    )
    assert 200 == response.status_code, response.text

    async def closed() -> list[dict[str, Any]]:
        events = await audit_events(api, incident_id)
        assert "incident.closed" == events[-1]["kind"], events
        return events

    return await assert_eventually(closed)


async def test_history_verify_and_report_of_a_closed_incident(
    api: httpx.AsyncClient, settings: Settings, tokens: Tokens
) -> None:
    """The history has the run, verify is ok with and without replay, and the report comes as
    Markdown, HTML with its chart, and JSON with the key figures and the verdict."""
    events = await close_an_incident(api, tokens.token("admin"))
    incident_id = events[0]["incident_id"]
    base = f"/v1/incidents/{incident_id}"

    history = await api.get(f"{base}/history")
    assert 200 == history.status_code, history.text
    assert "application/json" == history.headers["content-type"]
    exported = history.json()
    assert ("crisis-history/1", incident_id, 1) == (
        exported["format"],
        exported["incident_id"],
        len(exported["runs"]),
    )
    run_events = exported["runs"][0]["events"]
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_STARTED" == run_events[0]["eventType"]
    assert "EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED" == run_events[-1]["eventType"]

    verified = await api.get(f"{base}/verify")
    assert 200 == verified.status_code, verified.text
    report = verified.json()
    assert (incident_id, True) == (report["incident_id"], report["ok"])
    assert key_id(Signer(settings.signing_key_path).public_key) == report["key_id"]
    assert {"chain": "ok", "seals": "ok", "replay": "ok", "board": "ok"} == report["verdict"]
    assert (len(events), len(events)) == (
        report["chain"]["events"],
        report["seals"]["sealed_through"],
    )
    assert (True, len(events)) == (
        report["replay"]["deterministic"],
        report["replay"]["replay_vs_store"]["events"],
    )

    unreplayed = await api.get(f"{base}/verify", params={"replay": "false"})
    assert 200 == unreplayed.status_code, unreplayed.text
    assert (True, True, None) == (
        unreplayed.json()["ok"],
        unreplayed.json()["complete"],  # the closing row is sealed
        unreplayed.json()["replay"],
    )
    assert "not checked (replay=false)" == unreplayed.json()["verdict"]["replay"]

    md = await api.get(f"{base}/report", params={"format": "md"})
    assert 200 == md.status_code, md.text
    assert md.headers["content-type"].startswith("text/markdown")
    assert incident_id in md.text

    for params in ({"format": "html"}, {}):  # HTML is the default
        html = await api.get(f"{base}/report", params=params)
        assert 200 == html.status_code, html.text
        assert html.headers["content-type"].startswith("text/html")
        assert "<svg" in html.text
        assert incident_id in html.text

    as_json = await api.get(f"{base}/report", params={"format": "json"})
    assert 200 == as_json.status_code, as_json.text
    assert "application/json" == as_json.headers["content-type"]
    body = as_json.json()
    assert (incident_id, "closed", "admin", len(events)) == (
        body["facts"]["incident_id"],
        body["facts"]["state"],
        body["facts"]["stand_down_by"],
        body["facts"]["events"],
    )
    assert (0, False) == (body["key_figures"]["step_failures"], body["key_figures"]["retries"])
    assert body["key_figures"]["to_stand_down"] is not None
    assert {"chain": "ok", "seals": "ok", "replay": "ok", "board": "ok"} == body["integrity"]

    bad_format = await api.get(f"{base}/report", params={"format": "pdf"})
    assert "format" in assert_error(bad_format, 422, "invalid_request")


async def test_verify_names_an_altered_row(api: httpx.AsyncClient, sqlite_url: str) -> None:
    """After row 3 is edited in the database, verify is ok false naming row 3 and the report's
    integrity says FAILED."""
    events = await close_an_incident(api)
    incident_id = events[0]["incident_id"]
    with closing(sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))) as db, db:
        changed = db.execute(
            "UPDATE audit_events SET data = ? WHERE incident_id = ? AND seq = 3",
            ('{"forged": true}', incident_id),
        ).rowcount
    assert 1 == changed

    verified = await api.get(f"/v1/incidents/{incident_id}/verify", params={"replay": "false"})
    assert 200 == verified.status_code, verified.text
    report = verified.json()
    assert (False, False, 3) == (
        report["ok"],
        report["chain"]["ok"],
        report["chain"]["first_bad_seq"],
    )
    assert report["verdict"]["chain"].startswith("FAILED: row 3 ("), report["verdict"]

    integrity = (
        await api.get(f"/v1/incidents/{incident_id}/report", params={"format": "json"})
    ).json()["integrity"]
    assert integrity["chain"].startswith("FAILED: row 3 "), integrity
    assert integrity["replay"].startswith("FAILED: seq 3: the audit table row differs"), integrity


async def test_a_deleted_trail_is_named_missing_not_an_unknown_incident(
    api: httpx.AsyncClient, sqlite_url: str
) -> None:
    """Every row deleted, its board row and seals left: the trail is missing (200, not
    verified), and its history is still exported from Temporal."""
    incident_id = (await close_an_incident(api))[0]["incident_id"]
    with closing(sqlite3.connect(sqlite_url.removeprefix("sqlite:///"))) as db, db:
        deleted = db.execute(
            "DELETE FROM audit_events WHERE incident_id = ?", (incident_id,)
        ).rowcount
    assert deleted > 0

    audit = await api.get(f"/v1/incidents/{incident_id}/audit")
    assert 200 == audit.status_code, audit.text
    body = audit.json()
    assert (False, []) == (body["verified"], body["events"]), body
    assert "every row of the trail is missing" in body["problem"], body
    history = await api.get(f"/v1/incidents/{incident_id}/history")
    assert 200 == history.status_code, history.text
    assert incident_id == history.json()["incident_id"]


async def test_unknown_incident_is_not_found(api: httpx.AsyncClient) -> None:
    """History, verify and report of an incident that never existed are 404 incident_not_found."""
    paths = [
        ("history", {}),
        ("verify", {}),
        ("verify", {"replay": "false"}),
        *[("report", {"format": f}) for f in ("md", "html", "json")],
    ]
    for path, params in paths:
        response = await api.get(f"/v1/incidents/{NONE}/{path}", params=params)
        try:
            assert NONE in assert_error(response, 404, "incident_not_found")
        except AssertionError as error:
            raise AssertionError(f"{path} {params}: {response.text}") from error


async def test_a_missing_signing_key_is_a_deployment_error(
    settings: Settings, tokens: Tokens, tmp_path: Path
) -> None:
    """Where the engine's signing key is not, verify and report answer 503
    signing_key_unavailable, and the API never makes a key of its own (the worker owns it)."""
    missing = tmp_path / "elsewhere" / "signing-key.pem"
    keyless = settings.model_copy(
        update={"signing_key": str(missing), "api_embedded_worker": False}
    )
    with serve_app(create_app(keyless)) as url:
        async with httpx.AsyncClient(
            base_url=url, timeout=30, headers=tokens.headers("alice")
        ) as http:
            for path, params in (("verify", {"replay": "false"}), ("report", {"format": "json"})):
                response = await http.get(f"/v1/incidents/{NONE}/{path}", params=params)
                message = assert_error(response, 503, "signing_key_unavailable")
                assert f"no engine signing key at {missing}" == message
    assert not missing.exists()

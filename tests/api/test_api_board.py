"""The rest of /v1 for commanders and engineers: the playbook library (list, show, validate,
plan), the incident board with filters and pages, the timeline, the live event stream, and
separation of duties when people approve through the API."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx

from tests.api.conftest import Tokens, bearer
from tests.api.test_api import assert_error
from tests.api.test_api_actions import act, answer, conflict, trigger
from tests.api.test_api_actions import api as api  # the fixture, re-exported for these tests
from tests.engine.test_library import PLAYBOOK as TELL_PLAYBOOK
from tests.engine.test_library import copy_library
from tests.engine.test_playbook_files import ALIAS_BOMB
from tests.helpers import assert_eventually

VALIDATE_GOOD = """\
playbook: x
version: 1
title: X
description: d
steps:
  - id: a
    do: moderation.surge
    with: {queue: q, extra_reviewers: 1}
"""


# --- playbooks --------------------------------------------------------------------------------
async def test_the_library_lists_and_shows_playbooks_with_their_hashes(
    api: httpx.AsyncClient,
) -> None:
    listed = answer(await api.get("/v1/playbooks"))
    names = [p["name"] for p in listed]
    assert ["commander-actions", "plain"] == sorted(names)
    actions = next(p for p in listed if p["name"] == "commander-actions")
    assert ["elevated", "severe", "critical"] == actions["levels"]
    assert ["detection.set_threshold", "moderation.surge", "recommender.throttle"] == actions[
        "levers"
    ]
    assert actions["playbook_hash"].startswith("sha256:")
    shown = answer(await api.get("/v1/playbooks/commander-actions"))
    assert actions["playbook_hash"] == shown["playbook_hash"]
    assert ["surge", "tighten", "throttle", "surge-hate"] == [
        s["id"] for s in shown["playbook"]["steps"]
    ]
    assert_error(await api.get("/v1/playbooks/nope"), 404, "playbook_not_found")
    assert_error(await api.get("/v1/playbooks/secrets.yaml"), 404, "playbook_not_found")


async def test_validate_reports_problems_at_line_and_column(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    good = VALIDATE_GOOD
    ok = answer(await api.post("/v1/playbooks/validate", json={"text": good}))
    assert (True, []) == (ok["valid"], ok["problems"])
    assert any("expires" in w["message"] for w in ok["warnings"]), ok  # no expiry: a warning
    bad = answer(
        await api.post(
            "/v1/playbooks/validate", json={"text": good.replace("moderation.surge", "nope.lever")}
        )
    )
    assert False is bad["valid"]
    (problem,) = bad["problems"]
    assert (7, "unknown lever") == (problem["line"], problem["message"][:13]), problem
    # Engineers may validate; auditors may not.
    engineer = await api.post(
        "/v1/playbooks/validate", json={"text": good}, headers=tokens.headers("erin")
    )
    assert 200 == engineer.status_code
    auditor = await api.post(
        "/v1/playbooks/validate", json={"text": good}, headers=tokens.headers("carol")
    )
    assert_error(auditor, 403, "forbidden")


async def test_validate_refuses_yaml_aliases_at_once(api: httpx.AsyncClient) -> None:
    """An alias bomb (a few hundred bytes that expand to 9**9 items) is a problem at its first
    alias, answered at once instead of after seconds of work."""
    bomb = ALIAS_BOMB
    report = answer(await api.post("/v1/playbooks/validate", json={"text": bomb}))
    assert {
        "valid": False,
        "problems": [{"line": 2, "column": 8, "message": "YAML: aliases (*a) are not allowed"}],
        "warnings": [],
    } == report


async def test_plan_says_what_would_run_and_refuses_bad_inputs(api: httpx.AsyncClient) -> None:
    plan = answer(await api.post("/v1/playbooks/commander-actions/plan", json={"level": "severe"}))
    runs = {s["id"]: s["runs"] for s in plan["steps"]}
    assert {"surge": True, "tighten": True, "throttle": True, "surge-hate": True} == runs
    assert_error(
        await api.post("/v1/playbooks/commander-actions/plan", json={"level": "purple"}),
        422,
        "invalid_input",
    )


# --- the board --------------------------------------------------------------------------------
async def board(api: httpx.AsyncClient, **params: Any) -> dict[str, Any]:
    return answer(await api.get("/v1/incidents", params=params))


async def test_the_board_lists_open_incidents_with_what_needs_acting_on(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    incident = await trigger(api, "commander-actions")

    async def waiting() -> dict[str, Any]:
        page = await board(api, playbook="commander-actions", limit=200)
        (entry,) = [i for i in page["items"] if i["incident_id"] == incident] or [None]
        assert entry is not None, page
        pending = [p["step_id"] for p in entry["pending_approvals"]]
        assert ["throttle", "surge-hate"] == pending
        return entry

    entry = await assert_eventually(waiting)
    assert ("running", "elevated", "alice") == (
        entry["state"],
        entry["level"],
        entry["triggered_by"],
    )
    assert ["surge"] == [m["step_id"] for m in entry["measures"]]
    assert entry["next_expiry"] and entry["review_due"] and not entry["review_overdue"]
    # Auditors read the board too; without a token nobody does.
    assert 200 == (await api.get("/v1/incidents", headers=tokens.headers("carol"))).status_code
    assert_error(
        await api.get("/v1/incidents", headers={"Authorization": "Bearer nope"}),
        401,
        "unauthenticated",
    )
    # Closed incidents leave the open board and stay on the full one.
    answer(await act(api, incident, "stand-down", reason="calm again"))

    async def closed() -> None:
        assert incident not in [i["incident_id"] for i in (await board(api, limit=200))["items"]]
        everything = await board(api, state="closed", limit=200)
        assert incident in [i["incident_id"] for i in everything["items"]]

    await assert_eventually(closed)


async def test_board_pages_and_filters(api: httpx.AsyncClient) -> None:
    ids = [await trigger(api, "plain") for _ in range(3)]

    async def listed() -> list[str]:
        page = await board(api, playbook="plain", triggered_by="alice", limit=200)
        found = [i["incident_id"] for i in page["items"]]
        assert set(ids) <= set(found)
        return found

    everything = await assert_eventually(listed)
    first = await board(api, playbook="plain", limit=2)
    assert (everything[:2], 2) == ([i["incident_id"] for i in first["items"]], first["next_offset"])
    rest = await board(api, playbook="plain", limit=200, offset=2)
    assert everything[2:] == [i["incident_id"] for i in rest["items"]]
    assert None is rest["next_offset"]
    assert [] == (await board(api, triggered_by="nobody"))["items"]
    assert_error(await api.get("/v1/incidents", params={"limit": 0}), 422, "invalid_request")
    assert_error(await api.get("/v1/incidents", params={"state": "odd"}), 422, "invalid_request")
    # A misspelt filter is refused, not ignored (the answer would be every open incident).
    misspelt = await api.get("/v1/incidents", params={"stat": "failed"})
    message = assert_error(misspelt, 422, "invalid_request")
    assert message.startswith("query.stat: not a parameter of this route (it takes: "), message
    assert "state" in message
    twice = await api.get("/v1/incidents", params=[("state", "all"), ("state", "failed")])
    message = assert_error(twice, 422, "invalid_request")
    assert "query.state: given 2 times; it takes one value" == message


# --- timeline and live events -----------------------------------------------------------------
async def test_the_timeline_tells_the_incident_in_sentences(api: httpx.AsyncClient) -> None:
    incident = await trigger(api, "plain")

    async def applied() -> list[dict[str, Any]]:
        entries = answer(await api.get(f"/v1/incidents/{incident}/timeline"))["entries"]
        assert "step.applied" in [e["kind"] for e in entries]
        return entries

    entries = await assert_eventually(applied)
    assert "incident.triggered" == entries[0]["kind"]
    assert "alice" in entries[0]["text"]
    assert_error(await api.get("/v1/incidents/INC-NOPE-000/timeline"), 404, "incident_not_found")
    assert_error(await api.get("/v1/incidents/INC-NOPE-000/events"), 404, "incident_not_found")


async def sse(response: httpx.Response) -> AsyncIterator[tuple[str, dict[str, Any], str | None]]:
    """(event, data, id) per server-sent event."""
    event, data, ident = "message", "", None
    async for line in response.aiter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            data += line[6:]
        elif line.startswith("id: "):
            ident = line[4:]
        elif line == "" and data:
            yield event, json.loads(data), ident
            event, data, ident = "message", "", None


async def test_the_event_stream_follows_an_incident_live_to_its_end(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    incident = await trigger(api, "plain")
    kinds: list[str] = []
    seqs: list[int] = []
    states: list[str] = []

    async def follow() -> None:
        async with api.stream(
            "GET", f"/v1/incidents/{incident}/events", headers=tokens.headers("carol")
        ) as response:
            assert 200 == response.status_code
            assert response.headers["content-type"].startswith("text/event-stream")
            async for event, data, ident in sse(response):
                if event == "timeline":
                    kinds.append(data["kind"])
                    seqs.append(int(data["seq"]))
                    assert str(data["seq"]) == ident
                elif event == "status":
                    states.append(data["state"])
                elif event == "end":
                    return

    follower = asyncio.create_task(follow())

    async def applied() -> None:
        assert not follower.done() or follower.result()
        assert "step.applied" in kinds, kinds

    await assert_eventually(applied)
    answer(await act(api, incident, "stand-down", reason="over"))
    await asyncio.wait_for(follower, timeout=30)
    assert ["incident.triggered"] == kinds[:1]
    assert "incident.closed" == kinds[-1]
    assert "closed" == states[-1]
    assert list(range(1, len(seqs) + 1)) == seqs  # every event once, in order

    # A client that reconnects with Last-Event-ID gets only what came after.
    headers = {**bearer(tokens.token("carol")), "Last-Event-ID": "3"}
    async with api.stream("GET", f"/v1/incidents/{incident}/events", headers=headers) as again:
        resumed = [int(i) async for e, _, i in sse(again) if e == "timeline" and i]
    assert seqs[3:] == resumed


# --- separation of duties ---------------------------------------------------------------------
async def test_one_person_counts_once_whatever_tokens_or_roles_they_hold(
    api: httpx.AsyncClient, tokens: Tokens
) -> None:
    """alice triggered; a second token of hers with another role cannot make up the quorum."""
    incident = await trigger(api, "commander-actions")
    second_alice = tokens.issue("alice", "policy-lead")

    async def awaiting() -> None:
        status = answer(await api.get(f"/v1/incidents/{incident}"))
        states = {s["id"]: s["state"] for s in status["steps"]}
        assert "awaiting_approval" == states["throttle"], states

    await assert_eventually(awaiting)
    answer(await act(api, incident, "approve", step_id="throttle"))
    refused = await act(api, incident, "approve", token=second_alice, step_id="throttle")
    conflict(refused, "alice", "already approved")
    record = answer(
        await act(api, incident, "approve", token=tokens.token("bob"), step_id="throttle")
    )
    assert [("alice", "commander"), ("bob", "policy-lead")] == [
        (a["actor"], a["role"]) for a in record["approvals"]
    ]


async def test_a_broken_library_refuses_the_trigger_naming_the_file(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A template file the deployment broke makes its playbooks invalid: a JSON error that names
    the file and the key, never a 500, and no incident starts."""
    (tmp_path / "library" / "templates.yaml").write_text("crisis-opened: {subject: '{{ oops'}\n")
    message = assert_error(
        await api.post("/v1/incidents", json={"playbook": "plain"}), 422, "playbook_invalid"
    )
    assert "templates.yaml:1:1: crisis-opened.body: Field required" in message


async def test_a_template_that_cannot_render_refuses_the_trigger(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A template naming what no incident has is refused at trigger, at the template, instead of
    failing every notification of the incident it would have started."""
    library = tmp_path / "library"
    copy_library(library)
    templates = library / "templates.yaml"
    templates.write_text(
        templates.read_text().replace("{{ playbook.title }}", "{{ incident.nosuch.attr }}", 1)
    )
    (library / "tell.yaml").write_text(TELL_PLAYBOOK)
    message = assert_error(
        await api.post("/v1/incidents", json={"playbook": "tell"}), 422, "playbook_invalid"
    )
    lines = templates.read_text().splitlines()
    line = next(n for n, text in enumerate(lines, 1) if "incident.nosuch.attr" in text)
    where = f"templates.yaml:{line}:3: template 'crisis-opened' subject: 'dict object' has no "
    assert where in message

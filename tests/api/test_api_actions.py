"""Commander actions over HTTP: approve, reject, escalate, de-escalate, renew, restore,
confirm-review and notes under /v1/incidents/{id}/, against the real dev server, sandbox and
embedded worker."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app
from core.settings import Settings
from tests.api.conftest import Tokens, bearer
from tests.api.test_api import assert_error
from tests.cli.test_cli_actions import ACTIONS_PLAYBOOK, PLAIN_PLAYBOOK
from tests.conftest import Sandbox
from tests.helpers import assert_eventually, serve_app
from workflows.limits import MAX_INPUT_CHARS, MAX_NOTE_CHARS, MAX_TEXT_CHARS

ACTION_PATHS = (
    "approve",
    "reject",
    "escalate",
    "de-escalate",
    "renew",
    "restore",
    "confirm-review",
    "notes",
)


@asynccontextmanager
async def api_with(
    settings: Settings, tmp_path: Path, tokens: Tokens, playbooks: dict[str, str]
) -> AsyncIterator[httpx.AsyncClient]:
    """The API over real HTTP, with a playbook library of `playbooks` (name: text), called as
    alice (a commander)."""
    library = tmp_path / "library"
    library.mkdir()
    for name, text in playbooks.items():
        (library / f"{name}.yaml").write_text(text)
    app = create_app(settings.model_copy(update={"playbooks_dir": library}))
    with serve_app(app) as url:
        async with httpx.AsyncClient(
            base_url=url, timeout=30, headers=tokens.headers("alice")
        ) as http:
            yield http


@pytest.fixture
async def api(
    settings: Settings, tmp_path: Path, tokens: Tokens
) -> AsyncIterator[httpx.AsyncClient]:
    playbooks = {"commander-actions": ACTIONS_PLAYBOOK, "plain": PLAIN_PLAYBOOK}
    async with api_with(settings, tmp_path, tokens, playbooks) as http:
        yield http


async def trigger(api: httpx.AsyncClient, playbook: str, **extra: Any) -> str:
    response = await api.post("/v1/incidents", json={"playbook": playbook, **extra})
    assert 201 == response.status_code, response.text
    return response.json()["incident_id"]


async def act(
    api: httpx.AsyncClient, incident_id: str, path: str, *, token: str | None = None, **body: Any
) -> httpx.Response:
    """POST an action as the client's principal, or as the holder of `token`."""
    headers = bearer(token) if token else None
    return await api.post(f"/v1/incidents/{incident_id}/{path}", json=body, headers=headers)


def answer(response: httpx.Response) -> dict[str, Any]:
    assert 200 == response.status_code, response.text
    return response.json()


def conflict(response: httpx.Response, *fragments: str) -> None:
    """Refused by the incident now (it may take it in another state)."""
    message = assert_error(response, 409, "incident_conflict")
    for fragment in fragments:
        assert fragment in message, message


def invalid(response: httpx.Response, *fragments: str) -> None:
    """Refused by the incident as asked: it names what the incident does not have."""
    message = assert_error(response, 422, "action_invalid")
    for fragment in fragments:
        assert fragment in message, message


async def status_when(
    api: httpx.AsyncClient, incident_id: str, check: Callable[[dict[str, str]], bool]
) -> dict[str, Any]:
    async def reached() -> dict[str, Any]:
        status = answer(await api.get(f"/v1/incidents/{incident_id}"))
        states = {s["id"]: s["state"] for s in status["steps"]}
        assert check(states), states
        return status

    return await assert_eventually(reached)


def step(status: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in status["steps"] if s["id"] == step_id)


async def test_approve_and_reject(api: httpx.AsyncClient, sandbox: Sandbox, tokens: Tokens) -> None:
    """Two distinct approvers in the step's roles let it run; a rejection skips a step; every
    refused request is 409 (or 422, if it names what the incident does not have) with the
    workflow's reason."""
    bob = tokens.token("bob")  # policy-lead
    ivan = tokens.issue("ivan", "commander", "intern")
    i = await trigger(api, "commander-actions", level="elevated")
    # Both asked for at once: a step waiting for its approval holds back only its settings.
    await status_when(api, i, lambda s: s["throttle"] == s["surge-hate"] == "awaiting_approval")

    invalid(
        await act(api, i, "approve", step_id="throttle", role="intern", token=ivan),
        i,
        "role 'intern' cannot approve throttle (roles: commander, policy-lead)",
    )
    invalid(
        await act(api, i, "approve", step_id="surge", role="commander"),
        "step 'surge' does not exist or needs no approval",
    )
    invalid(
        await act(api, i, "reject", step_id="throttle", role="intern", reason="no", token=ivan),
        "role 'intern' cannot reject throttle",
    )

    first = answer(await act(api, i, "approve", step_id="throttle", role="commander"))
    assert ("throttle", "awaiting_approval") == (first["id"], first["state"])
    assert [("alice", "commander", "")] == [
        (a["actor"], a["role"], a["comment"]) for a in first["approvals"]
    ]
    conflict(
        await act(api, i, "approve", step_id="throttle"), "alice has already approved throttle"
    )
    second = answer(await act(api, i, "approve", step_id="throttle", comment="ok", token=bob))
    assert [("alice", "commander"), ("bob", "policy-lead")] == [
        (a["actor"], a["role"]) for a in second["approvals"]
    ]
    status = await status_when(
        api, i, lambda s: s["throttle"] == "applied" and s["surge-hate"] == "awaiting_approval"
    )
    assert step(status, "throttle")["expires_at"]
    assert 0.5 == (await sandbox.state())["recommender"]["GB"]["spam"]["reach_multiplier"]

    rejected = answer(
        await act(
            api,
            i,
            "reject",
            step_id="surge-hate",
            role="commander",
            reason="too broad",
            token=ivan,
        )
    )
    assert ("skipped", "rejected by ivan: too broad") == (rejected["state"], rejected["outcome"])
    conflict(
        await act(api, i, "reject", step_id="surge-hate", role="commander", reason="again"),
        "step surge-hate is not awaiting approval (it is skipped: rejected by ivan: too broad)",
    )
    answer(await act(api, i, "stand-down", reason="test over"))


async def test_levels_renew_review_and_notes(
    api: httpx.AsyncClient, sandbox: Sandbox, tokens: Tokens
) -> None:
    """Escalate and de-escalate (a level at a time or to a named one), renew a measure, confirm
    the review, add notes: each answers the result and lands in the audit trail, with the
    principal who did it."""
    admin = tokens.token("admin")
    before = await sandbox.state()
    i = await trigger(api, "commander-actions", level="severe")
    status = await status_when(api, i, lambda s: s["surge"] == s["tighten"] == "applied")
    assert "severe" == status["level"]
    assert 0.3 == (await sandbox.state())["detection"]["fraud"]

    escalated = answer(await act(api, i, "escalate", reason="spreading", token=admin))
    assert "critical" == escalated["level"]
    assert [("critical", "admin", "spreading")] == [
        (c["level"], c["actor"], c["reason"]) for c in escalated["level_history"]
    ]
    conflict(
        await act(api, i, "escalate", reason="worse"), "already at the highest level (critical)"
    )
    conflict(
        await act(api, i, "escalate", reason="x", to_level="severe"),
        "severe is not above the current level critical",
    )
    invalid(
        await act(api, i, "de-escalate", reason="x", to_level="nope"),
        "unknown level 'nope' (levels: elevated, severe, critical)",
    )
    lowered = answer(await act(api, i, "de-escalate", reason="calmer", to_level="elevated"))
    assert "elevated" == lowered["level"]
    conflict(await act(api, i, "de-escalate", reason="x"), "already at the lowest level")
    await status_when(api, i, lambda s: s["tighten"] == "dormant")
    assert before["detection"]["fraud"] == (await sandbox.state())["detection"]["fraud"]

    renewed = answer(await act(api, i, "renew", step_id="surge", duration="3h", reason="hot"))
    assert ("surge", "applied") == (renewed["id"], renewed["state"])
    assert renewed["expires_at"] > step(status, "surge")["expires_at"]
    renewal = {"duration": "1h", "reason": "x"}
    invalid(
        await act(api, i, "renew", step_id="nope", **renewal), "no measure 'nope' in this incident"
    )
    conflict(
        await act(api, i, "renew", step_id="throttle", **renewal),
        "measure throttle is awaiting_approval: only an applied",
    )
    conflict(
        await act(api, i, "renew", step_id="surge", duration="1m", reason="x"),
        "a renewal only pushes the expiry out",
    )
    # A duration that is no renewal is the request's fault: 422 before the incident is asked.
    for duration, reason in (
        ("a while", "invalid duration 'a while'"),
        ("0s", "duration '0s' must be longer than zero"),
        ("-1h", "invalid duration '-1h'"),
    ):
        refused = await act(api, i, "renew", step_id="surge", duration=duration, reason="x")
        said = assert_error(refused, 422, "invalid_request")
        assert said.startswith(f"body.duration: {reason}"), said  # no "Value error, " label

    reviewed = answer(await act(api, i, "confirm-review", note="still needed", token=admin))
    assert reviewed["next_review_due"] > status["next_review_due"]
    noted = answer(await act(api, i, "notes", text="regulator called back"))
    assert [("alice", "regulator called back")] == [(n["actor"], n["text"]) for n in noted["notes"]]

    async def audited() -> list[tuple[str, str | None]]:
        events = answer(await api.get(f"/v1/incidents/{i}/audit"))["events"]
        kinds = [(e["kind"], e["actor"]) for e in events]
        assert ("note.added", "alice") == kinds[-1], kinds
        return kinds

    kinds = await assert_eventually(audited)
    for expected in (
        ("level.escalated", "admin"),
        ("level.de_escalated", "alice"),
        ("step.withdrawn", None),
        ("measure.renewed", "alice"),
        ("review.confirmed", "admin"),
    ):
        assert expected in kinds, kinds
    answer(await act(api, i, "stand-down", reason="test over"))


async def test_restore_a_measure_whose_undo_failed(
    api: httpx.AsyncClient, sandbox: Sandbox
) -> None:
    """A stand-down whose surge undo the platform refuses answers standing down, the surge
    undo_failed; a retry while it still refuses answers undo_failed again; `by_hand` must be a
    JSON boolean; a restore recorded by hand closes the incident; then restore is refused."""
    i = await trigger(api, "plain")
    await status_when(api, i, lambda s: s["surge"] == "applied")
    conflict(await act(api, i, "restore", step_id="surge", reason="x"), "surge is applied")
    await sandbox.fault(path_prefix="/moderation", operation_prefix="undo-", status=400)
    try:
        down = answer(await act(api, i, "stand-down", reason="over"))
        assert ("standing_down", "undo_failed") == (down["state"], step(down, "surge")["state"])
        again = answer(await act(api, i, "restore", step_id="surge", reason="back?"))
        assert ("undo_failed", 2) == (again["state"], again["undos"])
        refused = await act(api, i, "restore", step_id="surge", reason="x", by_hand="yes")
        assert "body.by_hand: Input should be a valid boolean" == assert_error(
            refused, 422, "invalid_request"
        )
        invalid(await act(api, i, "restore", step_id="nope", reason="x"), "no measure 'nope'")
        done = answer(
            await act(api, i, "restore", step_id="surge", reason="in the admin", by_hand=True)
        )
        assert ("undone", "restored by hand (alice): in the admin") == (
            done["state"],
            done["outcome"],
        )
    finally:
        await sandbox.clear_faults()

    async def closed() -> None:
        assert "closed" == answer(await api.get(f"/v1/incidents/{i}"))["state"]

    await assert_eventually(closed)
    conflict(await act(api, i, "restore", step_id="surge", reason="x"), i, "closed")


async def test_refusals_and_errors(api: httpx.AsyncClient, sandbox: Sandbox) -> None:
    """Actions the playbook cannot take are 422, as a trigger at an undeclared level is; unknown
    incidents 404; bad bodies 422; a closed incident refuses notes (409)."""
    i = await trigger(api, "plain")
    invalid(await act(api, i, "confirm-review"), i, "playbook plain has no reviews")
    invalid(await act(api, i, "escalate", reason="x"), "playbook plain has no levels")
    invalid(await act(api, i, "de-escalate", reason="x"), "playbook plain has no levels")
    at_level = await api.post("/v1/incidents", json={"playbook": "plain", "level": "severe"})
    assert "unknown level 'severe'" in assert_error(at_level, 422, "invalid_input")

    bodies = {
        "approve": {"step_id": "s", "role": "commander"},
        "reject": {"step_id": "s", "role": "commander", "reason": "x"},
        "escalate": {"reason": "x"},
        "de-escalate": {"reason": "x"},
        "renew": {"step_id": "s", "duration": "1h", "reason": "x"},
        "restore": {"step_id": "s", "reason": "x"},
        "confirm-review": {},
        "notes": {"text": "x"},
    }
    assert set(ACTION_PATHS) == set(bodies)
    for path, body in bodies.items():
        missing = await act(api, "INC-NO-SUCH-INCIDENT", path, **body)
        assert "INC-NO-SUCH-INCIDENT" in assert_error(missing, 404, "incident_not_found"), path

    assert "reason" in assert_error(await act(api, i, "escalate"), 422, "invalid_request")
    assert "text" in assert_error(await act(api, i, "notes", text=""), 422, "invalid_request")
    no_step = await act(api, i, "approve", role="commander")
    assert "step_id" in assert_error(no_step, 422, "invalid_request")
    # Without a role the principal's own is used; this step needs no approval at all.
    invalid(
        await act(api, i, "approve", step_id="surge"),
        "step 'surge' does not exist or needs no approval",
    )

    answer(await act(api, i, "stand-down", reason="test over"))
    conflict(await act(api, i, "notes", text="late"), i, "closed")


async def test_over_long_text_and_inputs_are_refused_up_front(
    api: httpx.AsyncClient, tmp_path: Path
) -> None:
    """A note, reason or comment over its limit, or a trigger input over its size, is a 422 with
    the JSON error body, at once: nothing reaches the workflow (a 3 MB note once failed its
    workflow task and stalled the incident)."""
    i = await trigger(api, "commander-actions")
    note, text = "n" * 3_000_000, "t" * (MAX_TEXT_CHARS + 1)
    bodies = {
        "notes": {"text": note},
        "approve": {"step_id": "s", "role": "commander", "comment": text},
        "reject": {"step_id": "s", "role": "commander", "reason": text},
        "escalate": {"reason": text},
        "de-escalate": {"reason": text},
        "renew": {"step_id": "surge", "duration": "1h", "reason": text},
        "restore": {"step_id": "surge", "reason": text},
        "confirm-review": {"note": text},
        "stand-down": {"reason": text},
    }
    assert set(ACTION_PATHS) < set(bodies)
    for path, body in bodies.items():
        message = assert_error(await act(api, i, path, **body), 422, "invalid_request")
        (field,) = body.keys() - {"step_id", "role", "duration"}
        limit = MAX_NOTE_CHARS if path == "notes" else MAX_TEXT_CHARS
        assert f"body.{field}: String should have at most {limit} characters" == message, path
    answer(await act(api, i, "notes", text="n" * MAX_NOTE_CHARS))

    (tmp_path / "library" / "with-input.yaml").write_text(
        PLAIN_PLAYBOOK.replace("playbook: plain", "playbook: with-input").replace(
            "steps:", "inputs:\n  region: {type: string}\nsteps:"
        )
    )
    huge = {"playbook": "with-input", "inputs": {"region": "r" * 3_000_000}}
    message = assert_error(await api.post("/v1/incidents", json=huge), 422, "invalid_input")
    assert (
        f"input 'region' is too long: 3000002 characters as JSON (at most {MAX_INPUT_CHARS})"
        == (message)
    )
    await trigger(api, "with-input", inputs={"region": "r" * (MAX_INPUT_CHARS - 2)})


async def test_blank_reasons_and_notes_are_refused_as_empty_ones(api: httpx.AsyncClient) -> None:
    """A reason or note of whitespace only is a 422 saying it is blank (as an empty one says it
    is too short): nothing reaches the incident, which carries on."""
    i = await trigger(api, "commander-actions")
    bodies = {
        "notes": {"text": "   "},
        "reject": {"step_id": "throttle", "role": "commander", "reason": " \t "},
        "escalate": {"reason": "\n"},
        "de-escalate": {"reason": "   "},
        "renew": {"step_id": "surge", "duration": "1h", "reason": "   "},
        "stand-down": {"reason": "\u2003 "},  # an em space is whitespace too
    }
    for path, body in bodies.items():
        message = assert_error(await act(api, i, path, **body), 422, "invalid_request")
        (field,) = body.keys() - {"step_id", "role", "duration"}
        assert f"body.{field}: String must not be blank" == message, path
    status = answer(await api.get(f"/v1/incidents/{i}"))
    assert ("running", "elevated", []) == (status["state"], status["level"], status["notes"])
    answer(await act(api, i, "notes", text=" spaced, not blank "))
    answer(await act(api, i, "stand-down", reason="test over"))


async def test_force_is_a_json_true_not_text_that_reads_as_one(api: httpx.AsyncClient) -> None:
    """Forcing a stand-down takes `"force": true`: "yes", "true", 1 and "on" are a 422 naming
    the field, not read as true, and the incident keeps running."""
    i = await trigger(api, "plain")
    for force in ("yes", "true", 1, "on"):
        refused = await act(api, i, "stand-down", reason="over", force=force)
        message = assert_error(refused, 422, "invalid_request")
        assert "body.force: Input should be a valid boolean" == message, force
    assert "running" == answer(await api.get(f"/v1/incidents/{i}"))["state"]
    done = answer(await act(api, i, "stand-down", reason="over", force=True))
    assert {"actor": "alice", "reason": "over", "force": True} == done["stand_down"]


async def test_openapi_describes_each_action(api: httpx.AsyncClient) -> None:
    """Each action route is a POST with a summary, its own request body schema (naming no actor:
    that is the principal) and the 401/403/404/409 error shape; trigger takes an optional
    level."""
    document = answer(await api.get("/openapi.json"))
    schemas = document["components"]["schemas"]
    bodies = {}
    for path in ACTION_PATHS:
        operation = document["paths"][f"/v1/incidents/{{incident_id}}/{path}"]["post"]
        assert operation["summary"], path
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        bodies[path] = ref.rsplit("/", 1)[1]
        assert {"200", "401", "403", "404", "409", "422"} <= set(operation["responses"]), path
        assert "actor" not in schemas[bodies[path]].get("properties", {}), path
    assert {
        "approve": "ApproveBody",
        "reject": "RejectBody",
        "escalate": "LevelBody",
        "de-escalate": "LevelBody",
        "renew": "RenewBody",
        "restore": "RestoreBody",
        "confirm-review": "ReviewBody",
        "notes": "NoteBody",
    } == bodies
    assert ["step_id"] == schemas["ApproveBody"]["required"]
    assert "role" in schemas["ApproveBody"]["properties"]
    assert "level" in schemas["TriggerBody"]["properties"]
    assert "actor" not in schemas["TriggerBody"]["properties"]


async def test_an_action_no_worker_answers_is_504_incident_busy(
    settings: Settings, tmp_path: Path, tokens: Tokens
) -> None:
    """No worker runs the incident (the API's own is off): the stand-down is re-sent until
    CRISIS_ACTION_TIMEOUT, then answered as busy, not as a Temporal failure."""
    library = tmp_path / "library"
    library.mkdir()
    (library / "plain.yaml").write_text(PLAIN_PLAYBOOK)
    app = create_app(
        settings.model_copy(
            update={"playbooks_dir": library, "api_embedded_worker": False, "action_timeout_s": 1}
        )
    )
    with serve_app(app) as url:
        async with httpx.AsyncClient(
            base_url=url, timeout=30, headers=tokens.headers("alice")
        ) as http:
            incident_id = await trigger(http, "plain")
            response = await act(http, incident_id, "stand-down", reason="over")
    message = assert_error(response, 504, "incident_busy")
    assert f"incident {incident_id} did not answer within 1s (no worker has polled" in message
    assert repr(settings.task_queue) in message, message


async def test_a_broken_library_file_is_the_deployments_error_not_the_clients(
    settings: Settings, tmp_path: Path, tokens: Tokens
) -> None:
    """The library list with one invalid file is a 503 `library_invalid` naming the file by its
    name and place (not the server's path), as a broken template or directory is."""
    broken = "playbook: draft\nversion: 1\n"
    async with api_with(
        settings, tmp_path, tokens, {"plain": PLAIN_PLAYBOOK, "draft": broken}
    ) as http:
        response = await http.get("/v1/playbooks")
        message = assert_error(response, 503, "library_invalid")
        assert message.startswith("draft.yaml:"), message
        assert str(tmp_path) not in message
        plain = await http.get("/v1/playbooks/plain")  # the rest of the library still serves
        assert 200 == plain.status_code, plain.text

"""The platform sandbox over real loopback HTTP: levers, idempotency, faults, notifications."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
import uvicorn

from core.signing import SIGNATURE_HEADER, signature_headers
from sandbox.app import create_app

SECRET = "test-webhook-secret"

THROTTLE = {"region": "GB", "categories": ["news", "video"], "reach_multiplier": 0.25}
THRESHOLD = {"classifier": "racial_hatred", "threshold": 0.55}
SURGE = {"queue": "hate", "extra_reviewers": 20, "priority": "urgent"}
EXCLUDE = {
    "region": "GB",
    "categories": ["incitement_to_violence", "racial_hatred"],
    "surfaces": ["feed", "explore"],
    "min_score": 0.4,
}
LIVESTREAM = {"region": "GB", "audience": "child_accounts", "disable_comments": True}
HASH_BLOCK = {
    "list_id": "gifct-perpetrator-content",
    "source": "gifct-hsdb",
    "hash_types": ["pdq", "vpdq"],
    "action": "block_and_report",
}


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """A sandbox served by uvicorn on a free loopback port in a background thread."""
    # An explicit IPPROTO_TCP makes asyncio set TCP_NODELAY on accepted connections (it checks
    # sock.proto); with proto 0 every response waits ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(webhook_secret=SECRET), log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "sandbox did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
    sock.close()


@pytest.fixture(scope="module")
def http(base_url: str) -> Iterator[httpx.Client]:
    """A plain HTTP client on the sandbox (named so as not to shadow the Temporal `client`)."""
    with httpx.Client(base_url=base_url, timeout=10) as c:
        yield c


@pytest.fixture(autouse=True)
def reset(http: httpx.Client) -> None:
    """Start every test from the initial state."""
    assert http.post("/reset").status_code == 200


def post(
    http: httpx.Client,
    path: str,
    body: Any,
    key: str | None,
    trace: tuple[str, str, str] | None = None,
) -> httpx.Response:
    """POST a mutation with an optional Idempotency-Key and trace headers."""
    headers: dict[str, str] = {}
    if key is not None:
        headers["Idempotency-Key"] = key
    if trace is not None:
        incident, step, operation = trace
        headers |= {"X-Incident-Id": incident, "X-Step-Id": step, "X-Operation": operation}
    return http.post(path, json=body, headers=headers)


def state(http: httpx.Client) -> dict[str, Any]:
    """The sandbox's whole state."""
    response = http.get("/state")
    assert response.status_code == 200
    return response.json()


# --- levers -------------------------------------------------------------------------------


def test_throttle_apply_and_restore_round_trip(http: httpx.Client) -> None:
    """Throttle answers null policies, sets them, and restore removes them again exactly."""
    before = state(http)["recommender"]
    assert before == {}

    applied = post(http, "/recommender/throttle", THROTTLE, "i1/s1/apply")
    assert applied.status_code == 200
    previous = applied.json()["previous"]
    assert previous == {"region": "GB", "policies": {"news": None, "video": None}}
    policy = {"reach_multiplier": 0.25, "reshare_limit": None}
    assert state(http)["recommender"] == {"GB": {"news": policy, "video": policy}}

    restore = {"args": THROTTLE, "previous": previous}
    restored = post(http, "/recommender/throttle/restore", restore, "i1/s1/restore")
    assert restored.status_code == 200
    assert restored.json()["previous"] == {
        "region": "GB",
        "policies": {"news": policy, "video": policy},
    }
    assert state(http)["recommender"] == before


def test_throttle_restore_puts_back_an_existing_policy(http: httpx.Client) -> None:
    """A second throttle reports the first policy, keeps its reshare limit, and restores it."""
    first = {"region": "GB", "categories": ["news"], "reach_multiplier": 0.5, "reshare_limit": 3}
    assert post(http, "/recommender/throttle", first, "i1/s1/apply").status_code == 200
    second = {"region": "GB", "categories": ["news"], "reach_multiplier": 0.1}
    answer = post(http, "/recommender/throttle", second, "i1/s2/apply").json()
    assert answer["previous"]["policies"]["news"] == {"reach_multiplier": 0.5, "reshare_limit": 3}
    assert state(http)["recommender"]["GB"]["news"] == {
        "reach_multiplier": 0.1,
        "reshare_limit": 3,
    }

    restore = {"args": second, "previous": answer["previous"]}
    assert post(http, "/recommender/throttle/restore", restore, "i1/s2/undo").status_code == 200
    assert state(http)["recommender"]["GB"]["news"] == {
        "reach_multiplier": 0.5,
        "reshare_limit": 3,
    }


def test_threshold_apply_and_restore(http: httpx.Client) -> None:
    """Setting a threshold answers the old one and restore puts it back."""
    applied = post(http, "/detection/threshold", THRESHOLD, "i1/s1/apply")
    assert applied.json() == {"previous": {"classifier": "racial_hatred", "threshold": 0.8}}
    assert state(http)["detection"]["racial_hatred"] == 0.55

    restore = {"args": THRESHOLD, "previous": applied.json()["previous"]}
    restored = post(http, "/detection/threshold/restore", restore, "i1/s1/restore")
    assert restored.json() == {"previous": {"classifier": "racial_hatred", "threshold": 0.55}}
    assert state(http)["detection"]["racial_hatred"] == 0.8


def test_surge_apply_and_restore(http: httpx.Client) -> None:
    """A surge adds reviewers and raises priority; restore puts the queue back as it was."""
    applied = post(http, "/moderation/surge", SURGE, "i1/s1/apply")
    assert applied.json() == {"previous": {"queue": "hate", "reviewers": 12, "priority": "normal"}}
    assert state(http)["moderation"]["hate"] == {"reviewers": 32, "priority": "urgent"}

    restore = {"args": SURGE, "previous": applied.json()["previous"]}
    restored = post(http, "/moderation/surge/restore", restore, "i1/s1/restore")
    assert restored.json() == {"previous": {"queue": "hate", "reviewers": 32, "priority": "urgent"}}
    assert state(http)["moderation"]["hate"] == {"reviewers": 12, "priority": "normal"}


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/detection/threshold", {"classifier": "nope", "threshold": 0.5}, "classifier"),
        ("/moderation/surge", {"queue": "nope", "extra_reviewers": 1}, "queue"),
        (
            "/detection/threshold/restore",
            {
                "args": {"classifier": "nope", "threshold": 0.5},
                "previous": {"classifier": "nope", "threshold": 0.9},
            },
            "classifier",
        ),
    ],
)
def test_unknown_classifier_or_queue_is_404(
    http: httpx.Client, path: str, body: dict[str, Any], message: str
) -> None:
    """An unknown classifier or queue is a 404 with a JSON error and applies nothing."""
    response = post(http, path, body, "i1/s1/apply")
    assert response.status_code == 404
    assert message in response.json()["error"]
    assert state(http)["stats"]["applied"] == 0


def test_invalid_arguments_are_422(http: httpx.Client) -> None:
    """Arguments the lever model rejects (here an unknown key) are a 422 JSON error."""
    response = post(http, "/detection/threshold", {**THRESHOLD, "extra": 1}, "i1/s1/apply")
    assert response.status_code == 422
    assert "extra" in response.json()["error"]


def test_exclude_unreviewed_apply_and_restore_round_trip(http: httpx.Client) -> None:
    """Excluding answers null exclusions, sets them, and restore removes them again exactly."""
    before = state(http)["recommender_exclusions"]
    assert before == {}

    applied = post(http, "/recommender/exclude-unreviewed", EXCLUDE, "i1/s1/apply")
    assert applied.status_code == 200
    previous = applied.json()["previous"]
    assert previous == {
        "region": "GB",
        "exclusions": {"incitement_to_violence": None, "racial_hatred": None},
    }
    exclusion = {"surfaces": ["feed", "explore"], "min_score": 0.4}
    assert state(http)["recommender_exclusions"] == {
        "GB": {"incitement_to_violence": exclusion, "racial_hatred": exclusion}
    }

    restore = {"args": EXCLUDE, "previous": previous}
    restored = post(http, "/recommender/exclude-unreviewed/restore", restore, "i1/s1/restore")
    assert restored.status_code == 200
    assert restored.json()["previous"] == {
        "region": "GB",
        "exclusions": {"incitement_to_violence": exclusion, "racial_hatred": exclusion},
    }
    assert state(http)["recommender_exclusions"] == before


def test_exclude_unreviewed_restore_puts_back_an_existing_exclusion(http: httpx.Client) -> None:
    """A second exclusion reports the first, replaces it, and restore brings the first back."""
    first = {"region": "GB", "categories": ["terrorism"]}
    assert post(http, "/recommender/exclude-unreviewed", first, "i1/s1/apply").status_code == 200
    second = {
        "region": "GB",
        "categories": ["terrorism", "threats"],
        "surfaces": ["feed", "notifications"],
        "min_score": 0.2,
    }
    answer = post(http, "/recommender/exclude-unreviewed", second, "i2/s1/apply").json()
    assert answer["previous"] == {
        "region": "GB",
        "exclusions": {"terrorism": {"surfaces": ["feed"], "min_score": 0.5}, "threats": None},
    }
    assert state(http)["recommender_exclusions"]["GB"]["terrorism"] == {
        "surfaces": ["feed", "notifications"],
        "min_score": 0.2,
    }

    restore = {"args": second, "previous": answer["previous"]}
    assert (
        post(http, "/recommender/exclude-unreviewed/restore", restore, "i2/s1/undo").status_code
        == 200
    )
    assert state(http)["recommender_exclusions"] == {
        "GB": {"terrorism": {"surfaces": ["feed"], "min_score": 0.5}}
    }


def test_livestream_restrict_apply_and_restore_round_trip(http: httpx.Client) -> None:
    """Restricting answers null restrictions, sets them, and restore lifts them again exactly."""
    before = state(http)["livestream"]
    assert before == {}

    applied = post(http, "/livestream/restrict", LIVESTREAM, "i1/s1/apply")
    assert applied.status_code == 200
    previous = applied.json()["previous"]
    assert previous == {"region": "GB", "audience": "child_accounts", "restrictions": None}
    restrictions = {
        "block_new_streams": False,
        "disable_comments": True,
        "disable_gifts": False,
        "disable_recording": False,
    }
    assert state(http)["livestream"] == {"GB": {"child_accounts": restrictions}}

    restore = {"args": LIVESTREAM, "previous": previous}
    restored = post(http, "/livestream/restrict/restore", restore, "i1/s1/restore")
    assert restored.status_code == 200
    assert restored.json()["previous"] == {**previous, "restrictions": restrictions}
    assert state(http)["livestream"] == before


def test_livestream_restrict_adds_to_existing_restrictions_and_restores_them(
    http: httpx.Client,
) -> None:
    """A second restriction keeps the first one's flags, reports them, and restore puts it back."""
    assert post(http, "/livestream/restrict", LIVESTREAM, "i1/s1/apply").status_code == 200
    first = state(http)["livestream"]
    second = {
        "region": "GB",
        "audience": "child_accounts",
        "disable_gifts": True,
        "disable_recording": True,
    }
    answer = post(http, "/livestream/restrict", second, "i2/s1/apply").json()
    assert answer["previous"]["restrictions"] == first["GB"]["child_accounts"]
    assert state(http)["livestream"]["GB"]["child_accounts"] == {
        "block_new_streams": False,
        "disable_comments": True,
        "disable_gifts": True,
        "disable_recording": True,
    }

    restore = {"args": second, "previous": answer["previous"]}
    assert post(http, "/livestream/restrict/restore", restore, "i2/s1/undo").status_code == 200
    assert state(http)["livestream"] == first


def test_hash_block_apply_and_restore_round_trip(http: httpx.Client) -> None:
    """Blocking a known list answers a null block, blocks, and restore stops blocking exactly."""
    before = state(http)
    assert before["hashes"] == {}
    assert before["hash_lists"]["gifct-perpetrator-content"]["source"] == "gifct-hsdb"

    applied = post(http, "/hashes/lists/block", HASH_BLOCK, "i1/s1/apply")
    assert applied.status_code == 200
    previous = applied.json()["previous"]
    assert previous == {"list_id": "gifct-perpetrator-content", "block": None}
    block = {
        "source": "gifct-hsdb",
        "hash_types": ["pdq", "vpdq"],
        "action": "block_and_report",
        "blocking": True,
    }
    assert state(http)["hashes"] == {"gifct-perpetrator-content": block}

    restore = {"args": HASH_BLOCK, "previous": previous}
    restored = post(http, "/hashes/lists/block/restore", restore, "i1/s1/restore")
    assert restored.status_code == 200
    assert restored.json()["previous"] == {**previous, "block": block}
    after = state(http)
    assert after["hashes"] == before["hashes"]
    assert after["hash_lists"] == before["hash_lists"]


def test_hash_block_restore_puts_back_an_existing_block(http: httpx.Client) -> None:
    """A second block of a list reports the first, replaces it, and restore brings it back."""
    first = {**HASH_BLOCK, "hash_types": ["md5"], "action": "review"}
    assert post(http, "/hashes/lists/block", first, "i1/s1/apply").status_code == 200
    answer = post(http, "/hashes/lists/block", HASH_BLOCK, "i2/s1/apply").json()
    old = {"source": "gifct-hsdb", "hash_types": ["md5"], "action": "review", "blocking": True}
    assert answer["previous"] == {"list_id": "gifct-perpetrator-content", "block": old}
    assert state(http)["hashes"]["gifct-perpetrator-content"]["action"] == "block_and_report"

    restore = {"args": HASH_BLOCK, "previous": answer["previous"]}
    assert post(http, "/hashes/lists/block/restore", restore, "i2/s1/undo").status_code == 200
    assert state(http)["hashes"] == {"gifct-perpetrator-content": old}


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/hashes/lists/block", {**HASH_BLOCK, "list_id": "no-such-list"}),
        (
            "/hashes/lists/block/restore",
            {
                "args": {**HASH_BLOCK, "list_id": "no-such-list"},
                "previous": {"list_id": "no-such-list", "block": None},
            },
        ),
    ],
)
def test_unknown_hash_list_is_404(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    """An unknown hash list is a 404 with a JSON error and applies nothing."""
    response = post(http, path, body, "i1/s1/apply")
    assert response.status_code == 404
    assert "no-such-list" in response.json()["error"]
    assert state(http)["stats"]["applied"] == 0


@pytest.mark.parametrize(
    ("path", "body", "message"),
    [
        ("/recommender/exclude-unreviewed", {**EXCLUDE, "min_score": 1.5}, "min_score"),
        ("/recommender/exclude-unreviewed", {**EXCLUDE, "surfaces": ["timeline"]}, "surfaces"),
        ("/recommender/exclude-unreviewed", {**EXCLUDE, "categories": []}, "categories"),
        (
            "/recommender/exclude-unreviewed/restore",
            {"args": EXCLUDE, "previous": {"region": "FR", "exclusions": {"terrorism": None}}},
            "region",
        ),
        ("/livestream/restrict", {"region": "GB", "disable_comments": False}, "at least one"),
        ("/livestream/restrict", {**LIVESTREAM, "audience": "adults"}, "audience"),
        (
            "/livestream/restrict/restore",
            {
                "args": LIVESTREAM,
                "previous": {"region": "GB", "audience": "all", "restrictions": None},
            },
            "audience",
        ),
        ("/hashes/lists/block", {**HASH_BLOCK, "hash_types": []}, "hash_types"),
        ("/hashes/lists/block", {**HASH_BLOCK, "action": "delete"}, "action"),
        ("/hashes/lists/block", {**HASH_BLOCK, "source": "internal"}, "gifct-hsdb"),
        (
            "/hashes/lists/block",
            {"list_id": "internal-csam-known", "source": "internal", "hash_types": ["tmk"]},
            "tmk",
        ),
        (
            "/hashes/lists/block/restore",
            {
                "args": HASH_BLOCK,
                "previous": {
                    "list_id": "gifct-perpetrator-content",
                    "block": {**HASH_BLOCK, "blocking": False},
                },
            },
            "blocking",
        ),
    ],
)
def test_invalid_new_lever_requests_are_422(
    http: httpx.Client, path: str, body: dict[str, Any], message: str
) -> None:
    """Arguments a new lever refuses are a 422 JSON error naming the problem and apply nothing."""
    response = post(http, path, body, "i1/s1/apply")
    assert response.status_code == 422
    assert message in response.json()["error"]
    assert state(http)["stats"]["applied"] == 0


@pytest.mark.parametrize(
    ("path", "body", "part"),
    [
        ("/recommender/exclude-unreviewed", EXCLUDE, "recommender_exclusions"),
        ("/livestream/restrict", LIVESTREAM, "livestream"),
        ("/hashes/lists/block", HASH_BLOCK, "hashes"),
    ],
)
def test_new_lever_replay_does_not_reapply(
    http: httpx.Client, path: str, body: dict[str, Any], part: str
) -> None:
    """A replayed apply of a new lever answers the first response and changes nothing."""
    first = post(http, path, body, "i1/s1/apply")
    after_first = state(http)
    again = post(http, path, body, "i1/s1/apply")
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    after = state(http)
    assert after[part] == after_first[part]
    assert (after["stats"]["applied"], after["stats"]["replayed"]) == (1, 1)


# --- idempotency --------------------------------------------------------------------------


def test_same_key_same_body_replays_without_reapplying(http: httpx.Client) -> None:
    """A replay answers the first response and leaves the state and the log untouched."""
    first = post(http, "/moderation/surge", SURGE, "i1/s1/apply")
    after_first = state(http)
    again = post(http, "/moderation/surge", SURGE, "i1/s1/apply")
    assert again.status_code == 200
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"

    after = state(http)
    assert after["moderation"] == after_first["moderation"]
    assert after["moderation"]["hate"]["reviewers"] == 32
    assert after["stats"]["replayed"] == 1
    assert after["stats"]["applied"] == 1
    assert len(after["applications"]) == 1
    assert after["applications"][0]["key"] == "i1/s1/apply"


def test_same_key_different_body_is_422(http: httpx.Client) -> None:
    """Reusing a key for another body is refused and applies nothing."""
    assert post(http, "/detection/threshold", THRESHOLD, "i1/s1/apply").status_code == 200
    other = {**THRESHOLD, "threshold": 0.1}
    response = post(http, "/detection/threshold", other, "i1/s1/apply")
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["error"]
    assert state(http)["detection"]["racial_hatred"] == 0.55


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/recommender/throttle", THROTTLE),
        ("/detection/threshold", THRESHOLD),
        ("/moderation/surge", SURGE),
        ("/recommender/exclude-unreviewed", EXCLUDE),
        ("/livestream/restrict", LIVESTREAM),
        ("/hashes/lists/block", HASH_BLOCK),
        ("/notify/webhooks/regulator", {"message": "hello"}),
    ],
)
def test_missing_key_is_400(http: httpx.Client, path: str, body: dict[str, Any]) -> None:
    """A mutation without an Idempotency-Key is a 400 and applies nothing."""
    response = post(http, path, body, None)
    assert response.status_code == 400
    assert "Idempotency-Key" in response.json()["error"]
    assert state(http)["stats"]["applied"] == 0


def test_duplicates_counts_a_logical_operation_applied_under_a_new_key(
    http: httpx.Client,
) -> None:
    """The same (incident, step, operation) under a new key applies again and is counted."""
    trace = ("inc-1", "throttle", "apply")
    post(http, "/moderation/surge", SURGE, "k1", trace)
    post(http, "/moderation/surge", SURGE, "k1", trace)  # a replay: not a duplicate
    assert state(http)["stats"]["duplicates"] == 0

    post(http, "/moderation/surge", SURGE, "k2", trace)
    post(http, "/moderation/surge", SURGE, "k3", ("inc-1", "throttle", "undo"))
    post(http, "/moderation/surge", SURGE, "k4")  # no trace headers: never counted
    post(http, "/moderation/surge", SURGE, "k5")
    stats = state(http)["stats"]
    assert stats["duplicates"] == 1
    assert stats["applied"] == 5
    assert stats["replayed"] == 1


async def test_concurrent_requests_with_one_key_apply_once(base_url: str) -> None:
    """Racing requests with the same key apply once and the rest are replays."""
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as aclient:
        headers = {"Idempotency-Key": "race/s1/apply"}
        responses = await asyncio.gather(
            *(aclient.post("/moderation/surge", json=SURGE, headers=headers) for _ in range(10))
        )
        assert {r.status_code for r in responses} == {200}
        assert len({r.text for r in responses}) == 1
        snapshot = (await aclient.get("/state")).json()
    assert snapshot["moderation"]["hate"]["reviewers"] == 32
    assert snapshot["stats"]["applied"] == 1
    assert snapshot["stats"]["replayed"] == 9


# --- faults -------------------------------------------------------------------------------


def test_fault_times_fails_that_many_requests_then_succeeds(http: httpx.Client) -> None:
    """`times: 2` fails two matching requests with 500 and lets the third through."""
    fault = {"path_prefix": "/detection", "status": 500, "times": 2}
    assert http.post("/faults", json=fault).status_code == 200
    statuses = [post(http, "/detection/threshold", THRESHOLD, "k").status_code for _ in range(3)]
    assert statuses == [500, 500, 200]
    after = state(http)
    assert after["stats"]["faults_injected"] == 2
    assert after["stats"]["applied"] == 1
    assert after["faults"] == []


def test_fault_only_hits_matching_paths(http: httpx.Client) -> None:
    """A fault on one prefix leaves other platform paths and the sandbox endpoints alone."""
    http.post("/faults", json={"path_prefix": "/recommender", "status": 503})
    assert post(http, "/recommender/throttle", THROTTLE, "k1").status_code == 503
    assert post(http, "/moderation/surge", SURGE, "k2").status_code == 200
    http.post("/faults", json={"path_prefix": "/", "status": 500})
    assert http.get("/health").status_code == 200
    assert http.get("/state").status_code == 200


def test_a_fault_can_hit_only_one_kind_of_operation(http: httpx.Client) -> None:
    """`operation_prefix: apply-` fails the applies on the path and lets its undos through."""
    rule = {"path_prefix": "/recommender", "status": 503, "operation_prefix": "apply-"}
    assert http.post("/faults", json=rule).status_code == 200
    undo = post(http, "/recommender/throttle", THROTTLE, "k1", ("INC-1", "cut", "undo-1"))
    apply = post(http, "/recommender/throttle", THROTTLE, "k2", ("INC-1", "cut", "apply-2"))
    untraced = post(http, "/recommender/throttle", THROTTLE, "k3")
    assert (200, 503, 200) == (undo.status_code, apply.status_code, untraced.status_code)
    assert "apply-" == state(http)["faults"][0]["operation_prefix"]


def test_fault_latency_delays_the_response(http: httpx.Client) -> None:
    """`status: 0` with `latency_ms` only delays the request, which then succeeds."""
    http.post("/faults", json={"path_prefix": "/moderation", "status": 0, "latency_ms": 300})
    started = time.monotonic()
    response = post(http, "/moderation/surge", SURGE, "k1")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert elapsed >= 0.3


def test_a_request_in_flight_across_a_reset_is_not_applied(
    http: httpx.Client, base_url: str
) -> None:
    """A delayed request admitted before /reset belongs to the platform reset replaced: it is
    refused, and the fresh platform keeps its initial settings."""
    initial = state(http)
    http.post("/faults", json={"path_prefix": "/detection", "status": 0, "latency_ms": 500})
    answers: list[httpx.Response] = []

    def slow_call() -> None:
        with httpx.Client(base_url=base_url, timeout=10) as other:
            answers.append(post(other, "/detection/threshold", THRESHOLD, "k1"))

    caller = threading.Thread(target=slow_call)
    caller.start()
    deadline = time.monotonic() + 5
    while state(http)["stats"]["requests"] < 1:
        assert time.monotonic() < deadline, "the slow request never arrived"
        time.sleep(0.01)
    assert http.post("/reset").status_code == 200
    caller.join(timeout=10)

    (answer,) = answers
    assert 409 == answer.status_code
    assert "reset" in answer.json()["error"]
    after = state(http)
    assert initial["detection"] == after["detection"]
    assert [] == after["applications"]


def test_fault_outage_window_ends_by_itself(http: httpx.Client) -> None:
    """An outage fails every matching request until its window has passed."""
    http.post("/faults", json={"path_prefix": "/", "status": 502, "outage_seconds": 0.4})
    assert post(http, "/detection/threshold", THRESHOLD, "k1").status_code == 502
    assert post(http, "/moderation/surge", SURGE, "k2").status_code == 502
    time.sleep(0.5)
    assert post(http, "/detection/threshold", THRESHOLD, "k1").status_code == 200


def test_delete_faults_clears_them(http: httpx.Client) -> None:
    """DELETE /faults removes an open-ended fault so requests succeed again."""
    http.post("/faults", json={"path_prefix": "/moderation", "status": 500})
    assert post(http, "/moderation/surge", SURGE, "k1").status_code == 500
    assert http.delete("/faults").json() == {"cleared": 1}
    assert post(http, "/moderation/surge", SURGE, "k1").status_code == 200
    assert state(http)["faults"] == []


# --- notifications ------------------------------------------------------------------------


def _webhook(http: httpx.Client, raw: bytes, signed: dict[str, str], key: str) -> httpx.Response:
    headers = {"Content-Type": "application/json", "Idempotency-Key": key, **signed}
    return http.post("/notify/webhooks/regulator", content=raw, headers=headers)


def test_notification_is_stored_with_its_signature_checked(http: httpx.Client) -> None:
    """A correctly signed message verifies; a wrongly signed or stale one is stored as
    unverified."""
    message = {"message": "Throttling in GB", "severity": "critical", "data": {"region": "GB"}}
    raw = json.dumps(message).encode()
    good = signature_headers(SECRET, raw)
    bad = signature_headers("wrong-secret", raw)
    stale = signature_headers(SECRET, raw, now=time.time() - 3600)

    assert _webhook(http, raw, good, "i1/s1/notify").json() == {"received": 1}
    assert _webhook(http, raw, bad, "i1/s2/notify").json() == {"received": 2}
    assert _webhook(http, raw, stale, "i1/s3/notify").json() == {"received": 3}

    first, second, third = state(http)["notifications"]
    assert first["stakeholder"] == "regulator"
    assert first["body"] == message
    assert first["signature"] == good[SIGNATURE_HEADER]
    assert first["signature_valid"] is True
    assert first["idempotency_key"] == "i1/s1/notify"
    assert datetime.fromisoformat(first["received_at"]).utcoffset() is not None
    assert (False, False) == (second["signature_valid"], third["signature_valid"])


# --- reset --------------------------------------------------------------------------------


def test_reset_restores_the_initial_state(http: httpx.Client) -> None:
    """After mutations and faults, /reset brings back the initial state and clears memory."""
    initial = state(http)
    assert initial["detection"]["terrorism"] == 0.85
    assert initial["moderation"]["general"] == {"reviewers": 40, "priority": "normal"}

    post(http, "/recommender/throttle", THROTTLE, "k1")
    post(http, "/detection/threshold", THRESHOLD, "k2")
    post(http, "/moderation/surge", SURGE, "k3")
    post(http, "/recommender/exclude-unreviewed", EXCLUDE, "k4")
    post(http, "/livestream/restrict", LIVESTREAM, "k5")
    post(http, "/hashes/lists/block", HASH_BLOCK, "k6")
    http.post("/faults", json={"path_prefix": "/notify", "status": 500})
    assert http.post("/reset").json() == {"reset": True}

    assert state(http) == initial
    # The idempotency memory is gone too: the old key now applies afresh.
    assert (
        post(http, "/detection/threshold", THRESHOLD, "k2").headers.get("Idempotent-Replayed")
        is None
    )

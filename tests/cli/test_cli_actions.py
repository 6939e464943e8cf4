"""Commander actions through the `crisis` command line: approve, reject, escalate, de-escalate,
renew, review, note; and the status text that shows what a commander acts on."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.test_cli import USAGE, Run, assert_one_line_error, crisis, refusals
from tests.cli.test_cli import cli_env as cli_env  # the fixture, re-exported for these tests
from tests.conftest import Sandbox
from tests.helpers import assert_eventually

pytestmark = pytest.mark.usefixtures("worker", "sandbox")

# Levels, a review period, an expiring measure, a level-gated one, and two steps that need
# approval: `throttle` from two distinct people (commander or policy lead), `surge-hate` from one.
ACTIONS_PLAYBOOK = """\
playbook: commander-actions
version: 1
title: Commander actions
description: For tests of the commander actions.
levels: [elevated, severe, critical]
reviews: {every: 1h, grace: 30m, on_missed: record}
steps:
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 3}
    expires_after: 1h
  - id: tighten
    level: severe
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
    expires_after: 1h
  - id: throttle
    do: recommender.throttle
    with: {region: GB, categories: [spam], reach_multiplier: 0.5}
    expires_after: 1h
    approval: {roles: [commander, policy-lead], quorum: 2, timeout: 1h, on_timeout: skip}
  - id: surge-hate
    do: moderation.surge
    with: {queue: hate, extra_reviewers: 5}
    expires_after: 1h
    approval: {roles: [commander], timeout: 1h, on_timeout: skip}
"""

# No levels, no reviews: the actions that need them are refused.
PLAIN_PLAYBOOK = """\
playbook: plain
version: 1
title: Plain
description: No levels, no reviews.
steps:
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 3}
    expires_after: 1h
"""


@pytest.fixture
def playbooks(tmp_path: Path) -> dict[str, Path]:
    paths = {"actions": tmp_path / "commander-actions.yaml", "plain": tmp_path / "plain.yaml"}
    paths["actions"].write_text(ACTIONS_PLAYBOOK)
    paths["plain"].write_text(PLAIN_PLAYBOOK)
    return paths


def ok(run: Run) -> Run:
    assert 0 == run.code, run
    assert "" == run.stderr, run
    return run


async def trigger(env: dict[str, str], playbook: Path, *extra: str) -> str:
    return ok(await crisis(env, "trigger", str(playbook), "--json", *extra)).json()["incident_id"]


async def status_when(
    env: dict[str, str], incident_id: str, check: Callable[[dict[str, str]], bool]
) -> dict[str, Any]:
    """The incident's --json status once `check(state of each step)` holds."""

    async def reached() -> dict[str, Any]:
        status = ok(await crisis(env, "status", incident_id, "--json")).json()
        states = {s["id"]: s["state"] for s in status["steps"]}
        assert check(states), states
        return status

    return await assert_eventually(reached, timeout=30)


def step(status: dict[str, Any], step_id: str) -> dict[str, Any]:
    return next(s for s in status["steps"] if s["id"] == step_id)


async def test_a_de_escalation_whose_withdrawal_is_refused_exits_non_zero_naming_it(
    cli_env: dict[str, str], playbooks: dict[str, Path], sandbox: Sandbox
) -> None:
    """The platform refuses the undo of the measure the lower level no longer calls for: the
    level changes, and the answer says the measure was not withdrawn (it may be in force)."""
    i = await trigger(cli_env, playbooks["actions"], "--level", "severe")
    await status_when(cli_env, i, lambda s: s["surge"] == s["tighten"] == "applied")
    await sandbox.fault(path_prefix="/detection", operation_prefix="undo-", status=422)
    run = await crisis(cli_env, "de-escalate", i, "--reason", "calm")
    assert 1 == run.code, run
    assert f"de-escalated {i} to elevated" == run.stdout.strip()
    assert_one_line_error(
        run,
        f"incident {i}: 1 measure was NOT WITHDRAWN (the undo failed for good, so it may still",
        "tighten (detection.set_threshold: platform rejected the request (HTTP 422)",
    )
    await sandbox.clear_faults()
    status = ok(await crisis(cli_env, "status", i, "--json")).json()
    assert ("elevated", "undo_failed") == (status["level"], step(status, "tighten")["state"])


async def test_approve_and_reject(
    cli_env: dict[str, str], playbooks: dict[str, Path], sandbox: Sandbox
) -> None:
    """A quorum of two distinct approvers lets a step run; a rejection skips one; status shows
    the level and who approved what; refused approvals carry the workflow's reason."""
    i = await trigger(cli_env, playbooks["actions"])
    await status_when(cli_env, i, lambda s: s["throttle"] == "awaiting_approval")

    run = ok(await crisis(cli_env, "approve", i, "throttle", "--role", "commander"))
    assert "approved throttle (1 of 2: cli-tester (commander))" == run.stdout.strip()
    await refusals(
        cli_env,
        {
            "same approver twice": (
                ["approve", i, "throttle", "--role", "policy-lead"],
                [i, "cli-tester has already approved throttle"],
            ),
            "wrong role": (
                ["approve", i, "throttle", "--role", "intern", "--actor", "eve"],
                ["role 'intern' cannot approve throttle (roles: commander, policy-lead)"],
            ),
        },
    )

    text = ok(await crisis({**cli_env, "COLUMNS": "200"}, "status", i)).stdout
    assert "level: elevated (levels: elevated, severe, critical)" in text, text
    assert "awaiting approval: throttle — 1 of 2: cli-tester (commander); deadline " in text
    assert "next review due " in text and "notes: 0" in text, text

    run = ok(
        await crisis(
            cli_env,
            *["approve", i, "throttle", "--role", "policy-lead", "--actor", "bob"],
            *["--comment", "proportionate", "--json"],
        )
    )
    record = run.json()
    assert "throttle" == record["id"]
    assert [("cli-tester", "commander", ""), ("bob", "policy-lead", "proportionate")] == [
        (a["actor"], a["role"], a["comment"]) for a in record["approvals"]
    ]
    status = await status_when(
        cli_env, i, lambda s: s["throttle"] == "applied" and s["surge-hate"] == "awaiting_approval"
    )
    assert step(status, "throttle")["expires_at"]
    assert 0.5 == (await sandbox.state())["recommender"]["GB"]["spam"]["reach_multiplier"]

    run = ok(
        await crisis(
            cli_env, "reject", i, "surge-hate", "--role", "commander", "--reason", "not needed"
        )
    )
    assert "rejected surge-hate (now skipped)" == run.stdout.strip()
    again = await crisis(
        cli_env, "reject", i, "surge-hate", "--role", "commander", "--reason", "x", "--json"
    )
    assert_one_line_error(
        again, "step surge-hate is not awaiting approval (it is skipped: rejected by cli-tester"
    )
    text = ok(await crisis({**cli_env, "COLUMNS": "200"}, "status", i)).stdout
    assert "skipped (rejected by cli-tester: not needed)" in text, text


async def test_levels_renew_review_and_notes(
    cli_env: dict[str, str], playbooks: dict[str, Path], sandbox: Sandbox
) -> None:
    """Escalate and de-escalate (one level, or --to), renew a measure, confirm the review, add
    notes; each prints one line (or its JSON) and status text shows the result."""
    i = await trigger(cli_env, playbooks["actions"], "--level", "severe")
    status = await status_when(cli_env, i, lambda s: s["surge"] == s["tighten"] == "applied")
    assert "severe" == status["level"]
    surge_expiry, review_due = step(status, "surge")["expires_at"], status["next_review_due"]

    run = ok(await crisis(cli_env, "escalate", i, "--reason", "spreading"))
    assert f"escalated {i} to critical" == run.stdout.strip()
    await refusals(
        cli_env,
        {
            "escalate above the top": (
                ["escalate", i, "--reason", "worse"],
                [i, "already at the highest level (critical)"],
            ),
            "de-escalate to an unknown level": (
                ["de-escalate", i, "--to", "apocalyptic", "--reason", "x"],
                ["unknown level 'apocalyptic' (levels: elevated, severe, critical)"],
            ),
            "renew an unknown step": (
                ["renew", i, "nope", "--for", "2h", "--reason", "x"],
                ["no measure 'nope' in this incident"],
            ),
            "renew for no time at all": (
                ["renew", i, "surge", "--for", "0s", "--reason", "x"],
                [USAGE, "--for: duration '0s' must be longer than zero"],
            ),
        },
    )

    run = ok(
        await crisis(cli_env, "de-escalate", i, "--to", "elevated", "--reason", "calm", "--json")
    )
    status = run.json()
    assert ("elevated", ["critical", "elevated"]) == (
        status["level"],
        [change["level"] for change in status["level_history"]],
    )
    assert "dormant" == step(status, "tighten")["state"]  # answered once it was withdrawn

    renewed = ok(
        await crisis(cli_env, "renew", i, "surge", "--for", "3h", "--reason", "still hot", "--json")
    ).json()
    assert ("surge", "applied") == (renewed["id"], renewed["state"])
    assert renewed["expires_at"] > surge_expiry

    run = ok(await crisis(cli_env, "review", i, "--note", "measures still needed"))
    assert run.stdout.startswith("review confirmed; next due "), run

    run = ok(await crisis(cli_env, "note", i, "regulator called back"))
    assert f"note added to {i} (notes: 1)" == run.stdout.strip()
    noted = ok(await crisis(cli_env, "note", i, "press line agreed", "--actor", "dana", "--json"))
    noted_status = noted.json()
    assert [("cli-tester", "regulator called back"), ("dana", "press line agreed")] == [
        (n["actor"], n["text"]) for n in noted_status["notes"]
    ]
    assert noted_status["next_review_due"] > review_due

    text = ok(await crisis({**cli_env, "COLUMNS": "200"}, "status", i)).stdout
    assert "level: elevated (levels: elevated, severe, critical)" in text, text
    due = noted_status["next_review_due"]
    assert f"next review due {due[:10]} {due[11:19]} UTC" in text, text
    assert "notes: 2" in text, text
    assert f"{renewed['expires_at'][:10]} {renewed['expires_at'][11:19]}" in text, text


async def test_actions_refused_without_levels_reviews_or_an_open_incident(
    cli_env: dict[str, str], playbooks: dict[str, Path], sandbox: Sandbox
) -> None:
    """Actions a playbook cannot take, bad arguments, an unknown or closed incident: each is
    refused in one `error:` line."""
    i = await trigger(cli_env, playbooks["plain"])
    await refusals(
        cli_env,
        {
            "review without reviews": (["review", i], [i, "playbook plain has no reviews"]),
            "escalate without levels": (
                ["escalate", i, "--reason", "x"],
                ["playbook plain has no levels"],
            ),
            "trigger at an undeclared level": (
                ["trigger", str(playbooks["plain"]), "--level", "severe"],
                ["unknown level 'severe' for playbook plain (levels: none)"],
            ),
            "empty text": (["note", i, " "], [USAGE, "TEXT must not be empty"]),
            "unknown incident": (
                ["approve", "INC-NO-SUCH-INCIDENT", "throttle", "--role", "commander"],
                ["no incident INC-NO-SUCH-INCIDENT"],
            ),
        },
    )
    ok(await crisis(cli_env, "stand-down", i, "--reason", "test over"))
    assert_one_line_error(await crisis(cli_env, "note", i, "late"), i, "closed")


async def test_text_that_looks_like_markup_is_printed_as_it_is(
    cli_env: dict[str, str], playbooks: dict[str, Path]
) -> None:
    """A reason with `[bold]` or `[/x]` in it is shown verbatim: the terminal's markup never eats
    it, and a stray closing tag never fails the print. A name cannot carry markup at all: it is
    named as token principals are."""
    refused = await crisis(cli_env, "trigger", str(playbooks["plain"]), "--actor", "[b]ann")
    assert 2 == refused.code, refused
    assert refused.stderr.startswith("error: --actor: '[b]ann' cannot name who acts"), refused
    i = await trigger(cli_env, playbooks["plain"], "--actor", "ann.b@example.org")
    reason = "calm [/bold] again [red]"
    ok(await crisis(cli_env, "stand-down", i, "--reason", reason, "--actor", "bob"))
    text = ok(await crisis(cli_env, "status", i)).stdout
    assert "triggered by ann.b@example.org at " in text, text
    assert f"stand-down by bob: {reason}" in text, text
    board = ok(await crisis(cli_env, "incidents", "--state", "all", "--playbook", "plain")).stdout
    assert i in board, board

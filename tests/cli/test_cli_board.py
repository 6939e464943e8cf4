"""`crisis incidents`: the incident board, straight from the audit store or through the API."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cli.board import _attention, _in_force
from engine.board import BoardEntry, FailedDelivery, MeasureInForce
from tests.cli.test_cli import assert_one_line_error, assert_usage_error, crisis
from tests.cli.test_cli import cli_env as cli_env  # the fixture, re-exported for these tests
from tests.cli.test_cli_remote import as_
from tests.cli.test_cli_remote import issued as issued
from tests.cli.test_cli_remote import remote as remote
from tests.helpers import assert_eventually


async def test_the_board_lists_open_incidents_directly_and_through_the_api(
    cli_env: dict[str, str], remote: str, issued: dict[str, str]
) -> None:
    alice = as_(cli_env, issued["alice"])
    run = await crisis(alice, "--api", remote, "trigger", "violent-disorder", "--json")
    assert 0 == run.code, run
    incident = run.json()["incident_id"]

    async def listed(*args: str) -> dict[str, Any]:
        # By playbook: incidents of tests on the time-skipping server share the store, triggered
        # days "later", and would otherwise fill the first page.
        board = await crisis(alice, *args, "incidents", "--json", "--playbook", "violent-disorder")
        assert 0 == board.code, board
        (entry,) = [e for e in board.json()["items"] if e["incident_id"] == incident]
        assert 3 == len(entry["measures"])  # the two notifications are not measures
        return entry

    through_api = await assert_eventually(lambda: listed("--api", remote), timeout=30)
    direct = await listed()
    assert ("running", "violent-disorder", "alice") == (
        direct["state"],
        direct["playbook"],
        direct["triggered_by"],
    )
    assert {**direct, "age_s": 0} == {**through_api, "age_s": 0}

    text = await crisis(alice, "incidents", "--playbook", "violent-disorder")
    assert 0 == text.code and incident in text.stdout and "running" in text.stdout, text

    done = await crisis(alice, "--api", remote, "stand-down", incident, "--reason", "calm")
    assert 0 == done.code, done
    still_open = await crisis(alice, "incidents", "--json")
    assert incident not in {e["incident_id"] for e in still_open.json()["items"]}
    closed = await crisis(
        alice, "incidents", "--state", "closed", "--json", "--playbook", "violent-disorder"
    )
    assert incident in {e["incident_id"] for e in closed.json()["items"]}


async def test_board_mistakes_are_one_line_each(cli_env: dict[str, str], tmp_path: Path) -> None:
    assert_usage_error(
        await crisis(cli_env, "incidents", "--state", "lost"), "--state 'lost'", "open"
    )
    # A data directory with no store is a mistake to report, not an empty store to create.
    elsewhere = {k: v for k, v in cli_env.items() if k != "CRISIS_DATABASE_URL"}
    elsewhere["CRISIS_DATA_DIR"] = str(tmp_path / "nothing-here")
    board = await crisis(elsewhere, "incidents")
    assert_one_line_error(board, "no audit store", "nothing-here", "or use --api")
    # An auditor's check never goes through the API: it is not offered as a way out there.
    audit = await crisis(elsewhere, "audit", "verify", "INC-ANY", "--no-replay")
    assert_one_line_error(audit, "no audit store", "nothing-here")
    assert "--api" not in audit.stderr
    assert not (tmp_path / "nothing-here").exists()


@pytest.mark.usefixtures("worker")
async def test_stand_down_refuses_to_lift_a_later_incidents_measures(
    cli_env: dict[str, str],
) -> None:
    """Direct mode checks the audit store as the API does: the older of two incidents on the
    same settings is refused in one line naming the newer; newest first goes through."""
    ids = []
    for _ in range(2):
        run = await crisis(cli_env, "trigger", "violent-disorder", "--json")
        assert 0 == run.code, run
        ids.append(run.json()["incident_id"])

        async def applied(incident: str = ids[-1]) -> None:
            status = await crisis(cli_env, "status", incident, "--json")
            assert ["applied"] * 5 == [s["state"] for s in status.json()["steps"]]

        await assert_eventually(applied, timeout=30)
    older, newer = ids
    refused = await crisis(cli_env, "stand-down", older, "--reason", "calm")
    assert_one_line_error(refused, older, f"stand {newer} down first, or force")
    for incident in (newer, older):
        done = await crisis(cli_env, "stand-down", incident, "--reason", "calm", "--json")
        assert ("closed", 0) == (done.json()["state"], done.code), done


@pytest.mark.parametrize(
    "command",
    [
        ["audit", "verify", "INC-X"],
        ["audit", "export", "INC-X", "-o", "bundle"],
        ["audit", "report", "INC-X"],
    ],
)
async def test_reading_the_trail_in_the_wrong_directory_says_so(
    cli_env: dict[str, str], tmp_path: Path, command: list[str]
) -> None:
    """Run where there is no audit store, a reader names the directory it looked in instead of
    answering from a new, empty store it made there."""
    elsewhere = {k: v for k, v in cli_env.items() if k != "CRISIS_DATABASE_URL"}
    elsewhere["CRISIS_DATA_DIR"] = str(tmp_path / "empty")
    assert_one_line_error(await crisis(elsewhere, *command), "no audit store", "empty")
    assert not (tmp_path / "empty" / "audit.db").exists()


def test_the_in_force_and_attention_columns() -> None:
    """A measure an earlier incident's restore lifted (left to commanders) is still listed, and
    the column says how many are lifted; the review and failed deliveries are flagged as the
    console board flags them."""
    lapse = datetime(2026, 8, 3, 14, 0, tzinfo=UTC)
    measures = [
        MeasureInForce(step_id="surge", lever="moderation.surge", expires_at=lapse),
        MeasureInForce(step_id="cut", lever="recommender.throttle", lifted_by="INC-1"),
    ]
    entry = BoardEntry.model_validate(
        {
            "incident_id": "INC-2",
            "playbook": "p",
            "version": 1,
            "state": "running",
            "level": None,
            "triggered_by": "alice",
            "triggered_at": lapse,
            "closed_at": None,
            "updated_at": lapse,
            "age_s": 0,
            "pending_approvals": [],
            "measures": measures,
            "next_expiry": lapse,
            "review_due": None,
            "review_overdue": False,
            "failed_deliveries": [],
        }
    )
    assert "2, next lapse 2026-08-03 14:00:00, 1 LIFTED" == _in_force(entry)
    assert "1, next lapse 2026-08-03 14:00:00" == _in_force(
        entry.model_copy(update={"measures": measures[:1]})
    )
    # A measure whose apply had no answer is counted apart: it may be in force.
    maybe = MeasureInForce(step_id="limit", lever="recommender.throttle", uncertain=True)
    assert "1, next lapse 2026-08-03 14:00:00, 1 MAY BE" == _in_force(
        entry.model_copy(update={"measures": [measures[0], maybe]})
    )
    assert "" == _attention(entry)
    failed = FailedDelivery(
        step_id="tell", stakeholder="regulator", target="webhook", error="HTTP 500", at=lapse
    )
    flagged = entry.model_copy(
        update={"review_due": lapse, "review_overdue": True, "failed_deliveries": [failed] * 2}
    )
    assert "review OVERDUE since 2026-08-03 14:00:00, 2 deliveries FAILED" == _attention(flagged)
    due = flagged.model_copy(update={"review_overdue": False, "failed_deliveries": [failed]})
    assert "review due 2026-08-03 14:00:00, 1 delivery FAILED" == _attention(due)

"""Scenario checks without a server: how a check is read, refused and judged against a platform
state and an incident status."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from engine.errors import ScenarioError
from engine.library import load_library
from engine.playbook_files import load_playbook
from engine.simulate import (
    ScenarioCheck,
    check_differences,
    check_sandbox_paths,
    check_scenario,
    compare,
    load_scenario,
    lookup,
    state_differences,
)

LIBRARY = Path(__file__).resolve().parents[2] / "playbooks"

STATE: dict[str, Any] = {
    "detection": {"fraud": 0.6, "threats": 0.8},
    "recommender": {"GB": {"threats": {"reach_multiplier": 0.2, "reshare_limit": 5}}},
    "livestream": {},
    "notifications": [
        {
            "stakeholder": "regulator",
            "body": {
                "template": "crisis-opened",
                "severity": "critical",
                "subject": "Crisis protocol activated",
                "message": "Measures in force: surge.",
            },
        },
        {"stakeholder": "law-enforcement", "body": {"message": "plain webhook"}},
    ],
}
STATUS: dict[str, Any] = {
    "state": "running",
    "level": "severe",
    "reviews_missed": 0,
    "steps": [
        {"id": "surge", "state": "applied", "approvals": [{"actor": "alice", "role": "commander"}]},
        {"id": "hold", "state": "awaiting_approval", "approvals": []},
    ],
}


def check(**parts: Any) -> ScenarioCheck:
    return ScenarioCheck.model_validate({"at": "5m", "name": "c", **parts})


# --- judging ----------------------------------------------------------------------------------
def test_a_check_that_holds_has_no_differences() -> None:
    """Subsets of mappings, dotted paths, messages by stakeholder/template/severity/text, the
    status and step states all match."""
    holds = check(
        sandbox={"detection.fraud": 0.6, "recommender.GB.threats": {"reshare_limit": 5}},
        not_in_force=["livestream.GB", "recommender.FR"],
        notified=[
            {"to": "regulator", "template": "crisis-opened", "severity": "critical"},
            {"to": "regulator", "contains": "Measures in force"},
            {"to": "law-enforcement"},
        ],
        not_notified=[{"to": "regulator", "template": "crisis-closed"}, {"to": "comms"}],
        status={"state": "running", "level": "severe"},
        steps={
            "surge": {"state": "applied", "approvals": [{"actor": "alice"}]},
            "hold": "awaiting_approval",
        },
    )
    assert [] == check_differences(holds, STATE, STATUS)


def test_every_difference_is_one_line_naming_where() -> None:
    """Each part that does not hold says what was expected and what was found."""
    fails = check(
        sandbox={"detection.fraud": 0.25, "recommender.GB.threats": {"reach_multiplier": 0.5}},
        not_in_force=["recommender.GB"],
        notified=[{"to": "regulator", "template": "crisis-escalated"}],
        not_notified=[{"to": "regulator", "severity": "critical"}],
        status={"level": "critical"},
        steps={"surge": "expired", "hold": {"approvals": [{"actor": "bob"}]}},
    )
    assert [
        "detection.fraud: expected 0.25, got 0.6",
        "recommender.GB.threats.reach_multiplier: expected 0.5, got 0.2",
        "recommender.GB: still in force "
        '({"threats": {"reach_multiplier": 0.2, "reshare_limit": 5}})',
        "notified: nothing to regulator/crisis-escalated "
        "(received: regulator/crisis-opened, law-enforcement)",
        "not_notified: regulator/critical was sent (1x)",
        'status.level: expected "critical", got "severe"',
        'steps.surge: expected "expired", got "applied"',
        'steps.hold.approvals: expected [{"actor": "bob"}], got []',
    ] == check_differences(fails, STATE, STATUS)


def test_a_setting_that_is_absent_is_not_in_force() -> None:
    assert ['livestream.GB.new_accounts: not in force (expected {"block_new_streams": true})'] == (
        check_differences(
            check(sandbox={"livestream.GB.new_accounts": {"block_new_streams": True}}),
            STATE,
            STATUS,
        )
    )


@pytest.mark.parametrize(
    ("expected", "actual", "differs"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, False),  # a mapping is a subset
        ({"a": 1, "c": 3}, {"a": 1}, True),
        ([1, 2], [1, 2, 3], True),  # a list matches item by item
        ([{"x": 1}], [{"x": 1, "y": 2}], False),
        (0.3, 0.30000000000000004, False),  # numbers within rounding
        (1, 1.0, False),
        (True, 1, True),  # a flag is not a number
        ("a", "b", True),
        (None, None, False),
    ],
)
def test_compare(expected: Any, actual: Any, differs: bool) -> None:
    assert differs == bool(compare(expected, actual, "x"))


def test_lookup_follows_mappings_and_list_indexes() -> None:
    assert (True, "law-enforcement") == lookup(STATE, "notifications.1.stakeholder")
    assert (False, None) == lookup(STATE, "notifications.7")
    assert (False, None) == lookup(STATE, "detection.fraud.deeper")


def test_state_differences_name_each_changed_path() -> None:
    before = {"detection": {"fraud": 0.9}, "recommender": {}}
    after = {"detection": {"fraud": 0.6}, "recommender": {"GB": {"x": 1}}, "new": 1}
    assert [
        "detection.fraud: was 0.9, now 0.6",
        'recommender.GB: now {"x": 1}, was absent',
        "new: now 1, was absent",
    ] == state_differences(before, after)
    assert [] == state_differences(before, before)


# --- reading ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("checks:\n  - {at: 5m, name: empty}\n", "checks.0: a check needs at least one of"),
        (
            "checks:\n  - {at: 5m, name: c, status: {}, colour: red}\n",
            "checks.0.colour: unknown key",
        ),
        (
            "checks:\n  - {at: 5m, name: c, not_in_force: [detection..fraud]}\n",
            "checks.0.not_in_force: 'detection..fraud' is not a dotted path",
        ),
        (
            "checks:\n  - {at: 5m, name: c, steps: {surge: aplied}}\n",
            "checks.0.steps: surge: unknown step state 'aplied'",
        ),
        ("checks:\n  - {at: soon, name: c, status: {state: running}}\n", "checks.0.at:"),
        ("checks:\n  - {at: 5m, status: {state: running}}\n", "checks.0.name: Field required"),
        (
            "actions:\n  - {at: 5m, do: note, expect: maybe, with: {text: x}}\n",
            "actions.0.expect: Input should be 'done' or 'refused'",
        ),
    ],
)
def test_a_bad_check_is_one_error_naming_the_file_and_index(
    tmp_path: Path, text: str, fragment: str
) -> None:
    path = tmp_path / "bad.scenario.yaml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert re.match(rf"{re.escape(str(path))}:\d+:\d+: ", message), message  # file:line:col
    assert fragment in message, message
    assert "\n" not in message


def test_checks_are_matched_against_the_playbook_and_its_library(tmp_path: Path) -> None:
    """Unknown templates and status fields are refused before anything runs; so is a sandbox
    path into a section the platform state does not have."""
    playbook = load_playbook(LIBRARY / "fraud-wave.yaml", LIBRARY)
    library = load_library(LIBRARY)
    cases = {
        "notified: [{to: regulator, template: crisis-openned}]": (
            "checks.0.notified.0.template: unknown template 'crisis-openned'"
        ),
        "status: {levle: severe}": "checks.0.status: unknown field 'levle'",
    }
    for part, fragment in cases.items():
        path = tmp_path / "typo.scenario.yaml"
        path.write_text(f"checks:\n  - {{at: 5m, name: c, {part}}}\n")
        with pytest.raises(ScenarioError, match=fragment):
            check_scenario(load_scenario(path), playbook, library)

    path.write_text("checks:\n  - {at: 5m, name: c, sandbox: {detecton.fraud: 0.6}}\n")
    scenario = load_scenario(path)
    check_scenario(scenario, playbook, library)
    with pytest.raises(ScenarioError, match="unknown section 'detecton'"):
        check_sandbox_paths(scenario, STATE)

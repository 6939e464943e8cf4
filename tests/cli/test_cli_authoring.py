"""Authoring through the `crisis` command line: `playbook plan`, `playbook validate` warnings,
and `playbook simulate` on the time-skipping server with a scripted scenario."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from engine.simulate import format_offset
from tests.cli.test_cli import Run, assert_one_line_error, crisis, refusals, run_cli
from tests.cli.test_cli import cli_env as cli_env  # the fixture, re-exported for these tests

# Levels, reviews, a post-incident review, expiries, a wait, a parallel step whose branches need
# approval or a level, a `when:` condition and an on_stand_down step.
PLAYBOOK = """\
playbook: authoring
version: 1
title: Authoring
description: For tests of plan, validate and simulate.
inputs:
  region: {type: string, default: GB}
  notify: {type: boolean, default: false}
levels: [elevated, severe, critical]
reviews: {every: 12h, grace: 1h, on_missed: record}
post_incident_review: {due_within: 7d, owner: trust-and-safety}
steps:
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 3}
    expires_after: 1d
  - id: settle
    wait: 10m
  - id: both
    parallel:
      - id: throttle
        do: recommender.throttle
        with: {region: "${inputs.region}", categories: [spam], reach_multiplier: 0.5}
        expires_after: 12h
        approval: {roles: [commander, policy-lead], quorum: 2, timeout: 1h, on_timeout: skip}
      - id: tighten
        level: severe
        do: detection.set_threshold
        with: {classifier: fraud, threshold: 0.3}
        expires_after: 6h
  - id: tell-regulator
    when: inputs.notify
    do: notify.webhook
    with: {to: regulator, severity: critical, message: "Crisis in ${inputs.region}"}
    undo:
      do: notify.webhook
      with: {to: regulator, severity: info, message: "Crisis over in ${inputs.region}"}
on_stand_down:
  - id: all-clear
    do: notify.webhook
    with: {to: internal-crisis-team, severity: info, message: "Stood down"}
"""

# Escalate, a refused approval, two approvals, a renewal and the stand-down, over two days.
SCENARIO = """\
level: elevated
actions:
  - {at: 5m, do: escalate, actor: alice, with: {reason: spreading}}
  - {at: 15m, do: approve, actor: carol, with: {step_id: throttle, role: intern}}
  - {at: 20m, do: approve, actor: alice, with: {step_id: throttle, role: commander}}
  - {at: 25m, do: approve, actor: bob, with: {step_id: throttle, role: policy-lead}}
  - {at: 20h, do: renew, actor: alice, with: {step_id: surge, reason: still needed, duration: 2d}}
  - {at: 2d, do: stand-down, actor: alice, with: {reason: calm again}}
"""

NO_EXPIRY = """\
playbook: no-expiry
version: 1
title: No expiry
description: A reversible measure that never lapses.
steps:
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 3}
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def playbook(tmp_path: Path) -> Path:
    return write(tmp_path / "authoring.yaml", PLAYBOOK)


def ok(run: Run) -> Run:
    assert 0 == run.code, run
    return run


# --- plan -------------------------------------------------------------------------------------
def test_plan_json_at_the_lowest_level(cli_env: dict[str, str], playbook: Path) -> None:
    """The plan numbers steps and branches, says why a step will not run, who must approve and
    when each measure lapses."""
    made = ok(run_cli(cli_env, "playbook", "plan", str(playbook), "--json")).json()
    assert ("authoring", 1, "elevated", {"region": "GB", "notify": False}) == (
        made["playbook"],
        made["version"],
        made["level"],
        made["inputs"],
    )
    assert made["playbook_hash"].startswith("sha256:")
    assert [
        ("1", "surge", "lever", True, ""),
        ("2", "settle", "wait", True, ""),
        ("3", "both", "parallel", True, ""),
        ("3.1", "throttle", "lever", True, ""),
        ("3.2", "tighten", "lever", False, "needs level severe"),
        ("4", "tell-regulator", "lever", False, "condition false: inputs.notify"),
        ("close.1", "all-clear", "lever", True, ""),
    ] == [(s["order"], s["id"], s["kind"], s["runs"], s["why_not"]) for s in made["steps"]]
    steps = {s["id"]: s for s in made["steps"]}
    assert "2 of commander, policy-lead within 1h (then skip)" == steps["throttle"]["approval"]
    assert None is steps["surge"]["approval"]
    assert ["1d", "12h", "6h", None] == [
        steps[i]["lapses_after"] for i in ("surge", "throttle", "tighten", "tell-regulator")
    ]
    assert "10m" == steps["settle"]["wait"]
    assert {"region": "GB", "categories": ["spam"], "reach_multiplier": 0.5} == steps["throttle"][
        "args"
    ]
    assert ["restore the previous state", "notify.webhook", "none (cannot be taken back)"] == [
        steps[i]["undo"] for i in ("surge", "tell-regulator", "all-clear")
    ]
    assert "every 12h (grace 1h; if missed: record)" == made["reviews"]
    assert "due within 7d, owner trust-and-safety" == made["post_incident_review"]


def test_plan_with_a_level_and_inputs(cli_env: dict[str, str], playbook: Path) -> None:
    """At a higher level with the condition's input set, every step runs with the given inputs."""
    made = ok(
        run_cli(
            cli_env,
            *["playbook", "plan", str(playbook), "--json", "--level", "severe"],
            *["-i", "notify=true", "-i", "region=FR"],
        )
    ).json()
    assert ("severe", {"region": "FR", "notify": True}) == (made["level"], made["inputs"])
    assert [True] * 7 == [s["runs"] for s in made["steps"]]
    steps = {s["id"]: s for s in made["steps"]}
    assert "FR" == steps["throttle"]["args"]["region"]
    assert "Crisis in FR" == steps["tell-regulator"]["args"]["message"]


def test_plan_text(cli_env: dict[str, str], playbook: Path) -> None:
    """The text plan is a table with one row per step, then the reviews and the review due."""
    run = ok(run_cli(cli_env, "playbook", "plan", str(playbook)))
    assert "" == run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("authoring v1 at level elevated  (sha256:"), lines[0]
    assert 'inputs: {"region": "GB", "notify": false}' == lines[1]
    rows = {
        cells[0]: cells[1:]
        for line in lines
        if line.startswith("│")
        for cells in [[c.strip() for c in line.strip("│").split("│")]]
    }
    assert ["1", "2", "3", "3.1", "3.2", "4", "close.1"] == list(rows)
    assert [
        "throttle",
        "yes",
        "recommender.throttle",
        "2 of commander, policy-lead within 1h (then skip)",
        "12h",
        "restore the previous state",
    ] == rows["3.1"]
    assert ["tighten", "no: needs level severe"] == rows["3.2"][:2]
    assert ["tell-regulator", "no: condition false: inputs.notify"] == rows["4"][:2]
    assert ["settle", "yes", "wait 10m"] == rows["2"][:3]
    assert [
        "reviews: every 12h (grace 1h; if missed: record)",
        "post-incident review: due within 7d, owner trust-and-safety",
    ] == lines[-2:]


def test_plan_branches_of_a_parallel_step_that_does_not_run(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Branches of a parallel step gated by a higher level do not run either."""
    gated = write(
        tmp_path / "gated.yaml",
        PLAYBOOK.replace("  - id: both\n", "  - id: both\n    level: critical\n"),
    )
    made = ok(run_cli(cli_env, "playbook", "plan", str(gated), "--json")).json()
    steps = {s["order"]: (s["runs"], s["why_not"]) for s in made["steps"]}
    assert [
        (False, "needs level critical"),
        (False, "its parallel step both does not run"),
        (False, "needs level severe"),
    ] == [steps["3"], steps["3.1"], steps["3.2"]]


async def test_plan_errors_are_one_line(
    cli_env: dict[str, str], playbook: Path, tmp_path: Path
) -> None:
    """An unknown level, a bad or unknown input, a missing file: one `error:` line, exit 1."""
    cases = {
        "unknown level": (
            [str(playbook), "--level", "extreme"],
            ["unknown level 'extreme' for playbook ", "(levels: elevated, severe, critical)"],
        ),
        "unknown input": ([str(playbook), "-i", "colour=red"], ["unknown input 'colour'"]),
        "input of the wrong type": (
            [str(playbook), "-i", "notify=maybe"],
            ["input 'notify': expected boolean"],
        ),
        "missing file": ([str(tmp_path / "nope.yaml")], ["playbook file not found", "nope.yaml"]),
    }
    await refusals(cli_env, cases, "playbook", "plan")


async def test_plan_refuses_inputs_as_trigger_does(cli_env: dict[str, str]) -> None:
    """An input a lever refuses (out of its range) fails plan with trigger's very error line."""
    planned, triggered = await asyncio.gather(
        crisis(cli_env, "playbook", "plan", "violent-disorder", "-i", "reach_multiplier=2"),
        crisis(cli_env, "trigger", "violent-disorder", "-i", "reach_multiplier=2"),
    )
    assert_one_line_error(planned, "step 'throttle-recommender' with.reach_multiplier")
    assert triggered.error_lines == planned.error_lines
    assert "" == planned.stdout


# --- validate ---------------------------------------------------------------------------------
def test_validate_warns_about_a_measure_without_expiry(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A reversible measure without expires_after is a `warning:` line on stderr; still exit 0."""
    path = write(tmp_path / "no-expiry.yaml", NO_EXPIRY)
    run = ok(run_cli(cli_env, "playbook", "validate", str(path)))
    assert "ok: 1 playbook(s) valid" == run.stdout.strip()
    assert [
        f"{path}:7:5: warning: measure 'surge' has no expires_after: emergency measures "
        "should lapse unless renewed"
    ] == run.error_lines

    as_json = ok(run_cli(cli_env, "playbook", "validate", "--json", str(path))).json()
    assert True is as_json["valid"]
    (entry,) = as_json["files"]
    assert (True, []) == (entry["valid"], entry["problems"])
    assert [(7, 5)] == [(w["line"], w["column"]) for w in entry["warnings"]]
    assert "has no expires_after" in entry["warnings"][0]["message"]

    lapsing = write(
        tmp_path / "lapsing.yaml",
        NO_EXPIRY.replace("extra_reviewers: 3}\n", "extra_reviewers: 3}\n    expires_after: 6h\n"),
    )
    clean = ok(run_cli(cli_env, "playbook", "validate", str(lapsing)))
    assert ("ok: 1 playbook(s) valid", "") == (clean.stdout.strip(), clean.stderr)

    hasty = write(
        tmp_path / "hasty.yaml",
        NO_EXPIRY.replace(
            "extra_reviewers: 3}\n",
            "extra_reviewers: 3}\n    expires_after: 6h\n    timeout: 300ms\n",
        ),
    )
    warned = ok(run_cli(cli_env, "playbook", "validate", str(hasty)))
    assert [
        f"{hasty}:10:5: warning: step 'surge' gives each platform call 300ms: so short that one "
        "with no answer may be cut off without saying how long it waited or how often (give it "
        "1s or more)"
    ] == warned.error_lines


# --- simulate ---------------------------------------------------------------------------------
async def test_simulate_a_scripted_scenario(
    cli_env: dict[str, str], playbook: Path, tmp_path: Path
) -> None:
    """Two simulated days pass in seconds: the scripted escalation, approvals, renewal and
    stand-down are in the timeline with the expiries between them; a refused action is ok false."""
    script = write(tmp_path / "scenario.yaml", SCENARIO)
    as_json, text = await asyncio.gather(
        crisis(cli_env, "playbook", "simulate", str(playbook), "--script", str(script), "--json"),
        crisis(cli_env, "playbook", "simulate", str(playbook), "--script", str(script)),
    )

    result = ok(as_json).json()
    assert "closed" == result["final_state"]
    assert 2 * 86400 <= result["simulated_s"] < 2 * 86400 + 60
    assert result["wall_s"] < 20, result["wall_s"]
    assert [
        ("escalate", "alice", True),
        ("approve", "carol", False),
        ("approve", "alice", True),
        ("approve", "bob", True),
        ("renew", "alice", True),
        ("stand-down", "alice", True),
    ] == [(a["action"], a["actor"], a["ok"]) for a in result["actions"]]
    refused = result["actions"][1]
    assert (
        "role 'intern' cannot approve throttle (roles: commander, policy-lead)"
        in (refused["detail"])
    )

    timeline = [
        (format_offset(e["offset_s"]), e["kind"], e["step_id"], e["actor"])
        for e in result["timeline"]
    ]
    watched = {"level.escalated", "approval.given", "approval.granted", "step.expired"}
    watched |= {"measure.renewed", "step.undone", "incident.closed"}
    assert [
        ("+5m", "level.escalated", None, "alice"),
        ("+20m", "approval.given", "throttle", "alice"),
        ("+25m", "approval.given", "throttle", "bob"),
        ("+25m", "approval.granted", "throttle", None),
        ("+6h10m", "step.expired", "tighten", None),
        ("+12h25m", "step.expired", "throttle", None),
        ("+20h", "measure.renewed", "surge", "alice"),
        ("+2d", "step.undone", "surge", None),
        ("+2d", "incident.closed", None, "alice"),
    ] == [entry for entry in timeline if entry[1] in watched]
    assert ("+10m", "step.applied", "tighten", None) in timeline  # escalated before the branch
    assert [("+13h", "review.missed"), ("+1d2h", "review.missed"), ("+1d15h", "review.missed")] == [
        entry[:2] for entry in timeline if entry[1] == "review.missed"
    ]
    assert ("closed", "severe") == (result["status"]["state"], result["status"]["level"])

    ok(text)
    summary = text.stdout.strip().splitlines()[-1]
    assert summary.startswith("INC-"), summary
    # As in the JSON (within a minute of two days): a busy machine's undo calls take real time,
    # which the time-skipping server counts too.
    assert re.search(r": closed after \+2d(\d+[ms])* simulated in ", summary), summary
    assert summary.endswith("; 6 actions, 1 refused"), summary
    assert any(
        "measure.renewed" in line and "reason=still needed" in line
        for line in text.stdout.splitlines()
    ), text.stdout


async def test_simulate_without_a_script(cli_env: dict[str, str], playbook: Path) -> None:
    """Without a script the incident is declared and left running, with no actions taken."""
    result = ok(await crisis(cli_env, "playbook", "simulate", str(playbook), "--json")).json()
    assert ("running", []) == (result["final_state"], result["actions"])
    assert "incident.triggered" == result["timeline"][0]["kind"]


async def test_simulate_refuses_bad_scenarios(
    cli_env: dict[str, str], playbook: Path, tmp_path: Path
) -> None:
    """A scenario that cannot be read or has a bad action is one `error:` line, exit 1."""
    cases = {
        "unknown action": (
            "actions:\n  - {at: 5m, do: dance}\n",
            ["actions.0.do: Input should be 'approve'"],
        ),
        "bad offset": (
            "actions:\n  - {at: soon, do: escalate, with: {reason: x}}\n",
            ["actions.0.at:", "invalid duration 'soon'"],
        ),
        "unknown key": ("colour: red\n", [":1:1: colour: unknown key"]),
        "a playbook given as the scenario": (
            "playbook: x\nsteps: []\n",
            [":1:1: this is a playbook, not a scenario"],
        ),
        "an action without a required field": (
            "actions:\n  - {at: 5m, do: approve, with: {step_id: throttle}}\n",
            ["actions.0: approve at 5m: role: Field required"],
        ),
    }
    scripts = {
        case: write(tmp_path / f"{i}.yaml", text)
        for i, (case, (text, _)) in enumerate(cases.items())
    }
    runs = await asyncio.gather(
        *(
            crisis(cli_env, "playbook", "simulate", str(playbook), "--script", str(scripts[case]))
            for case in cases
        ),
        crisis(cli_env, "playbook", "simulate", str(playbook), "--script", str(tmp_path / "no")),
        crisis(cli_env, "playbook", "simulate", str(tmp_path / "no-such-playbook.yaml")),
    )
    for (case, (_, fragments)), run in zip(cases.items(), runs, strict=False):
        try:
            if case != "an action without a required field":  # found only when it is due
                assert "" == run.stdout
            assert_one_line_error(run, *fragments)
        except AssertionError as error:
            raise AssertionError(f"{case}: {run}") from error
    assert_one_line_error(runs[-2], str(tmp_path / "no"), "No such file")
    assert_one_line_error(runs[-1], "playbook file not found")


def test_a_scenario_with_broken_yaml_is_one_error_line(
    cli_env: dict[str, str], playbook: Path, tmp_path: Path
) -> None:
    """A YAML syntax error in the scenario is one `error:` line naming the file."""
    script = write(tmp_path / "broken.yaml", "actions: [\n")
    run = run_cli(cli_env, "playbook", "simulate", str(playbook), "--script", str(script))
    assert_one_line_error(run, f"{script}:2:1: YAML: ")

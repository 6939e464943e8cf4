"""The shipped playbook library: every playbook is valid, and every playbook's scenario runs for
real (time-skipping Temporal server, in-process sandbox, audit store) with all its checks passing,
every lever restored and the audit trail verified. A new `<name>.yaml` with its
`<name>.scenario.yaml` in `playbooks/` is covered without editing this file."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import asyncio
import json
import os
import re
import warnings
from pathlib import Path

import pytest

from engine.playbook_files import check_file, load_playbook, playbook_files
from engine.simulate import RESTORED, VERIFIED, load_scenario
from tests.cli.test_cli import Run, assert_one_line_error, run_cli
from workflows.levers import is_notification
from workflows.playbook import Step, walk_steps

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "playbooks"
PLAYBOOKS = playbook_files(LIBRARY)
SCENARIOS = sorted(LIBRARY.glob("*.scenario.yaml"))
DAY = 86400.0


def scenario_name(path: Path) -> str:
    return path.name.removesuffix(".scenario.yaml")


def playbook_of(scenario: Path) -> Path:
    return LIBRARY / f"{scenario_name(scenario)}.yaml"


def cli(tmp_path: Path, *args: str) -> Run:
    """`crisis ...` as a subprocess on the shipped library; its own data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRISIS_", "TEMPORAL_"))}
    env |= {"CRISIS_PLAYBOOKS_DIR": str(LIBRARY), "CRISIS_DATA_DIR": str(tmp_path / "data")}
    return run_cli(env, *args)


# --- the library is valid ---------------------------------------------------------------------
def test_the_library_has_a_scenario_for_every_playbook() -> None:
    """Each playbook ships with the scenario that proves it, and each scenario with its
    playbook; scenarios are never taken for playbooks."""
    assert len(PLAYBOOKS) >= 6, PLAYBOOKS
    assert [p.stem for p in PLAYBOOKS] == [scenario_name(s) for s in SCENARIOS]


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.stem)
def test_every_playbook_is_valid(path: Path) -> None:
    """No problems (they fail the test); warnings are listed in the test output."""
    check = check_file(path, LIBRARY)
    assert [] == [str(problem) for problem in check.problems]
    assert path.stem == load_playbook(path, LIBRARY).playbook
    for warning in check.warnings:
        warnings.warn(f"{warning}", stacklevel=1)


@pytest.mark.parametrize("path", PLAYBOOKS, ids=lambda p: p.stem)
def test_no_notice_of_the_library_stops_the_measures(path: Path) -> None:
    """A channel that is down (the regulator's webhook for a few seconds) failed the whole
    incident, and the measures after the notice never ran: every notice step carries on."""
    playbook = load_playbook(path, LIBRARY)
    stopping = [
        step.id
        for at, step in walk_steps(playbook)
        if isinstance(step, Step)
        and at[0] == "steps"  # the closing ones run after every measure is taken back
        and is_notification(step.do)
        and step.on_failure != "continue"
    ]
    assert [] == stopping


# --- every scenario passes ----------------------------------------------------------------------
@pytest.mark.parametrize("scenario_file", SCENARIOS, ids=scenario_name)
async def test_the_scenario_of_every_playbook_passes_its_checks(
    scenario_file: Path, tmp_path: Path
) -> None:
    """`crisis playbook simulate NAME --script SCENARIO`: the scripted crisis runs to its
    stand-down after one to two simulated days; every check holds at its moment, no action is
    refused unless the scenario says so, every lever is back as it was and the audit trail
    verifies."""
    scenario = load_scenario(scenario_file)
    run = await asyncio.to_thread(
        cli,
        tmp_path,
        "playbook",
        "simulate",
        scenario_name(scenario_file),
        "--script",
        str(scenario_file),
        "--json",
    )
    assert run.code in (0, 1), run
    result = run.json()
    failed = [
        f"{c['at']} {c['name']}: {c['differences']}" for c in result["checks"] if not c["passed"]
    ]
    assert result["ok"], "\n".join(failed)
    assert 0 == run.code, run.stderr
    assert "closed" == result["final_state"]
    assert DAY <= result["simulated_s"] <= 2 * DAY + 3600, result["simulated_s"]
    scripted = [c for c in result["checks"] if not c["automatic"]]
    assert len(scenario.checks) <= len(scripted), "a scenario proves its playbook with checks"
    final = {c["name"]: c for c in result["checks"] if c["automatic"]}
    assert (True, False) == (final[RESTORED]["passed"], final[RESTORED]["skipped"])
    assert final[VERIFIED]["passed"], final[VERIFIED]
    unexpected = [a for a in result["actions"] if not a["ok"] and a["expect"] != "refused"]
    assert [] == unexpected


# Escalated before anyone has answered the approval the playbook asks for at `elevated`.
ESCALATED_UNANSWERED = """\
inputs: %(inputs)s
actor: alice
actions:
  - {at: 2m, do: escalate, actor: alice, with: {reason: "organised online"}}
  - {at: 10m, do: stand-down, actor: alice, with: {reason: test over}}
checks:
  - at: 3m
    name: the escalation is told while the approval waits
    steps: {%(waiting)s: awaiting_approval}
    notified: [%(told)s]
"""


@pytest.mark.parametrize(
    ("playbook", "inputs", "waiting", "told"),
    [
        (
            "violent-disorder",
            "{region: GB}",
            "cut-reshares",
            ["regulator", "law-enforcement", "trusted-flaggers"],
        ),
        (
            "self-harm-challenge",
            "{challenge_terms: [blackout challenge]}",
            "keep-out-of-recommendations",
            ["child-safety-partners", "regulator"],
        ),
    ],
)
async def test_an_escalation_is_told_while_an_earlier_approval_waits(
    tmp_path: Path, playbook: str, inputs: str, waiting: str, told: list[str]
) -> None:
    """A step waiting for its approval holds back only itself (and later steps on its settings):
    escalated meanwhile, the playbook tells the escalation at once."""
    script = tmp_path / "escalated.scenario.yaml"
    notices = ", ".join(f"{{to: {to}, template: crisis-escalated}}" for to in told)
    script.write_text(
        ESCALATED_UNANSWERED % {"inputs": inputs, "waiting": waiting, "told": notices}
    )
    run = await asyncio.to_thread(
        cli, tmp_path, "playbook", "simulate", playbook, "--script", str(script), "--json"
    )
    result = run.json()
    assert (0, True) == (run.code, result["ok"]), result["checks"]
    assert "closed" == result["final_state"]


DECLARED_SEVERE = """\
inputs: {region: GB}
level: severe
actor: alice
actions:
  - {at: 1h, do: escalate, actor: alice, with: {reason: "disorder in three towns"}}
  - {at: 2h, do: stand-down, actor: alice, with: {reason: test over}}
checks:
  - at: 1m
    name: declared at severe, the escalation notices say so, not that it escalated
    notified:
      - {to: trusted-flaggers, template: crisis-escalated, contains: "Crisis declared at severe"}
      - {to: regulator, template: crisis-escalated, contains: "declared at level severe by alice"}
    not_notified: [{to: trusted-flaggers, contains: "escalated to"}]
  - at: 1h1m
    name: escalated later, the executives are told it escalated
    notified:
      - {to: executives, template: crisis-escalated, contains: "Crisis escalated to critical"}
    status: {level: critical}
"""


async def test_a_crisis_declared_above_the_first_level_is_not_told_as_escalated(
    tmp_path: Path,
) -> None:
    """Declared at severe, the severe steps run at once with the escalation template: the
    stakeholders read that it was declared at severe; an escalation after that reads as one."""
    script = tmp_path / "declared.scenario.yaml"
    script.write_text(DECLARED_SEVERE)
    run = await asyncio.to_thread(
        cli, tmp_path, "playbook", "simulate", "violent-disorder", "--script", str(script), "--json"
    )
    result = run.json()
    assert (0, True) == (run.code, result["ok"]), result["checks"]


# --- the command line -----------------------------------------------------------------------
async def test_simulate_a_library_playbook_from_the_command_line(tmp_path: Path) -> None:
    """`crisis playbook simulate NAME --script SCENARIO` prints every check's verdict and exits 0;
    `--json` carries the same verdicts and `ok: true`."""
    script = LIBRARY / "livestreamed-attack.scenario.yaml"
    text, as_json = await asyncio.gather(
        asyncio.to_thread(
            cli, tmp_path, "playbook", "simulate", "livestreamed-attack", "--script", str(script)
        ),
        asyncio.to_thread(
            cli,
            tmp_path,
            "playbook",
            "simulate",
            "livestreamed-attack",
            "--script",
            str(script),
            "--json",
        ),
    )
    scenario = load_scenario(script)
    names = [check.name for check in scenario.checks] + [RESTORED, VERIFIED]

    assert 0 == text.code, text
    lines = text.stdout.splitlines()
    for name in names:
        assert any(name in line and " ok " in line for line in lines), name
    assert f"checks: {len(names)} passed, 0 failed, 0 skipped" in lines
    # The clock also runs while the simulator reads states: a second may be added to the end.
    assert re.search(r": closed after \+1d14h1m(\d+s)? simulated in ", lines[-1]), lines[-1]
    assert "" == text.stderr

    assert 0 == as_json.code, as_json
    result = as_json.json()
    assert (True, "closed") == (result["ok"], result["final_state"])
    assert names == [check["name"] for check in result["checks"]]
    assert all(check["passed"] for check in result["checks"])


FAILING = """\
inputs: {region: GB}
actor: alice
actions:
  - at: 5m
    do: approve
    actor: erin
    expect: done
    with: {step_id: hold-new-advertisers, role: commander}
  - {at: 30m, do: stand-down, actor: alice, with: {reason: test over}}
checks:
  - {at: 10m, name: threshold wrongly expected, sandbox: {detection.fraud: 0.25}}
  - at: 10m
    name: donors warned
    sandbox: {user_warnings.GB.search_notice.fraud: {audience: all}}
"""


async def test_a_failing_check_fails_the_command_naming_it(tmp_path: Path) -> None:
    """A check that does not hold, or an action answered otherwise than expected, makes the
    command exit 1 with one error line naming them; the table and the JSON say what differed."""
    script = tmp_path / "failing.scenario.yaml"
    script.write_text(FAILING)
    text, as_json = await asyncio.gather(
        asyncio.to_thread(
            cli, tmp_path, "playbook", "simulate", "fraud-wave", "--script", str(script)
        ),
        asyncio.to_thread(
            cli, tmp_path, "playbook", "simulate", "fraud-wave", "--script", str(script), "--json"
        ),
    )

    assert_one_line_error(
        text,
        "2 of 5 checks failed: 'approve by erin at +5m is done' at +5m, "
        "'threshold wrongly expected' at +10m",
    )
    assert any(
        "threshold wrongly expected" in line and "FAILED" in line
        for line in text.stdout.splitlines()
    ), text.stdout
    assert "detection.fraud: expected 0.25, got 0.6" in text.stdout
    assert "checks: 3 passed, 2 failed, 0 skipped" in text.stdout.splitlines()

    assert 1 == as_json.code, as_json
    result = json.loads(as_json.stdout)
    assert False is result["ok"]
    verdicts = {c["name"]: (c["passed"], c["differences"]) for c in result["checks"]}
    assert (False, ["detection.fraud: expected 0.25, got 0.6"]) == verdicts[
        "threshold wrongly expected"
    ]
    assert (True, []) == verdicts["donors warned"]
    assert (True, []) == verdicts[RESTORED]
    passed, why = verdicts["approve by erin at +5m is done"]
    assert False is passed
    assert ["expected done, was refused: "] == [why[0][: len("expected done, was refused: ")]]
    assert "is not awaiting approval" in why[0], why


@pytest.mark.parametrize(
    ("check", "fragments"),
    [
        (
            "{at: 5m, name: typo, steps: {nope: applied}}",
            ["checks.0.steps: unknown step 'nope'", "raise-fraud-detection"],
        ),
        (
            "{at: 5m, name: typo, not_in_force: [ad_hold.GB]}",
            ["checks.0.not_in_force: 'ad_hold.GB': unknown section 'ad_hold'", "ad_holds"],
        ),
        (
            "{at: 5m, name: typo, not_notified: [{to: regulatr}]}",
            ["checks.0.not_notified.0.to: unknown stakeholder 'regulatr'"],
        ),
    ],
    ids=["step", "section", "stakeholder"],
)
def test_a_check_naming_what_does_not_exist_is_one_error_line(
    tmp_path: Path, check: str, fragments: list[str]
) -> None:
    """A typo in a check is refused before anything runs, as one line naming the file and the
    check's index (it would otherwise pass or fail for the wrong reason)."""
    script = tmp_path / "typo.scenario.yaml"
    script.write_text(f"checks:\n  - {check}\n")
    run = cli(tmp_path, "playbook", "simulate", "fraud-wave", "--script", str(script))
    assert_one_line_error(run, str(script), *fragments)

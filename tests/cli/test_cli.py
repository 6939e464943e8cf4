"""The `crisis` command line, run as a real subprocess against the real dev server and sandbox."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cli.main import _print_status
from core.settings import Settings
from engine.devserver import free_port
from store.audit_store import AuditStore
from tests.conftest import ENGINE_PLAYBOOKS, Sandbox
from tests.helpers import assert_eventually
from tests.web.test_incident_view import FAILED_TWO_WAYS, incident

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ENGINE_PLAYBOOKS / "violent-disorder.yaml"

GOOD = """\
playbook: good
version: 1
title: Good
description: For tests.
steps:
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 3}
    expires_after: 24h
"""


@dataclass(frozen=True)
class Run:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)

    @property
    def error_lines(self) -> list[str]:
        return self.stderr.splitlines()


@pytest.fixture
def cli_env(
    temporal_address: str, sandbox_url: str, sqlite_url: str, settings: Settings, tmp_path: Path
) -> dict[str, str]:
    """The environment of a `crisis` process wired to this test's services and task queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRISIS_", "TEMPORAL_"))}
    env.update(
        {
            "TEMPORAL_ADDRESS": temporal_address,
            "CRISIS_SANDBOX_PORT": sandbox_url.rsplit(":", 1)[1],
            "CRISIS_DATABASE_URL": sqlite_url,
            "CRISIS_TASK_QUEUE": settings.task_queue,
            # The same data directory as the in-process worker: one signing key seals and verifies.
            "CRISIS_DATA_DIR": str(settings.data_dir),
            "CRISIS_ACTOR": "cli-tester",
            "CRISIS_PLAYBOOKS_DIR": str(ENGINE_PLAYBOOKS),
        }
    )
    return env


def run_cli(env: dict[str, str], *args: str) -> Run:
    done = subprocess.run(
        [sys.executable, "-m", "cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return Run(done.returncode, done.stdout, done.stderr)


async def crisis(env: dict[str, str], *args: str) -> Run:
    """Run the CLI in a thread so the in-process worker keeps polling meanwhile."""
    return await asyncio.to_thread(run_cli, env, *args)


def assert_one_line_error(run: Run, *fragments: str) -> None:
    assert 1 == run.code, run
    assert 1 == len(run.error_lines), run.stderr
    assert run.error_lines[0].startswith("error: "), run.stderr
    for fragment in fragments:
        assert fragment in run.error_lines[0], run.stderr


def assert_usage_error(run: Run, *fragments: str) -> None:
    """A command used wrongly (a bad value, a missing or unknown option): exit 2, one line that
    says which help to read."""
    assert 2 == run.code, run
    assert 1 == len(run.error_lines), run.stderr
    line = run.error_lines[0]
    assert line.startswith("error: ") and line.endswith(" --help)"), run.stderr
    for fragment in fragments:
        assert fragment in line, run.stderr


USAGE = "usage"  # a case of `refusals` that is a usage error (exit 2), not a refusal (exit 1)


async def refusals(
    env: dict[str, str], cases: dict[str, tuple[list[str], list[str]]], *command: str
) -> None:
    """Run every case at once (its arguments after `command`); each must print nothing on stdout
    and be one `error:` line holding its fragments (a usage error when one of them is USAGE)."""
    runs = await asyncio.gather(*(crisis(env, *command, *args) for args, _ in cases.values()))
    for (case, (_, fragments)), run in zip(cases.items(), runs, strict=True):
        try:
            assert "" == run.stdout, run
            if USAGE in fragments:
                assert_usage_error(run, *(f for f in fragments if f != USAGE))
            else:
                assert_one_line_error(run, *fragments)
        except AssertionError as error:
            raise AssertionError(f"{case}: {run}") from error


# --- playbooks --------------------------------------------------------------------------------
def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_validate_a_good_file(cli_env: dict[str, str]) -> None:
    """A valid playbook passes with exit 0 and an `ok` line."""
    run = run_cli(cli_env, "playbook", "validate", str(SHIPPED))
    assert 0 == run.code, run
    assert "ok: 1 playbook(s) valid" == run.stdout.strip()
    assert "" == run.stderr


def test_validate_skips_library_files_and_scenarios_it_is_given(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """`validate playbooks/*.yaml` names the library's files and scenarios too: each is one
    `skipped:` line on stderr saying how it is checked, not a failed playbook (with --json, an
    item of `skipped`)."""
    good = write(tmp_path / "good.yaml", GOOD)
    elsewhere = tmp_path / "elsewhere"  # not good.yaml's library: never read as one here
    elsewhere.mkdir()
    templates = write(elsewhere / "templates.yaml", "not even a mapping\n")
    scenario = write(elsewhere / "good.scenario.yaml", "not even a mapping\n")
    run = run_cli(cli_env, "playbook", "validate", str(good), str(templates), str(scenario))
    assert 0 == run.code, run
    assert "ok: 1 playbook(s) valid" == run.stdout.strip()
    assert [
        f"{templates}: skipped: the library's own file, checked with every playbook that uses it",
        f"{scenario}: skipped: a scenario, checked by `crisis playbook simulate PLAYBOOK --script`",
    ] == run.error_lines
    alone = run_cli(cli_env, "playbook", "validate", str(templates))
    assert 1 == alone.code, alone
    assert "error: no playbook to check (1 file(s) skipped)" == alone.error_lines[-1], alone
    as_json = run_cli(
        cli_env, "playbook", "validate", str(good), str(templates), str(scenario), "--json"
    )
    assert (0, []) == (as_json.code, as_json.error_lines), as_json
    assert [
        {
            "file": str(templates),
            "reason": "the library's own file, checked with every playbook that uses it",
        },
        {
            "file": str(scenario),
            "reason": "a scenario, checked by `crisis playbook simulate PLAYBOOK --script`",
        },
    ] == json.loads(as_json.stdout)["skipped"]


def test_validate_names_a_library_problem_once_for_all_its_playbooks(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Two playbooks beside a broken stakeholder directory: each of its problems is one line,
    not one per playbook using it; both playbooks are invalid (exit 1)."""
    for name in ("one", "two"):
        write(tmp_path / f"{name}.yaml", GOOD.replace("playbook: ", f"playbook: {name}-", 1))
    write(tmp_path / "stakeholders.yaml", "regulator:\n  kind: outer\n")
    run = run_cli(cli_env, "playbook", "validate", str(tmp_path))
    assert 1 == run.code, run
    assert [
        f"{tmp_path / 'stakeholders.yaml'}:1:1: regulator.name: Field required",
        f"{tmp_path / 'stakeholders.yaml'}:2:3: regulator.kind: Input should be 'external' or "
        "'internal'",
    ] == run.error_lines


def test_validate_bad_files_prints_each_problem_as_file_line_column(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Every problem of every file is one `file:line:column: message` line on stderr; exit 1."""
    unknown_key = write(
        tmp_path / "a.yaml", GOOD.replace("title: Good\n", "title: Good\ncolour: red\n")
    )
    bad_lever = write(tmp_path / "b.yaml", GOOD.replace("moderation.surge", "moderation.nope"))
    good = write(tmp_path / "good.yaml", GOOD)
    run = run_cli(cli_env, "playbook", "validate", str(unknown_key), str(good), str(bad_lever))
    assert 1 == run.code, run
    assert "" == run.stdout
    assert [
        f"{unknown_key}:4:1: unknown key 'colour'",
        f"{bad_lever}:7:5: unknown lever 'moderation.nope'",
    ] == [line.split(" (known:")[0] for line in run.error_lines]


def test_validate_json_reports_every_file(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`--json` gives each file's validity and problems with line and column; exit 1 if any bad."""
    bad = write(tmp_path / "bad.yaml", GOOD.replace("extra_reviewers: 3", "extra_reviewers: 0"))
    good = write(tmp_path / "good.yaml", GOOD)
    run = run_cli(cli_env, "playbook", "validate", "--json", str(good), str(bad))
    assert 1 == run.code, run
    report = run.json()
    assert False is report["valid"]
    assert [
        {"file": str(good), "valid": True, "problems": [], "warnings": []},
        {
            "file": str(bad),
            "valid": False,
            "problems": [
                {
                    "line": 8,
                    "column": 26,
                    "message": "extra_reviewers: Input should be greater than or equal to 1",
                }
            ],
            "warnings": [],
        },
    ] == report["files"]


def test_validate_a_directory_checks_every_playbook_in_it(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A directory argument validates each .yaml/.yml file in it, ignoring other files."""
    write(tmp_path / "one.yaml", GOOD)
    write(tmp_path / "two.yml", GOOD.replace("playbook: good", "playbook: two"))
    write(tmp_path / "notes.txt", "not a playbook")
    ok = run_cli(cli_env, "playbook", "validate", str(tmp_path))
    assert 0 == ok.code, ok
    assert "ok: 2 playbook(s) valid" == ok.stdout.strip()

    bad = write(tmp_path / "three.yaml", "steps: [\n")
    failed = run_cli(cli_env, "playbook", "validate", "--json", str(tmp_path))
    assert 1 == failed.code, failed
    files = {Path(f["file"]).name: f["valid"] for f in failed.json()["files"]}
    assert {"one.yaml": True, "three.yaml": False, "two.yml": True} == files
    text = run_cli(cli_env, "playbook", "validate", str(tmp_path))
    assert [str(bad)] == [line.split(":")[0] for line in text.error_lines]


def test_a_file_that_is_not_utf8_is_one_line_and_the_others_are_still_checked(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Non-UTF-8 bytes are one `file:1:1:` line, whether the file is named or in a directory."""
    bad = tmp_path / "b.yaml"
    bad.write_bytes(b"\xff\xfe")
    write(tmp_path / "good.yaml", GOOD)
    expected = f"{bad}:1:1: not UTF-8 text (byte 0xff at offset 0)"
    run = run_cli(cli_env, "playbook", "validate", str(tmp_path))
    assert 1 == run.code, run
    assert [expected] == run.error_lines
    assert_one_line_error(run_cli(cli_env, "playbook", "plan", str(bad)), expected)
    assert_one_line_error(run_cli(cli_env, "playbook", "doc", str(bad)), expected)


def test_a_broken_library_file_is_reported_in_that_file(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A templates.yaml beside the playbook that is not YAML is one line at its own position;
    in JSON the problem names that file."""
    good = write(tmp_path / "good.yaml", GOOD)
    templates = write(tmp_path / "templates.yaml", "oops:\n  subject: [s\n  body: b\n")
    run = run_cli(cli_env, "playbook", "validate", str(good))
    assert 1 == run.code, run
    assert [f"{templates}:3:7: YAML: expected ',' or ']', but got ':'"] == (run.error_lines)
    as_json = run_cli(cli_env, "playbook", "validate", "--json", str(good)).json()
    assert [
        {
            "line": 3,
            "column": 7,
            "message": "YAML: expected ',' or ']', but got ':'",
            "file": str(templates),
        }
    ] == as_json["files"][0]["problems"]


def test_validate_with_nothing_to_check_is_an_error(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """An empty directory is a problem of its own, not a silent success, also beside a valid
    playbook (a mistyped drafts directory must not pass), and an entry in the JSON."""
    empty = tmp_path / "empty"
    empty.mkdir()
    said = f"{empty}:1:1: no playbook files (*.yaml, *.yml) in this directory"
    shipped = str(ENGINE_PLAYBOOKS / "violent-disorder.yaml")
    for run in (
        run_cli(cli_env, "playbook", "validate", str(empty)),
        run_cli(cli_env, "playbook", "validate", shipped, str(empty)),
    ):
        assert (1, [said]) == (run.code, run.stderr.splitlines()), run
    as_json = run_cli(cli_env, "playbook", "validate", "--json", shipped, str(empty))
    assert 1 == as_json.code, as_json
    assert [(shipped, True), (str(empty), False)] == [
        (f["file"], f["valid"]) for f in as_json.json()["files"]
    ]


def test_schema_is_json_schema_with_steps(cli_env: dict[str, str], tmp_path: Path) -> None:
    """`playbook schema` prints a JSON Schema of the language, or writes it with -o."""
    run = run_cli(cli_env, "playbook", "schema")
    assert 0 == run.code, run
    schema = run.json()
    assert "steps" in schema["properties"]
    assert {"playbook", "version", "title", "description", "steps"} <= set(schema["required"])
    written = run_cli(cli_env, "playbook", "schema", "-o", str(tmp_path / "schema.json"))
    assert 0 == written.code, written
    assert schema == json.loads((tmp_path / "schema.json").read_text())


def test_schema_to_a_path_it_cannot_write_is_one_error_line(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A missing directory or a directory in the way: one `error:` line naming the path."""
    missing = tmp_path / "missing" / "schema.json"
    assert_one_line_error(
        run_cli(cli_env, "playbook", "schema", "-o", str(missing)),
        f"cannot write {missing}: No such file or directory",
    )
    assert_one_line_error(
        run_cli(cli_env, "playbook", "schema", "-o", str(tmp_path)),
        f"cannot write {tmp_path}: Is a directory",
    )


def test_playbook_list_json(cli_env: dict[str, str]) -> None:
    """`playbook list --json` lists the library with name, version, title, step count, owner,
    levels, the distinct levers in order of first use, and the content hash that runs."""
    from engine.playbook_files import load_playbook

    run = run_cli(cli_env, "playbook", "list", "--json")
    assert 0 == run.code, run
    assert [
        {
            "name": "violent-disorder",
            "version": 1,
            "title": "Violent disorder incited online",
            "steps": 5,
            "file": str(SHIPPED),
            "owner": "trust-and-safety",
            "levels": [],
            "levers": [
                "recommender.throttle",
                "detection.set_threshold",
                "moderation.surge",
                "notify.webhook",
            ],
            "content_hash": load_playbook(SHIPPED).content_hash,
        }
    ] == run.json()


def test_playbook_list_with_a_broken_playbook_is_one_error_line(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A broken playbook in the library is named in one `error:` line."""
    write(tmp_path / "broken.yaml", GOOD.replace("version: 1", "version: one"))
    run = run_cli({**cli_env, "CRISIS_PLAYBOOKS_DIR": str(tmp_path)}, "playbook", "list", "--json")
    assert_one_line_error(run, f"{tmp_path / 'broken.yaml'}:2:1:")


# --- incidents --------------------------------------------------------------------------------
async def trigger(env: dict[str, str], *extra: str) -> str:
    run = await crisis(env, "trigger", "violent-disorder", "--json", "-i", "region=GB", *extra)
    assert 0 == run.code, run
    body = run.json()
    assert body["incident_id"].startswith("INC-")
    return body["incident_id"]


async def wait_until_applied(env: dict[str, str], incident_id: str) -> dict[str, Any]:
    async def applied() -> dict[str, Any]:
        run = await crisis(env, "status", incident_id, "--json")
        assert 0 == run.code, run
        status = run.json()
        assert ["applied"] * 5 == [s["state"] for s in status["steps"]], status
        return status

    return await assert_eventually(applied, timeout=30)


def tamper(sqlite_url: str, incident_id: str, seq: int) -> None:
    with sqlite3.connect(sqlite_url.removeprefix("sqlite:///")) as db:
        changed = db.execute(
            "UPDATE audit_events SET data = ? WHERE incident_id = ? AND seq = ?",
            ('{"forged": true}', incident_id, seq),
        ).rowcount
    assert 1 == changed


@pytest.mark.usefixtures("worker")
async def test_trigger_status_stand_down_and_verify(
    cli_env: dict[str, str], sandbox: Sandbox, sqlite_store: AuditStore, sqlite_url: str
) -> None:
    """An incident's whole life through the CLI, down to a tamper-evident audit trail."""
    before = await sandbox.state()
    run = await crisis(cli_env, "trigger", "violent-disorder", "--json", "-i", "region=GB")
    assert 0 == run.code, run
    triggered = run.json()
    incident_id = triggered["incident_id"]
    assert ([], "") == (triggered["warnings"], run.stderr)
    assert ("violent-disorder", 1, "GB") == (
        triggered["playbook"],
        triggered["version"],
        triggered["inputs"]["region"],
    )

    status = await wait_until_applied(cli_env, incident_id)
    assert "running" == status["state"]
    assert "cli-tester" == status["triggered_by"]
    assert [
        "throttle-recommender",
        "raise-detection",
        "surge-hate-queue",
        "notify-regulator",
        "notify-crisis-team",
    ] == [s["id"] for s in status["steps"]]
    during = await sandbox.state()
    assert 0.25 == during["recommender"]["GB"]["incitement_to_violence"]["reach_multiplier"]

    run = await crisis(cli_env, "stand-down", incident_id, "--reason", "calm again", "--json")
    assert 0 == run.code, run
    closed = run.json()
    assert "closed" == closed["state"]
    assert {"actor": "cli-tester", "reason": "calm again", "force": False} == closed["stand_down"]
    assert ["undone"] * 5 == [s["state"] for s in closed["steps"]]
    after = await sandbox.state()
    assert before["recommender"] == after["recommender"]

    async def audited() -> int:
        kinds = [e.kind for e in sqlite_store.events(incident_id)]
        assert "incident.closed" == kinds[-1], kinds
        return len(kinds)

    events = await assert_eventually(audited)

    verified = await crisis(cli_env, "audit", "verify", incident_id)
    assert 0 == verified.code, verified
    assert f"chain   ok  ({events} events)" in verified.stdout
    assert "ok: record complete and unaltered" == verified.stdout.strip().splitlines()[-1]
    as_json = await crisis(cli_env, "audit", "verify", incident_id, "--json")
    assert 0 == as_json.code, as_json
    report = as_json.json()
    assert (True, events, None) == (
        report["ok"],
        report["chain"]["events"],
        report["chain"]["first_bad_seq"],
    )
    assert {"chain": "ok", "seals": "ok", "replay": "ok", "board": "ok"} == report["verdict"]

    tamper(sqlite_url, incident_id, 3)
    broken = await crisis(cli_env, "audit", "verify", incident_id)
    assert_one_line_error(broken, incident_id, "row 3 ", "was altered")
    broken_json = await crisis(cli_env, "audit", "verify", incident_id, "--json")
    assert 1 == broken_json.code, broken_json
    report = broken_json.json()
    assert (False, 3) == (report["ok"], report["chain"]["first_bad_seq"])
    assert report["chain"]["problem"].startswith("row 3 ")


@pytest.mark.usefixtures("worker")
async def test_a_stand_down_that_leaves_a_measure_in_force_exits_non_zero_until_restored(
    cli_env: dict[str, str], sandbox: Sandbox
) -> None:
    """The platform refuses the detection threshold's undo for good: the JSON answer still
    comes, one error line names what may still be in force and how to restore it, and the
    incident waits standing down; `crisis restore` retries the undo (failing again: exit 1),
    then, once the platform takes it, restores it and the incident closes."""
    incident_id = await trigger(cli_env)
    await wait_until_applied(cli_env, incident_id)
    await sandbox.fault(path_prefix="/detection", operation_prefix="undo-", status=400)
    try:
        run = await crisis(cli_env, "stand-down", incident_id, "--reason", "calm", "--json")
        assert_one_line_error(
            run,
            f"incident {incident_id} is standing down, but 1 measure was NOT RESTORED",
            "raise-detection",
            f"crisis restore {incident_id} STEP",
        )
        assert ["undo_failed"] == [
            s["state"] for s in run.json()["steps"] if s["id"] == "raise-detection"
        ]
        again = await crisis(cli_env, "restore", incident_id, "raise-detection", "--reason", "x")
        assert_one_line_error(again, "the undo of raise-detection failed again", "--by-hand")
        assert again.stdout.startswith("retried the undo of raise-detection")
        waiting = await crisis(cli_env, "status", incident_id)
        assert "NOT RESTORED (undo failed for good): raise-detection: the incident closes" in (
            " ".join(waiting.stdout.split())
        ), waiting
    finally:
        await sandbox.clear_faults()
    done = await crisis(cli_env, "restore", incident_id, "raise-detection", "--reason", "back")
    said = "raise-detection taken back on the platform (now undone)\n"
    assert (0, said) == (done.code, done.stdout), done
    closed = await crisis(cli_env, "status", incident_id, "--json")
    assert "closed" == closed.json()["state"]
    refused = await crisis(cli_env, "restore", incident_id, "raise-detection", "--reason", "x")
    assert_one_line_error(refused, f"incident {incident_id} is closed")


def test_status_names_a_measure_whose_apply_had_no_answer(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A failed step whose platform never answered may be in force: status says so above the
    table, and how it is taken back; a step that failed otherwise is not named."""
    _print_status(incident("failed", *FAILED_TWO_WAYS))
    shown = " ".join(capsys.readouterr().out.split())
    said = (
        "MAY BE IN FORCE (the apply had no answer; the platform may have applied it, and a "
        "stand-down takes it back): surge"
    )
    assert said in shown, shown
    assert "): surge, cut" not in shown


@pytest.mark.usefixtures("worker")
async def test_a_closing_notice_not_delivered_is_a_warning_not_a_measure_left(
    cli_env: dict[str, str], sandbox: Sandbox
) -> None:
    """The platform refuses the regulator's closing notice: every measure is taken back, so the
    stand-down exits 0 and closes; one warning line names the notice not delivered."""
    incident_id = await trigger(cli_env)
    await wait_until_applied(cli_env, incident_id)
    await sandbox.fault(
        path_prefix="/notify/webhooks/regulator", operation_prefix="undo-", status=400
    )
    try:
        run = await crisis(cli_env, "stand-down", incident_id, "--reason", "calm", "--json")
    finally:
        await sandbox.clear_faults()
    assert (0, "closed") == (run.code, run.json()["state"]), run
    warning = [line for line in run.stderr.splitlines() if line.startswith("warning:")]
    assert [
        f"warning: incident {incident_id}: 1 closing notice was NOT delivered (nothing is left "
        "in force by it): notify-regulator (notify.webhook: "
    ] == [line.split("platform rejected")[0] for line in warning], run.stderr
    assert "NOT RESTORED" not in run.stderr
    status = await crisis(cli_env, "status", incident_id)
    assert "NOT RESTORED" not in status.stdout


@pytest.mark.usefixtures("worker")
async def test_status_exits_zero_every_time(cli_env: dict[str, str], sandbox: Sandbox) -> None:
    """Status runs in a row all exit 0: the CLI leaves before the SDK can crash at exit (every
    other CLI test of the suite exits the same way)."""
    incident_id = await trigger(cli_env)
    codes = []
    for _ in range(5):
        run = await crisis(cli_env, "status", incident_id, "--json")
        assert incident_id == run.json()["incident_id"], run
        codes.append(run.code)
    assert [0] * 5 == codes
    text = await crisis({**cli_env, "COLUMNS": "200"}, "status", incident_id)
    assert 0 == text.code, text
    assert incident_id in text.stdout and "throttle-recommender" in text.stdout
    await crisis(cli_env, "stand-down", incident_id, "--reason", "test over")


async def test_a_trigger_no_worker_will_run_yet_is_kept_and_says_so(
    cli_env: dict[str, str],
) -> None:
    """With no worker on the task queue the incident is started (Temporal keeps it) and exits 0;
    a warning on stderr says nothing happens until a worker polls, and --json output keeps it."""
    run = await crisis(cli_env, "trigger", "violent-disorder", "--json")
    assert 0 == run.code, run
    (warning,) = run.json()["warnings"]
    assert [f"warning: {warning}"] == run.error_lines
    assert repr(cli_env["CRISIS_TASK_QUEUE"]) in warning and "starts once one polls" in warning
    # Its status needs a worker too: one error line naming the task queue, in seconds.
    status = await crisis(cli_env, "status", run.json()["incident_id"])
    assert_one_line_error(status, "cannot answer", repr(cli_env["CRISIS_TASK_QUEUE"]))


@pytest.mark.usefixtures("worker", "sandbox")
async def test_trigger_a_draft_outside_the_library_uses_the_library(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A playbook file outside the library directory resolves the library's templates, in
    trigger as in plan: the draft an author just planned can be declared."""
    draft = write(
        tmp_path / "draft.yaml",
        GOOD
        + "  - id: tell-regulator\n"
        + "    do: notify.send\n"
        + "    with: {to: regulator, template: crisis-opened}\n",
    )
    planned = await crisis(cli_env, "playbook", "plan", str(draft), "--json")
    assert 0 == planned.code, planned
    run = await crisis(cli_env, "trigger", str(draft), "--json")
    assert 0 == run.code, run
    incident_id = run.json()["incident_id"]
    assert "good" == run.json()["playbook"]
    stood_down = await crisis(cli_env, "stand-down", incident_id, "--reason", "test over")
    assert 0 == stood_down.code, stood_down


@pytest.mark.usefixtures("worker")
async def test_errors_are_one_line_on_stderr(cli_env: dict[str, str], sandbox: Sandbox) -> None:
    """Each user mistake is one `error:` line on stderr and exit status 1."""
    incident_id = await trigger(cli_env, "--id", "INC-CLI-CLOSED-" + os.urandom(3).hex())
    # Forced: a test running beside this one may hold a later incident on the same settings.
    run = await crisis(cli_env, "stand-down", incident_id, "--reason", "done", "--json", "--force")
    assert "closed" == run.json()["state"], run

    vd, none = "violent-disorder", "INC-NO-SUCH-INCIDENT"
    cases = {
        "unknown playbook": (
            ["trigger", "no-such-playbook"],
            ["no playbook named 'no-such-playbook'"],
        ),
        "input out of range": (
            ["trigger", vd, "-i", "reach_multiplier=3"],
            ["step 'throttle-recommender' with.reach_multiplier"],
        ),
        "input of the wrong type": (
            ["trigger", vd, "-i", "reach_multiplier=lots"],
            ["input 'reach_multiplier': expected number"],
        ),
        "unknown input": (["trigger", vd, "-i", "colour=red"], ["unknown input 'colour'"]),
        "an unclosed list": (
            ["trigger", vd, "-i", "categories=[a, b"],
            ["input 'categories'", "never closes it"],
        ),
        "unknown incident status": (["status", none], [f"no incident {none}"]),
        # Ids no trigger accepts: said before Temporal is asked (it answered '' with a traceback,
        # and an id goes into its visibility queries).
        "no id at all": (["status", ""], ["no incident '' (an incident id is 3 to 101"]),
        "a note to no id": (["note", "", "hi"], ["no incident ''"]),
        "an id with a space": (["stand-down", "a b", "--reason", "x"], ["no incident 'a b'"]),
        "an id that is a query": (
            ["history", "export", 'x" OR WorkflowId != "y'],
            ["no incident 'x\" OR WorkflowId != \"y'"],
        ),
        "unknown incident stand-down": (
            ["stand-down", none, "--reason", "x"],
            [f"no incident {none}"],
        ),
        "stand-down of a closed incident": (
            ["stand-down", incident_id, "--reason", "again"],
            [incident_id, "closed"],
        ),
        "empty reason": (
            ["stand-down", incident_id, "--reason", " "],
            [USAGE, "--reason must not be empty"],
        ),
        "unknown incident audit": (
            ["audit", "verify", none],
            [f"no audit trail for incident {none}"],
        ),
        "incident id the API cannot reach": (
            ["trigger", vd, "--id", "bad id/with slash"],
            ["incident id 'bad id/with slash'", "letters, digits"],
        ),
        "duplicate incident id": (
            ["trigger", vd, "--id", incident_id],
            [f"incident {incident_id} already exists"],
        ),
    }
    await refusals(cli_env, cases)


def test_usage_errors_are_one_line_with_exit_status_2(cli_env: dict[str, str]) -> None:
    """A missing option or argument, an unknown option or command, a bad value: one `error:`
    line saying where help is, exit status 2 (a usage error, not a failure)."""
    cases = {
        "missing option": (
            ["stand-down", "INC-X"],
            "error: missing option '--reason' (see crisis stand-down --help)",
        ),
        "missing argument": (
            ["playbook", "plan"],
            "error: missing argument 'file' (see crisis playbook plan --help)",
        ),
        "unknown option": (
            ["status", "INC-X", "--bogus"],
            "error: no such option: --bogus (see crisis status --help)",
        ),
        "unknown command": (
            ["stnd-down"],
            "error: no such command 'stnd-down'. Did you mean 'stand-down'? (see crisis --help)",
        ),
        "bad value": (
            ["audit", "report", "INC-X", "--format", "pdf"],
            "error: invalid value for '--format' / '-f': 'pdf' is not one of 'md', 'html', "
            "'json' (see crisis audit report --help)",
        ),
        "bad --input syntax": (
            ["trigger", "violent-disorder", "-i", "region"],
            "error: --input 'region': expected key=value (see crisis trigger --help)",
        ),
        "the same input twice": (
            ["playbook", "plan", "violent-disorder", "-i", "region=GB", "-i", "region=IE"],
            "error: --input 'region' is given twice (see crisis playbook plan --help)",
        ),
        "text over its limit": (
            ["stand-down", "INC-X", "--reason", "r" * 2001],
            "error: --reason is too long: 2001 characters (at most 2000) "
            "(see crisis stand-down --help)",
        ),
        "a name that is no principal's": (
            ["note", "INC-X", "hello", "--actor", "alice "],
            "error: --actor: 'alice ' cannot name who acts: letters, digits and '_.@-', up to "
            "200 characters (see crisis note --help)",
        ),
    }
    for case, (args, line) in cases.items():
        run = run_cli(cli_env, *args)
        assert (2, "", [line]) == (run.code, run.stdout, run.error_lines), case


def test_help_still_works(cli_env: dict[str, str]) -> None:
    """`--help` prints the help with exit 0; a group without a command prints its help."""
    top, command = run_cli(cli_env, "--help"), run_cli(cli_env, "stand-down", "--help")
    assert (0, "") == (top.code, top.stderr), top
    assert "stand-down" in top.stdout
    assert (0, "") == (command.code, command.stderr), command
    assert "--reason" in command.stdout
    group = run_cli(cli_env, "audit")
    assert 2 == group.code, group
    assert "verify" in group.stdout


def test_no_temporal_server_is_one_line_error_at_once(cli_env: dict[str, str]) -> None:
    """Nothing listening at TEMPORAL_ADDRESS: said in one line, without waiting for a server
    that is starting up (that wait is only for one that listens but is not healthy yet)."""
    address = f"127.0.0.1:{free_port()}"
    run = run_cli({**cli_env, "TEMPORAL_ADDRESS": address}, "status", "INC-X")
    # The transport's words, not its debug dump.
    said = f"cannot reach Temporal at {address}: tcp connect error (connection refused)"
    assert_one_line_error(run, said, "is `crisis up` running?")


def test_a_bad_setting_or_port_is_one_line_naming_it(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """A setting names its environment variable and value; `crisis up` refuses a port out of
    range (exit 2, as any bad flag) or given twice (exit 1) before it starts or creates anything."""
    for variable, value, fragment in (
        ("CRISIS_API_PORT", "abc", "valid integer"),
        ("CRISIS_SANDBOX_PORT", "70000", "less than or equal to 65535"),
        ("CRISIS_LOG_LEVEL", "bogus", "'debug', 'info'"),
        ("CRISIS_LOG_FORMAT", "xml", "'console' or 'json'"),
        ("CRISIS_ENV", "prod", "'development' or 'production'"),
        ("CRISIS_DATABASE_URL", "bogus://x", "SQLite (sqlite:///PATH) or PostgreSQL"),
        ("CRISIS_DATABASE_URL", "mysql://u@127.0.0.1:1/db", "SQLite (sqlite:///PATH)"),
        ("CRISIS_DATABASE_URL", "not a url", "or PostgreSQL (postgresql://...)"),
        ("CRISIS_DATABASE_URL", "postgresql://u@127.0.0.1:abc/db", "not a database URL"),
    ):
        run = run_cli({**cli_env, variable: value}, "status", "INC-ANY")
        assert_one_line_error(run, f"invalid settings: {variable}={value!r}: ", fragment)
    assert 0 == run_cli({**cli_env, "CRISIS_LOG_LEVEL": "WARNING"}, "playbook", "list").code

    data_dir = tmp_path / "never-made"
    out_of_range = run_cli(cli_env, "up", "--data-dir", str(data_dir), "--api-port", "99999")
    assert 2 == out_of_range.code, out_of_range
    assert 1 == len(out_of_range.error_lines), out_of_range.stderr
    assert "--api-port" in out_of_range.stderr, out_of_range.stderr
    twice = run_cli(
        cli_env, "up", "--data-dir", str(data_dir), "--api-port", "18500", "--sandbox-port", "18500"
    )
    assert_one_line_error(twice, "sandbox and api are both given port 18500")
    assert not data_dir.exists()


def test_arguments_that_cannot_go_together_are_usage_errors(cli_env: dict[str, str]) -> None:
    """Exit 2 and the help to read, as for any option used wrongly."""
    for args, fragment in (
        (["audit", "verify"], "give an incident id or --bundle PATH"),
        (["audit", "verify", "INC-X", "--bundle", "b.tar.gz"], "--bundle PATH, not both"),
        (["tokens", "revoke"], "give a TOKEN_ID or --principal NAME"),
        (["tokens", "revoke", "tok", "--principal", "bob"], "give a TOKEN_ID or --principal NAME"),
    ):
        assert_usage_error(run_cli(cli_env, *args), fragment)

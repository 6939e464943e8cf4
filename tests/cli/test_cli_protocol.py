"""`crisis playbook doc` (the written crisis response protocol) and `crisis playbook list`, run as
real subprocesses."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

from pathlib import Path

import pytest

from engine.playbook_files import load_playbook, playbook_files
from tests.cli.test_cli import GOOD, assert_one_line_error, assert_usage_error, run_cli, write
from tests.cli.test_cli import cli_env as cli_env  # the fixture, re-exported for these tests
from workflows.playbook import Playbook, walk_steps

REPO = Path(__file__).resolve().parents[2]
LIBRARY = REPO / "playbooks"  # the shipped library: every playbook added to it is covered here

LEVELLED = """\
playbook: levelled
version: 2
title: Levelled
owner: safety-ops
description: For tests.
levels: [elevated, severe]
steps:
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 3}
    expires_after: 24h
  - id: tighten
    level: severe
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
    expires_after: 6h
  - id: tell-regulator
    do: notify.webhook
    with: {to: regulator, message: opened}
    undo:
      do: notify.send
      with: {to: regulator, template: crisis-closed}
"""
# A simulator scenario beside the playbooks: not a playbook, and not valid as one.
SCENARIO = """\
level: elevated
actions:
  - {at: 2d, do: stand-down, actor: alice, with: {reason: calm again}}
"""


@pytest.fixture
def shipped_env(cli_env: dict[str, str]) -> dict[str, str]:
    return {**cli_env, "CRISIS_PLAYBOOKS_DIR": str(LIBRARY)}


@pytest.fixture
def library(cli_env: dict[str, str], tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A library of two playbooks, a scenario file and the shared stakeholders and templates."""
    directory = tmp_path / "library"
    directory.mkdir()
    write(directory / "good.yaml", GOOD)
    write(directory / "levelled.yaml", LEVELLED)
    write(directory / "levelled.scenario.yaml", SCENARIO)
    for name in ("stakeholders.yaml", "templates.yaml"):
        write(directory / name, (LIBRARY / name).read_text())
    return {**cli_env, "CRISIS_PLAYBOOKS_DIR": str(directory)}, directory


def shipped_playbooks() -> list[Playbook]:
    files = playbook_files(LIBRARY)
    assert files, "the shipped library has no playbooks"
    return [load_playbook(path, LIBRARY) for path in files]


def test_doc_covers_every_step_of_every_shipped_playbook(shipped_env: dict[str, str]) -> None:
    """Over the whole shipped library, in Markdown and HTML: every playbook's content hash and
    every step id (branches and stand-down steps included) is in the document."""
    md = run_cli(shipped_env, "playbook", "doc")
    html = run_cli(shipped_env, "playbook", "doc", "--format", "html")
    for run in (md, html):
        assert 0 == run.code, run
    assert md.stdout.startswith("# Crisis response protocol\n")
    assert html.stdout.startswith("<!DOCTYPE html>")
    for playbook in shipped_playbooks():
        digest = playbook.content_hash
        assert f"| `{playbook.playbook}` |" in md.stdout
        assert f"`{digest}`" in md.stdout
        assert f'<code class="hash">{digest}</code>' in html.stdout
        for _, step in walk_steps(playbook):
            assert f"| `{step.id}` |" in md.stdout, (playbook.playbook, step.id)
            assert f'id="pb-{playbook.playbook}-step-{step.id}"' in html.stdout, step.id


def test_doc_writes_a_file_with_o(shipped_env: dict[str, str], tmp_path: Path) -> None:
    """`-o` writes the document (HTML from the suffix, or as --format says) and prints one line."""
    page = tmp_path / "protocol.html"
    run = run_cli(shipped_env, "playbook", "doc", "-o", str(page))
    assert 0 == run.code, run
    names = ", ".join(f"{pb.playbook} v{pb.version}" for pb in shipped_playbooks())
    assert [f"wrote {page} (html): crisis response protocol for {names}"] == (
        run.stdout.splitlines()
    )
    assert page.read_text().startswith("<!DOCTYPE html>")

    text = tmp_path / "protocol.txt"
    run = run_cli(shipped_env, "playbook", "doc", "--format", "md", "-o", str(text))
    assert 0 == run.code, run
    assert text.read_text().startswith("# Crisis response protocol\n")


def test_doc_of_named_playbooks_and_files(
    library: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    """A PLAYBOOK argument is a name from the library or a file path; only those are in it."""
    env, _ = library
    elsewhere = write(tmp_path / "elsewhere.yaml", GOOD.replace("playbook: good", "playbook: away"))
    run = run_cli(env, "playbook", "doc", "levelled", str(elsewhere))
    assert 0 == run.code, run
    top = run.stdout.split("\n---\n")[0]
    assert ["levelled", "away"] == [
        line.split("`")[1] for line in top.splitlines() if line.startswith("| `")
    ]
    assert "| 2 | `tighten` | measure | no | yes |" in run.stdout
    assert "**At the close:**" in run.stdout


def test_doc_skips_scenarios_and_library_files(library: tuple[dict[str, str], Path]) -> None:
    """With no argument, the library's playbooks only: no scenario, no templates or stakeholders."""
    env, _ = library
    run = run_cli(env, "playbook", "doc")
    assert 0 == run.code, run
    top = run.stdout.split("\n---\n")[0]
    assert ["good", "levelled"] == [
        line.split("`")[1] for line in top.splitlines() if line.startswith("| `")
    ]


def test_doc_with_an_invalid_playbook_is_one_error_line_and_writes_nothing(
    library: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    """A broken playbook anywhere in the library: `file:line:col: message`, exit 1, no file."""
    env, directory = library
    broken = write(directory / "broken.yaml", GOOD.replace("version: 1", "version: one"))
    out = tmp_path / "protocol.md"
    run = run_cli(env, "playbook", "doc", "-o", str(out))
    assert_one_line_error(run, f"{broken}:2:1: ")
    assert "" == run.stdout
    assert not out.exists()

    named = run_cli(env, "playbook", "doc", str(broken))
    assert_one_line_error(named, f"{broken}:2:1: ")
    missing = run_cli(env, "playbook", "doc", "nope")
    assert_one_line_error(missing, "no playbook named 'nope'")
    unknown = run_cli(env, "playbook", "doc", "levelled", "--format", "pdf")
    assert_usage_error(unknown, "--format 'pdf': expected one of md, html")


def test_list_json_has_owner_levels_levers_and_hash(
    library: tuple[dict[str, str], Path],
) -> None:
    """`playbook list --json` gives each playbook's owner, levels, the distinct levers it pulls
    (undo levers included) and its content hash; the scenario file is not listed."""
    env, directory = library
    run = run_cli(env, "playbook", "list", "--json")
    assert 0 == run.code, run
    levelled = load_playbook(directory / "levelled.yaml")
    good = load_playbook(directory / "good.yaml")
    assert [
        {
            "name": "good",
            "version": 1,
            "title": "Good",
            "steps": 1,
            "file": str(directory / "good.yaml"),
            "owner": "",
            "levels": [],
            "levers": ["moderation.surge"],
            "content_hash": good.content_hash,
        },
        {
            "name": "levelled",
            "version": 2,
            "title": "Levelled",
            "steps": 3,
            "file": str(directory / "levelled.yaml"),
            "owner": "safety-ops",
            "levels": ["elevated", "severe"],
            "levers": [
                "moderation.surge",
                "detection.set_threshold",
                "notify.webhook",
                "notify.send",
            ],
            "content_hash": levelled.content_hash,
        },
    ] == run.json()

    table = run_cli(env, "playbook", "list")
    assert 0 == table.code, table
    row = next(line for line in table.stdout.splitlines() if "levelled" in line)
    for cell in ("safety-ops", "elevated, severe", levelled.content_hash[:19]):
        assert cell in row


def test_list_names_a_playbooks_directory_that_is_not_there(
    library: tuple[dict[str, str], Path], tmp_path: Path
) -> None:
    """An empty list would say the library has no playbooks; the directory is missing."""
    env, _ = library
    missing = tmp_path / "no-library"
    run = run_cli({**env, "CRISIS_PLAYBOOKS_DIR": str(missing)}, "playbook", "list")
    assert_one_line_error(run, f"no playbooks directory at {missing}")

"""Message templates and the stakeholder directory: checked before anything runs, frozen at
trigger, rendered safely when sent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from temporalio.client import Client

from activities.messages import MessageError, render_message
from core.settings import Settings
from engine.errors import LibraryError, PlaybookInvalid
from engine.incidents import Incidents
from engine.library import library_for, load_library
from engine.playbook_files import load_playbook, validate_file
from tests.conftest import Sandbox
from tests.helpers import assert_eventually
from workflows.incident import MessageTemplate

LIBRARY = Path(__file__).resolve().parents[2] / "playbooks"

PLAYBOOK = """\
playbook: tell
version: 1
title: Tell the regulator
description: Sends one templated message.
inputs:
  region: {type: string, default: GB}
steps:
  - id: tell-regulator
    do: notify.send
    with: {to: regulator, template: crisis-opened, severity: critical}
    undo: {do: notify.send, with: {to: regulator, template: crisis-closed}}
"""


def copy_library(directory: Path) -> None:
    for name in ("templates.yaml", "stakeholders.yaml"):
        (directory / name).write_text((LIBRARY / name).read_text())


def test_shipped_library_loads_and_every_template_parses() -> None:
    """The library beside the playbooks is valid: templates parse, stakeholders are typed."""
    library = load_library(LIBRARY)
    assert {"crisis-opened", "crisis-closed"} <= set(library.templates)
    assert "external" == library.stakeholders["regulator"].kind


def test_unknown_template_and_stakeholder_are_reported_where_they_are_written(
    tmp_path: Path,
) -> None:
    """A misspelt template or stakeholder is an error at its line and column."""
    copy_library(tmp_path)
    path = tmp_path / "tell.yaml"
    path.write_text(
        PLAYBOOK.replace(
            "to: regulator, template: crisis-opened", "to: regulatr, template: crisis-opend"
        )
    )
    problems = [str(p).removeprefix(f"{path}:") for p in validate_file(path)]
    assert [
        "10:12: unknown stakeholder 'regulatr' (directory: "
        + ", ".join(sorted(load_library(LIBRARY).stakeholders))
        + ")",
        "10:26: unknown template 'crisis-opend' "
        f"(known: {', '.join(sorted(load_library(LIBRARY).templates))})",
    ] == problems


def test_a_broken_template_file_is_one_clear_problem(tmp_path: Path) -> None:
    """A template with a Jinja syntax error makes the library invalid, naming the template, at
    the part of it that is wrong."""
    copy_library(tmp_path)
    (tmp_path / "templates.yaml").write_text("oops:\n  subject: '{{ incident.id '\n  body: x\n")
    with pytest.raises(LibraryError, match="template 'oops' subject") as raised:
        load_library(tmp_path)
    assert (tmp_path / "templates.yaml", 2, 3) == (
        raised.value.problem.file,
        raised.value.problem.line,
        raised.value.problem.column,
    )


# Line 4: the subject of `tell`; line 5 its body. The step passes `data`, as notify.send may.
RENDERED = """\
# A comment, so the template starts on line 3.

tell:
  subject: "{{ playbook.title }} at {{ incident.level or 'n/a' }} in {{ inputs.region }}"
  body: |
    {{ data.list_id }} shared with {{ data.partners | join(", ") }}; {{ measures | length }}.
    {% if stand_down %}{{ stand_down.reason }}{% endif %}{{ step.id }} {{ incident.state }}
"""
SENDS = PLAYBOOK.replace(
    "inputs:\n  region: {type: string, default: GB}", "inputs:\n  region: {}"
).replace(
    "template: crisis-opened, severity: critical}",
    "template: tell, data: {list_id: L1, partners: ['${inputs.region}']}}",
)


def write_rendered(tmp_path: Path, templates: str) -> Path:
    copy_library(tmp_path)
    (tmp_path / "templates.yaml").write_text(templates)
    path = tmp_path / "tell.yaml"
    path.write_text(
        SENDS.replace(
            "template: crisis-closed}", "template: tell, data: {list_id: L2, partners: [p]}}"
        )
    )
    return path


def test_a_template_that_renders_passes_validation(tmp_path: Path) -> None:
    """Templates are rendered as when sent: the incident, playbook, a required input (a stand-in
    of its type), measures, the step, the stand-down and the step's `data` are all there."""
    assert [] == validate_file(write_rendered(tmp_path, RENDERED))


@pytest.mark.parametrize(
    ("old", "new", "where", "error"),
    [
        (
            "{{ playbook.title }}",
            "{{ incident.nosuch.attr }}",
            "4:3",
            "subject: 'dict object' has no attribute 'nosuch'",
        ),
        (
            "{{ data.list_id }}",
            "{{ data.list }}",
            "5:3",
            "body: 'dict object' has no attribute 'list'",
        ),
        (
            "{{ inputs.region }}",
            "{{ inputs.country }}",
            "4:3",
            "subject: 'dict object' has no attribute 'country'",
        ),
        ("{{ measures | length }}", "{{ incident.level | join(1) }}", "5:3", "body: "),
        (
            "{{ incident.level or 'n/a' }}",
            "{{ stand_down.actor }}",
            "4:3",
            "subject: 'None' has no attribute 'actor'",
        ),
    ],
    ids=["incident", "data", "input", "filter", "stand-down-before-it"],
)
def test_a_template_that_cannot_render_is_a_validation_error_at_the_template(
    tmp_path: Path, old: str, new: str, where: str, error: str
) -> None:
    """A name the context does not have is caught when the playbook is validated, at the
    template's part in templates.yaml, not when the regulator should have been told."""
    path = write_rendered(tmp_path, RENDERED.replace(old, new))
    (problem,) = validate_file(path)
    assert str(problem).startswith(
        f"{tmp_path / 'templates.yaml'}:{where}: template 'tell' {error}"
    )
    assert str(problem).endswith("(sent by step 'tell-regulator' of playbook tell)")
    with pytest.raises(PlaybookInvalid):  # so a trigger is refused
        load_playbook(path, tmp_path)


def test_a_template_edited_after_the_playbook_was_loaded_is_checked_again(tmp_path: Path) -> None:
    """A trigger loads a playbook from a cache; a template that stops rendering invalidates it."""
    path = write_rendered(tmp_path, RENDERED)
    load_playbook(path, tmp_path)
    templates = tmp_path / "templates.yaml"
    before = templates.stat().st_mtime_ns
    templates.write_text(RENDERED.replace("{{ data.list_id }}", "{{ data.nope }}"))
    os.utime(templates, ns=(before, before + 10**9))  # a later edit, whatever the clock's grain
    with pytest.raises(PlaybookInvalid, match="has no attribute 'nope'"):
        load_playbook(path, tmp_path)


@pytest.mark.parametrize(
    ("name", "content", "where"),
    [
        ("templates.yaml", b"oops:\n  subject: [s\n  body: b\n", "3:7: YAML: expected ',' or ']'"),
        ("templates.yaml", b"a: &a {subject: s, body: b}\nb: *a\n", "2:4: YAML: aliases (*a)"),
        ("templates.yaml", b"a:\n  subject: caf\xe9\n", "2:15: not UTF-8 text (byte 0xe9"),
        ("stakeholders.yaml", b"regulator: [\n", "2:1: YAML: expected the node content"),
        ("stakeholders.yaml", b"\xff\xfe", "1:1: not UTF-8 text (byte 0xff at offset 0)"),
        ("stakeholders.yaml", b"- regulator\n", "1:1: expected a mapping of names to entries"),
        ("stakeholders.yaml", b"r:\n  name: R\n  kind: outer\n", "3:3: r.kind: Input should"),
    ],
)
def test_a_broken_library_file_is_one_line_at_its_own_place(
    tmp_path: Path, name: str, content: bytes, where: str
) -> None:
    """A library file that cannot be read is one problem at that file's line and column, not at
    the playbook's first line followed by the YAML reader's own several lines."""
    copy_library(tmp_path)
    (tmp_path / name).write_bytes(content)
    path = tmp_path / "tell.yaml"
    path.write_text(PLAYBOOK)
    (problem,) = validate_file(path)
    assert "\n" not in str(problem)
    assert str(problem).startswith(f"{tmp_path / name}:{where}"), str(problem)


def test_every_problem_of_the_library_files_is_reported_at_once(tmp_path: Path) -> None:
    """Several broken entries, and several faults in one entry, in both files: each is its own
    line at its own place, in one run (the first alone made authors fix them one run at a time)."""
    copy_library(tmp_path)
    (tmp_path / "stakeholders.yaml").write_text(
        "regulator:\n"
        "  name: Regulator\n"
        "  kind: outer\n"
        "  channels: [{type: carrier-pigeon}]\n"
        "law-enforcement:\n"
        "  kind: external\n"
    )
    with (tmp_path / "templates.yaml").open("a") as templates:
        templates.write("broken:\n  subject: x\n")
    path = tmp_path / "tell.yaml"
    path.write_text(PLAYBOOK)
    problems = [str(p).removeprefix(f"{tmp_path}/") for p in validate_file(path)]
    stakeholders = [p for p in problems if p.startswith("stakeholders.yaml:")]
    assert [
        "stakeholders.yaml:3:3: regulator.kind",
        "stakeholders.yaml:4:14: regulator.channels[0]",
        "stakeholders.yaml:5:1: law-enforcement.name",
    ] == [p.split(": Input")[0].split(": Field")[0] for p in stakeholders]
    assert any(p.startswith("templates.yaml:") and "broken" in p for p in problems), problems
    with pytest.raises(LibraryError, match=r"broken\.body: Field required \(and 3 more\)$"):
        load_library(tmp_path)


def test_a_stakeholder_name_that_would_leave_its_webhook_path_is_refused(tmp_path: Path) -> None:
    """A directory's name is the last part of its default webhook's path (/webhooks/<name>)."""
    copy_library(tmp_path)
    with (tmp_path / "stakeholders.yaml").open("a") as stakeholders:
        stakeholders.write("../admin:\n  name: Nobody\n  kind: internal\n")
    path = tmp_path / "tell.yaml"
    path.write_text(PLAYBOOK)
    problems = [str(p).removeprefix(f"{tmp_path}/") for p in validate_file(path)]
    lines = (tmp_path / "stakeholders.yaml").read_text().splitlines()
    assert [
        f"stakeholders.yaml:{len(lines) - 2}:1: invalid stakeholder '../admin': a stakeholder "
        "name is a letter or digit, then letters, digits and '_.-', up to 100 characters"
    ] == problems


def test_a_playbook_uses_the_library_beside_it_as_soon_as_there_is_one(tmp_path: Path) -> None:
    """Without files of its own a playbook's directory uses the default library; a templates
    file written beside it later is used from then on, and edits to it are read again."""
    default, own = tmp_path / "default", tmp_path / "own"
    default.mkdir()
    own.mkdir()
    copy_library(default)
    playbook = own / "tell.yaml"
    assert set(load_library(LIBRARY).templates) == set(library_for(playbook, default).templates)
    (own / "templates.yaml").write_text("only:\n  subject: s\n  body: b\n")
    assert ["only"] == list(library_for(playbook, default).templates)
    templates = own / "templates.yaml"
    before = templates.stat().st_mtime_ns
    templates.write_text("renamed:\n  subject: s\n  body: b\n")
    os.utime(templates, ns=(before, before + 10**9))  # a later edit, whatever the clock's grain
    assert ["renamed"] == list(library_for(playbook, default).templates)


def test_rendering_uses_the_incident_and_refuses_unknown_names() -> None:
    """Templates see the incident's facts; an undefined name is an error, not an empty string."""
    template = MessageTemplate(
        subject="{{ incident.id }} at {{ incident.level }}", body="{{ data.note }}"
    )
    subject, body = render_message(
        template, {"incident": {"id": "INC-1", "level": "severe"}}, {"note": "hi"}
    )
    assert ("INC-1 at severe", "hi") == (subject, body)
    with pytest.raises(MessageError):
        render_message(MessageTemplate(subject="{{ nope }}", body=""), {}, {})
    with pytest.raises(MessageError):  # the sandbox refuses reaching into Python internals
        render_message(MessageTemplate(subject="{{ ''.__class__.__mro__ }}", body=""), {}, {})
    with pytest.raises(MessageError, match="cannot render message"):  # a filter's TypeError
        render_message(MessageTemplate(subject="{{ data.n | join(', ') }}", body=""), {}, {"n": 3})


@pytest.mark.usefixtures("worker")
async def test_messages_are_rendered_from_templates_frozen_at_trigger(
    client: Client, settings: Settings, sandbox: Sandbox, tmp_path: Path
) -> None:
    """Editing a template during an incident does not change what that incident sends."""
    copy_library(tmp_path)
    path = tmp_path / "tell.yaml"
    path.write_text(PLAYBOOK)
    incidents = Incidents(client, settings)
    triggered = await incidents.trigger(str(path), {}, actor="alice", eager=True)

    async def sent() -> list[dict]:
        notes = (await sandbox.state())["notifications"]
        assert 1 == len(notes)
        return notes

    first = (await assert_eventually(sent))[0]["body"]
    assert (
        f"Crisis protocol activated: Tell the regulator ({triggered.incident_id})"
        == first["subject"]
    )
    assert ("regulator", "critical") == (first["stakeholder"], first["severity"])
    assert "Region: GB." in first["message"]
    (tmp_path / "templates.yaml").write_text(
        (tmp_path / "templates.yaml")
        .read_text()
        .replace("Emergency measures have been lifted", "EDITED")
    )
    await incidents.stand_down(triggered.incident_id, actor="bob", reason="over")
    closing = (await sandbox.state())["notifications"][-1]["body"]
    assert "stood down by bob: over" in closing["message"]
    assert "Emergency measures have been lifted" in closing["message"]

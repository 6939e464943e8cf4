"""The playbook library's shared files: message templates and the stakeholder directory.

`templates.yaml` and `stakeholders.yaml` live beside the playbooks. A playbook file elsewhere uses
its own directory's files when it has them, else the library's.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml.comments import CommentedMap

from activities.messages import MessageError, check_render, check_template
from engine.errors import FileProblem, LibraryError
from engine.yaml_files import YamlFileError, load_yaml, locate, plain
from workflows.incident import MessageTemplate, StandDownRequest, message_context
from workflows.levers import is_notification
from workflows.limits import stakeholder_problem
from workflows.notifications import CHANNEL_TYPES, Channel, WebhookChannel
from workflows.playbook import (
    LeverCall,
    Playbook,
    Step,
    sample_inputs,
    walk_steps,
)
from workflows.substitution import ReferenceError_, substitute

M = TypeVar("M", bound=BaseModel)
TEMPLATES_FILE = "templates.yaml"
STAKEHOLDERS_FILE = "stakeholders.yaml"


class Stakeholder(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    kind: Literal["external", "internal"]
    description: str = ""
    # Where messages go, each channel delivered on its own. The default is the signed webhook to
    # the notify connector, so a directory without channel config behaves as it always did.
    channels: list[Channel] = Field(default_factory=lambda: [WebhookChannel()], min_length=1)


@dataclass
class Library:
    templates: dict[str, MessageTemplate] = field(default_factory=dict)
    stakeholders: dict[str, Stakeholder] = field(default_factory=dict)
    templates_file: Path = Path(TEMPLATES_FILE)
    # Where each template and its parts are written in templates.yaml: ("name",) and
    # ("name", "body") to (line, column), so a template's error points into that file.
    positions: dict[tuple[str, ...], tuple[int, int]] = field(default_factory=dict)

    def template_problem(self, name: str, part: str, message: str) -> FileProblem:
        where = self.positions.get((name, part)) or self.positions.get((name,), (1, 1))
        return FileProblem(self.templates_file, *where, message)

    def templates_for(self, playbook: Playbook) -> dict[str, MessageTemplate]:
        """The templates a playbook's notify.send steps name (the ones to freeze at trigger)."""
        names = {str(step.with_.get("template")) for step in _sends(playbook)}
        return {name: self.templates[name] for name in sorted(names) if name in self.templates}

    def channels_for(self, playbook: Playbook) -> dict[str, list[Channel]]:
        """The channels of the stakeholders a playbook's notify.send steps may tell (all of them
        when a step names its stakeholder from an input), to freeze at trigger."""
        names = {str(step.with_.get("to")) for step in _sends(playbook)}
        if any("${" in name for name in names):
            names = set(self.stakeholders)
        return {
            name: list(self.stakeholders[name].channels)
            for name in sorted(names)
            if name in self.stakeholders
        }

    def render_problems(self, playbook: Playbook) -> list[FileProblem]:
        """Each template a notify.send step uses, rendered as when it is sent (the same renderer,
        a context of the same shape); one that fails is a problem at the template, once."""
        found: dict[str, FileProblem] = {}
        closing = {step.id for step in playbook.on_stand_down}
        for step, call in _send_calls(playbook):
            name = call.with_.get("template")
            if not isinstance(name, str) or name not in self.templates or name in found:
                continue
            # A step of the playbook runs before any stand-down; a closing step or an undo may
            # run during one, so it is tried with the stand-down set.
            standing_down = call is not step or step.id in closing
            context = _sample_context(playbook, step, standing_down=standing_down)
            try:
                data = substitute(call.with_.get("data") or {}, _substitution(playbook, context))
            except ReferenceError_:
                continue  # an undefined reference is a problem of the playbook, reported there
            try:
                check_render(name, self.templates[name], context, data)
            except MessageError as error:
                undo = " (undo)" if call is not step else ""
                used = f"sent by step {step.id!r}{undo} of playbook {playbook.playbook}"
                found[name] = self.template_problem(name, error.part, f"{error} ({used})")
        return list(found.values())

    def problems(self, playbook: Playbook) -> list[tuple[tuple[str | int, ...], str]]:
        """Unknown templates and stakeholders, at their paths in the playbook."""
        found = []
        for at, step in walk_steps(playbook):
            if not isinstance(step, Step):
                continue
            for where, call in ((at, step), ((*at, "undo"), step.undo)):
                if call is None or call.do != "notify.send":
                    continue
                template, to = call.with_.get("template"), call.with_.get("to")
                if (
                    isinstance(template, str)
                    and "${" not in template
                    and template not in self.templates
                ):
                    known = ", ".join(sorted(self.templates)) or "none"
                    found.append(
                        (
                            (*where, "with", "template"),
                            f"unknown template {template!r} (known: {known})",
                        )
                    )
                if isinstance(to, str) and "${" not in to and to not in self.stakeholders:
                    known = ", ".join(sorted(self.stakeholders)) or "none"
                    found.append(
                        ((*where, "with", "to"), f"unknown stakeholder {to!r} (directory: {known})")
                    )
        return found


def _send_calls(playbook: Playbook) -> list[tuple[Step, Step | LeverCall]]:
    """Every notify.send call with the step it belongs to (itself, or the step it undoes)."""
    calls: list[tuple[Step, Step | LeverCall]] = []
    for step in playbook.lever_steps():
        calls += [(step, call) for call in (step, step.undo) if call and call.do == "notify.send"]
    return calls


def _sample_context(playbook: Playbook, step: Step, *, standing_down: bool) -> dict[str, Any]:
    level = step.level or (playbook.levels[0] if playbook.levels else None)
    return message_context(
        incident={
            "id": "INC-CHECK",
            "level": level,
            "state": "standing_down" if standing_down else "running",
            "triggered_by": "check",
            "triggered_at": "2000-01-01T00:00:00+00:00",
            "triggered_level": playbook.levels[0] if playbook.levels else None,
        },
        playbook=playbook,
        inputs=sample_inputs(playbook),
        step=step,
        measures=[
            {"id": other.id, "lever": other.do, "expires_at": "2000-01-02T00:00:00+00:00"}
            for other in playbook.lever_steps()
            if not is_notification(other.do)
        ][:1],
        stand_down=StandDownRequest(actor="check", reason="check") if standing_down else None,
    )


def _substitution(playbook: Playbook, context: dict[str, Any]) -> dict[str, dict[str, Any]]:
    # What `${...}` in a step's arguments may name, as the workflow builds it.
    incident = context["incident"]
    return {
        "inputs": context["inputs"],
        "incident": {
            "id": incident["id"],
            "playbook": playbook.playbook,
            "triggered_by": incident["triggered_by"],
        },
    }


def _sends(playbook: Playbook) -> list[Step]:
    calls: list[Step] = []
    for step in playbook.lever_steps():
        if step.do == "notify.send":
            calls.append(step)
        if step.undo is not None and step.undo.do == "notify.send":
            calls.append(Step(id=step.id, do=step.undo.do, **{"with": step.undo.with_}))
    return calls


_cache: dict[Path, tuple[tuple[int, int], Library]] = {}
# A directory's two library files as strings: every trigger stats them (twice), and building
# the paths with pathlib cost more than the system calls.
_files: dict[Path, tuple[str, str]] = {}


def library_for(playbook_file: Path, default_dir: Path) -> Library:
    """The library a playbook file uses: its own directory's files, else the default library."""
    directory = playbook_file.parent
    stamp = _stamp(directory)
    if stamp == (0, 0):
        directory, stamp = default_dir, _stamp(default_dir)
    return _load_library(directory, stamp)


def load_library(directory: Path) -> Library:
    return _load_library(directory, _stamp(directory))


def _stamp(directory: Path) -> tuple[int, int]:
    """When the directory's templates and stakeholders files last changed (0: no such file)."""
    files = _files.get(directory)
    if files is None:
        files = _files[directory] = (
            os.path.join(directory, TEMPLATES_FILE),
            os.path.join(directory, STAKEHOLDERS_FILE),
        )
    return _mtime(files[0]), _mtime(files[1])


def _mtime(path: str) -> int:
    try:
        found = os.stat(path)
    except OSError:
        return 0
    return found.st_mtime_ns if stat.S_ISREG(found.st_mode) else 0


def _load_library(directory: Path, stamp: tuple[int, int]) -> Library:
    # Not normalised (as os.path.abspath would): `a/link/..` is not `a`.
    key = directory.absolute()
    cached = _cache.get(key)
    if cached and cached[0] == stamp:
        return cached[1]
    files = [directory / TEMPLATES_FILE, directory / STAKEHOLDERS_FILE]
    problems: list[FileProblem] = []  # every one at once: an author fixes them in one go
    templates, positions = _read(files[0], MessageTemplate, problems)
    stakeholders, written_at = _read(files[1], Stakeholder, problems)
    library = Library(
        templates=templates,
        stakeholders=stakeholders,
        templates_file=files[0],
        positions=positions,
    )
    for name in library.stakeholders:
        if (problem := stakeholder_problem(name)) is not None:
            problems.append(FileProblem(files[1], *written_at[(name,)], problem))
    for name, template in library.templates.items():
        try:
            check_template(name, template)
        except MessageError as error:
            problems.append(library.template_problem(name, error.part, str(error)))
    if problems:
        raise LibraryError(problems)
    _cache[key] = (stamp, library)
    return library


_Positions = dict[tuple[str, ...], tuple[int, int]]


def _read(
    path: Path, model: type[M], problems: list[FileProblem]
) -> tuple[dict[str, M], _Positions]:
    """The file's entries by name, and where each entry and its keys are written; what is wrong
    with it goes to `problems`."""
    if not path.is_file():
        return {}, {}
    try:
        _, document = load_yaml(path)
    except YamlFileError as error:
        problems.append(error.problem)
        return {}, {}
    if document is None:
        return {}, {}
    if not isinstance(document, CommentedMap):
        problems.append(FileProblem(path, 1, 1, "expected a mapping of names to entries"))
        return {}, {}
    found: dict[str, M] = {}
    for name, value in document.items():
        try:
            found[str(name)] = model.model_validate(plain(value))
        except ValidationError as error:
            for each in error.errors():
                loc = (name, *each["loc"])
                line, column = locate(document, loc, skip=CHANNEL_TYPES)
                message = f"{_location(loc)}: {each['msg'].removeprefix('Value error, ')}"
                problems.append(FileProblem(path, line, column, message))
    positions: _Positions = {}
    for name, value in document.items():
        positions[(str(name),)] = locate(document, (name,))
        for key in value if isinstance(value, CommentedMap) else ():
            positions[(str(name), str(key))] = locate(document, (name, key))
    return found, positions


def _location(loc: tuple[str | int, ...]) -> str:
    """`regulator.channels[1].to[0]`: the key as written in the file (a union's tag left out)."""
    text = ""
    for index, part in enumerate(loc):
        if isinstance(part, int):
            text += f"[{part}]"
        elif index > 0 and isinstance(loc[index - 1], int) and part in CHANNEL_TYPES:
            continue
        else:
            text += f".{part}" if text else str(part)
    return text

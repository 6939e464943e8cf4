"""The playbook library's shared files: message templates and the stakeholder directory.

`templates.yaml` and `stakeholders.yaml` live beside the playbooks. A playbook file elsewhere uses
its own directory's files when it has them, else the library's.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from activities.messages import MessageError, check_template
from engine.errors import LibraryError
from workflows.incident import MessageTemplate
from workflows.notifications import CHANNEL_TYPES, Channel, WebhookChannel
from workflows.playbook import Playbook, Step, walk_steps

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


def _sends(playbook: Playbook) -> list[Step]:
    calls: list[Step] = []
    for step in playbook.lever_steps():
        if step.do == "notify.send":
            calls.append(step)
        if step.undo is not None and step.undo.do == "notify.send":
            calls.append(Step(id=step.id, do=step.undo.do, **{"with": step.undo.with_}))
    return calls


_cache: dict[Path, tuple[tuple[int, int], Library]] = {}


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
    return _mtime(directory / TEMPLATES_FILE), _mtime(directory / STAKEHOLDERS_FILE)


def _mtime(path: Path) -> int:
    try:
        found = path.stat()
    except OSError:
        return 0
    return found.st_mtime_ns if stat.S_ISREG(found.st_mode) else 0


def _load_library(directory: Path, stamp: tuple[int, int]) -> Library:
    files = [directory / TEMPLATES_FILE, directory / STAKEHOLDERS_FILE]
    key = directory.absolute()
    cached = _cache.get(key)
    if cached and cached[0] == stamp:
        return cached[1]
    library = Library(
        templates=_read(files[0], MessageTemplate),
        stakeholders=_read(files[1], Stakeholder),
    )
    for name, template in library.templates.items():
        try:
            check_template(name, template)
        except MessageError as error:
            raise LibraryError(f"{files[0]}: {error}") from None
    _cache[key] = (stamp, library)
    return library


def _read(path: Path, model: type[M]) -> dict[str, M]:
    if not path.is_file():
        return {}
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
    except (OSError, YAMLError) as error:
        raise LibraryError(f"{path}: {error}") from None
    if not isinstance(data, dict):
        raise LibraryError(f"{path}: expected a mapping of names to entries")
    found: dict[str, M] = {}
    for name, value in data.items():
        try:
            found[str(name)] = model.model_validate(value)
        except ValidationError as error:
            first = error.errors()[0]
            where = _location((name, *first["loc"]))
            raise LibraryError(
                f"{path}: {where}: {first['msg'].removeprefix('Value error, ')}"
            ) from None
    return found


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

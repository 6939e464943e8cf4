"""Playbook files: find them, read the YAML, and report problems as `file:line:column: message`."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml.comments import CommentedMap

from engine.errors import FileProblem, LibraryError, PlaybookInvalid, PlaybookNotFound
from engine.library import STAKEHOLDERS_FILE, TEMPLATES_FILE, Library, library_for
from engine.yaml_files import YamlFileError, load_yaml, locate, plain
from workflows.playbook import (
    ID_PATTERN,
    STEP_TAGS,
    Playbook,
    Problem,
    check_playbook,
    playbook_warnings,
    shown,
)

SUFFIXES = (".yaml", ".yml")
LIBRARY_FILES = (TEMPLATES_FILE, STAKEHOLDERS_FILE)  # beside the playbooks, not playbooks


# Parsed playbooks by file, valid while the file's mtime and size are unchanged: a trigger should
# not spend milliseconds re-parsing YAML that has not changed. An edited file is read again, and
# so is one whose library changed (an edited template may no longer render for it).
_parsed: dict[tuple[Path, Path | None], tuple[tuple[int, int], Playbook, Library | None]] = {}


def load_playbook(path: Path, library_dir: Path | None = None) -> Playbook:
    """Read and fully check one playbook file, or raise PlaybookInvalid."""
    try:
        stat = path.stat()
    except OSError as error:
        raise PlaybookInvalid(
            [FileProblem(path, 1, 1, f"cannot read file: {error.strerror or error}")]
        ) from None
    # The absolute path, not the resolved one: resolving costs a system call per component.
    version, key = (stat.st_mtime_ns, stat.st_size), (path.absolute(), library_dir)
    cached = _parsed.get(key)
    if cached is not None and cached[0] == version and cached[2] is _library(path, library_dir):
        return cached[1]
    playbook, problems, _ = _load(path, library_dir)
    if problems or playbook is None:
        raise PlaybookInvalid(problems)
    _parsed[key] = (version, playbook, _library(path, library_dir))
    return playbook


def _library(path: Path, library_dir: Path | None) -> Library | None:
    try:
        return library_for(path, library_dir or path.parent)
    except LibraryError:
        return None


def validate_file(path: Path, library_dir: Path | None = None) -> list[FileProblem]:
    return _load(path, library_dir)[1]


@dataclass(frozen=True)
class FileCheck:
    problems: list[FileProblem]
    # Allowed but usually wrong (an emergency measure without expiry...); only for a valid file.
    warnings: list[FileProblem]


def check_file(path: Path, library_dir: Path | None = None) -> FileCheck:
    """Every problem of one playbook file and, when it has none, its warnings (one parse)."""
    playbook, problems, document = _load(path, library_dir)
    if problems or playbook is None or document is None:
        return FileCheck(problems, [])
    return FileCheck([], [_locate(path, document, w) for w in playbook_warnings(playbook)])


_Loaded = tuple[Playbook | None, list[FileProblem], CommentedMap | None]


def _from_file(data: Any) -> Playbook:
    # As the JSON Schema for editors reads a file: keys by their written names only (`with`,
    # never the model's `with_`) and no coercion (`quorum: "2"` and `every_role: "yes"` are
    # refused, as `version: "2"` is).
    return Playbook.model_validate(data, strict=True, by_alias=True, by_name=False)


def _load(path: Path, library_dir: Path | None) -> _Loaded:
    try:
        _, document = load_yaml(path)
    except YamlFileError as error:
        return None, [error.problem], None
    if not isinstance(document, CommentedMap):
        mapping = "a playbook is a mapping (playbook:, version:, steps:, ...)"
        return None, [FileProblem(path, 1, 1, mapping)], None
    data = plain(document)
    try:
        playbook = _from_file(data)
        problems: list[FileProblem] = []
    except ValidationError as error:
        problems = [
            _locate(path, document, Problem(tuple(e["loc"]), _document_message(e)))
            for e in error.errors()
        ]
        # Unknown keys alone (a typo, usually): check the rest as if they were not there, so
        # one run reports every problem instead of one kind at a time.
        playbook = _without_unknown_keys(data, error)
        if playbook is None:
            return None, _in_order(path, problems), document
    problems += [_locate(path, document, problem) for problem in check_playbook(playbook)]
    if library_dir is not None and path.stem != playbook.playbook and _same_dir(path, library_dir):
        problems.append(
            _locate(
                path,
                document,
                Problem(
                    ("playbook",),
                    f"playbook {playbook.playbook!r} is in {path.name}: in the library a "
                    f"playbook's file is named after it ({playbook.playbook}{path.suffix}), "
                    "which is how a trigger, the API and the console find it by name",
                ),
            )
        )
    try:
        library = library_for(path, library_dir or path.parent)
    except LibraryError as error:
        return playbook, _in_order(path, [*problems, *error.problems]), document
    problems += [
        _locate(path, document, Problem(where, message))
        for where, message in library.problems(playbook)
    ]
    problems += library.render_problems(playbook)
    return playbook, _in_order(path, problems), document


def _same_dir(path: Path, directory: Path) -> bool:
    try:
        return path.parent.resolve() == directory.resolve()
    except OSError:
        return False


def _in_order(path: Path, problems: list[FileProblem]) -> list[FileProblem]:
    """As an editor walks the file (each kind of check found its own), then the library's."""
    return sorted(problems, key=lambda p: (p.file != path, str(p.file), p.line, p.column))


def _without_unknown_keys(data: Any, error: ValidationError) -> Playbook | None:
    """The playbook with the keys it does not know removed, if that is all that was wrong."""
    if any(e["type"] != "extra_forbidden" for e in error.errors()):
        return None
    stripped = copy.deepcopy(data)
    for e in error.errors():
        *parents, key = [part for part in e["loc"] if part not in STEP_TAGS]
        node = stripped
        for part in parents:
            node = node[part]
        node.pop(key, None)
    try:
        return _from_file(stripped)
    except ValidationError:
        return None


def _document_message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown key {error['loc'][-1]!r}"
    if error["type"] == "missing":
        return f"missing required key {error['loc'][-1]!r}"
    message = str(error["msg"]).removeprefix("Value error, ")  # our validators' own words
    if error["type"] == "string_pattern_mismatch" and error["ctx"]["pattern"] == ID_PATTERN:
        message = f"{shown(error['input'])} is not a name: lowercase letters, digits, '_' and '-'"
    elif error["type"].endswith("_type") or error["type"].endswith("_parsing"):
        message += f", not {shown(error['input'])}"  # `true` is no number
    # Named, as the lever arguments' problems are: the line points at it, a reader need not look.
    named = [part for part in error["loc"] if isinstance(part, str) and part not in STEP_TAGS]
    return f"{named[-1]}: {message}" if named else message


def _locate(path: Path, document: CommentedMap, problem: Problem) -> FileProblem:
    """Map a path inside the document to the line and column where it is written."""
    line, column = locate(document, problem.path, skip=STEP_TAGS)  # pydantic's union tags
    return FileProblem(path, line, column, problem.message)


def find_playbook(name_or_path: str, playbooks_dir: Path) -> Path:
    """A path to an existing file, or a playbook name looked up in the playbooks directory."""
    candidate = Path(name_or_path)
    if candidate.suffix in SUFFIXES or "/" in name_or_path:
        if candidate.is_file():
            return candidate
        if candidate.is_dir():
            raise PlaybookNotFound(f"{name_or_path} is a directory: name one playbook file in it")
        raise PlaybookNotFound(f"playbook file not found: {name_or_path}")
    # A name is a file beside the others: look at it directly rather than list the directory
    # (a trigger's path), in the order `playbook_files` sorts them.
    for suffix in SUFFIXES:
        path = playbooks_dir / (name_or_path + suffix)
        if is_playbook(path) and path.is_file():
            return path
    raise PlaybookNotFound(
        f"no playbook named {name_or_path!r} in {playbooks_dir} (known: {_known(playbooks_dir)})"
    )


def _known(playbooks_dir: Path) -> str:
    if not playbooks_dir.is_dir():
        return "none: the directory does not exist"
    return ", ".join(p.stem for p in playbook_files(playbooks_dir)) or "none"


def library_playbook(name: str, playbooks_dir: Path) -> Path:
    """A playbook of the library by name only, for names that come from clients (API, console):
    a path is refused, so no request makes the engine read a file outside the library."""
    if "/" in name or "\\" in name or name.endswith(SUFFIXES):
        raise PlaybookNotFound(f"playbooks are named, not paths: {name!r}")
    try:
        return find_playbook(name, playbooks_dir)
    except PlaybookNotFound:  # said without the server's directory, which is not the client's
        raise PlaybookNotFound(
            f"no playbook named {name!r} (known: {_known(playbooks_dir)})"
        ) from None


def playbook_files(directory: Path) -> list[Path]:
    """The playbooks in a directory: YAML files other than the library's own files and the
    scenarios (`<playbook>.scenario.yaml`) that live beside them."""
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if is_playbook(p) and p.is_file())


def is_playbook(path: Path) -> bool:
    """Whether a file's name makes it a playbook, not a library file or a scenario."""
    return (
        path.suffix in SUFFIXES
        and path.name not in LIBRARY_FILES
        and not path.stem.endswith(".scenario")
    )


def not_a_playbook(path: Path) -> str | None:
    """Why a YAML file beside the playbooks is no playbook (checked another way), if it is not."""
    if path.name in LIBRARY_FILES:
        return "the library's own file, checked with every playbook that uses it"
    if path.suffix in SUFFIXES and path.stem.endswith(".scenario"):
        return "a scenario, checked by `crisis playbook simulate PLAYBOOK --script`"
    return None

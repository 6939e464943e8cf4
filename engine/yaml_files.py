"""Reading the engine's YAML files (playbooks, templates, stakeholders) with positions kept.

Every failure to read one is a FileProblem at the file's own line and column, so a user sees one
`file:line:column: message` line whichever file is broken.
"""

from __future__ import annotations

from collections.abc import Container, Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.composer import Composer, ComposerError
from ruamel.yaml.constructor import ConstructorError, RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError
from ruamel.yaml.events import AliasEvent
from ruamel.yaml.reader import ReaderError

from engine.errors import FileProblem


class YamlFileError(Exception):
    """A file that cannot be read as YAML; `problem` says where."""

    def __init__(self, problem: FileProblem) -> None:
        super().__init__(str(problem))
        self.problem = problem


class _NoAliases(Composer):
    # An alias repeats a node without repeating its text: nine nested levels of nine make a
    # few hundred bytes that expand to hundreds of millions of items when the document is walked.
    # No playbook or library file needs one, so each is refused where it is written.
    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.parser.check_event(AliasEvent):
            event = self.parser.peek_event()
            raise ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed", event.start_mark
            )
        return super().compose_node(parent, index)


class _BoundedInts(RoundTripConstructor):
    # Python refuses to read an integer of more than 4,300 digits (a ValueError without a
    # position): said where it is written, as any other YAML problem.
    def construct_yaml_int(self, node: Any) -> Any:
        try:
            return super().construct_yaml_int(node)
        except ValueError:
            digits = len(node.value)
            raise ConstructorError(
                None, None, f"a number of {digits} digits is too long", node.start_mark
            ) from None


_BoundedInts.add_constructor("tag:yaml.org,2002:int", _BoundedInts.construct_yaml_int)


def read_text(path: Path) -> str:
    """A file's text, or YamlFileError when it cannot be read or is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise YamlFileError(
            FileProblem(path, 1, 1, f"cannot read file: {error.strerror or error}")
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - data.rfind(b"\n", 0, error.start)
        bad = data[error.start : error.start + 1].hex()
        message = f"not UTF-8 text (byte 0x{bad} at offset {error.start})"
        raise YamlFileError(FileProblem(path, line, column, message)) from None


def load_yaml(path: Path) -> tuple[str, Any]:
    """The file's text and its document (round-trip types, which know their positions)."""
    text = read_text(path)
    yaml = YAML(typ="rt")
    yaml.Composer = _NoAliases
    yaml.Constructor = _BoundedInts
    try:
        return text, yaml.load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line, column = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = f"YAML: {error.problem or error}"
        raise YamlFileError(FileProblem(path, line, column, message)) from None
    except ReaderError as error:  # a character YAML does not allow (a control character)
        line, column = _position(text, error.position)
        character = text[error.position] if error.position < len(text) else ""
        message = f"YAML: unacceptable character {character!r}"
        raise YamlFileError(FileProblem(path, line, column, message)) from None
    except RecursionError:
        raise YamlFileError(FileProblem(path, 1, 1, "YAML: nested too deeply")) from None


def _position(text: str, at: int) -> tuple[int, int]:
    """The line and column of character `at` of `text`, from 1."""
    return text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)


def plain(node: Any) -> Any:
    """A round-trip document as plain dicts and lists (what the models validate)."""
    if isinstance(node, dict):
        return {str(key): plain(value) for key, value in node.items()}
    if isinstance(node, list):
        return [plain(item) for item in node]
    return node


def locate(
    document: Any, path: Sequence[str | int], skip: Container[str | int] = ()
) -> tuple[int, int]:
    """The line and column (from 1) where a path inside the document is written, or as near as
    it gets; parts in `skip` (pydantic's union tags) are not in the file."""
    node: Any = document
    line, column = 0, 0
    for part in (p for p in path if p not in skip):
        if isinstance(node, CommentedMap) and part in node:
            line, column = node.lc.key(part)
            node = node[part]
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and 0 <= part < len(node):
            line, column = node.lc.item(part)
            node = node[part]
        else:
            break
    return line + 1, column + 1

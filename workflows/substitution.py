"""Safe `${...}` references in lever arguments: looked up, never evaluated.

`"${inputs.region}"` as a whole value keeps the input's type (a list stays a list);
inside a longer string the value is formatted into the text.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from typing import Any

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")  # what a reference can name
REFERENCE = re.compile(rf"\$\{{\s*({NAME.pattern})\.({NAME.pattern})\s*\}}")
# What an author meant as a reference: `${` up to the next `}`, or to the end of the text.
_OPENED = re.compile(r"\$\{[^}]*\}?")
NAMESPACES = ("inputs", "incident")
# Types decided without isinstance(): substitution runs in the workflow sandbox at every lever
# call, where each isinstance() is a wrapped call, and arguments are plain JSON types there.
_PLAIN = frozenset({str, dict, list, int, float, bool, type(None)})


class ReferenceError_(LookupError):
    """A `${namespace.name}` that names nothing."""


def references(value: Any) -> Iterator[tuple[tuple[str | int, ...], str, str]]:
    """Yield (path inside value, namespace, name) for every reference in a nested value."""
    for path, text in _strings(value):
        for match in REFERENCE.finditer(text):
            yield path, match.group(1), match.group(2)


def malformed(value: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Yield (path inside value, text) for every `${` that does not begin a well-formed
    reference (`${inputs.region`, `${inputs}`, `${inputs.a.b}`): substitution would pass it to
    the platform as it stands."""
    for path, text in _strings(value):
        for match in _OPENED.finditer(text):
            if not REFERENCE.fullmatch(match.group()):
                yield path, match.group()


def in_keys(value: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    """Yield (path of the key, key) for every mapping key holding `${`: keys are passed to the
    platform as they stand, never substituted."""
    for path, node in _nodes(value):
        if isinstance(node, Mapping):
            yield from (((*path, key), key) for key in node if isinstance(key, str) and "${" in key)


def _strings(value: Any) -> Iterator[tuple[tuple[str | int, ...], str]]:
    return ((path, node) for path, node in _nodes(value) if isinstance(node, str) and "${" in node)


def _nodes(
    value: Any, path: tuple[str | int, ...] = ()
) -> Iterator[tuple[tuple[str | int, ...], Any]]:
    """Every value nested in `value` (itself included), with its path."""
    yield path, value
    if isinstance(value, Mapping):
        for key, item in value.items():
            yield from _nodes(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _nodes(item, (*path, index))


def substitute(value: Any, context: Mapping[str, Mapping[str, Any]]) -> Any:
    """Return `value` with every reference replaced from `context[namespace][name]`."""
    kind = type(value)
    if kind not in _PLAIN:  # a subclass (a YAML loader's map, say) or anything else
        kind = _shape(value)
    if kind is str:
        if "$" not in value:
            return value
        whole = REFERENCE.fullmatch(value.strip())
        if whole:
            return _lookup(context, whole.group(1), whole.group(2))
        return REFERENCE.sub(lambda m: _format(_lookup(context, m.group(1), m.group(2))), value)
    if kind is dict:
        return {key: substitute(item, context) for key, item in value.items()}
    if kind is list:
        return [substitute(item, context) for item in value]
    return value


def _shape(value: Any) -> type | None:
    if isinstance(value, str):
        return str
    if isinstance(value, Mapping):
        return dict
    return list if isinstance(value, list) else None


def _lookup(context: Mapping[str, Mapping[str, Any]], namespace: str, name: str) -> Any:
    try:
        return context[namespace][name]
    except KeyError:
        raise ReferenceError_(f"${{{namespace}.{name}}} is not defined") from None


def _format(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        return ", ".join(_format(item) for item in value)
    return json.dumps(value)

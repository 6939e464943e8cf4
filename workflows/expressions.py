"""The `when:` condition language: a tiny, safe expression grammar over `inputs.X` and `level`.

Parsed into a frozen AST when a playbook is validated, so mistakes surface before anything runs;
evaluated by walking that AST (never eval/exec), deterministically, inside the workflow sandbox.
Standard library only, because the Temporal workflow sandbox imports this module.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = [
    "COMPARISON_OPERATORS",
    "And",
    "Boolean",
    "Compare",
    "Expression",
    "ExpressionError",
    "ListLiteral",
    "Name",
    "Not",
    "Number",
    "Or",
    "Scalar",
    "String",
    "evaluate",
    "level_literals",
    "names",
    "parse",
    "to_text",
]

COMPARISON_OPERATORS = ("==", "!=", "<", "<=", ">", ">=", "in", "not in")
_ORDERING = ("<", "<=", ">", ">=")
_MEMBERSHIP = ("in", "not in")
# Parentheses and `not` nest; capping the depth keeps parse and evaluate far from RecursionError.
MAX_DEPTH = 64
LEVEL = "level"
INPUTS = "inputs"


class ExpressionError(ValueError):
    """A malformed expression (at parse time) or a failed evaluation, at a 0-based `position`
    (said 1-based, as editors and `file:line:column` count)."""

    def __init__(self, reason: str, position: int) -> None:
        super().__init__(f"{reason} at column {position + 1}")
        self.reason = reason
        self.position = position

    def __reduce__(self) -> tuple[type[ExpressionError], tuple[str, int]]:
        return (type(self), (self.reason, self.position))  # so it pickles with its position


# --- the AST ------------------------------------------------------------------------------------
# `position` is where the node starts (a comparison: its operator) in the parsed text. It is left
# out of equality so that `parse(to_text(e)) == e` holds although canonical spacing differs.
def _position() -> Any:
    return field(default=0, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class String:
    value: str
    position: int = _position()


@dataclass(frozen=True)
class Number:
    value: int | float
    position: int = _position()


@dataclass(frozen=True)
class Boolean:
    value: bool
    position: int = _position()


Scalar: TypeAlias = String | Number | Boolean


@dataclass(frozen=True)
class ListLiteral:
    items: tuple[Scalar, ...]
    position: int = _position()


@dataclass(frozen=True)
class Name:
    """`level` or `inputs.NAME`, spelled in full."""

    name: str
    position: int = _position()


@dataclass(frozen=True)
class Compare:
    left: Expression
    op: str
    right: Expression
    position: int = _position()

    def __post_init__(self) -> None:
        if self.op not in COMPARISON_OPERATORS:
            raise ValueError(f"unknown comparison operator {self.op!r}")


@dataclass(frozen=True)
class Not:
    operand: Expression
    position: int = _position()


@dataclass(frozen=True)
class And:
    operands: tuple[Expression, ...]
    position: int = _position()

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("And needs at least two operands")


@dataclass(frozen=True)
class Or:
    operands: tuple[Expression, ...]
    position: int = _position()

    def __post_init__(self) -> None:
        if len(self.operands) < 2:
            raise ValueError("Or needs at least two operands")


Expression: TypeAlias = String | Number | Boolean | ListLiteral | Name | Compare | Not | And | Or


# --- tokens -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Token:
    kind: str  # "string", "number", "bool", "name", "keyword", "op", "punct", "end"
    text: str
    position: int
    value: Any = None  # the literal's value; for a name, the (part, start) pairs


# ASCII only: `\w` would admit Unicode look-alikes that read as one name and mean another.
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?")
_KEYWORDS = {"and", "or", "not", "in"}
_BOOLEANS = {"true": True, "false": False, "True": True, "False": False}
_ESCAPES = {"\\": "\\", "'": "'", '"': '"', "n": "\n", "t": "\t", "r": "\r"}
_TWO_CHAR_OPS = ("==", "!=", "<=", ">=")
_PUNCT = "()[],"
_HINTS = {
    "=": "'=' is not an operator (use ==)",
    "!": "'!' is not an operator (use != or not)",
    "+": "arithmetic is not supported",
    "-": "arithmetic is not supported",
    "*": "arithmetic is not supported",
    "/": "arithmetic is not supported",
    "%": "arithmetic is not supported",
}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char.isspace():
            i += 1
        elif char in "'\"":
            token, i = _read_string(text, i)
            tokens.append(token)
        elif number := _NUMBER.match(text, i):
            tokens.append(_number_token(number))
            i = number.end()
        elif ident := _IDENT.match(text, i):
            token, i = _read_name(text, ident)
            tokens.append(token)
        elif text.startswith(_TWO_CHAR_OPS, i):
            tokens.append(_Token("op", text[i : i + 2], i))
            i += 2
        elif char in "<>":
            tokens.append(_Token("op", char, i))
            i += 1
        elif char in _PUNCT:
            tokens.append(_Token("punct", char, i))
            i += 1
        else:
            raise ExpressionError(_HINTS.get(char, f"unexpected character {char!r}"), i)
    tokens.append(_Token("end", "", len(text)))
    return tokens


def _read_string(text: str, start: int) -> tuple[_Token, int]:
    quote = text[start]
    chars: list[str] = []
    i = start + 1
    while i < len(text):
        char = text[i]
        if char == quote:
            return _Token("string", text[start : i + 1], start, "".join(chars)), i + 1
        if char == "\\":
            if i + 1 >= len(text):
                break
            escaped = text[i + 1]
            if escaped not in _ESCAPES:
                raise ExpressionError(f"unknown escape '\\{escaped}' in string", i)
            chars.append(_ESCAPES[escaped])
            i += 2
        else:
            chars.append(char)
            i += 1
    raise ExpressionError("unterminated string", start)


def _number_token(match: re.Match[str]) -> _Token:
    text, position = match.group(), match.start()
    if match.group(1) is None and match.group(2) is None:
        try:
            return _Token("number", text, position, int(text))
        except ValueError:  # more digits than Python converts (sys.int_info.str_digits_check)
            raise ExpressionError("number is too long", position) from None
    value = float(text)
    if not math.isfinite(value):  # 1e999: `inf` has no spelling in this language
        raise ExpressionError("number is out of range", position)
    return _Token("number", text, position, value)


def _read_name(text: str, ident: re.Match[str]) -> tuple[_Token, int]:
    word, i = ident.group(), ident.end()
    if word in _BOOLEANS:
        return _Token("bool", word, ident.start(), _BOOLEANS[word]), i
    if word in _KEYWORDS:
        return _Token("keyword", word, ident.start()), i
    # Dotted parts stay in one token so that `inputs . x` (with spaces) is not a name.
    parts = [(word, ident.start())]
    while i < len(text) and text[i] == ".":
        part = _IDENT.match(text, i + 1)
        if part is None:
            raise ExpressionError("expected a name after '.'", i + 1)
        parts.append((part.group(), part.start()))
        i = part.end()
    return _Token("name", text[ident.start() : i], ident.start(), tuple(parts)), i


# --- the parser ---------------------------------------------------------------------------------
def parse(text: str) -> Expression:
    """Parse a `when:` expression; raise ExpressionError at the first problem."""
    return _Parser(_tokenize(text)).parse()


class _Parser:
    def __init__(self, tokens: list[_Token]) -> None:
        self.tokens = tokens
        self.index = 0

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def peek(self, offset: int = 1) -> _Token:
        return self.tokens[min(self.index + offset, len(self.tokens) - 1)]

    def advance(self) -> _Token:
        token = self.token
        self.index = min(self.index + 1, len(self.tokens) - 1)
        return token

    def is_keyword(self, word: str, token: _Token | None = None) -> bool:
        token = token or self.token
        return token.kind == "keyword" and token.text == word

    def is_punct(self, char: str, token: _Token | None = None) -> bool:
        token = token or self.token
        return token.kind == "punct" and token.text == char

    def parse(self) -> Expression:
        expr = self.or_expr(0)
        if self.token.kind != "end":
            if self.is_keyword("not"):  # `a not b`: a mistyped `not in`
                raise ExpressionError("expected 'in' after 'not'", self.peek().position)
            raise ExpressionError(f"unexpected {self.token.text!r}", self.token.position)
        return expr

    def or_expr(self, depth: int) -> Expression:
        operands = [self.and_expr(depth)]
        while self.is_keyword("or"):
            self.advance()
            operands.append(self.and_expr(depth))
        if len(operands) == 1:
            return operands[0]
        return Or(tuple(operands), position=operands[0].position)

    def and_expr(self, depth: int) -> Expression:
        operands = [self.not_expr(depth)]
        while self.is_keyword("and"):
            self.advance()
            operands.append(self.not_expr(depth))
        if len(operands) == 1:
            return operands[0]
        return And(tuple(operands), position=operands[0].position)

    def not_expr(self, depth: int) -> Expression:
        if self.is_keyword("not"):
            position = self.advance().position
            self.check_depth(depth + 1, position)
            return Not(self.not_expr(depth + 1), position=position)
        return self.comparison(depth)

    def comparison_operator(self) -> str | None:
        token = self.token
        if token.kind == "op":
            return token.text
        if self.is_keyword("in"):
            return "in"
        if self.is_keyword("not") and self.is_keyword("in", self.peek()):
            return "not in"
        return None

    def comparison(self, depth: int) -> Expression:
        # Operand starts are kept for errors: a parenthesised operand's node starts inside.
        left_start = self.token.position
        left = self.operand(depth)
        op = self.comparison_operator()
        if op is None:
            return left
        position = self.advance().position
        if op == "not in":
            self.advance()
        right_start = self.token.position
        right = self.operand(depth)
        compare = Compare(left, op, right, position=position)
        _check_level_comparison(compare, right_start if _is_level(left) else left_start)
        if self.comparison_operator() is not None:
            raise ExpressionError(
                "chained comparisons are not supported (use and)", self.token.position
            )
        return compare

    def operand(self, depth: int) -> Expression:
        token = self.token
        if token.kind == "string":
            self.advance()
            return String(token.value, position=token.position)
        if token.kind in ("number", "bool"):
            return self.scalar()
        if self.is_punct("["):
            return self.list_literal()
        if token.kind == "name":
            return self.name()
        if self.is_punct("("):
            self.advance()
            self.check_depth(depth + 1, token.position)
            expr = self.or_expr(depth + 1)
            if not self.is_punct(")"):
                raise ExpressionError("expected ')'", self.token.position)
            self.advance()
            return expr
        raise ExpressionError("expected an operand", token.position)

    def scalar(self) -> Scalar:
        token = self.token
        if token.kind == "string":
            node: Scalar = String(token.value, position=token.position)
        elif token.kind == "number":
            node = Number(token.value, position=token.position)
        elif token.kind == "bool":
            node = Boolean(token.value, position=token.position)
        else:
            raise ExpressionError(
                "lists may only hold strings, numbers and booleans", token.position
            )
        self.advance()
        return node

    def list_literal(self) -> ListLiteral:
        position = self.advance().position
        items: list[Scalar] = []
        while not self.is_punct("]"):
            items.append(self.scalar())
            if self.is_punct(","):
                self.advance()
            elif not self.is_punct("]"):
                raise ExpressionError("expected ',' or ']'", self.token.position)
        self.advance()
        return ListLiteral(tuple(items), position=position)

    def name(self) -> Name:
        token = self.advance()
        parts: tuple[tuple[str, int], ...] = token.value
        # Check what follows first: `len(x)` is a call before it is an unknown name.
        if self.is_punct("("):
            raise ExpressionError("function calls are not supported", self.token.position)
        if self.is_punct("["):
            raise ExpressionError("indexing is not supported", self.token.position)
        first = parts[0][0]
        if first == INPUTS and len(parts) == 1:
            raise ExpressionError(
                "expected '.' and an input name after 'inputs'", token.position + len(first)
            )
        allowed = 2 if first == INPUTS else 1
        if first in (INPUTS, LEVEL) and len(parts) > allowed:
            raise ExpressionError(
                "attribute access is not supported (only inputs.NAME)",
                parts[allowed][1] - 1,  # the '.' before the first extra part
            )
        if first not in (INPUTS, LEVEL):
            raise ExpressionError(
                f"unknown name {first!r} (use inputs.NAME or level)",
                token.position,
            )
        return Name(token.text, position=token.position)

    @staticmethod
    def check_depth(depth: int, position: int) -> None:
        if depth > MAX_DEPTH:
            raise ExpressionError(f"expression is nested deeper than {MAX_DEPTH}", position)


def _is_level(expr: Expression) -> bool:
    return isinstance(expr, Name) and expr.name == LEVEL


def _is_input(expr: Expression) -> bool:
    return isinstance(expr, Name) and expr.name != LEVEL


def _check_level_comparison(compare: Compare, other_start: int) -> None:
    """Reject at parse time what can only fail later: `level` against a non-level literal."""
    left, right = compare.left, compare.right
    if not (_is_level(left) or _is_level(right)):
        return
    if compare.op in _MEMBERSHIP:
        if _is_level(left) and (
            _is_input(right)
            or (
                isinstance(right, ListLiteral)
                and all(isinstance(item, String) for item in right.items)
            )
        ):
            return
        raise ExpressionError(
            "test level with `level in ['name', ...]` (a list of level names)", compare.position
        )
    other = right if _is_level(left) else left
    if not isinstance(other, String | Name):
        raise ExpressionError(
            "level can only be compared with a level name in quotes, an input or level",
            other_start,
        )


# --- static queries -----------------------------------------------------------------------------
def _walk(expr: Expression) -> Iterator[Expression]:
    yield expr
    if isinstance(expr, Compare):
        yield from _walk(expr.left)
        yield from _walk(expr.right)
    elif isinstance(expr, Not):
        yield from _walk(expr.operand)
    elif isinstance(expr, And | Or):
        for operand in expr.operands:
            yield from _walk(operand)
    elif isinstance(expr, ListLiteral):
        yield from expr.items


def names(expr: Expression) -> set[str]:
    """Every name referenced, spelled in full: {"inputs.region", "level"}."""
    return {node.name for node in _walk(expr) if isinstance(node, Name)}


def level_literals(expr: Expression) -> list[str]:
    """String literals compared with `level` (also inside `level in [...]`), in order, once each."""
    found: dict[str, None] = {}  # a dict keeps first-seen order and drops repeats
    for node in _walk(expr):
        if not isinstance(node, Compare):
            continue
        for side, other in ((node.left, node.right), (node.right, node.left)):
            if not _is_level(side):
                continue
            if isinstance(other, String):
                found.setdefault(other.value)
            elif isinstance(other, ListLiteral):
                for item in other.items:
                    if isinstance(item, String):
                        found.setdefault(item.value)
    return list(found)


# --- evaluation ---------------------------------------------------------------------------------
def evaluate(
    expr: Expression,
    *,
    inputs: Mapping[str, Any],
    level: str | None,
    levels: Sequence[str],
    every_operand: bool = False,
) -> bool:
    """The condition's truth for these inputs and this level; only ever raises ExpressionError.
    `every_operand` (validation): and/or evaluate all their operands, so that an error in one a
    trigger's inputs would reach is not hidden by the example inputs' short-circuit."""
    return _truth(_Evaluator(inputs, level, levels, every_operand).value(expr))


def _truth(value: Any) -> bool:
    try:
        return bool(value)
    except Exception as error:  # an exotic input whose __bool__ fails: still our error type
        raise ExpressionError(f"cannot take the truth of {_kind(value)}", 0) from error


class _Evaluator:
    def __init__(
        self,
        inputs: Mapping[str, Any],
        level: str | None,
        levels: Sequence[str],
        every_operand: bool = False,
    ) -> None:
        self.inputs = inputs
        self.level = level
        self.levels = list(levels)
        self.every_operand = every_operand

    def value(self, expr: Expression) -> Any:
        if isinstance(expr, String | Number | Boolean):
            return expr.value
        if isinstance(expr, ListLiteral):
            return [item.value for item in expr.items]
        if isinstance(expr, Name):
            return self.lookup(expr)
        if isinstance(expr, Not):
            return not _truth(self.value(expr.operand))
        # and/or short-circuit, left to right, and yield plain booleans (not Python's operand).
        if isinstance(expr, And | Or):
            truths: Iterable[bool] = (_truth(self.value(each)) for each in expr.operands)
            if self.every_operand:
                truths = list(truths)  # every operand evaluated, errors and all
            return all(truths) if isinstance(expr, And) else any(truths)
        if isinstance(expr, Compare):
            return self.compare(expr)
        raise ExpressionError(f"not an expression node: {type(expr).__name__}", 0)

    def lookup(self, name: Name) -> Any:
        if name.name == LEVEL:
            if self.level is None:
                raise ExpressionError("level is not set", name.position)
            return self.level
        key = name.name.removeprefix(f"{INPUTS}.")
        if key not in self.inputs:
            raise ExpressionError(f"{name.name} is not defined", name.position)
        return self.inputs[key]

    def compare(self, node: Compare) -> bool:
        left, right = self.value(node.left), self.value(node.right)
        if _is_level(node.left) or _is_level(node.right):
            return self.compare_levels(node, left, right)
        op, position = node.op, node.position
        if op in _MEMBERSHIP:
            return _contains(right, left, position) == (op == "in")
        left_kind, right_kind = _kind(left), _kind(right)
        # Strict on purpose: `inputs.count == '3'` would otherwise be silently, forever false.
        if left_kind != right_kind or (op in _ORDERING and left_kind not in ("number", "string")):
            raise ExpressionError(
                f"cannot compare {left_kind} with {right_kind} using {op}", position
            )
        if op == "==":
            return _same(left, right)
        if op == "!=":
            return not _same(left, right)
        return _order(op, left, right)

    def compare_levels(self, node: Compare, left: Any, right: Any) -> bool:
        """Levels compare by their place in the playbook's `levels:` list, not alphabetically."""
        if node.op in _MEMBERSHIP:
            if not _is_level(node.left) or not isinstance(right, list):
                raise ExpressionError("test level with `level in [...]`", node.position)
            self.rank(left, node.position)
            for item in right:
                self.rank(item, node.position)
            return (left in right) == (node.op == "in")
        left_rank = self.rank(left, node.position)
        right_rank = self.rank(right, node.position)
        if node.op == "==":
            return left_rank == right_rank
        if node.op == "!=":
            return left_rank != right_rank
        return _order(node.op, left_rank, right_rank)

    def rank(self, value: Any, position: int) -> int:
        if isinstance(value, str) and value in self.levels:
            return self.levels.index(value)
        declared = ", ".join(self.levels) or "none"
        raise ExpressionError(f"{value!r} is not a declared level ({declared})", position)


def _kind(value: Any) -> str:
    if isinstance(value, bool):  # before int: True is an int to Python, not to playbooks
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "list"
    return type(value).__name__


def _same(left: Any, right: Any) -> bool:
    """Equality that never lets a boolean equal a number (Python says True == 1)."""
    if _kind(left) != _kind(right):
        return False
    if isinstance(left, list | tuple):
        return len(left) == len(right) and all(map(_same, left, right))
    try:
        return bool(left == right)
    except Exception:  # an exotic input's __eq__ failing means "not the same"
        return False


def _order(op: str, left: Any, right: Any) -> bool:
    if op == "<":
        return bool(left < right)
    if op == "<=":
        return bool(left <= right)
    if op == ">":
        return bool(left > right)
    return bool(left >= right)


def _contains(container: Any, item: Any, position: int) -> bool:
    if isinstance(container, str):
        if not isinstance(item, str):
            raise ExpressionError(f"cannot look for a {_kind(item)} in a string", position)
        return item in container
    if isinstance(container, list | tuple):
        # Looking for a number among strings is a mistake, not a plain "no".
        kind = _kind(item)
        if container and all(_kind(element) != kind for element in container):
            raise ExpressionError(f"cannot look for a {kind} in a list without one", position)
        return any(_same(item, element) for element in container)
    raise ExpressionError(
        f"`in` needs a list or a string on the right, not {_kind(container)}", position
    )


# --- canonical text -----------------------------------------------------------------------------
def to_text(expr: Expression) -> str:
    """Canonical spelling: single quotes, one space around operators, only needed parentheses."""
    if isinstance(expr, String):
        return _quote(expr.value)
    if isinstance(expr, Boolean):
        return "true" if expr.value else "false"
    if isinstance(expr, Number):
        return repr(expr.value)  # repr keeps the float-ness: 1.0 stays 1.0, never 1
    if isinstance(expr, ListLiteral):
        return "[" + ", ".join(to_text(item) for item in expr.items) + "]"
    if isinstance(expr, Name):
        return expr.name
    if isinstance(expr, Compare):
        return f"{_operand_text(expr.left)} {expr.op} {_operand_text(expr.right)}"
    if isinstance(expr, Not):
        return "not " + _wrap(expr.operand, (And, Or))
    if isinstance(expr, And):
        # A nested And keeps its parentheses so that the tree, not just the meaning, round-trips.
        return " and ".join(_wrap(operand, (And, Or)) for operand in expr.operands)
    if isinstance(expr, Or):
        return " or ".join(_wrap(operand, (Or,)) for operand in expr.operands)
    raise TypeError(f"not an expression node: {type(expr).__name__}")


def _operand_text(expr: Expression) -> str:
    return _wrap(expr, (Compare, Not, And, Or))


def _wrap(expr: Expression, needs_parentheses: tuple[type, ...]) -> str:
    text = to_text(expr)
    return f"({text})" if isinstance(expr, needs_parentheses) else text


def _quote(value: str) -> str:
    escaped = (
        value.replace("\\", "\\\\")
        .replace("'", "\\'")
        .replace("\n", "\\n")
        .replace("\t", "\\t")
        .replace("\r", "\\r")
    )
    return f"'{escaped}'"

"""The `when:` expression language: parsing, evaluation, errors and canonical text."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import pickle
import string
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workflows.expressions import (
    COMPARISON_OPERATORS,
    And,
    Boolean,
    Compare,
    Expression,
    ExpressionError,
    ListLiteral,
    Name,
    Not,
    Number,
    Or,
    String,
    evaluate,
    level_literals,
    names,
    parse,
    to_text,
)

LEVELS = ["elevated", "severe", "critical"]
INPUTS: dict[str, Any] = {
    "region": "GB",
    "dry_run": False,
    "categories": ["racial_hatred", "violence"],
    "reach": 0.25,
    "count": 3,
    "minimum": "severe",
}


def run(text: str, *, level: str | None = "severe", **overrides: Any) -> bool:
    """Parse and evaluate `text` against INPUTS (with overrides) at `level`."""
    return evaluate(parse(text), inputs={**INPUTS, **overrides}, level=level, levels=LEVELS)


def parse_error(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        parse(text)
    return caught.value


def evaluation_error(text: str, **kwargs: Any) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        run(text, **kwargs)
    return caught.value


# --- the brief's examples -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expected", "text", "level"),
    [
        (True, "inputs.region == 'GB'", "severe"),
        (True, "level >= 'severe'", "critical"),
        (False, "level >= 'severe'", "elevated"),
        (True, "inputs.region in ['GB', 'IE'] and not inputs.dry_run", "severe"),
        (True, "'racial_hatred' in inputs.categories or level == 'critical'", "elevated"),
        (True, "inputs.reach < 0.5", "severe"),
        (True, "inputs.count != 4", "severe"),
    ],
)
def test_the_documented_examples_evaluate(expected: bool, text: str, level: str) -> None:
    """Every example from the design note evaluates as a reader would expect."""
    assert expected is run(text, level=level)


# --- operators ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expected", "text"),
    [
        (True, "inputs.count == 3"),
        (False, "inputs.count == 4"),
        (True, "inputs.count == 3.0"),
        (False, "inputs.count != 3"),
        (True, "inputs.count != 4"),
        (True, "inputs.count < 4"),
        (False, "inputs.count < 3"),
        (True, "inputs.count <= 3"),
        (False, "inputs.count <= 2"),
        (True, "inputs.count > 2"),
        (False, "inputs.count > 3"),
        (True, "inputs.count >= 3"),
        (False, "inputs.count >= 4"),
        (True, "inputs.count > -1"),
        (True, "inputs.reach >= 0.25"),
        (True, "inputs.region < 'IE'"),
        (True, "inputs.dry_run == false"),
        (True, "inputs.dry_run != True"),
        (True, "inputs.categories == ['racial_hatred', 'violence']"),
        (False, "inputs.categories != ['racial_hatred', 'violence']"),
    ],
)
def test_comparison_operators(expected: bool, text: str) -> None:
    """Each of ==, !=, <, <=, >, >= compares numbers, strings, booleans and lists as expected."""
    assert expected is run(text)


@pytest.mark.parametrize(
    ("expected", "text"),
    [
        (True, "inputs.region in ['GB', 'IE']"),
        (False, "inputs.region in ['FR', 'IE']"),
        (False, "inputs.region not in ['GB', 'IE']"),
        (True, "inputs.region not in ['FR']"),
        (True, "'violence' in inputs.categories"),
        (True, "'spam' not in inputs.categories"),
        (True, "3 in [1, 2, 3]"),
        (False, "inputs.region in []"),
        (True, "'G' in inputs.region"),
        (False, "'X' in inputs.region"),
        (True, "'X' not in inputs.region"),
        (True, "'' in inputs.region"),
    ],
)
def test_in_and_not_in_on_lists_and_strings(expected: bool, text: str) -> None:
    """`in` tests list membership or a substring, and `not in` is its negation."""
    assert expected is run(text)


@pytest.mark.parametrize(
    ("expected", "text"),
    [
        (True, "true"),
        (True, "True"),
        (False, "false"),
        (False, "False"),
        (False, "not true"),
        (True, "not not true"),
        (True, "true and true"),
        (False, "true and false"),
        (True, "false or true"),
        (False, "false or false"),
        (False, "inputs.dry_run"),
        (True, "inputs.categories"),
        (False, "[]"),
        (True, "inputs.reach"),
        (False, "0"),
        (False, "''"),
    ],
)
def test_boolean_operators_and_truthiness(expected: bool, text: str) -> None:
    """and, or and not combine truthiness the usual way; a bare operand counts by its truth."""
    assert expected is run(text)


def test_strings_take_either_quote_and_backslash_escapes() -> None:
    """Single and double quotes both delimit strings, and backslash escapes are decoded."""
    assert String('it\'s "x"\\\n\t\r') == parse("'it\\'s \"x\"\\\\\\n\\t\\r'")
    assert String("it's") == parse('"it\'s"')
    assert True is run('inputs.region == "GB"')


def test_numbers_parse_as_int_or_float_and_may_be_negative() -> None:
    """Integers stay ints, a fraction or exponent makes a float, and a leading minus negates."""
    assert (int, -3) == (type(parse("-3").value), parse("-3").value)
    assert (float, -0.5) == (type(parse("-0.5").value), parse("-0.5").value)
    assert (float, 1500.0) == (type(parse("1.5e3").value), parse("1.5e3").value)


# --- precedence and parentheses -----------------------------------------------------------------
def test_not_binds_tighter_than_and_which_binds_tighter_than_or() -> None:
    """`not a and b or c` groups as `((not a) and b) or c`."""
    a, b, c = Name("inputs.a"), Name("inputs.b"), Name("inputs.c")
    assert Or((And((Not(a), b)), c)) == parse("not inputs.a and inputs.b or inputs.c")


def test_or_has_the_lowest_precedence() -> None:
    """`a or b and c` groups as `a or (b and c)`, so it is true when only a is."""
    a, b, c = Name("inputs.a"), Name("inputs.b"), Name("inputs.c")
    assert Or((a, And((b, c)))) == parse("inputs.a or inputs.b and inputs.c")
    assert True is run("inputs.a or inputs.b and inputs.c", a=True, b=False, c=False)


def test_not_applies_to_a_whole_comparison() -> None:
    """`not x == y` negates the comparison, as in Python."""
    assert Not(Compare(Name("inputs.count"), "==", Number(3))) == parse("not inputs.count == 3")
    assert False is run("not inputs.count == 3")


def test_parentheses_override_precedence() -> None:
    """Parentheses regroup: `(a or b) and c` is false when c is false."""
    assert True is run("inputs.a or inputs.b and inputs.c", a=True, b=False, c=False)
    assert False is run("(inputs.a or inputs.b) and inputs.c", a=True, b=False, c=False)
    assert True is run("not (inputs.a and inputs.b)", a=True, b=False)


def test_a_parenthesised_comparison_can_be_compared() -> None:
    """A comparison in parentheses is an operand, so its boolean can be compared again."""
    assert True is run("(inputs.count == 3) == true")


def test_and_and_or_short_circuit_left_to_right() -> None:
    """A decided `and`/`or` does not evaluate the rest, so a later missing input is not an error."""
    assert False is run("false and inputs.missing")
    assert True is run("true or inputs.missing")


# --- levels -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expected", "text", "level"),
    [
        (True, "level > 'severe'", "critical"),
        (False, "level > 'severe'", "severe"),
        (True, "level >= 'severe'", "severe"),
        (True, "level < 'critical'", "elevated"),
        (True, "level <= 'elevated'", "elevated"),
        (True, "level == 'elevated'", "elevated"),
        (True, "level != 'elevated'", "critical"),
        (True, "'critical' > level", "severe"),
        (True, "level >= inputs.minimum", "critical"),
        (False, "level >= inputs.minimum", "elevated"),
        (True, "level == level", "severe"),
        (True, "level in ['severe', 'critical']", "critical"),
        (True, "level not in ['severe', 'critical']", "elevated"),
        (True, "level", "elevated"),
    ],
)
def test_levels_compare_by_their_declared_order(expected: bool, text: str, level: str) -> None:
    """Levels order by their place in `levels:` (critical > severe), not alphabetically."""
    assert expected is run(text, level=level)


def test_level_order_follows_the_list_not_the_alphabet() -> None:
    """With levels [zulu, alpha], alpha is the higher level although it sorts first."""
    expr = parse("level > 'zulu'")
    assert True is evaluate(expr, inputs={}, level="alpha", levels=["zulu", "alpha"])


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("level == 3", 9),
        ("level > true", 8),
        ("[1] == level", 0),
        ("level < (inputs.a == 1)", 8),
        ("level in 'severe'", 6),
        ("'severe' in level", 9),
        ("level in [1, 2]", 6),
    ],
)
def test_level_against_something_that_cannot_be_a_level_is_a_parse_error(
    text: str, position: int
) -> None:
    """`level` meets only a quoted level name, an input, or a list of names after `in`."""
    assert position == parse_error(text).position


def test_an_undeclared_level_name_is_an_evaluation_error() -> None:
    """A string compared with `level` that is not in `levels:` fails loudly, never silently."""
    error = evaluation_error("level >= 'severest'", level="severe")
    assert "'severest' is not a declared level (elevated, severe, critical) at column 7" == str(
        error
    )
    assert 6 == evaluation_error("level in ['severe', 'bogus']").position
    assert 6 == evaluation_error("level >= inputs.region").position


def test_an_unset_or_undeclared_current_level_is_an_evaluation_error() -> None:
    """Conditions on `level` need the incident to have a declared level."""
    assert "level is not set at column 1" == str(evaluation_error("level > 'severe'", level=None))
    assert 6 == evaluation_error("level > 'severe'", level="apocalyptic").position


# --- static queries -----------------------------------------------------------------------------
def test_names_lists_every_referenced_name() -> None:
    """names() returns each input (spelled `inputs.X`) and `level`, once, from anywhere."""
    expr = parse("inputs.region in ['GB'] and not (level > 'severe' or inputs.region == inputs.b)")
    assert {"inputs.region", "inputs.b", "level"} == names(expr)
    assert set() == names(parse("1 == 1"))


def test_level_literals_lists_strings_compared_with_level() -> None:
    """level_literals() finds level names on either side and inside `level in [...]`, once each."""
    expr = parse(
        "level >= 'severe' and ('critical' == level or level in ['severe', 'elevated'])"
        " and inputs.region == 'GB' and level != inputs.minimum"
    )
    assert ["severe", "critical", "elevated"] == level_literals(expr)
    assert [] == level_literals(parse("inputs.region == 'severe'"))


# --- parse errors -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "position", "message"),
    [
        ("inputs.region == 'GB", 17, "unterminated string"),
        ('inputs.region == "GB\\"', 17, "unterminated string"),
        ("'a\\q'", 2, "unknown escape '\\q' in string"),
        ("inputs.a @ 1", 9, "unexpected character '@'"),
        ("inputs.", 7, "expected a name after '.'"),
        ("inputs", 6, "expected '.' and an input name after 'inputs'"),
        ("inputs.region == 'GB' extra", 22, "unexpected 'extra'"),
        ("inputs.a == 1 2", 14, "unexpected '2'"),
        ("inputs.a < inputs.b < inputs.c", 20, "chained comparisons are not supported (use and)"),
        ("1 == 1 != 2", 7, "chained comparisons are not supported (use and)"),
        ("len(x)", 3, "function calls are not supported"),
        ("__import__('os')", 10, "function calls are not supported"),
        ("__import__", 0, "unknown name '__import__' (use inputs.NAME or level)"),
        ("inputs.region()", 13, "function calls are not supported"),
        ("inputs.region.upper", 13, "attribute access is not supported (only inputs.NAME)"),
        ("level.name", 5, "attribute access is not supported (only inputs.NAME)"),
        ("inputs.tags[0]", 11, "indexing is not supported"),
        ("region == 'GB'", 0, "unknown name 'region' (use inputs.NAME or level)"),
        ("", 0, "expected an operand"),
        ("   ", 3, "expected an operand"),
        ("inputs.a ==", 11, "expected an operand"),
        ("inputs.a and", 12, "expected an operand"),
        ("not", 3, "expected an operand"),
        ("and inputs.a", 0, "expected an operand"),
        ("(inputs.a", 9, "expected ')'"),
        ("inputs.a)", 8, "unexpected ')'"),
        ("['GB' 'IE']", 6, "expected ',' or ']'"),
        ("['GB', inputs.x]", 7, "lists may only hold strings, numbers and booleans"),
        ("[[1]]", 1, "lists may only hold strings, numbers and booleans"),
        ("inputs.a = 1", 9, "'=' is not an operator (use ==)"),
        ("!inputs.a", 0, "'!' is not an operator (use != or not)"),
        ("inputs.count + 1", 13, "arithmetic is not supported"),
        ("inputs.a not inputs.b", 13, "expected 'in' after 'not'"),
        ("1e999", 0, "number is out of range"),
    ],
)
def test_malformed_input_reports_the_column(text: str, position: int, message: str) -> None:
    """A malformed expression raises ExpressionError at the 0-based position of the problem,
    said as a 1-based column."""
    error = parse_error(text)
    assert (position, message) == (error.position, error.reason)
    assert f"{message} at column {position + 1}" == str(error)


def test_expression_error_is_a_value_error_that_pickles() -> None:
    """ExpressionError is a ValueError and survives pickling with its position."""
    error = parse_error("inputs.a ==")
    copy = pickle.loads(pickle.dumps(error))
    assert (True, "expected an operand", 11) == (
        isinstance(copy, ValueError),
        copy.reason,
        copy.position,
    )


def test_deep_nesting_is_rejected_rather_than_exhausting_the_stack() -> None:
    """Absurdly nested parentheses or `not`s stop with ExpressionError, not RecursionError."""
    assert "expression is nested deeper than 64" == parse_error("(" * 500 + "1" + ")" * 500).reason
    assert "expression is nested deeper than 64" == parse_error("not " * 500 + "true").reason
    assert True is run("(" * 64 + "true" + ")" * 64)


# --- evaluation errors --------------------------------------------------------------------------
def test_a_missing_input_is_named() -> None:
    """Evaluating a name the inputs lack raises ExpressionError naming it, at its column."""
    error = evaluation_error("inputs.region == 'GB' and inputs.regoin == 'GB'")
    assert "inputs.regoin is not defined at column 27" == str(error)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("inputs.region < 3", "cannot compare string with number using <"),
        ("inputs.count == '3'", "cannot compare number with string using =="),
        ("inputs.dry_run == 0", "cannot compare boolean with number using =="),
        ("inputs.dry_run < true", "cannot compare boolean with boolean using <"),
        ("inputs.categories > ['a']", "cannot compare list with list using >"),
        ("3 in inputs.region", "cannot look for a number in a string"),
        ("3 in inputs.categories", "cannot look for a number in a list without one"),
        ("'G' in inputs.count", "`in` needs a list or a string on the right, not number"),
    ],
)
def test_mismatched_types_are_expression_errors(text: str, message: str) -> None:
    """Comparing values of different kinds raises ExpressionError, never TypeError or False."""
    assert message == evaluation_error(text).reason


def test_exotic_input_values_still_raise_only_expression_error() -> None:
    """An input of a type playbooks never produce fails as ExpressionError, too."""
    assert "cannot compare dict with number using <" == (
        evaluation_error("inputs.weird < 1", weird={"a": 1}).reason
    )


# --- canonical text -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("expected", "text"),
    [
        ("inputs.region == 'GB'", 'inputs.region=="GB"'),
        ("level >= 'severe'", "  level>='severe'  "),
        (
            "inputs.region in ['GB', 'IE'] and not inputs.dry_run",
            "inputs.region in['GB','IE',] and not inputs.dry_run",
        ),
        ("inputs.a not in [1, -2.5, true]", "inputs.a not  in [1,-2.5,True]"),
        ("(inputs.a or inputs.b) and inputs.c", "((inputs.a or inputs.b)) and (inputs.c)"),
        ("not (inputs.a and inputs.b)", "not(inputs.a and inputs.b)"),
        ("(inputs.a == 1) == false", "(inputs.a == 1) == False"),
        ("'it\\'s'", '"it\'s"'),
    ],
)
def test_to_text_is_canonical(expected: str, text: str) -> None:
    """to_text spells an expression one way: single quotes, single spaces, needed parentheses."""
    assert expected == to_text(parse(text))


def test_nested_same_operator_keeps_its_parentheses() -> None:
    """`(a and b) and c` keeps its grouping so that the tree itself round-trips."""
    expr = parse("(inputs.a and inputs.b) and inputs.c")
    assert "(inputs.a and inputs.b) and inputs.c" == to_text(expr)
    assert expr == parse(to_text(expr))


def test_node_equality_ignores_position() -> None:
    """Nodes equal each other whatever column they were parsed from."""
    assert parse("inputs.a") == parse("   inputs.a")
    assert 3 == parse("   inputs.a").position


def test_all_comparison_operators_are_listed() -> None:
    """COMPARISON_OPERATORS names exactly the grammar's eight operators."""
    assert ("==", "!=", "<", "<=", ">", ">=", "in", "not in") == COMPARISON_OPERATORS


# --- properties ---------------------------------------------------------------------------------
IDENTIFIERS = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,8}\Z")
SCALARS = st.one_of(
    st.text(max_size=8).map(String),
    st.integers(min_value=-(10**20), max_value=10**20).map(Number),
    st.floats(allow_nan=False, allow_infinity=False).map(Number),
    st.booleans().map(Boolean),
)
LEVEL = Name("level")


def expressions(
    input_names: st.SearchStrategy[str], level_names: st.SearchStrategy[str]
) -> st.SearchStrategy[Expression]:
    """Random ASTs the parser can produce, with `level` used only where the grammar allows it."""
    inputs = input_names.map(lambda name: Name(f"inputs.{name}"))
    lists = st.lists(SCALARS, max_size=3).map(lambda items: ListLiteral(tuple(items)))
    level_text = level_names.map(String)
    level_compares = st.one_of(
        st.builds(Compare, st.just(LEVEL), st.sampled_from(COMPARISON_OPERATORS[:6]), level_text),
        st.builds(
            Compare,
            st.one_of(level_text, inputs),
            st.sampled_from(COMPARISON_OPERATORS[:6]),
            st.just(LEVEL),
        ),
        st.builds(
            Compare,
            st.just(LEVEL),
            st.sampled_from(("in", "not in")),
            st.one_of(
                inputs,
                st.lists(level_text, max_size=3).map(lambda items: ListLiteral(tuple(items))),
            ),
        ),
    )
    leaves = st.one_of(SCALARS, lists, inputs, st.just(LEVEL), level_compares)

    def extend(children: st.SearchStrategy[Expression]) -> st.SearchStrategy[Expression]:
        operands = st.one_of(SCALARS, lists, inputs, children.filter(lambda e: e != LEVEL))
        several = st.lists(children, min_size=2, max_size=3).map(tuple)
        return st.one_of(
            st.builds(Compare, operands, st.sampled_from(COMPARISON_OPERATORS), operands),
            st.builds(Not, children),
            st.builds(And, several),
            st.builds(Or, several),
        )

    return st.recursive(leaves, extend, max_leaves=12)


@settings(max_examples=500)
@given(expressions(IDENTIFIERS, st.text(max_size=8)))
def test_to_text_round_trips_through_parse(expr: Expression) -> None:
    """For any AST, parse(to_text(e)) == e, and the text is a fixed point (ints stay ints)."""
    text = to_text(expr)
    assert expr == parse(text)
    assert text == to_text(parse(text))


JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=5),
        st.sampled_from(LEVELS),
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=3),
        st.dictionaries(st.text(max_size=3), children, max_size=2),
    ),
    max_leaves=6,
)
NAMES = st.sampled_from(["a", "b", "c"])


@settings(max_examples=500)
@given(
    expr=expressions(NAMES, st.sampled_from([*LEVELS, "bogus"])),
    inputs=st.dictionaries(NAMES, JSON_VALUES),
    level=st.one_of(st.none(), st.sampled_from([*LEVELS, "bogus"])),
)
def test_evaluate_returns_a_bool_or_raises_expression_error(
    expr: Expression, inputs: dict[str, Any], level: str | None
) -> None:
    """On random inputs and levels, evaluate yields a bool or ExpressionError, nothing else."""
    try:
        result = evaluate(expr, inputs=inputs, level=level, levels=LEVELS)
    except ExpressionError as error:
        assert 0 <= error.position
        return
    assert isinstance(result, bool)


# Grammar fragments glued at random reach far deeper into the parser than random characters.
FRAGMENTS = st.lists(
    st.sampled_from(
        [
            *("inputs.a", "inputs.b.c", "inputs.", "inputs", "level", "len", "x"),
            *("'GB'", '"s\\"', "'", "1", "-2.5", "1e999", "true", "False"),
            *("and", "or", "not", "in", *COMPARISON_OPERATORS, "=", "!", "-", "@", "."),
            *("(", ")", "[", "]", ","),
        ]
    ),
    max_size=12,
).map(" ".join)


@given(st.one_of(st.text(alphabet=string.printable, max_size=40), st.text(max_size=20), FRAGMENTS))
def test_parse_raises_only_expression_error_on_arbitrary_text(text: str) -> None:
    """Whatever the text, parse returns an AST that round-trips or raises ExpressionError."""
    try:
        expr = parse(text)
    except ExpressionError as error:
        assert 0 <= error.position <= len(text)
        return
    assert expr == parse(to_text(expr))

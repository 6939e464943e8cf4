"""Playbook files on disk: validation problems as `file:line:column: message`, inputs, hashing."""

# The house style puts the expected value first in asserts.

from __future__ import annotations

import json
from pathlib import Path

import pytest

from engine.errors import FileProblem, PlaybookInvalid, PlaybookNotFound
from engine.incidents import prepare_incident
from engine.playbook_files import find_playbook, load_playbook, validate_file
from tests.conftest import ENGINE_PLAYBOOKS
from workflows.playbook import InputError, Playbook, resolve_inputs

REPO = Path(__file__).resolve().parents[2]
SHIPPED = ENGINE_PLAYBOOKS / "violent-disorder.yaml"

# Line numbers matter below: every problem is asserted at the exact line and column.
VALID = """\
playbook: test-playbook
version: 1
title: Test
description: For tests.
inputs:
  region:
    type: string
    default: GB
  flag:
    type: number
steps:
  - id: throttle
    do: recommender.throttle
    with:
      region: ${inputs.region}
      categories: [fraud]
      reach_multiplier: 0.5
  - id: surge
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 3}
"""
# line 1  playbook:        line 11 steps:
# line 5  inputs:          line 12   - id: throttle
# line 6    region:        line 13     do: recommender.throttle
# line 9    flag:          line 14     with:
#                          line 15       region: ...
#                          line 17       reach_multiplier: 0.5
#                          line 18   - id: surge
#                          line 19     do: moderation.surge
#                          line 20     with: {queue: fraud, extra_reviewers: 3}


def edit(old: str, new: str, text: str = VALID) -> str:
    assert old in text, old
    return text.replace(old, new, 1)


def problems_in(tmp_path: Path, text: str) -> list[FileProblem]:
    path = tmp_path / "test-playbook.yaml"
    path.write_text(text)
    return validate_file(path)


def only_problem(tmp_path: Path, text: str) -> FileProblem:
    problems = problems_in(tmp_path, text)
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_the_engine_fixture_playbook_is_valid() -> None:
    """The frozen playbook the engine's tests run on has no problems and loads."""
    assert [] == validate_file(SHIPPED)
    playbook = load_playbook(SHIPPED)
    assert "violent-disorder" == playbook.playbook
    assert 5 == len(playbook.steps)


def test_the_test_fixture_is_valid(tmp_path: Path) -> None:
    """The base document the error cases edit is itself valid, so each case has one cause."""
    assert [] == problems_in(tmp_path, VALID)


def test_a_problem_prints_as_file_line_column_message(tmp_path: Path) -> None:
    """A problem is rendered as `file:line:column: message` with the file's own path."""
    problem = only_problem(tmp_path, edit("title: Test\n", "title: Test\ncolour: red\n"))
    path = tmp_path / "test-playbook.yaml"
    assert f"{path}:4:1: {problem.message}" == str(problem)


def test_unknown_keys_do_not_hide_the_other_problems(tmp_path: Path) -> None:
    """A typo'd key is reported with everything else wrong in the file, in one run; a file
    whose other problems are schema problems reports those alone, as before."""
    text = edit("    do: moderation.surge\n", "    do: moderation.surge\n    colour: red\n")
    text = edit("- id: surge", "- id: throttle", text)
    text = edit("${inputs.region}", "${inputs.nope}", text)
    messages = [p.message for p in problems_in(tmp_path, text)]
    assert [  # in the order of the file, whichever check found each
        "undefined input 'nope' in ${inputs.nope}",
        "duplicate step id 'throttle' (first at step 1)",
        "unknown key 'colour'",
    ] == messages
    wrong_type = edit("version: 1\n", "version: one\n", text)
    messages = [p.message for p in problems_in(tmp_path, wrong_type)]
    assert 2 == len(messages) and "unknown key 'colour'" == messages[-1], messages


@pytest.mark.parametrize(
    ("case", "old", "new", "line", "column", "fragment"),
    [
        ("unknown top-level key", "title: Test\n", "title: Test\ncolour: red\n", 4, 1, "'colour'"),
        (
            "unknown key in a step",
            "    do: moderation.surge\n",
            "    do: moderation.surge\n    colour: red\n",
            20,
            5,
            "'colour'",
        ),
        (
            "unknown lever",
            "do: moderation.surge",
            "do: moderation.nope",
            19,
            5,
            "unknown lever 'moderation.nope'",
        ),
        (
            "unknown lever in undo",
            "    with: {queue: fraud, extra_reviewers: 3}\n",
            "    with: {queue: fraud, extra_reviewers: 3}\n    undo:\n      do: bogus.lever\n",
            22,
            7,
            "unknown lever 'bogus.lever'",
        ),
        (
            "duplicate step id",
            "- id: surge",
            "- id: throttle",
            18,
            5,
            "duplicate step id 'throttle' (first at step 1)",
        ),
        (
            "undefined input",
            "${inputs.region}",
            "${inputs.nope}",
            15,
            7,
            "undefined input 'nope' in ${inputs.nope}",
        ),
        (
            "unknown reference namespace",
            "${inputs.region}",
            "${env.HOME}",
            15,
            7,
            "unknown reference namespace 'env'",
        ),
        (
            "unknown incident field",
            "${inputs.region}",
            "X-${incident.nope}",
            15,
            7,
            "unknown incident field 'nope'",
        ),
        (
            "argument out of range",
            "reach_multiplier: 0.5",
            "reach_multiplier: 3",
            17,
            7,
            "less than or equal to 1",
        ),
        (
            "argument of the wrong type in a flow mapping",
            "extra_reviewers: 3",
            "extra_reviewers: lots",
            20,
            26,
            "valid integer",
        ),
        (
            "wrong item type in a list argument",
            "categories: [fraud]",
            "categories: [fraud, {a: 1}]",
            16,
            27,
            "valid string",
        ),
        (
            "a default that breaks a lever argument",
            "    default: GB\n",
            "    default: G\n",
            15,
            7,
            "at least 2 characters",
        ),
        (
            "YAML syntax error",
            "    do: moderation.surge\n",
            "    do: [moderation.surge\n",
            20,
            9,
            "YAML: expected ',' or ']'",
        ),
        (
            "YAML duplicate key",
            "title: Test\n",
            "title: Test\ntitle: Other\n",
            4,
            1,
            'YAML: found duplicate key "title"',
        ),
        (
            "list input without items",
            "  flag:\n    type: number\n",
            "  flag:\n    type: list\n",
            10,
            5,
            "a list input needs `items:`",
        ),
        (
            "bad default for an input",
            "    type: number\n",
            "    type: number\n    default: many\n",
            11,
            5,
            "input 'flag': expected number, got \"many\"",
        ),
        (
            "default not among the choices",
            "    default: GB\n",
            "    default: GB\n    choices: [FR]\n",
            8,
            5,
            "input 'region': 'GB' is not one of ['FR']",
        ),
        (
            "bad duration in timeout",
            "    do: moderation.surge\n",
            "    do: moderation.surge\n    timeout: soon\n",
            20,
            5,
            "invalid duration 'soon'",
        ),
        (
            "bad duration in retry",
            "    do: moderation.surge\n",
            "    do: moderation.surge\n    retry: {initial_interval: 5 minutes}\n",
            20,
            13,
            "invalid duration '5 minutes'",
        ),
        (
            "step id that is not a slug",
            "- id: surge",
            "- id: Surge!",
            18,
            5,
            "id: \"Surge!\" is not a name: lowercase letters, digits, '_' and '-'",
        ),
        ("version that is not a number", "version: 1", "version: one", 2, 1, "valid integer"),
        ("version that is a boolean", "version: 1", "version: true", 2, 1, "integer, not true"),
        (
            "an expiry on a notice that has nothing to lapse",
            "    with: {queue: fraud, extra_reviewers: 3}\n",
            "    with: {queue: fraud, extra_reviewers: 3}\n"
            "  - id: tell\n"
            "    do: notify.webhook\n"
            "    with: {to: internal, message: opened}\n"
            "    expires_after: 1h\n",
            24,
            5,
            "`expires_after` would lapse nothing",
        ),
        (
            "a quorum written as text",
            "    with: {queue: fraud, extra_reviewers: 3}\n",
            "    with: {queue: fraud, extra_reviewers: 3}\n"
            '    approval: {roles: [commander, policy-lead], quorum: "2"}\n',
            21,
            49,
            'quorum: Input should be a valid integer, not "2"',
        ),
        (
            "a yes/no written as text",
            "    with: {queue: fraud, extra_reviewers: 3}\n",
            "    with: {queue: fraud, extra_reviewers: 3}\n"
            '    approval: {roles: [commander, policy-lead], every_role: "yes"}\n',
            21,
            49,
            'every_role: Input should be a valid boolean, not "yes"',
        ),
        (
            "unknown input type",
            "    type: number\n",
            "    type: float\n",
            10,
            5,
            "'string', 'number', 'integer', 'boolean' or 'list'",
        ),
        (
            "an approval escalating by default in a playbook without levels",
            "    do: moderation.surge\n",
            "    do: moderation.surge\n    approval: {roles: [commander]}\n",
            20,
            5,  # at `approval:`: the default is written nowhere
            "needs `levels:` to escalate through (it is the default: set skip, fail or proceed)",
        ),
        (
            "a measure that lapses as it is applied",
            "    do: moderation.surge\n",
            "    do: moderation.surge\n    expires_after: 0s\n",
            20,
            5,
            "expires_after must be longer than zero, not '0s'",
        ),
        (
            "an approval role no token can hold",
            "    do: moderation.surge\n",
            "    do: moderation.surge\n    approval: {roles: [Commander], on_timeout: skip}\n",
            20,
            24,
            "invalid role 'Commander'",
        ),
        (
            "a boolean where a number goes",
            "extra_reviewers: 3",
            "extra_reviewers: true",
            20,
            26,
            "valid integer, not true",
        ),
        (
            "a condition that can never be evaluated",
            "    do: moderation.surge\n",
            "    do: moderation.surge\n    when: \"inputs.flag > 'abc'\"\n",
            20,
            5,
            "condition cannot be evaluated: cannot compare number with string using > at column 13",
        ),
        (
            # The example inputs make the left side false: `and` alone would never look right.
            "a condition whose error hides behind and",
            "    do: moderation.surge\n",
            "    do: moderation.surge\n"
            "    when: \"inputs.region == 'XX' and inputs.flag > 'abc'\"\n",
            20,
            5,
            "condition cannot be evaluated: cannot compare number with string using > at column 39",
        ),
        (
            "a measure in on_stand_down",
            "    with: {queue: fraud, extra_reviewers: 3}\n",
            "    with: {queue: fraud, extra_reviewers: 3}\non_stand_down:\n  - id: close\n"
            "    do: moderation.surge\n    with: {queue: fraud, extra_reviewers: 1}\n",
            23,
            5,
            "would stay in force after the incident closes",
        ),
        (
            "an approval in on_stand_down",
            "    with: {queue: fraud, extra_reviewers: 3}\n",
            "    with: {queue: fraud, extra_reviewers: 3}\non_stand_down:\n  - id: close\n"
            "    do: notify.webhook\n    with: {to: regulator, message: over}\n"
            "    approval: {roles: [legal], on_timeout: skip}\n",
            25,
            5,
            "`approval` cannot apply there",
        ),
    ],
)
def test_each_problem_is_reported_at_its_line_and_column(
    tmp_path: Path, case: str, old: str, new: str, line: int, column: int, fragment: str
) -> None:
    """Every kind of problem points at the line and column where the offending text is written."""
    problem = only_problem(tmp_path, edit(old, new))
    assert (line, column) == (problem.line, problem.column), f"{case}: {problem}"
    assert fragment in problem.message, f"{case}: {problem}"


@pytest.mark.parametrize(
    ("spec", "said"),
    [
        ('{type: number, default: "0.5"}', 'expected number, got "0.5"'),
        ("{type: integer, default: 2.0}", "expected integer, got 2.0"),
        ('{type: boolean, default: "yes"}', 'expected boolean, got "yes"'),
        ("{type: string, default: 5}", "expected string, got 5"),
        ('{type: integer, choices: [1, "2"]}', 'expected integer, got "2"'),
    ],
)
def test_a_default_or_choice_is_of_the_inputs_type_as_written(
    tmp_path: Path, spec: str, said: str
) -> None:
    """Strict as a lever's arguments are: text in the file is text (a CLI value is read as the
    type; a default written as "0.5" was refused later, at a lever, blaming its argument)."""
    text = VALID.replace("  flag:\n    type: number\n", f"  flag: {spec}\n")
    assert [f"input 'flag': {said}"] == [p.message for p in problems_in(tmp_path, text)]


def test_a_key_is_known_only_by_its_written_name(tmp_path: Path) -> None:
    """`with_` is the models' name for `with`: the JSON Schema for editors refuses it, and so
    does validation now (it used to accept it)."""
    problems = problems_in(tmp_path, edit("    with: {queue", "    with_: {queue"))
    assert [(p.line, p.column, p.message) for p in problems if p.line == 20] == [
        (20, 5, "unknown key 'with_'")
    ]


def test_in_the_library_a_playbook_file_is_named_after_its_playbook(tmp_path: Path) -> None:
    """The library finds a playbook by its file's name: one named otherwise could be listed and
    documented under a name no trigger finds (and two files could declare one name). Outside the
    library a file is triggered by its path, whatever its name."""
    misnamed = tmp_path / "some-file.yaml"
    misnamed.write_text(VALID)
    assert [
        f"{misnamed}:1:1: playbook 'test-playbook' is in some-file.yaml: in the library a "
        "playbook's file is named after it (test-playbook.yaml), which is how a trigger, the "
        "API and the console find it by name"
    ] == [str(p) for p in validate_file(misnamed, library_dir=tmp_path)]
    assert [] == validate_file(misnamed, library_dir=tmp_path / "elsewhere")


def test_a_long_value_is_quoted_cut_short(tmp_path: Path) -> None:
    """A problem quotes what was given, but not a whole pasted page."""
    problem = only_problem(tmp_path, VALID.replace("version: 1", f"version: [{'7, ' * 500}7]"))
    assert problem.message.startswith("version: Input should be a valid integer, not [7, 7, ")
    assert problem.message.endswith("…") and len(problem.message) < 120, problem.message


def test_a_list_inputs_lone_default_is_named_as_a_list(tmp_path: Path) -> None:
    text = VALID.replace(
        "    type: string\n    default: GB", "    type: list\n    items: string\n    default: 5"
    )
    messages = [p.message for p in problems_in(tmp_path, text)]
    assert "input 'region': the default must be a list of string, not 5" in messages, messages


def test_a_check_of_ours_speaks_in_its_own_words(tmp_path: Path) -> None:
    """A duration our validator refuses reads as our message, not pydantic's "Value error, ...",
    after the key it is about (as every problem of the document's shape is)."""
    problem = only_problem(
        tmp_path,
        edit("    do: moderation.surge\n", "    do: moderation.surge\n    timeout: soon\n"),
    )
    assert problem.message.startswith("timeout: invalid duration 'soon'"), problem


def test_a_misspelt_lever_argument_is_unknown_and_the_real_one_missing(tmp_path: Path) -> None:
    """A wrong argument name is reported where it is written, and the missing one at `with:`."""
    problems = problems_in(tmp_path, edit("reach_multiplier: 0.5", "reach_multipler: 0.5"))
    assert [
        (14, 5, "missing argument 'reach_multiplier'"),
        (17, 7, "unknown argument 'reach_multipler'"),
    ] == [(p.line, p.column, p.message) for p in problems]


def test_an_undefined_input_deep_inside_an_argument_is_located(tmp_path: Path) -> None:
    """A reference nested in a mapping argument is reported at its own key."""
    text = VALID + (
        "  - id: tell\n"  # 21
        "    do: notify.webhook\n"  # 22
        "    with:\n"  # 23
        "      to: regulator\n"  # 24
        "      message: hello\n"  # 25
        "      data:\n"  # 26
        "        where: ${inputs.nope}\n"  # 27
    )
    problem = only_problem(tmp_path, text)
    assert (27, 9, "undefined input 'nope' in ${inputs.nope}") == (
        problem.line,
        problem.column,
        problem.message,
    )


def test_an_undefined_input_does_not_hide_the_other_arguments_problems(tmp_path: Path) -> None:
    """A typo in one reference, an out-of-range value in another argument of the same step: both
    are reported, each at its own place and naming its argument."""
    text = VALID.replace("region: ${inputs.region}", "region: ${inputs.regoin}").replace(
        "reach_multiplier: 0.5", "reach_multiplier: 1.5"
    )
    problems = problems_in(tmp_path, text)
    assert [
        (15, 7, "undefined input 'regoin' in ${inputs.regoin}"),
        (17, 7, "reach_multiplier: Input should be less than or equal to 1"),
    ] == [(p.line, p.column, p.message) for p in problems]


@pytest.mark.parametrize(
    "written",
    ["${inputs.region", "${inputs}", "${inputs.region.code}", "${inputs.reg-ion}", "GB-${inputs"],
)
def test_a_malformed_reference_is_a_problem_not_a_literal(tmp_path: Path, written: str) -> None:
    """A `${` that does not make a well-formed reference would reach the platform as it stands
    (a region literally named `${inputs.region`): it is reported at its argument."""
    text = VALID.replace("region: ${inputs.region}", f'region: "{written}"')
    problem = only_problem(tmp_path, text)
    expected = f"malformed reference {written[written.index('$') :]!r}"
    assert (15, 7) == (problem.line, problem.column)
    assert problem.message.startswith(expected), problem.message


def test_a_well_formed_reference_with_spaces_inside_braces_is_no_problem(tmp_path: Path) -> None:
    text = VALID.replace("region: ${inputs.region}", 'region: "${ inputs.region }"')
    assert [] == problems_in(tmp_path, text)


def test_a_version_or_level_the_audit_store_cannot_hold_is_a_problem(tmp_path: Path) -> None:
    """The store's columns bound them: beyond, the incident's levers would be pulled and its
    every audit write refused. A date-like version is fine."""
    text = VALID.replace("version: 1", "version: 99999999999999999999999") + (
        f"levels: [{'x' * 65}, high]\n"
    )
    assert [
        (2, 1, "version is at most 9223372036854775807"),
        (21, 10, "a level name is 1 to 64 characters, not 65"),
    ] == [(p.line, p.column, p.message) for p in problems_in(tmp_path, text)]
    assert [] == problems_in(tmp_path, VALID.replace("version: 1", "version: 202612011200"))


def test_problems_in_several_steps_are_all_reported(tmp_path: Path) -> None:
    """Problems in different steps are each reported, in document order."""
    text = edit(
        "do: moderation.surge", "do: moderation.nope", edit("${inputs.region}", "${inputs.nope}")
    )
    assert [15, 19] == [p.line for p in problems_in(tmp_path, text)]


@pytest.mark.parametrize("body", ["- a\n- b\n", "just a string\n", ""])
def test_a_document_that_is_not_a_mapping_is_one_problem_at_the_start(
    tmp_path: Path, body: str
) -> None:
    """A list, a scalar or an empty file is reported once at 1:1 as not a mapping."""
    problem = only_problem(tmp_path, body)
    assert (1, 1) == (problem.line, problem.column)
    assert "a playbook is a mapping" in problem.message


def test_missing_steps_is_reported(tmp_path: Path) -> None:
    """A playbook without `steps:` names the missing field."""
    problem = only_problem(tmp_path, VALID.split("steps:")[0])
    assert (1, 1) == (problem.line, problem.column)
    assert "'steps'" in problem.message


def test_empty_steps_is_reported_at_the_key(tmp_path: Path) -> None:
    """`steps: []` is reported on the `steps:` line."""
    problem = only_problem(tmp_path, VALID.split("steps:")[0] + "steps: []\n")
    assert (11, 1) == (problem.line, problem.column)
    assert "at least 1 item" in problem.message


def test_an_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    """A missing file is reported as a problem at 1:1."""
    problems = validate_file(tmp_path / "absent.yaml")
    assert [(1, 1)] == [(p.line, p.column) for p in problems]
    assert "cannot read file" in problems[0].message


def test_load_playbook_raises_with_every_problem(tmp_path: Path) -> None:
    """Loading an invalid file raises PlaybookInvalid carrying all its problems."""
    path = tmp_path / "bad.yaml"
    path.write_text(
        edit(
            "do: moderation.surge",
            "do: moderation.nope",
            edit("${inputs.region}", "${inputs.nope}"),
        )
    )
    with pytest.raises(PlaybookInvalid) as raised:
        load_playbook(path)
    assert 2 == len(raised.value.problems)
    assert str(raised.value.problems[0]) == str(raised.value)


def test_find_playbook_by_name_and_by_path(tmp_path: Path) -> None:
    """A name is looked up in the library; a path must exist; anything else is not found."""
    (tmp_path / "alpha.yaml").write_text(VALID)
    (tmp_path / "notes.txt").write_text("not a playbook")
    assert tmp_path / "alpha.yaml" == find_playbook("alpha", tmp_path)
    assert tmp_path / "alpha.yaml" == find_playbook(str(tmp_path / "alpha.yaml"), REPO)
    with pytest.raises(PlaybookNotFound, match="known: alpha"):
        find_playbook("notes", tmp_path)
    with pytest.raises(PlaybookNotFound, match="file not found"):
        find_playbook(str(tmp_path / "beta.yaml"), tmp_path)


def test_a_name_finds_only_a_playbook_file(tmp_path: Path) -> None:
    """Either suffix; never the library's own files, a scenario or a directory."""
    (tmp_path / "alpha.yaml").write_text(VALID)
    (tmp_path / "gamma.yml").write_text(VALID)
    (tmp_path / "templates.yaml").write_text("{}")
    (tmp_path / "alpha.scenario.yaml").write_text("{}")
    (tmp_path / "delta.yaml").mkdir()
    assert tmp_path / "gamma.yml" == find_playbook("gamma", tmp_path)
    for name in ("templates", "alpha.scenario", "delta"):
        with pytest.raises(PlaybookNotFound, match="known: alpha, gamma\\)"):
            find_playbook(name, tmp_path)


# --- inputs -----------------------------------------------------------------------------------
INPUTS_PLAYBOOK = """\
playbook: inputs
version: 1
title: Inputs
description: Every input type.
inputs:
  tags: {type: list, items: string}
  counts: {type: list, items: integer, default: [1]}
  ratio: {type: number, default: 0.5}
  reviewers: {type: integer, default: 2}
  loud: {type: boolean, default: false}
  region: {type: string}
steps:
  - id: surge
    do: moderation.surge
    with: {queue: q, extra_reviewers: "${inputs.reviewers}"}
"""


@pytest.fixture
def inputs_playbook(tmp_path: Path) -> Playbook:
    path = tmp_path / "inputs.yaml"
    path.write_text(INPUTS_PLAYBOOK)
    return load_playbook(path)


def test_resolve_inputs_applies_defaults(inputs_playbook: Playbook) -> None:
    """Inputs not given take their defaults, already of the declared type."""
    resolved = resolve_inputs(inputs_playbook, {"tags": "a", "region": "GB"})
    assert {
        "tags": ["a"],
        "counts": [1],
        "ratio": 0.5,
        "reviewers": 2,
        "loud": False,
        "region": "GB",
    } == resolved


@pytest.mark.parametrize(
    ("name", "given", "expected"),
    [
        ("tags", "a,b", ["a", "b"]),
        ("tags", " a , b ,", ["a", "b"]),
        ("tags", '["a", "b,c"]', ["a", "b,c"]),
        ("tags", "[a, b]", ["a", "b"]),
        ("tags", ["x"], ["x"]),
        # Text is trimmed, alone or in a JSON list: " GB " is a slip, no other region.
        ("region", " GB ", "GB"),
        ("tags", [" a", "b "], ["a", "b"]),
        ("counts", "1,2", [1, 2]),
        ("counts", "[3, 4.0]", [3, 4]),
        ("ratio", "0.25", 0.25),
        ("ratio", 1, 1.0),
        ("reviewers", "7", 7),
        ("reviewers", "7.0", 7),
        ("loud", "yes", True),
        ("loud", "TRUE", True),
        ("loud", "0", False),
        ("loud", False, False),
    ],
)
def test_resolve_inputs_coerces_strings_to_the_declared_type(
    inputs_playbook: Playbook, name: str, given: object, expected: object
) -> None:
    """A CLI string (or JSON value) becomes the input's declared type."""
    given_inputs = {"tags": "a", "region": "GB", name: given}
    assert expected == resolve_inputs(inputs_playbook, given_inputs)[name]


@pytest.mark.parametrize(
    ("name", "given", "message"),
    [
        ("ratio", "lots", "input 'ratio': expected number, got 'lots'"),
        ("ratio", True, "input 'ratio': expected number, got true"),
        ("reviewers", "2.5", "input 'reviewers': expected integer, got '2.5'"),
        ("loud", "maybe", "input 'loud': expected boolean, got 'maybe'"),
        ("counts", "1,x", "input 'counts': item 2: expected integer, got 'x'"),
        ("tags", "[a, b", "input 'tags': '[a, b' opens a list with '[' but never closes it"),
        ("region", {"a": 1}, "input 'region': expected string"),
        # Only text is read as the type: a JSON number or boolean is no region name.
        ("region", 44, "input 'region': expected string, got 44"),
        ("region", True, "input 'region': expected string, got true"),
        ("tags", [1, "b"], "input 'tags': item 1: expected string, got 1"),
        # Blank text names nothing, in a JSON list or a CLI one (`a,,b` is a slip, not two items;
        # a trailing comma only ends the list).
        ("region", "  ", "input 'region' is blank"),
        ("tags", ["a", " "], "input 'tags': item 2 is blank"),
        ("tags", "a,,b", "input 'tags': item 2 is blank"),
        ("tags", ",a", "input 'tags': item 1 is blank"),
        ("tags", "[a, , b]", "input 'tags': item 2 is blank"),
        ("tags", '["a", ""]', "input 'tags': item 2 is blank"),
        # Not finite: no threshold or multiplier is.
        ("ratio", "nan", "input 'ratio': expected number, got 'nan'"),
        ("ratio", "-inf", "input 'ratio': expected number, got '-inf'"),
        ("ratio", float("inf"), "input 'ratio': expected number, got Infinity"),
        ("counts", "[1, NaN]", "input 'counts': item 2: expected integer, got NaN"),
    ],
)
def test_resolve_inputs_rejects_a_value_of_the_wrong_type(
    inputs_playbook: Playbook, name: str, given: object, message: str
) -> None:
    """A value that cannot be the declared type is an InputError naming the input."""
    with pytest.raises(InputError) as raised:
        resolve_inputs(inputs_playbook, {"tags": "a", "region": "GB", name: given})
    assert str(raised.value).startswith(message), str(raised.value)


def test_resolve_inputs_rejects_an_unknown_input(inputs_playbook: Playbook) -> None:
    """An input the playbook does not declare is refused, listing the known ones."""
    expected = r"unknown input 'colour' for playbook inputs \(inputs: counts, loud"
    with pytest.raises(InputError, match=expected):
        resolve_inputs(inputs_playbook, {"tags": "a", "region": "GB", "colour": "red"})


def test_resolve_inputs_requires_inputs_without_default(inputs_playbook: Playbook) -> None:
    """An input without a default must be given."""
    with pytest.raises(InputError, match="input 'region' is required"):
        resolve_inputs(inputs_playbook, {"tags": "a"})


@pytest.mark.parametrize("empty", [[], "", " , ", "[]"])
def test_a_required_list_input_given_empty_is_refused(
    inputs_playbook: Playbook, empty: object
) -> None:
    """An empty list for a list input is not "given" (it would widen a measure it narrows, e.g.
    keywords: empty = every post), with a default or without."""
    with pytest.raises(InputError, match="input 'tags' is required: give at least one item"):
        resolve_inputs(inputs_playbook, {"tags": empty, "region": "GB"})
    with pytest.raises(InputError, match="input 'counts' is required: give at least one item"):
        resolve_inputs(inputs_playbook, {"tags": "a", "counts": empty, "region": "GB"})


def test_prepare_incident_rejects_an_input_that_breaks_a_lever_argument() -> None:
    """An input of the right type but out of the lever's range is refused before anything runs."""
    playbook = load_playbook(SHIPPED)
    with pytest.raises(InputError) as raised:
        prepare_incident(playbook, {"reach_multiplier": "3"}, actor="alice")
    assert str(raised.value).startswith(
        "step 'throttle-recommender' with.reach_multiplier (from ${inputs.reach_multiplier}): "
    ), str(raised.value)
    with pytest.raises(
        InputError, match=r"with\.region \(from \$\{inputs\.region\}\): .*at least 2"
    ):
        prepare_incident(playbook, {"region": "G"}, actor="alice")


WEBHOOK_TO = """\
playbook: webhook-to
version: 1
title: Webhook to
description: Tells a stakeholder named by an input.
inputs:
  who: {type: string, default: regulator}
steps:
  - id: tell
    do: notify.webhook
    with: {to: TO, message: hello}
  - id: tell-input
    do: notify.webhook
    with: {to: "${inputs.who}", message: hello}
"""


@pytest.mark.parametrize("to", ["../throttle", "a/b", "x?y=1", "x#y", "%2e%2e", ".."])
def test_a_stakeholder_that_would_leave_its_webhook_path_is_refused(
    tmp_path: Path, to: str
) -> None:
    """The stakeholder is the last part of the webhook's path: a name with '/', '?', '#', '%' or
    a dot segment would post the message somewhere else on the platform. Refused where it is
    written, and as a trigger input."""
    path = tmp_path / "webhook-to.yaml"
    path.write_text(WEBHOOK_TO.replace("TO", json.dumps(to)))
    (problem,) = validate_file(path)
    assert str(problem) == (
        f"{path}:10:12: to: invalid stakeholder {to!r}: a stakeholder name is a letter or "
        "digit, then letters, digits and '_.-', up to 100 characters"
    )
    path.write_text(WEBHOOK_TO.replace("TO", "regulator"))
    playbook = load_playbook(path)
    with pytest.raises(InputError, match=r"step 'tell-input' with\.to \(from \$\{inputs\.who\}\)"):
        prepare_incident(playbook, {"who": to}, actor="alice")
    assert prepare_incident(playbook, {"who": "law-enforcement"}, actor="alice")


UNDO_BY_INPUT = """\
playbook: undo-by-input
version: 1
title: Undo by input
description: The undo's threshold is an input.
inputs:
  back_to: {type: number, default: 0.9}
steps:
  - id: fixed
    do: moderation.surge
    with: {queue: fraud, extra_reviewers: 5}
  - id: raise
    do: detection.set_threshold
    with: {classifier: fraud, threshold: 0.3}
    undo:
      do: detection.set_threshold
      with: {classifier: fraud, threshold: "${inputs.back_to}"}
"""


def test_only_calls_that_refer_to_the_trigger_are_checked_again_at_trigger(
    tmp_path: Path,
) -> None:
    """Arguments without references were checked with the playbook; an undo's argument taken
    from an input is checked at trigger, and named as the undo's."""
    path = tmp_path / "undo-by-input.yaml"
    path.write_text(UNDO_BY_INPUT)
    playbook = load_playbook(path)
    assert [("raise", "detection.set_threshold", "undo.with")] == [
        (step_id, lever, where) for step_id, lever, _, where in playbook.trigger_checked_calls
    ]
    with pytest.raises(
        InputError, match=r"^step 'raise' undo\.with\.threshold \(from \$\{inputs\.back_to\}\): "
    ):
        prepare_incident(playbook, {"back_to": "3"}, actor="alice")
    assert 0.5 == prepare_incident(playbook, {"back_to": "0.5"}, actor="alice").inputs["back_to"]


def test_an_item_of_a_list_input_that_breaks_an_argument_names_the_input(tmp_path: Path) -> None:
    """The error's path goes on inside the substituted list; it still names the input."""
    path = tmp_path / "hash-types.yaml"
    path.write_text(
        "playbook: hash-types\nversion: 1\ntitle: T\ndescription: D.\n"
        "inputs:\n  types: {type: list, items: string, default: [pdq]}\n"
        "steps:\n  - id: block\n    do: hashes.block\n"
        '    with: {list_id: l, source: s, hash_types: "${inputs.types}"}\n'
    )
    with pytest.raises(
        InputError, match=r"^step 'block' with\.hash_types\.1 \(from \$\{inputs\.types\}\): "
    ):
        prepare_incident(load_playbook(path), {"types": "pdq,sha1"}, actor="alice")


def test_prepare_incident_resolves_inputs_and_hashes_the_playbook(
    inputs_playbook: Playbook,
) -> None:
    """A good trigger gets typed inputs, the given id and the playbook's content hash."""
    incident = prepare_incident(
        inputs_playbook,
        {"tags": "a,b", "region": "FR", "reviewers": "9"},
        actor="alice",
        incident_id="INC-TEST-1",
    )
    assert "INC-TEST-1" == incident.incident_id
    assert ["a", "b"] == incident.inputs["tags"]
    assert 9 == incident.inputs["reviewers"]
    assert "alice" == incident.triggered_by
    assert inputs_playbook.content_hash == incident.playbook_hash


# --- content hash -----------------------------------------------------------------------------
REORDERED = """\
version: 1
steps:
  - with:
      reach_multiplier: 0.5
      categories: [fraud]
      region: ${inputs.region}
    do: recommender.throttle
    id: throttle
  - do: moderation.surge
    id: surge
    with: {extra_reviewers: 3, queue: fraud}
description: For tests.
inputs:
  flag:
    type: number
  region:
    default: GB
    type: string
title: Test
playbook: test-playbook
"""


def load_text(tmp_path: Path, name: str, text: str) -> Playbook:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    return load_playbook(path)


def test_content_hash_ignores_key_order(tmp_path: Path) -> None:
    """The same playbook written with keys in another order has the same hash."""
    first = load_text(tmp_path, "a", VALID)
    second = load_text(tmp_path, "b", REORDERED)
    assert first.content_hash == second.content_hash
    assert first.content_hash.startswith("sha256:")
    assert 7 + 64 == len(first.content_hash)


def test_content_hash_changes_with_content(tmp_path: Path) -> None:
    """Changing any value (an argument, a description) changes the hash."""
    base = load_text(tmp_path, "a", VALID).content_hash
    argument = load_text(
        tmp_path, "b", edit("extra_reviewers: 3", "extra_reviewers: 4")
    ).content_hash
    description = load_text(tmp_path, "c", edit("For tests.", "For other tests.")).content_hash
    assert len({base, argument, description}) == 3


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ("playbook: x\nversion: \x19\n", "2:10: YAML: unacceptable character '\\x19'"),
        ("[" * 5000, "1:1: YAML: nested too deeply"),
        (
            "playbook: x\nversion: 1" + "0" * 5000 + "\n",
            "2:10: YAML: a number of 5001 digits is too long",
        ),
    ],
)
def test_text_the_yaml_reader_refuses_is_a_located_problem(
    tmp_path: Path, text: str, where: str
) -> None:
    """A control character, absurd nesting or a number Python will not read is a problem of the
    file, not a crash."""
    path = tmp_path / "odd.yaml"
    path.write_text(text)
    assert [f"{path}:{where}"] == [str(p) for p in validate_file(path)]


def test_a_file_that_is_not_utf8_is_a_located_problem(tmp_path: Path) -> None:
    """Bytes that are not UTF-8 are one problem at their line and column, not a crash."""
    path = tmp_path / "b.yaml"
    path.write_bytes(b"\xff\xfe")
    assert [f"{path}:1:1: not UTF-8 text (byte 0xff at offset 0)"] == [
        str(p) for p in validate_file(path)
    ]
    path.write_bytes(VALID.replace("title: Test", "title: T\xe9st").encode("latin-1"))
    assert [f"{path}:3:9: not UTF-8 text (byte 0xe9 at offset 43)"] == [
        str(p) for p in validate_file(path)
    ]
    with pytest.raises(PlaybookInvalid, match="not UTF-8 text"):
        load_playbook(path)


# Nine levels of nine aliases: a few hundred bytes that expand to 9**9 strings when walked.
ALIAS_BOMB = "a: &a [x,x,x,x,x,x,x,x,x]\n" + "".join(
    f"{name}: &{name} [{', '.join([f'*{previous}'] * 9)}]\n"
    for previous, name in zip("abcdefgh", "bcdefghi", strict=True)
)


def test_aliases_are_refused_where_first_used(tmp_path: Path) -> None:
    """An alias bomb is refused at once, at its first alias, instead of expanding for minutes;
    so is an ordinary alias or merge key: no playbook needs one."""
    path = tmp_path / "bomb.yaml"
    path.write_text(ALIAS_BOMB)
    assert [f"{path}:2:8: YAML: aliases (*a) are not allowed"] == [
        str(p) for p in validate_file(path)
    ]
    path.write_text(
        edit("  flag:\n    type: number\n", "  flag: *region\n").replace(
            "  region:\n", "  region: &region\n"
        )
    )
    assert [f"{path}:9:9: YAML: aliases (*region) are not allowed"] == [
        str(p) for p in validate_file(path)
    ]


@pytest.mark.parametrize(
    ("case", "old", "new", "line", "column", "fragment"),
    [
        (
            # It passed once, then failed every workflow task of every incident at its call.
            "a retry that backs off to less than it started with",
            "    with: {queue: fraud, extra_reviewers: 3}\n",
            "    with: {queue: fraud, extra_reviewers: 3}\n"
            "    retry: {initial_interval: 2s, max_interval: 1s}\n",
            21,
            35,
            "max_interval 1s is shorter than initial_interval 2s",
        ),
        (
            "an undo that pulls a measure nothing takes back",
            "    with: {queue: fraud, extra_reviewers: 3}\n",
            "    with: {queue: fraud, extra_reviewers: 3}\n    undo:\n"
            "      do: moderation.surge\n      with: {queue: general, extra_reviewers: 7}\n",
            22,
            7,
            "undo: moderation.surge would change settings the step did not",
        ),
        (
            "choices of another type than the input's",
            "    default: GB\n",
            "    default: GB\n    choices: [GB, 44]\n",
            9,
            19,
            "input 'region': expected string, got 44",
        ),
        (
            "no choices at all",
            "    type: number\n",
            "    type: number\n    choices: []\n",
            11,
            5,
            "no choices",
        ),
    ],
)
def test_settings_that_could_never_work_are_refused(
    tmp_path: Path, case: str, old: str, new: str, line: int, column: int, fragment: str
) -> None:
    """Each of these validated once and then broke every incident, or left a measure behind."""
    problem = only_problem(tmp_path, edit(old, new))
    assert (line, column) == (problem.line, problem.column), (case, str(problem))
    assert fragment in problem.message, (case, problem.message)


def test_a_list_input_given_empty_is_refused_even_with_a_default(tmp_path: Path) -> None:
    """An empty list widens a measure it narrows ("no keywords" = every post): refused whether
    or not the input has a default, which is what leaving it out gives."""
    text = edit(
        "    type: number\n",
        "    type: number\n  tags:\n    type: list\n    items: string\n    default: [a]\n",
    )
    path = tmp_path / "test-playbook.yaml"
    path.write_text(text)
    playbook = load_playbook(path)
    with pytest.raises(
        InputError, match=r"give at least one item \(or leave it out for its default\)"
    ):
        resolve_inputs(playbook, {"flag": 1, "tags": []})
    assert ["a"] == resolve_inputs(playbook, {"flag": 1})["tags"]


def test_a_required_text_input_may_be_compared_with_the_level(tmp_path: Path) -> None:
    """`level >= inputs.floor` with `floor` required: a trigger gives a level there, so the check
    must not refuse it for its own example text; a real type error is still found."""
    text = edit("steps:\n", "levels: [low, mid, high]\nsteps:\n")
    text = edit(
        "  flag:\n    type: number\n",
        "  flag:\n    type: number\n  floor:\n    type: string\n",
        text,
    )
    fine = edit(
        "    do: moderation.surge\n",
        '    do: moderation.surge\n    when: "level >= inputs.floor"\n',
        text,
    )
    assert [] == problems_in(tmp_path, fine)
    wrong = edit(
        "    do: moderation.surge\n",
        '    do: moderation.surge\n    when: "inputs.floor > 3"\n',
        text,
    )
    assert ["condition cannot be evaluated"] == [
        p.message.split(":")[0] for p in problems_in(tmp_path, wrong)
    ]


def test_a_playbook_too_large_to_trigger_is_refused_at_validation(tmp_path: Path) -> None:
    """Every incident carries its playbook in its workflow input, which Temporal refuses over
    2 MB: such a file validated and then failed every trigger. At most 1 MiB of snapshot."""
    message = "x" * 900

    def steps(count: int) -> str:
        return "".join(
            f"  - id: tell-{n}\n    do: notify.webhook\n"
            f"    with: {{to: internal, message: {message}}}\n"
            for n in range(count)
        )

    header = "playbook: big\nversion: 1\ntitle: Big\ndescription: Many notices.\nsteps:\n"
    path = tmp_path / "big.yaml"
    path.write_text(header + steps(1000))
    problems = [str(p) for p in validate_file(path)]
    assert 1 == len(problems), problems
    assert problems[0].startswith(f"{path}:1:1: the playbook is "), problems
    assert problems[0].endswith(
        "KiB as every incident carries it, at most 1024 KiB: Temporal would refuse its trigger"
    )
    path.write_text(header + steps(800))  # about 900 KiB: accepted
    assert 800 == len(load_playbook(path).steps)


@pytest.mark.parametrize("name", ["flag-threshold", "2nd", "région"])
def test_an_input_no_reference_could_name_is_refused(tmp_path: Path, name: str) -> None:
    """`${inputs.flag-threshold}` is no reference (it stays literal text), so an input of that
    name could be given at every trigger and used nowhere."""
    path = tmp_path / "p.yaml"
    path.write_text(VALID.replace("  flag:\n", f"  {name}:\n"))
    assert [
        f"{path}:9:3: input name {name!r} could never be referred to as ${{inputs.{name}}}: "
        "letters, digits and '_', not starting with a digit"
    ] == [str(p) for p in validate_file(path)]


def test_a_reference_in_a_key_is_refused(tmp_path: Path) -> None:
    """Only values are substituted: a `${...}` key went to the platform as written."""
    path = tmp_path / "p.yaml"
    path.write_text(
        VALID.replace(
            "    with: {queue: fraud, extra_reviewers: 3}\n",
            "    with: {queue: fraud, extra_reviewers: 3}\n"
            "  - id: tell\n"
            "    do: notify.webhook\n"
            "    with: {to: internal, message: hi, data: {'${inputs.region}': 1}}\n",
        )
    )
    problems = [str(p) for p in validate_file(path)]
    assert 1 == len(problems), problems
    assert problems[0].startswith(f"{path}:23:"), problems
    assert problems[0].endswith(
        "a reference in a key ('${inputs.region}') is never substituted: only values are"
    )

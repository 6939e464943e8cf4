"""`crisis playbook simulate`: run a playbook for real, on the time-skipping Temporal server and an
in-process sandbox, with scripted commander actions at given offsets. Days pass in seconds.

A scenario may also carry `checks:`, named assertions at offsets, interleaved with the actions in
time order: what the platform sandbox must (or must no longer) have in force, who must have been
told what, and the incident's and its steps' states. Two checks are added at the end of every
run: every lever is back as it was before the trigger (once the incident is closed), and the
audit trail verifies (hash chain, seals, and a replay of the history).
"""

from __future__ import annotations

import asyncio
import json
import math
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal, get_args

import httpx
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from core.validation import first_problem
from engine.errors import HistoryError, IncidentError, ScenarioError
from engine.incidents import ACTIONS, Incidents
from engine.integrity import check_store, check_with_replay
from engine.library import Library, library_for
from engine.playbook_files import load_playbook
from engine.temporal import installed_binary, quiet_runtime, running_worker
from engine.verification import IncidentHistory, export_history
from engine.yaml_files import YamlFileError, load_yaml, locate, plain
from sandbox.app import create_app
from sandbox.server import serving_in_thread
from store.audit_store import AuditStore
from store.seals import Signer
from workflows.durations import format_duration, parse_duration
from workflows.incident import IncidentStatus, StepState
from workflows.levers import is_notification
from workflows.playbook import Playbook, Step, walk_steps

ActionName = Literal[
    "approve", "reject", "escalate", "de-escalate", "renew", "confirm-review", "note", "stand-down"
]
Severity = Literal["info", "warning", "critical"]

# Parts of the sandbox state that record traffic rather than platform settings: they are not
# compared when checking that every lever was restored.
TRAFFIC = frozenset({"applications", "stats", "faults", "notifications", "hash_lists"})
# Step states that mean a lever call is under way: a check waits for them to pass.
TRANSIENT = frozenset({"running", "undoing"})
SETTLE_TIMEOUT_S = 10.0
STEP_STATES: tuple[str, ...] = get_args(StepState)
RESTORED = "every lever restored"
VERIFIED = "audit trail verifies"


def _offset(value: str) -> str:
    parse_duration(value)
    return value


class ScriptedAction(BaseModel):
    """One commander action at an offset from the trigger, e.g. approve at +5m."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    at: str
    do: ActionName
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    actor: str = "commander"
    label: str = ""
    # What the engine must answer; given, a different answer fails the run like a check.
    expect: Literal["done", "refused"] | None = None

    _check = field_validator("at")(_offset)

    @property
    def offset(self) -> timedelta:
        return parse_duration(self.at)

    def describe(self) -> str:
        return f"{self.do} by {self.actor} at +{self.at}"

    def request(self) -> BaseModel:
        """The Update's request this action sends; ScenarioError if its fields are wrong."""
        try:
            return ACTIONS[self.do][1].model_validate({"actor": self.actor, **self.with_})
        except ValidationError as error:
            problem = first_problem(error.errors())
            raise ScenarioError(f"{self.do} at {self.at}: {problem}") from None


class Notified(BaseModel):
    """A message a stakeholder received: to whom, and optionally its template, severity, and a
    text its subject or body contains."""

    model_config = ConfigDict(extra="forbid")

    to: str = Field(min_length=1)
    template: str | None = None
    severity: Severity | None = None
    contains: str | None = None

    def matches(self, message: dict[str, Any]) -> bool:
        body = message.get("body") if isinstance(message.get("body"), dict) else {}
        text = f"{body.get('subject', '')}\n{body.get('message', '')}"
        return (
            message.get("stakeholder") == self.to
            and (self.template is None or body.get("template") == self.template)
            and (self.severity is None or body.get("severity") == self.severity)
            and (self.contains is None or self.contains in text)
        )

    def describe(self) -> str:
        parts = [self.to, *(p for p in (self.template, self.severity) if p)]
        text = "/".join(parts)
        return f"{text} containing {self.contains!r}" if self.contains else text


class ScenarioCheck(BaseModel):
    """A named assertion at an offset: each given part must hold at that simulated moment.

    `sandbox` maps dotted paths into the sandbox's `GET /state` to the value expected there (a
    mapping is a subset: the keys it names must match); `not_in_force` lists paths that must be
    absent; `notified`/`not_notified` are messages stakeholders must have (or must not have)
    received so far; `status` is a subset of the incident's status; `steps` maps step ids to
    their state (or to a subset of their record)."""

    model_config = ConfigDict(extra="forbid")

    at: str
    name: str = Field(min_length=1)
    sandbox: dict[str, Any] = Field(default_factory=dict)
    not_in_force: list[str] = Field(default_factory=list)
    notified: list[Notified] = Field(default_factory=list)
    not_notified: list[Notified] = Field(default_factory=list)
    status: dict[str, Any] = Field(default_factory=dict)
    steps: dict[str, str | dict[str, Any]] = Field(default_factory=dict)

    _check = field_validator("at")(_offset)

    @field_validator("steps")
    @classmethod
    def _step_states(cls, value: dict[str, str | dict[str, Any]]) -> Any:
        for step_id, expected in value.items():
            if isinstance(expected, str) and expected not in STEP_STATES:
                raise ValueError(
                    f"{step_id}: unknown step state {expected!r} (states: {', '.join(STEP_STATES)})"
                )
        return value

    @field_validator("sandbox", "not_in_force")
    @classmethod
    def _dotted_paths(cls, value: Any) -> Any:
        for path in value:
            if not path or any(not part for part in str(path).split(".")):
                raise ValueError(f"{path!r} is not a dotted path (e.g. detection.fraud)")
        return value

    @model_validator(mode="after")
    def _asserts_something(self) -> ScenarioCheck:
        if not (
            self.sandbox
            or self.not_in_force
            or self.notified
            or self.not_notified
            or self.status
            or self.steps
        ):
            raise ValueError(
                "a check needs at least one of sandbox, not_in_force, notified, not_notified, "
                "status, steps"
            )
        return self

    @property
    def offset(self) -> timedelta:
        return parse_duration(self.at)


class Scenario(BaseModel):
    """A scripted crisis: how it is declared, what the commanders do and what must hold, when."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict)
    level: str | None = None
    actor: str = "commander"
    actions: list[ScriptedAction] = Field(default_factory=list)
    checks: list[ScenarioCheck] = Field(default_factory=list)
    # How long to let the incident run after the last action or check (expiries, missed reviews).
    run_for: str | None = None
    # Where the scenario was read from, for error messages.
    _source: str = PrivateAttr(default="scenario")

    @property
    def source(self) -> str:
        return self._source


def load_scenario(path: Path) -> Scenario:
    try:
        _, document = load_yaml(path)
    except YamlFileError as error:
        raise ScenarioError(str(error)) from None
    data = plain(document) or {}
    if isinstance(data, dict) and "steps" in data and "actions" not in data:
        raise ScenarioError(
            f"{path}:1:1: this is a playbook, not a scenario (a scenario has actions: and "
            "checks:; see playbooks/*.scenario.yaml)"
        )
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        line, column = locate(document, first["loc"]) if document else (1, 1)
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["type"] == "extra_forbidden":
            message = "unknown key"
        raise ScenarioError(f"{path}:{line}:{column}: {where}: {message}") from None
    scenario._source = str(path)
    for index, action in enumerate(scenario.actions):
        try:
            action.request()
        except ScenarioError as error:
            raise ScenarioError(f"{path}: actions.{index}: {error}") from None
    return scenario


def check_scenario(scenario: Scenario, playbook: Playbook, library: Library) -> None:
    """Refuse checks that name what the playbook or its library does not have (a typo would
    make a `not_notified` or `steps` check pass or fail for the wrong reason)."""
    step_ids = [step.id for _, step in walk_steps(playbook)]
    told = {
        str(s.with_.get("to"))
        for _, s in walk_steps(playbook)
        if isinstance(s, Step) and is_notification(s.do)
    }
    stakeholders = set(library.stakeholders) | told
    status_fields = set(IncidentStatus.model_fields)
    for index, check in enumerate(scenario.checks):
        where = f"{scenario.source}: checks.{index}"
        for step_id in check.steps:
            if step_id not in step_ids:
                known = ", ".join(step_ids)
                raise ScenarioError(f"{where}.steps: unknown step {step_id!r} (steps: {known})")
        for key in check.status:
            if key not in status_fields:
                known = ", ".join(sorted(status_fields))
                raise ScenarioError(f"{where}.status: unknown field {key!r} (fields: {known})")
        for part in ("notified", "not_notified"):
            for number, spec in enumerate(getattr(check, part)):
                if spec.to not in stakeholders:
                    known = ", ".join(sorted(stakeholders))
                    raise ScenarioError(
                        f"{where}.{part}.{number}.to: unknown stakeholder {spec.to!r} "
                        f"(directory: {known})"
                    )
                if spec.template is not None and spec.template not in library.templates:
                    known = ", ".join(sorted(library.templates))
                    raise ScenarioError(
                        f"{where}.{part}.{number}.template: unknown template {spec.template!r} "
                        f"(known: {known})"
                    )


def check_sandbox_paths(scenario: Scenario, state: dict[str, Any]) -> None:
    """Every sandbox path starts with a section the platform's state has."""
    sections = sorted(state)
    for index, check in enumerate(scenario.checks):
        for part, paths in (("sandbox", list(check.sandbox)), ("not_in_force", check.not_in_force)):
            for path in paths:
                if path.split(".", 1)[0] not in state:
                    raise ScenarioError(
                        f"{scenario.source}: checks.{index}.{part}: {path!r}: unknown section "
                        f"{path.split('.', 1)[0]!r} of the platform state "
                        f"(sections: {', '.join(sections)})"
                    )


# --- results ----------------------------------------------------------------------------------
@dataclass
class ActionOutcome:
    at: str
    action: str
    actor: str
    label: str
    ok: bool
    detail: str
    expect: str | None = None  # "done" or "refused" when the scenario says which


@dataclass
class CheckResult:
    """One check's verdict; `differences` says what did not hold, one line each."""

    name: str
    at: str  # an offset such as +10m, or "end" for the automatic checks
    passed: bool
    differences: list[str] = field(default_factory=list)
    automatic: bool = False
    skipped: bool = False  # not applicable to this run (e.g. restoration while still running)


@dataclass
class TimelineEntry:
    offset_s: float
    kind: str
    step_id: str | None
    actor: str | None
    data: dict[str, Any]


@dataclass
class SimulationResult:
    incident_id: str
    final_state: str
    simulated_s: float
    wall_s: float
    actions: list[ActionOutcome] = field(default_factory=list)
    timeline: list[TimelineEntry] = field(default_factory=list)
    sandbox: dict[str, Any] = field(default_factory=dict)
    status: dict[str, Any] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def failed_checks(self) -> list[CheckResult]:
        return [check for check in self.checks if not check.passed]

    @property
    def ok(self) -> bool:
        return not self.failed_checks


# --- the run ----------------------------------------------------------------------------------
async def simulate(
    playbook_path: Path,
    scenario: Scenario,
    *,
    progress: Callable[[str], None] | None = None,
    library_dir: Path | None = None,
) -> SimulationResult:
    """Run the scenario to its end; everything real except the clock.

    Raises:
        ScenarioError: a check names a step, field, stakeholder, template or platform state
            section that does not exist.
        PlaybookInvalid: the playbook file is not valid.
    """
    say = progress or (lambda _message: None)
    wall_start = time.monotonic()
    library_dir = library_dir or Settings().playbooks_dir
    playbook = load_playbook(playbook_path, library_dir)
    check_scenario(scenario, playbook, library_for(playbook_path, library_dir))
    with (
        tempfile.TemporaryDirectory() as tmp,
        serving_in_thread(create_app()) as sandbox_url,
    ):
        async with httpx.AsyncClient(base_url=sandbox_url, timeout=10) as http:
            initial = await _platform(http)
            check_sandbox_paths(scenario, initial)
            env = await WorkflowEnvironment.start_time_skipping(
                data_converter=pydantic_data_converter,
                runtime=quiet_runtime(),
                test_server_existing_path=str(installed_binary("temporal-test-server")),
            )
            store = AuditStore(f"sqlite:///{Path(tmp) / 'audit.db'}")
            settings = Settings(
                sandbox_port=int(sandbox_url.rsplit(":", 1)[1]),
                database_url=store.url,
                data_dir=Path(tmp),  # the seal key of this run, not the user's
                playbooks_dir=library_dir,
                task_queue=f"simulate-{uuid.uuid4()}",
                search_attributes=False,  # the time-skipping server has no custom attributes
            )
            try:
                async with running_worker(env.client, settings=settings, store=store):
                    incidents = Incidents(env.client, settings)
                    triggered = await incidents.trigger(
                        str(playbook_path),
                        scenario.inputs,
                        actor=scenario.actor,
                        level=scenario.level,
                    )
                    incident_id = triggered.incident_id
                    start = await env.get_current_time()
                    say(f"triggered {incident_id}")
                    outcomes: list[ActionOutcome] = []
                    checks: list[CheckResult] = []
                    for offset, item in _script(scenario):
                        await _advance_to(env, start + offset)
                        if isinstance(item, ScriptedAction):
                            outcome = await _perform(incidents, incident_id, item, say)
                            outcomes.append(outcome)
                            if item.expect is not None:
                                checks.append(_expected(item, outcome, say))
                        else:
                            checks.append(await _verify(incidents, incident_id, http, item, say))
                    if scenario.run_for:
                        await env.sleep(parse_duration(scenario.run_for))
                    status = await _settled(incidents, incident_id)
                    simulated = (await env.get_current_time() - start).total_seconds()
                final = await _platform(http)
                checks += [
                    _restoration(initial, final, status),
                    await _integrity(env, store, settings, incident_id),
                ]
                for check in checks[-2:]:
                    say(_verdict(check))
                events = store.events(incident_id)
            finally:
                store.dispose()
                await env.shutdown()
    origin = datetime.fromisoformat(events[0].at) if events else start
    return SimulationResult(
        incident_id=incident_id,
        final_state=status.state,
        simulated_s=simulated,
        wall_s=time.monotonic() - wall_start,
        actions=outcomes,
        timeline=[
            TimelineEntry(
                offset_s=(datetime.fromisoformat(e.at) - origin).total_seconds(),
                kind=e.kind,
                step_id=e.step_id,
                actor=e.actor,
                data=e.data,
            )
            for e in events
        ],
        sandbox=final,
        status=status.model_dump(mode="json"),
        checks=checks,
    )


def _script(scenario: Scenario) -> list[tuple[timedelta, ScriptedAction | ScenarioCheck]]:
    """Actions and checks in time order; at the same offset a check sees the actions done."""
    items: list[tuple[timedelta, int, int, ScriptedAction | ScenarioCheck]] = [
        *((a.offset, 0, i, a) for i, a in enumerate(scenario.actions)),
        *((c.offset, 1, i, c) for i, c in enumerate(scenario.checks)),
    ]
    items.sort(key=lambda item: item[:3])
    return [(offset, item) for offset, _, _, item in items]


async def _advance_to(env: WorkflowEnvironment, moment: datetime) -> None:
    wait = moment - await env.get_current_time()
    if wait > timedelta(0):
        await env.sleep(wait)


async def _platform(http: httpx.AsyncClient) -> dict[str, Any]:
    response = await http.get("/state")
    response.raise_for_status()
    state: dict[str, Any] = response.json()
    return state


async def _perform(
    incidents: Incidents,
    incident_id: str,
    action: ScriptedAction,
    say: Callable[[str], None],
) -> ActionOutcome:
    update = ACTIONS[action.do][0]
    request = action.request()
    try:
        await incidents.act(incident_id, update, request)
        ok, detail = True, "done"
    except IncidentError as error:
        ok, detail = False, str(error)
    say(f"+{action.at} {action.do} by {action.actor}: {detail}")
    return ActionOutcome(
        action.at, action.do, action.actor, action.label, ok, detail, action.expect
    )


def _expected(
    action: ScriptedAction, outcome: ActionOutcome, say: Callable[[str], None]
) -> CheckResult:
    """An action the scenario says must be done (or refused) is checked like a check."""
    answered = "done" if outcome.ok else "refused"
    passed = answered == action.expect
    found = [] if passed else [f"expected {action.expect}, was {answered}: {outcome.detail}"]
    result = CheckResult(f"{action.describe()} is {action.expect}", f"+{action.at}", passed, found)
    say(_verdict(result))
    return result


async def _settled(incidents: Incidents, incident_id: str) -> IncidentStatus:
    """The status once no lever call is under way (a timer that just fired may have started
    one), so a check sees the platform as the incident left it."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        status = await incidents.status(incident_id)
        busy = status.state == "standing_down" or any(s.state in TRANSIENT for s in status.steps)
        if not busy or time.monotonic() > deadline:
            return status
        await asyncio.sleep(0.02)


async def _verify(
    incidents: Incidents,
    incident_id: str,
    http: httpx.AsyncClient,
    check: ScenarioCheck,
    say: Callable[[str], None],
) -> CheckResult:
    status = await _settled(incidents, incident_id)
    state = await _platform(http)
    differences = check_differences(check, state, status.model_dump(mode="json"))
    result = CheckResult(check.name, f"+{check.at}", not differences, differences)
    say(_verdict(result))
    return result


def _verdict(check: CheckResult) -> str:
    if check.skipped:
        return f"{check.at} check {check.name!r}: skipped ({'; '.join(check.differences)})"
    if check.passed:
        return f"{check.at} check {check.name!r}: ok"
    return f"{check.at} check {check.name!r}: FAILED: {'; '.join(check.differences)}"


# --- evaluating checks ------------------------------------------------------------------------
def check_differences(
    check: ScenarioCheck, state: dict[str, Any], status: dict[str, Any]
) -> list[str]:
    """What in the platform state and the incident status does not match the check; [] = ok."""
    found: list[str] = []
    for path, expected in check.sandbox.items():
        present, actual = lookup(state, path)
        if not present or actual is None:
            found.append(f"{path}: not in force (expected {_show(expected)})")
        else:
            found += compare(expected, actual, path)
    for path in check.not_in_force:
        present, actual = lookup(state, path)
        if present and actual is not None:
            found.append(f"{path}: still in force ({_show(actual)})")
    received: list[dict[str, Any]] = state.get("notifications", [])
    for spec in check.notified:
        if not any(spec.matches(message) for message in received):
            found.append(f"notified: nothing to {spec.describe()} (received: {_told(received)})")
    for spec in check.not_notified:
        sent = sum(1 for message in received if spec.matches(message))
        if sent:
            found.append(f"not_notified: {spec.describe()} was sent ({sent}x)")
    for key, expected in check.status.items():
        found += compare(expected, status.get(key), f"status.{key}")
    records = {step["id"]: step for step in status.get("steps", [])}
    for step_id, expected in check.steps.items():
        record = records.get(step_id, {})
        if isinstance(expected, str):
            found += compare(expected, record.get("state"), f"steps.{step_id}")
        else:
            found += compare(expected, record, f"steps.{step_id}")
    return found


def lookup(data: Any, path: str) -> tuple[bool, Any]:
    """The value at a dotted path (a number indexes a list); (False, None) if there is none."""
    node = data
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False, None
    return True, node


def compare(expected: Any, actual: Any, where: str) -> list[str]:
    """Differences between an expected value and the actual one: a mapping matches any
    superset of it, a list item by item, a number within rounding."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected {_show(expected)}, got {_show(actual)}"]
        found: list[str] = []
        for key, value in expected.items():
            if key not in actual:
                found.append(f"{where}.{key}: missing (expected {_show(value)})")
            else:
                found += compare(value, actual[key], f"{where}.{key}")
        return found
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {_show(expected)}, got {_show(actual)}"]
        return [
            difference
            for index, (want, got) in enumerate(zip(expected, actual, strict=True))
            for difference in compare(want, got, f"{where}.{index}")
        ]
    return (
        []
        if _same(expected, actual)
        else [f"{where}: expected {_show(expected)}, got {_show(actual)}"]
    )


def _same(expected: Any, actual: Any) -> bool:
    if isinstance(expected, bool) or isinstance(actual, bool):
        return type(expected) is type(actual) and expected == actual
    if isinstance(expected, int | float) and isinstance(actual, int | float):
        return math.isclose(expected, actual, rel_tol=1e-9, abs_tol=1e-9)
    return bool(expected == actual)


def _show(value: Any) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 120 else text[:117] + "..."


def _told(received: list[dict[str, Any]]) -> str:
    seen = [
        "/".join(
            p
            for p in (str(m.get("stakeholder")), (m.get("body") or {}).get("template"))
            if isinstance(p, str) and p
        )
        for m in received
    ]
    return ", ".join(dict.fromkeys(seen)) or "nothing"


def state_differences(before: Any, after: Any, where: str = "") -> list[str]:
    """Every path at which two platform states differ, as `path: was X, now Y`."""
    if isinstance(before, dict) and isinstance(after, dict):
        found: list[str] = []
        for key in [*before, *(k for k in after if k not in before)]:
            here = f"{where}.{key}" if where else str(key)
            if key not in after:
                found.append(f"{here}: was {_show(before[key])}, now absent")
            elif key not in before:
                found.append(f"{here}: now {_show(after[key])}, was absent")
            else:
                found += state_differences(before[key], after[key], here)
        return found
    return [] if before == after else [f"{where}: was {_show(before)}, now {_show(after)}"]


def settings_of(state: dict[str, Any]) -> dict[str, Any]:
    """The platform's settings: its state without the traffic records."""
    return {key: value for key, value in state.items() if key not in TRAFFIC}


def _restoration(
    initial: dict[str, Any], final: dict[str, Any], status: IncidentStatus
) -> CheckResult:
    if status.state != "closed":
        why = f"incident is {status.state}: nothing is restored before stand-down"
        return CheckResult(RESTORED, "end", True, [why], automatic=True, skipped=True)
    found = state_differences(settings_of(initial), settings_of(final))
    return CheckResult(RESTORED, "end", not found, found, automatic=True)


async def _integrity(
    env: WorkflowEnvironment, store: AuditStore, settings: Settings, incident_id: str
) -> CheckResult:
    """Chain, seals and a replay of the history, as `crisis audit verify` checks them."""
    public_key = Signer(settings.signing_key_path).public_key
    integrity, events = check_store(store, incident_id, public_key)
    try:
        history = await export_history(env.client, incident_id)
    except (HistoryError, IncidentError, RPCError):
        # The time-skipping server may not list workflows; a simulation has one run to fetch.
        history = IncidentHistory(
            incident_id, [await env.client.get_workflow_handle(incident_id).fetch_history()]
        )
    integrity = await check_with_replay(integrity, events, history, store=store)
    found = [
        f"{part}: {verdict}" for part, verdict in integrity.verdict().items() if verdict != "ok"
    ]
    return CheckResult(VERIFIED, "end", integrity.ok, found, automatic=True)


def format_offset(seconds: float) -> str:
    """`+0s`, `+5m`, `+2h30m`, `+1d6h`: offsets as playbooks write durations."""
    return "+" + format_duration(seconds)

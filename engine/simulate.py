"""`crisis playbook simulate`: run a playbook for real, on the time-skipping Temporal server and an
in-process sandbox, with scripted commander actions at given offsets. Days pass in seconds."""

from __future__ import annotations

import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from core.settings import Settings
from engine.incidents import ACTIONS, IncidentError, Incidents
from engine.temporal import installed_binary, quiet_runtime, running_worker
from sandbox.app import create_app
from sandbox.server import serving_in_thread
from store.audit_store import AuditStore
from workflows.durations import parse_duration

ActionName = Literal[
    "approve", "reject", "escalate", "de-escalate", "renew", "confirm-review", "note", "stand-down"
]


class ScenarioError(ValueError):
    """The scenario file is not valid."""


class ScriptedAction(BaseModel):
    """One commander action at an offset from the trigger, e.g. approve at +5m."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    at: str
    do: ActionName
    with_: dict[str, Any] = Field(default_factory=dict, alias="with")
    actor: str = "commander"
    label: str = ""

    _check = field_validator("at")(lambda value: (parse_duration(value), value)[1])

    @property
    def offset(self) -> timedelta:
        return parse_duration(self.at)

    def request(self) -> BaseModel:
        """The Update's request this action sends; ScenarioError if its fields are wrong."""
        try:
            return ACTIONS[self.do][1].model_validate({"actor": self.actor, **self.with_})
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(map(str, first["loc"]))
            raise ScenarioError(f"{self.do} at {self.at}: {where}: {first['msg']}") from None


class Scenario(BaseModel):
    """A scripted crisis: how it is declared and what the commanders do, when."""

    model_config = ConfigDict(extra="forbid")

    inputs: dict[str, Any] = Field(default_factory=dict)
    level: str | None = None
    actor: str = "commander"
    actions: list[ScriptedAction] = Field(default_factory=list)
    # How long to let the incident run after the last action (expiries, missed reviews).
    run_for: str | None = None


def load_scenario(path: Path) -> Scenario:
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8")) or {}
        scenario = Scenario.model_validate(data)
    except OSError as error:
        raise ScenarioError(f"{path}: {error.strerror or error}") from None
    except YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ScenarioError(f"{path}{where}: YAML: {problem}") from None
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ScenarioError(f"{path}: {where}: {first['msg']}") from None
    for index, action in enumerate(scenario.actions):
        try:
            action.request()
        except ScenarioError as error:
            raise ScenarioError(f"{path}: actions.{index}: {error}") from None
    return scenario


@dataclass
class ActionOutcome:
    at: str
    action: str
    actor: str
    label: str
    ok: bool
    detail: str


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


async def simulate(
    playbook_path: Path,
    scenario: Scenario,
    *,
    progress: Callable[[str], None] | None = None,
) -> SimulationResult:
    """Run the scenario to its end; everything real except the clock."""
    say = progress or (lambda _message: None)
    wall_start = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp, serving_in_thread(create_app()) as sandbox_url:
        env = await WorkflowEnvironment.start_time_skipping(
            data_converter=pydantic_data_converter,
            runtime=quiet_runtime(),
            test_server_existing_path=str(installed_binary("temporal-test-server")),
        )
        store = AuditStore(f"sqlite:///{Path(tmp) / 'audit.db'}")
        settings = Settings(
            sandbox_port=int(sandbox_url.rsplit(":", 1)[1]),
            database_url=store.url,
            task_queue=f"simulate-{uuid.uuid4()}",
            search_attributes=False,  # the time-skipping server has no custom attributes
        )
        try:
            async with running_worker(env.client, settings=settings, store=store):
                incidents = Incidents(env.client, settings)
                triggered = await incidents.trigger(
                    str(playbook_path), scenario.inputs, actor=scenario.actor, level=scenario.level
                )
                start = await env.get_current_time()
                say(f"triggered {triggered.incident_id}")
                outcomes = [
                    await _perform(env, incidents, triggered.incident_id, start, action, say)
                    for action in sorted(scenario.actions, key=lambda a: a.offset)
                ]
                if scenario.run_for:
                    await env.sleep(parse_duration(scenario.run_for))
                status = await incidents.status(triggered.incident_id)
                simulated = (await env.get_current_time() - start).total_seconds()
            async with httpx.AsyncClient(base_url=sandbox_url) as http:
                sandbox_state = (await http.get("/state")).json()
            events = store.events(triggered.incident_id)
        finally:
            store.dispose()
            await env.shutdown()
    origin = datetime.fromisoformat(events[0].at) if events else start
    return SimulationResult(
        incident_id=triggered.incident_id,
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
        sandbox=sandbox_state,
        status=status.model_dump(mode="json"),
    )


async def _perform(
    env: WorkflowEnvironment,
    incidents: Incidents,
    incident_id: str,
    start: datetime,
    action: ScriptedAction,
    say: Callable[[str], None],
) -> ActionOutcome:
    wait = start + action.offset - await env.get_current_time()
    if wait > timedelta(0):
        await env.sleep(wait)
    update = ACTIONS[action.do][0]
    request = action.request()
    try:
        await incidents.act(incident_id, update, request)
        ok, detail = True, "done"
    except IncidentError as error:
        ok, detail = False, str(error)
    say(f"+{action.at} {action.do} by {action.actor}: {detail}")
    return ActionOutcome(action.at, action.do, action.actor, action.label, ok, detail)


def format_offset(seconds: float) -> str:
    """`+0s`, `+5m`, `+2h30m`, `+1d6h`: offsets as playbooks write durations."""
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return "+" + ("".join(parts) or "0s")

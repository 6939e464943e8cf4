"""What auditors check: export an incident's Temporal history (every run), replay it through
today's workflow code, and compare the audit events the replay produces with the audit table
and with what the history itself recorded. Three records that must agree."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from temporalio import workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import (
    Interceptor,
    Replayer,
    StartActivityInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

from engine.errors import HistoryError, IncidentError, IncidentNotFound, require_incident_id
from engine.temporal import SANDBOX, WORKFLOWS
from workflows.audit import AuditBatch, AuditCarry, AuditEvent, carried_events
from workflows.incident import APPLY_LEVER, WRITE_AUDIT, LeverOutcome

EXPORT_FORMAT = "crisis-history/1"


@dataclass
class IncidentHistory:
    """Every run of one incident's workflow, oldest first."""

    incident_id: str
    runs: list[WorkflowHistory]

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": EXPORT_FORMAT,
                "incident_id": self.incident_id,
                "runs": [run.to_json_dict() for run in self.runs],
            }
        )

    @staticmethod
    def from_file(path: Path) -> IncidentHistory:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:  # ValueError: not UTF-8, or not JSON
            raise HistoryError(f"{path}: not a readable history export: {error}") from None
        if isinstance(data, dict) and "events" in data:  # a plain single-run Temporal export
            return IncidentHistory(path.stem, [_run(path, path.stem, data)])
        if not isinstance(data, dict) or data.get("format") != EXPORT_FORMAT:
            raise HistoryError(f"{path}: not a history export (format {EXPORT_FORMAT} expected)")
        runs = data.get("runs")
        if not isinstance(runs, list) or not runs or not data.get("incident_id"):
            raise HistoryError(f"{path}: a history export names its incident and holds its runs")
        incident_id = str(data["incident_id"])
        return IncidentHistory(incident_id, [_run(path, incident_id, run) for run in runs])


def _run(path: Path, workflow_id: str, data: Any) -> WorkflowHistory:
    """One run's history, refused unless it starts as a workflow does (the SDK's replayer waits
    forever on a history whose first event is anything else)."""
    try:
        run = WorkflowHistory.from_json(workflow_id, data)
    except (ValueError, TypeError, KeyError, AttributeError) as error:
        raise HistoryError(f"{path}: not a Temporal workflow history: {error}") from None
    started = EventType.EVENT_TYPE_WORKFLOW_EXECUTION_STARTED
    if not run.events or run.events[0].event_type != started:
        raise HistoryError(
            f"{path}: not a Temporal workflow history: its first event is not the workflow's start"
        )
    return run


async def export_history(client: Client, incident_id: str) -> IncidentHistory:
    """Fetch the history of every run (across continue-as-new), oldest first."""
    require_incident_id(incident_id)  # it goes into a query
    try:
        runs: list[tuple[Any, str]] = []
        async for execution in client.list_workflows(f'WorkflowId = "{incident_id}"'):
            runs.append((execution.start_time, execution.run_id))
        if not runs:
            # Visibility can lag a just-started workflow: the latest run is reachable directly.
            handle = client.get_workflow_handle(incident_id)
            return IncidentHistory(incident_id, [await handle.fetch_history()])
        histories = []
        for _, run_id in sorted(runs):
            handle = client.get_workflow_handle(incident_id, run_id=run_id)
            histories.append(await handle.fetch_history())
    except RPCError as error:
        if error.status == RPCStatusCode.NOT_FOUND:
            raise IncidentNotFound(f"no incident {incident_id} in Temporal") from None
        raise IncidentError(
            f"incident {incident_id}: Temporal did not answer with its history "
            f"({error.message or error.status})"
        ) from None
    return IncidentHistory(incident_id, histories)


# --- capturing what a replay produces ---------------------------------------------------------
# Runs are replayed one at a time, so one list collects what the current replay schedules.
_captured: list[AuditEvent] = []
# And one the events lever calls were lent or carry: a call writes them early if it is slow or
# fails, so the table may hold them before the workflow writes them (a call still in flight).
_lent: list[AuditEvent] = []


class _CaptureOutbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        if input.activity == WRITE_AUDIT and input.args:
            _captured.extend(input.args[0].events)
        return super().start_activity(input)

    def start_local_activity(self, input: StartLocalActivityInput) -> workflow.ActivityHandle[Any]:
        if input.activity == WRITE_AUDIT and input.args:
            _captured.extend(input.args[0].events)
        handle = super().start_local_activity(input)
        if input.activity == APPLY_LEVER and input.args:
            request = input.args[0]
            if request.lent is not None:
                _lent.extend(request.lent.events)
            if request.audit is not None:
                carry = request.audit
                _lent.extend(carry.events)
                handle.add_done_callback(lambda done: _capture_carried(carry, done))
        return handle


def _capture_carried(carry: AuditCarry, done: workflow.ActivityHandle[Any]) -> None:
    """A lever call that carried the trail: what it wrote, if it wrote it (else the workflow's
    own audit write sends those events, and they are captured there)."""
    if done.cancelled() or done.exception() is not None:
        return
    outcome = done.result()
    if isinstance(outcome, LeverOutcome) and outcome.audit is not None:
        assert outcome.elapsed_s is not None
        written = carried_events(carry, elapsed_s=outcome.elapsed_s, previous=outcome.previous)
        _captured.extend([*carry.events, *written])


class _CaptureInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_CaptureOutbound(outbound))


class _CaptureAudit(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _CaptureInbound


@dataclass
class Comparison:
    """How two sequences of audit events agree; the first difference if they do not."""

    matches: bool
    events: int
    first_difference: str | None = None


# What the rows no replay checks yet are, as reports say it (after "row N" or "rows N..M").
UNREPLAYED = (
    "came from a workflow task still under way, or one that ran during this check (a slow "
    "lever call writes its events early), which no replay checks until it ends"
)


@dataclass
class ReplayReport:
    incident_id: str
    runs: int
    history_events: int
    deterministic: bool
    divergence: str | None
    replay_vs_store: Comparison
    replay_vs_history: Comparison
    stored_in: str = "audit table"
    # Rows at the end of the trail that a workflow task still under way wrote (a slow lever call
    # writes its events early), or that were written while the history was fetched: no history
    # recorded yet holds them, so no replay can check them.
    unreplayed_rows: int = 0
    rows: int = 0  # the rows compared (and left unreplayed)
    ok: bool = field(init=False)

    def __post_init__(self) -> None:
        self.ok = (
            self.deterministic and self.replay_vs_store.matches and self.replay_vs_history.matches
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


async def replay_incident(
    history: IncidentHistory,
    stored: list[AuditEvent],
    *,
    progress: Callable[[int], None] | None = None,
    stored_in: str = "audit table",
    written_meanwhile: int = 0,
) -> ReplayReport:
    """Replay every run through today's code and compare the audit events three ways;
    `stored_in` names where `stored` came from (a bundle's events.json is no table);
    `written_meanwhile`: how many of the last rows were written while the history was fetched
    (read before and after it: `rows_after_history`)."""
    replayer = Replayer(
        workflows=WORKFLOWS,
        workflow_runner=SANDBOX,
        data_converter=pydantic_data_converter,
        interceptors=[_CaptureAudit()],
    )
    produced: list[AuditEvent] = []
    lent: list[AuditEvent] = []
    divergence = None
    for number, run in enumerate(history.runs, start=1):
        _captured.clear()
        _lent.clear()
        result = await replayer.replay_workflow(run, raise_on_replay_failure=False)
        produced.extend(sorted(_captured, key=lambda event: event.seq))
        lent.extend(_lent)
        if result.replay_failure is not None and divergence is None:
            divergence = f"run {number}: {result.replay_failure}"
        if progress:
            progress(number)
    _captured.clear()
    _lent.clear()
    recorded = await recorded_audit_events(history)
    heads = recorded_audit_heads(history)
    expected = with_early_writes(produced, lent, stored)
    unreplayed = 0
    extra = len(stored) - len(expected)
    if extra > 0 and (_task_under_way(history) or extra <= written_meanwhile):
        unreplayed = extra
    return ReplayReport(
        incident_id=history.incident_id,
        runs=len(history.runs),
        history_events=sum(len(run.events) for run in history.runs),
        deterministic=divergence is None,
        divergence=divergence,
        replay_vs_store=compare_events(expected, stored[: len(stored) - unreplayed], stored_in),
        replay_vs_history=compare_with_history(produced, recorded, heads),
        stored_in=stored_in,
        unreplayed_rows=unreplayed,
        rows=len(stored),
    )


def _task_under_way(history: IncidentHistory) -> bool:
    """Whether the last run's history ends in a workflow task a worker has started and not yet
    completed: its commands, and the lever calls it makes, reach the history only then."""
    events = history.runs[-1].events
    return bool(events) and events[-1].event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_STARTED


def with_early_writes(
    produced: list[AuditEvent], lent: list[AuditEvent], stored: list[AuditEvent]
) -> list[AuditEvent]:
    """What the replay produced, then as many of the events lever calls were lent or carry, and
    the workflow has not written yet, as the table holds beyond it: those a call wrote early."""
    last = produced[-1].seq if produced else 0
    beyond = sorted({e.seq: e for e in lent if e.seq > last}.values(), key=lambda e: e.seq)
    return produced + beyond[: max(0, len(stored) - len(produced))]


async def recorded_audit_events(history: IncidentHistory) -> list[AuditEvent]:
    """The audit batches the original execution scheduled as regular activities (incidents from
    before audit writes became local activities), decoded from the history itself."""
    events: list[AuditEvent] = []
    for run in history.runs:
        for event in run.events:
            if not event.HasField("activity_task_scheduled_event_attributes"):
                continue
            attributes = event.activity_task_scheduled_event_attributes
            if attributes.activity_type.name != WRITE_AUDIT:
                continue
            (batch,) = await pydantic_data_converter.decode(attributes.input.payloads, [AuditBatch])
            events.extend(batch.events)
    return events


def recorded_audit_heads(history: IncidentHistory) -> list[tuple[int, str]]:
    """(last seq, head hash) of every audit write recorded as a local-activity marker: the audit
    activity's, and a lever call's that carried the trail (interpreter v5)."""
    heads = []
    for run in history.runs:
        for event in run.events:
            if not event.HasField("marker_recorded_event_attributes"):
                continue
            marker = event.marker_recorded_event_attributes
            if marker.marker_name != "core_local_activity" or "result" not in marker.details:
                continue
            meta = json.loads(marker.details["data"].payloads[0].data)
            if meta.get("activity_type") not in (WRITE_AUDIT, APPLY_LEVER):
                continue
            result = json.loads(marker.details["result"].payloads[0].data)
            if meta["activity_type"] == APPLY_LEVER:
                result = result.get("audit") if isinstance(result, dict) else None
                if not result:
                    continue
            heads.append((int(result["last_seq"]), str(result["head_hash"])))
    return heads


def compare_with_history(
    produced: list[AuditEvent], events: list[AuditEvent], heads: list[tuple[int, str]]
) -> Comparison:
    """The replay against what the history recorded: whole events where it holds them, chain
    heads (which commit to every earlier event) where audit writes were local activities."""
    if events:
        compared = compare_events(produced[: len(events)], events, "history")
        if not compared.matches:
            return compared
    by_seq = {event.seq: event for event in produced}
    for last_seq, head_hash in heads:
        mine = by_seq.get(last_seq)
        if mine is None:
            return Comparison(
                False, len(produced), f"seq {last_seq} was written but the replay never produced it"
            )
        if mine.hash != head_hash:
            return Comparison(
                False,
                last_seq - 1,
                f"seq {last_seq}: the history recorded head {head_hash[:12]}, "
                f"the replay produced {mine.hash[:12]}",
            )
    covered = max([len(events), *(seq for seq, _ in heads)], default=0)
    return Comparison(True, covered)


def _shifted(produced: list[AuditEvent], other: list[AuditEvent]) -> bool:
    """Whether `other` holds the same events as `produced` by what happened (kind, time, who,
    step, data), one number apart: one row was removed or added before them."""
    if not produced or len(produced) != len(other):
        return False
    return all(
        (a.kind, a.at, a.actor, a.step_id, a.data) == (b.kind, b.at, b.actor, b.step_id, b.data)
        for a, b in zip(produced, other, strict=True)
    )


def _after(*, renumbered: bool) -> str:
    """What became of the rows after one removed or slipped in: said as found, never assumed."""
    return (
        "the rows after it are renumbered"
        if renumbered
        else "the rows after it are unchanged, with their own numbers"
    )


def compare_events(produced: list[AuditEvent], other: list[AuditEvent], name: str) -> Comparison:
    """Same order, same content, same hashes; else the first missing, extra or altered row."""
    for index, (mine, theirs) in enumerate(zip(produced, other, strict=False)):
        if mine != theirs:
            if _shifted(produced[index + 1 :], other[index:]):
                # A row taken out (and perhaps the rest renumbered and re-hashed): name what is
                # gone, not every later row as altered.
                after = _after(renumbered=theirs.seq == mine.seq)
                return Comparison(
                    False,
                    index,
                    f"seq {mine.seq} ({mine.kind}) is missing from the {name}; {after}",
                )
            if _shifted(produced[index:], other[index + 1 :]):
                after = _after(renumbered=other[index + 1].seq != mine.seq)
                return Comparison(
                    False,
                    index,
                    f"seq {theirs.seq} ({theirs.kind}) in the {name} was never produced; {after}",
                )
            fields = [f for f in type(mine).model_fields if getattr(mine, f) != getattr(theirs, f)]
            return Comparison(
                False,
                index,
                f"seq {mine.seq}: the {name} row differs from the replay in {', '.join(fields)}",
            )
    if len(produced) > len(other):
        missing = produced[len(other)]
        return Comparison(
            False, len(other), f"seq {missing.seq} ({missing.kind}) is missing from the {name}"
        )
    if len(other) > len(produced):
        extra = other[len(produced)]
        return Comparison(
            False, len(produced), f"seq {extra.seq} ({extra.kind}) in the {name} was never produced"
        )
    return Comparison(True, len(produced))

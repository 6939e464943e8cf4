"""Incident operations shared by the CLI and the API: trigger, status, stand down, verify."""

from __future__ import annotations

import asyncio
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import structlog
from pydantic import BaseModel
from temporalio.client import (
    Client,
    WorkflowExecutionDescription,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
)
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from core.settings import Settings
from engine.errors import (
    ActionInvalid,
    IncidentBusy,
    IncidentConflict,
    IncidentError,
    IncidentNotFound,
    require_incident_id,
)
from engine.library import library_for
from engine.playbook_files import find_playbook, load_playbook
from engine.updates import UpdateTimedOut, send_update
from engine.workers import temporal_problem, worker_presence
from store.audit_store import AuditStore, Verification
from workflows.crisis import CrisisWorkflow
from workflows.incident import (
    REFUSED_AS_ASKED,
    SEARCH_LEVEL,
    SEARCH_PLAYBOOK,
    SEARCH_STATE,
    ApproveRequest,
    IncidentInput,
    IncidentStatus,
    LevelRequest,
    NoteRequest,
    RejectRequest,
    RenewRequest,
    RestoreRequest,
    ReviewRequest,
    StandDownRequest,
    StepRecord,
)
from workflows.levers import is_notification
from workflows.limits import INCIDENT_ID_PATTERN, INCIDENT_ID_RULE
from workflows.playbook import InputError, Playbook, lever_arg_problems, resolve_inputs
from workflows.substitution import references, substitute

log = structlog.get_logger(__name__)
# A status query unanswered after this long asks whether any worker is there to answer it.
SLOW_QUERY_S = 2.0


@dataclass(frozen=True)
class Triggered:
    incident_id: str
    run_id: str | None
    playbook: str
    version: int
    playbook_hash: str
    inputs: dict[str, Any]
    warnings: tuple[str, ...] = ()  # e.g. no worker is there to run it yet


# The one rule for a chosen incident id, in every trigger path: it is a Temporal workflow id and
# a path segment of the API's URLs, so nothing a URL would split or escape.


def new_incident_id() -> str:
    return f"INC-{datetime.now(UTC):%Y%m%d-%H%M%S}-{secrets.token_hex(3).upper()}"


def check_incident_id(incident_id: str) -> None:
    """Raise InputError unless `incident_id` follows INCIDENT_ID_PATTERN (a new incident's)."""
    if re.fullmatch(INCIDENT_ID_PATTERN, incident_id) is None:
        raise InputError(f"incident id {incident_id!r}: use {INCIDENT_ID_RULE}")


def prepare_incident(
    playbook: Playbook,
    given: dict[str, Any],
    *,
    actor: str,
    incident_id: str | None = None,
    level: str | None = None,
) -> IncidentInput:
    """Resolve inputs and check the lever arguments that refer to them (the playbook's own
    checks covered the others), before anything starts."""
    if incident_id is not None:
        check_incident_id(incident_id)
    inputs = resolve_inputs(playbook, given)
    if level is not None and level not in playbook.levels:
        declared = ", ".join(playbook.levels) or "none"
        raise InputError(
            f"unknown level {level!r} for playbook {playbook.playbook} (levels: {declared})"
        )
    incident_id = incident_id or new_incident_id()
    context = {
        "inputs": inputs,
        "incident": {"id": incident_id, "playbook": playbook.playbook, "triggered_by": actor},
    }
    for step_id, lever, args, where in playbook.trigger_checked_calls:
        for path, message in lever_arg_problems(lever, substitute(args, context)):
            dotted = ".".join(str(p) for p in path)
            made_of = ", ".join(_references_at(args, path))
            source = f" (from {made_of})" if made_of else ""
            raise InputError(f"step {step_id!r} {where}.{dotted}{source}: {message}")
    return IncidentInput(
        level=level or (playbook.levels[0] if playbook.levels else None),
        incident_id=incident_id,
        playbook=playbook,
        playbook_hash=playbook.content_hash,
        inputs=inputs,
        triggered_by=actor,
    )


def _references_at(args: Any, path: tuple[str | int, ...]) -> list[str]:
    """The references an argument was written with (none if it was written out), so that an
    error names the input that broke it. `path` may go on inside a substituted value."""
    value = args
    for key in path:
        if isinstance(value, str):
            break
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            return []
    if not isinstance(value, str):
        return []
    return [f"${{{namespace}.{name}}}" for _, namespace, name in references(value)]


class Incidents:
    def __init__(self, client: Client, settings: Settings) -> None:
        self._client = client
        self._settings = settings

    async def trigger(
        self,
        playbook_ref: str,
        inputs: dict[str, Any],
        *,
        actor: str,
        incident_id: str | None = None,
        level: str | None = None,
        eager: bool = False,
        history_limit: int | None = None,
    ) -> Triggered:
        """Start an incident. `eager` asks the server to hand the first task to this process."""
        path = find_playbook(playbook_ref, self._settings.playbooks_dir)
        playbook = load_playbook(path, self._settings.playbooks_dir)
        library = library_for(path, self._settings.playbooks_dir)
        incident = prepare_incident(
            playbook, inputs, actor=actor, incident_id=incident_id, level=level
        ).model_copy(
            update={
                "templates": library.templates_for(playbook),
                "channels": library.channels_for(playbook),
            }
        )
        if history_limit is not None:
            incident = incident.model_copy(update={"history_limit": history_limit})
        search = None
        if self._settings.search_attributes:
            incident = incident.model_copy(update={"search_attributes": True})
            search = TypedSearchAttributes(
                [
                    SearchAttributePair(SEARCH_PLAYBOOK, playbook.playbook),
                    SearchAttributePair(SEARCH_STATE, "running"),
                    SearchAttributePair(SEARCH_LEVEL, incident.level or ""),
                ]
            )
        try:
            handle = await self._client.start_workflow(
                CrisisWorkflow.run,
                incident,
                id=incident.incident_id,
                task_queue=self._settings.task_queue,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
                request_eager_start=eager,
                search_attributes=search,
            )
        except WorkflowAlreadyStartedError:
            raise IncidentConflict(f"incident {incident.incident_id} already exists") from None
        except RPCError as error:
            said = error.message or error.status.name
            if error.status in _NO_ANSWER:  # it may have started all the same
                raise IncidentError(
                    f"incident {incident.incident_id}: Temporal did not answer the trigger "
                    f"({said}); it may have started all the same: check its status before "
                    "triggering again"
                ) from None
            raise IncidentError(
                f"incident {incident.incident_id}: Temporal refused the trigger ({said})"
            ) from None
        warnings: tuple[str, ...] = ()
        # Asked after the start, so the first lever never waits for it. An eager start ran its
        # first task in this process: a worker is here.
        if not eager and (missing := await self._no_worker()) is not None:
            warnings = (f"{missing}; the incident starts once one polls",)
        return Triggered(
            incident.incident_id,
            handle.result_run_id,
            playbook.playbook,
            playbook.version,
            incident.playbook_hash,
            incident.inputs,
            warnings,
        )

    async def _no_worker(self, task_queue: str | None = None) -> str | None:
        """Why no worker will run the incident's tasks now (on `task_queue`, by default this
        deployment's), or None if one is polling (or the server would not say: that is no reason
        to fail what asked)."""
        queue = task_queue or self._settings.task_queue
        try:
            presence = await worker_presence(self._client, queue)
        except RPCError as error:
            if error.status != RPCStatusCode.UNIMPLEMENTED:  # the time-skipping test server
                log.warning("workers.unknown", task_queue=queue, error=str(error))
            return None
        return presence.problem()

    async def _described(self, incident_id: str) -> WorkflowExecutionDescription | None:
        try:
            return await self._client.get_workflow_handle(incident_id).describe()
        except RPCError:
            return None

    async def status(self, incident_id: str) -> IncidentStatus:
        """The incident's status (a query, answered by a worker). A slow answer is waited for
        only while a worker is polling; without one, the reason comes at once."""
        require_incident_id(incident_id)
        handle = self._client.get_workflow_handle(incident_id)
        query = asyncio.ensure_future(handle.query(CrisisWorkflow.status))
        try:
            answered, _ = await asyncio.wait({query}, timeout=SLOW_QUERY_S)
            if not answered:
                # Its own task queue's workers: it may run on another deployment's than ours.
                described = await self._described(incident_id)
                queue = described.task_queue if described else None
                if (missing := await self._no_worker(queue)) is not None:
                    raise IncidentBusy(f"incident {incident_id} cannot answer: {missing}")
            return await query
        except RPCError as error:
            if _timed_out(error):
                if await temporal_problem(self._client) is not None:
                    raise IncidentError(
                        f"incident {incident_id}: Temporal did not answer in time"
                    ) from None
                raise IncidentBusy(
                    f"incident {incident_id} did not answer in time (is its worker overloaded?)"
                ) from None
            if NO_POLLER in error.message:  # on a task queue no worker polls (another one's)
                raise IncidentBusy(
                    f"incident {incident_id} cannot answer: no worker polls its task queue "
                    f"({error.message})"
                ) from None
            raise self._translate(incident_id, error) from None
        finally:
            query.cancel()  # once answered, nothing; else nobody waits for it any more

    async def approval_roles(self, incident_id: str) -> dict[str, list[str]] | None:
        """Each step needing approval → the roles that may give it, from the playbook snapshot
        in the current run's input; None when there is no such incident (so the workflow, asked
        next, answers for itself)."""
        handle = self._client.get_workflow_handle(incident_id)
        try:
            async for event in handle.fetch_history_events(page_size=1):
                payloads = event.workflow_execution_started_event_attributes.input.payloads
                (incident,) = await self._client.data_converter.decode(payloads, [IncidentInput])
                break
            else:
                return None
        except RPCError:
            return None
        return {
            step.id: list(step.approval.roles)
            for step in incident.playbook.lever_steps()
            if step.approval is not None
        }

    async def stand_down(
        self, incident_id: str, *, actor: str, reason: str, force: bool = False
    ) -> IncidentStatus:
        """`force`: the caller insists although a later incident holds measures on the same
        settings (engine.overlap); the incident hands those settings to it."""
        request = StandDownRequest(actor=actor, reason=reason, force=force)
        return await self.act(incident_id, CrisisWorkflow.stand_down, request)

    async def act(self, incident_id: str, update: Any, request: BaseModel) -> Any:
        """Run a commander action (a workflow Update) and answer its result; a refused request
        is an IncidentConflict carrying the workflow's reason."""
        require_incident_id(incident_id)
        timeout = self._settings.action_timeout_s
        try:
            return await send_update(self._client, incident_id, update, request, timeout_s=timeout)
        except UpdateTimedOut as timed_out:
            if timed_out.unreachable is not None:
                raise IncidentError(
                    f"incident {incident_id}: Temporal could not be reached within {timeout:g}s "
                    f"({timed_out.unreachable}); if it went away while carrying the request out, "
                    "a lever may have been pulled and not recorded: once it is back, check the "
                    "incident's status and send the request again (the platform applies nothing "
                    "twice)"
                ) from None
            if timed_out.accepted:
                raise IncidentBusy(
                    f"incident {incident_id} took the request but had not carried it out within "
                    f"{timeout:g}s (a lever call or a delivery may be retrying): it goes on; "
                    "check its status"
                ) from None
            why = await self._no_worker() or (
                "a lever call or a delivery may be retrying, or its worker is overloaded"
            )
            # It waits at Temporal: the incident takes it when it next runs, or refuses it as
            # its state then requires (an approval of a step not yet asking), leaving no record.
            raise IncidentBusy(
                f"incident {incident_id} did not answer within {timeout:g}s ({why}); the request "
                "may still take effect, or be refused once the incident runs: check its status"
            ) from None
        except WorkflowUpdateFailedError as error:
            cause = error.cause.message if hasattr(error.cause, "message") else str(error.cause)
            as_asked = getattr(error.cause, "type", None) == REFUSED_AS_ASKED
            refused = ActionInvalid if as_asked else IncidentConflict
            raise refused(f"incident {incident_id}: {cause}") from None
        except RPCError as error:
            if error.status == RPCStatusCode.NOT_FOUND and await self._completed(incident_id):
                # An action sent while another closed the incident (a second restore).
                raise IncidentConflict(f"incident {incident_id} is closed") from None
            raise self._translate(incident_id, error) from None

    async def _completed(self, incident_id: str) -> bool:
        described = await self._described(incident_id)
        return described is not None and described.status != WorkflowExecutionStatus.RUNNING

    @staticmethod
    def _translate(incident_id: str, error: RPCError) -> IncidentError:
        if error.status == RPCStatusCode.NOT_FOUND and "already completed" not in error.message:
            return IncidentNotFound(f"no incident {incident_id}")
        if "already completed" in error.message:
            return IncidentConflict(f"incident {incident_id} is closed")
        return IncidentError(f"incident {incident_id}: {error.message}")


# What Temporal says of a query on a task queue no worker has polled lately.
NO_POLLER = "no poller seen for task queue"
# The RPC's outcome is unknown: the server may have acted on it.
_NO_ANSWER = (
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.UNKNOWN,
    RPCStatusCode.INTERNAL,
)


def _timed_out(error: RPCError) -> bool:
    # The client gives up on an RPC with "Timeout expired" (a query waits 30 s for a worker).
    return error.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.CANCELLED)


def not_restored(status: IncidentStatus) -> str | None:
    """What a commander must hear after a stand-down whose undo failed for good (None: nothing
    was left): the measures that may still be in force, and what to do about them."""
    left = unrestored(status)
    if not left:
        return None
    named = "; ".join(f"{s.id} ({_failure(s)})" for s in left)
    facts = (
        f"{_measures(left)} NOT RESTORED (the undo failed for good, so it may still be in force "
        f"on the platform): {named}"
    )
    if status.state == "closed":  # closed before a stand-down waited for restores
        return f"{facts}; restore the setting there by hand"
    return (
        f"{facts}; retry its undo, or restore the setting there by hand and record that: the "
        "incident closes once none is left"
    )


def not_withdrawn(status: IncidentStatus) -> str | None:
    """What a commander must hear after a de-escalation (None: each measure the new level no
    longer calls for was withdrawn): those whose withdrawal failed for good, and those still
    retried because the platform erred on their first tries."""
    failed = [
        s
        for s in unrestored(status)
        if s.failed_undo is not None and s.failed_undo.final_state == "dormant"
    ]
    erring = [s for s in status.steps if s.state == "undoing" and s.error is not None]
    said = []
    if failed:
        named = "; ".join(f"{s.id} ({_failure(s)})" for s in failed)
        said.append(
            f"{_measures(failed)} NOT WITHDRAWN (the undo failed for good, so it may still be in "
            f"force on the platform): {named}; retry its undo, or restore the setting there by "
            "hand and record that"
        )
    if erring:
        named = "; ".join(f"{s.id} ({_failure(s)})" for s in erring)
        said.append(
            f"{_measures(erring)} not withdrawn yet (the platform erred; its undo is retried, "
            f"and status shows when it is done): {named}"
        )
    return "; and ".join(said) or None


def _measures(steps: list[StepRecord]) -> str:
    return "1 measure was" if len(steps) == 1 else f"{len(steps)} measures were"


def unrestored(status: IncidentStatus) -> list[StepRecord]:
    """The measures whose undo failed for good: they may still be in force."""
    return [s for s in status.steps if s.state == "undo_failed" and not undelivered_notice(s)]


def maybe_in_force(status: IncidentStatus) -> list[StepRecord]:
    """The measures whose apply failed with no answer: the platform may have applied them all
    the same (a stand-down sends each again to learn that, then takes it back)."""
    return [s for s in status.steps if s.state == "failed" and s.uncertain]


def undelivered_notice(step: StepRecord) -> bool:
    """Its undo was a message that was not delivered: nothing of it is left on the platform. A
    notification step's undo can only be a message (validation refuses any other), which also
    covers records from before `FailedUndo.notice`."""
    if step.state != "undo_failed":
        return False
    if step.failed_undo is not None and step.failed_undo.notice:
        return True
    return step.lever is not None and is_notification(step.lever)


def undelivered(status: IncidentStatus) -> str | None:
    """The closing notices (`undo:` notifications) that were not delivered, or None."""
    failed = [s for s in status.steps if undelivered_notice(s)]
    if not failed:
        return None
    named = "; ".join(f"{s.id} ({_failure(s)})" for s in failed)
    notices = "1 closing notice was" if len(failed) == 1 else f"{len(failed)} closing notices were"
    return f"{notices} NOT delivered (nothing is left in force by it): {named}"


def _failure(step: StepRecord) -> str:
    """Why its undo failed, naming the lever once (the platform's errors start with it)."""
    error = step.error or "no reason given"
    return error if step.lever and error.startswith(f"{step.lever}:") else f"{step.lever}: {error}"


def verify_audit(store: AuditStore, incident_id: str) -> Verification:
    """The chain's verdict; IncidentNotFound only if the store never knew the incident: with no
    rows left but its board row or a seal, the trail was there and was deleted."""
    result = store.verify(incident_id)
    if result.events > 0:
        return result
    if not store.knows(incident_id):
        raise IncidentNotFound(f"no audit trail for incident {incident_id}")
    problem = "every row of the trail is missing (the store still holds its board row or seals)"
    return Verification(incident_id, False, 0, first_bad_seq=1, problem=problem)


# The commander actions the workflow offers, by the names the CLI and API use.
ACTIONS: dict[str, tuple[Any, type[BaseModel]]] = {
    "approve": (CrisisWorkflow.approve, ApproveRequest),
    "reject": (CrisisWorkflow.reject, RejectRequest),
    "escalate": (CrisisWorkflow.escalate, LevelRequest),
    "de-escalate": (CrisisWorkflow.de_escalate, LevelRequest),
    "renew": (CrisisWorkflow.renew, RenewRequest),
    "restore": (CrisisWorkflow.restore, RestoreRequest),
    "confirm-review": (CrisisWorkflow.confirm_review, ReviewRequest),
    "note": (CrisisWorkflow.add_note, NoteRequest),
    "stand-down": (CrisisWorkflow.stand_down, StandDownRequest),
}

"""The baseline: the fastest hand-written Temporal workflow doing the interpreter's work.

Same platform calls as `CrisisWorkflow` (same URLs, bodies, Idempotency-Key, X-Incident-Id,
X-Step-Id, X-Operation and X-Crisis-Signature headers, same retry policies and timeouts), each a
local activity through one shared `httpx.AsyncClient`, started with `request_eager_start=True`,
and a `stand_down` update that restores in reverse (measures, then closing notices) and completes
the workflow. Measures with a
lapse (`expires_after:`) are undone when it passes, with one timer, as the interpreter does. No
audit trail: the interpreter's audit cost is measured separately by the bench.

`violent_disorder()` is tests/fixtures/playbooks/violent-disorder.yaml written out by hand: when
that playbook changes, change it too (every bench run compares both variants' requests and
reports `parity`).

Imports: stdlib, temporalio and pydantic only; httpx (used by the activities) is passed through
the workflow sandbox, so a workflow run never re-imports anything but this file. The types that
cross the boundary are pydantic dataclasses: the pydantic data converter (the product's, on the
shared client) gets a fresh cache in every workflow run, and for a plain dataclass it generated
the validator anew each time (about 2.5 ms for `BaselineInput`), while a pydantic dataclass
carries its own, as the interpreter's models do.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import field
from datetime import timedelta
from typing import Any

from pydantic.dataclasses import dataclass
from temporalio import activity, workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError, FailureError

with workflow.unsafe.imports_passed_through():
    import httpx

WORKFLOW_NAME = "BaselineWorkflow"
POST_LEVER = "baseline_post_lever"

# The interpreter's policies: a step's default `retry:` (5 attempts, 500ms..30s, x2) and its
# UNDO_RETRY; 4xx answers are final.
NON_RETRYABLE = ["PlatformRejected"]
APPLY_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=30),
    backoff_coefficient=2.0,
    maximum_attempts=5,
    non_retryable_error_types=NON_RETRYABLE,
)
UNDO_RETRY = RetryPolicy(
    initial_interval=timedelta(milliseconds=500),
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=20,
    non_retryable_error_types=NON_RETRYABLE,
)
CALL_TIMEOUT = timedelta(seconds=10)


# --- what crosses the workflow boundary ---------------------------------------------------------
@dataclass
class Undo:
    """An explicit undo call (e.g. a closing notice) instead of restoring the previous state."""

    path: str
    args: dict[str, Any]


@dataclass
class Step:
    """One resolved lever call: POST `path` with `args`; undone by `undo` or by `path`/restore.

    `expires_after_s`: the measure lapses (is undone) that long after it was applied unless the
    incident is stood down first, as a playbook step's `expires_after:` does.
    """

    id: str
    path: str  # e.g. /recommender/throttle, /notify/webhooks/regulator
    args: dict[str, Any]
    reversible: bool = True  # the platform answers {"previous": P} and has `path`/restore
    undo: Undo | None = None
    expires_after_s: float | None = None


@dataclass
class BaselineInput:
    incident_id: str
    steps: list[Step]


@dataclass
class Call:
    """The local activity's argument: one POST to the platform."""

    incident_id: str
    step_id: str
    operation: str
    path: str
    args: dict[str, Any]
    restore: dict[str, Any] | None = None
    reversible: bool = True


@dataclass
class StandDown:
    actor: str
    reason: str


@dataclass
class Outcome:
    applied: list[str] = field(default_factory=list)
    undone: list[str] = field(default_factory=list)
    failed: str | None = None


# --- the workflow -------------------------------------------------------------------------------
@workflow.defn(name=WORKFLOW_NAME)
class BaselineWorkflow:
    def __init__(self) -> None:
        self._stand_down: StandDown | None = None
        self._closed = False
        self._outcome = Outcome()

    @workflow.run
    async def run(self, incident: BaselineInput) -> Outcome:
        applied: list[tuple[Step, dict[str, Any] | None, float | None]] = []
        for step in incident.steps:
            if self._stand_down is not None:
                break
            try:
                previous = await self._post(
                    incident.incident_id,
                    step.id,
                    "apply-1",
                    step.path,
                    step.args,
                    None,
                    step.reversible,
                    APPLY_RETRY,
                )
            except FailureError as error:
                self._outcome.failed = f"{step.id}: {error}"
                break
            expires = (
                None if step.expires_after_s is None else workflow.time() + step.expires_after_s
            )
            applied.append((step, previous, expires))
            self._outcome.applied.append(step.id)

        # Wait for the stand-down; measures whose time is up lapse meanwhile (one timer).
        while self._stand_down is None:
            deadlines = [expires for _, _, expires in applied if expires is not None]
            timeout = max(0.0, min(deadlines) - workflow.time()) if deadlines else None
            try:
                await workflow.wait_condition(lambda: self._stand_down is not None, timeout=timeout)
            except TimeoutError:
                now = workflow.time()
                for item in [a for a in applied if a[2] is not None and a[2] <= now]:
                    await self._take_back(incident.incident_id, item[0], item[1])
                    applied.remove(item)

        # Measures first, newest first, then the closing notices (as the interpreter since v6).
        notices_last = sorted(
            reversed(applied), key=lambda a: a[0].undo is not None and not a[0].reversible
        )
        for step, previous, _ in notices_last:
            await self._take_back(incident.incident_id, step, previous)
        self._closed = True
        await workflow.wait_condition(workflow.all_handlers_finished)
        return self._outcome

    async def _take_back(
        self, incident_id: str, step: Step, previous: dict[str, Any] | None
    ) -> None:
        if step.undo is not None:
            path, args, restore = step.undo.path, step.undo.args, None
        elif step.reversible:
            path, args, restore = step.path, step.args, previous or {}
        else:
            return  # a message cannot be unsent
        try:
            await self._post(
                incident_id, step.id, "undo-1", path, args, restore, step.reversible, UNDO_RETRY
            )
        except FailureError:
            return
        self._outcome.undone.append(step.id)

    @workflow.update
    async def stand_down(self, request: StandDown) -> Outcome:
        self._stand_down = request
        await workflow.wait_condition(lambda: self._closed)
        return self._outcome

    @stand_down.validator
    def _check_stand_down(self, request: StandDown) -> None:
        if self._stand_down is not None:
            raise ApplicationError("incident is already standing down", type="InvalidState")

    @staticmethod
    async def _post(
        incident_id: str,
        step_id: str,
        operation: str,
        path: str,
        args: dict[str, Any],
        restore: dict[str, Any] | None,
        reversible: bool,
        retry: RetryPolicy,
    ) -> dict[str, Any] | None:
        return await workflow.execute_local_activity(
            POST_LEVER,
            Call(incident_id, step_id, operation, path, args, restore, reversible),
            result_type=dict[str, Any] | None,  # type: ignore[arg-type]
            start_to_close_timeout=CALL_TIMEOUT,
            retry_policy=retry,
        )


# --- the activity -------------------------------------------------------------------------------
class BaselinePlatform:
    """The one activity: a POST through the worker's shared AsyncClient."""

    def __init__(
        self, *, base_url: str, client: httpx.AsyncClient, webhook_secret: str, token: str = ""
    ) -> None:
        self._base = base_url.rstrip("/")
        self._client = client
        self._secret = webhook_secret.encode()
        self._token = token

    @activity.defn(name=POST_LEVER)
    async def post_lever(self, call: Call) -> dict[str, Any] | None:
        url = self._base + call.path
        if call.restore is not None:
            url += "/restore"
            body: dict[str, Any] = {"args": call.args, "previous": call.restore}
        else:
            body = call.args
        content = json.dumps(body, sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": f"{call.incident_id}/{call.step_id}/{call.operation}",
            "X-Incident-Id": call.incident_id,
            "X-Step-Id": call.step_id,
            "X-Operation": call.operation,
        }
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        if call.path.startswith("/notify/"):
            # The engine's webhook signature (core/signing.py), written out with the stdlib.
            timestamp = str(int(time.time()))
            signed = timestamp.encode() + b"." + content
            digest = hmac.new(self._secret, signed, hashlib.sha256).hexdigest()
            headers["X-Crisis-Timestamp"] = timestamp
            headers["X-Crisis-Signature"] = f"v1={digest}"
        try:
            try:
                response = await self._client.post(url, content=content, headers=headers)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                # A kept-alive connection the platform closed as the pool reused it: sent again
                # at once on a new one, as the product's connector does (activities/posting.py),
                # instead of failing the attempt and waiting for the retry policy.
                response = await self._client.post(url, content=content, headers=headers)
        except httpx.HTTPError as error:
            raise RuntimeError(f"platform unreachable at {url}: {error}") from error
        if response.status_code >= 500:
            raise RuntimeError(f"platform error HTTP {response.status_code}")
        if response.status_code >= 400:
            raise ApplicationError(
                f"platform rejected (HTTP {response.status_code}): {response.text[:300]}",
                type="PlatformRejected",
                non_retryable=True,
            )
        return response.json().get("previous") if call.reversible else None


# --- the work, written by hand ------------------------------------------------------------------
def violent_disorder(
    incident_id: str,
    *,
    actor: str,
    region: str = "GB",
    categories: list[str] | None = None,
    reach_multiplier: float = 0.25,
    flag_threshold: float = 0.25,
) -> BaselineInput:
    """tests/fixtures/playbooks/violent-disorder.yaml with its default inputs, resolved by hand."""
    categories = list(categories or ["incitement_to_violence", "racial_hatred"])
    lapse = 48 * 3600.0  # expires_after: 48h
    return BaselineInput(
        incident_id=incident_id,
        steps=[
            Step(
                "throttle-recommender",
                "/recommender/throttle",
                {
                    "region": region,
                    "categories": categories,
                    "reach_multiplier": reach_multiplier,
                    "reshare_limit": 5,
                },
                expires_after_s=lapse,
            ),
            Step(
                "raise-detection",
                "/detection/threshold",
                {"classifier": "incitement_to_violence", "threshold": flag_threshold},
                expires_after_s=lapse,
            ),
            Step(
                "surge-hate-queue",
                "/moderation/surge",
                {"queue": "hate", "extra_reviewers": 25, "priority": "urgent"},
                expires_after_s=lapse,
            ),
            Step(
                "notify-regulator",
                "/notify/webhooks/regulator",
                {
                    "to": "regulator",
                    "severity": "critical",
                    "message": "Crisis protocol activated: violent disorder incited online in "
                    f"{region} "
                    f"(incident {incident_id})",
                    "data": {"categories": categories},
                },
                reversible=False,
                undo=Undo(
                    "/notify/webhooks/regulator",
                    {
                        "to": "regulator",
                        "severity": "info",
                        "message": f"Crisis protocol concluded for {region} (incident "
                        f"{incident_id}); emergency measures lifted",
                    },
                ),
            ),
            Step(
                "notify-crisis-team",
                "/notify/webhooks/internal-crisis-team",
                {
                    "to": "internal-crisis-team",
                    "severity": "critical",
                    "message": f"Incident {incident_id} opened by {actor}: "
                    f"violent disorder in {region}",
                },
                reversible=False,
                undo=Undo(
                    "/notify/webhooks/internal-crisis-team",
                    {
                        "to": "internal-crisis-team",
                        "severity": "info",
                        "message": f"Incident {incident_id} stood down; every emergency measure "
                        f"has been lifted",
                    },
                ),
            ),
        ],
    )

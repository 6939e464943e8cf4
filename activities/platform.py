"""Platform levers over HTTP: one activity that applies or restores any catalogued lever.

Each lever is a route on a connector (base URL from settings). Apply answers the state it
replaced; restore puts such a state back. The idempotency key makes retries and re-runs after a
worker crash harmless.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import httpx
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.audit import AuditWriter
from activities.messages import MessageError, render_message
from activities.posting import post
from core.settings import Settings
from core.signing import signature_headers
from workflows.audit import AuditBatch, AuditWritten, carried_events
from workflows.incident import APPLY_LEVER, LeverOutcome, LeverRequest
from workflows.levers import LEVERS

log = structlog.get_logger(__name__)
# A carried write that takes longer is left to the workflow's own audit write (which retries
# until the store answers), so a slow store never holds up, or fails, the lever call. It also
# ends this long before the call's own deadline: an attempt timed out after its write would be
# retried, and the retry's outcome (another duration) would contradict the row just written.
CARRIED_WRITE_S = 5.0
DEADLINE_MARGIN_S = 1.0
# A call still unanswered after this long writes the events it was lent or carries (those before
# its outcome) at once, and so does a call that fails: the incident board shows them while it
# retries, instead of once it is done.
EARLY_WRITE_AFTER_S = 1.0
# The workflow lends a batch of events once; one the call did not need to write (the platform
# answered at once) is kept for the incident's next calls, which write it if they are slow or
# fail. At most this many incidents' (one whose later calls run on another worker would
# otherwise be kept for ever).
LENT_KEPT = 2_000
# See `tried_s`: a call scheduled this long after the workflow made it was scheduled anew.
RESCHEDULED_AFTER_S = 5.0
# An attempt stops waiting for the platform this long before it would be cut off (by the step's
# `timeout:`), so that it fails as a call that had no answer, saying how long it tried and which
# attempt it was, instead of being cut off by Temporal with neither.
OWN_DEADLINE_MARGIN_S = 0.2
# Calls not answered yet whose attempts a worker remembers (`_Attempts`); at most this many.
CALLS_KEPT = 10_000


@dataclass(frozen=True)
class Route:
    connector: str
    path: str


ROUTES: dict[str, Route] = {
    "recommender.throttle": Route("recommender", "/throttle"),
    "detection.set_threshold": Route("detection", "/threshold"),
    "moderation.surge": Route("moderation", "/surge"),
    "notify.webhook": Route("notify", "/webhooks/{to}"),
    "notify.send": Route("notify", "/webhooks/{to}"),
    "recommender.exclude_unreviewed": Route("recommender", "/exclude-unreviewed"),
    "livestream.restrict": Route("livestream", "/restrict"),
    "hashes.block": Route("hashes", "/lists/block"),
    "ads.hold_new_advertisers": Route("ads", "/hold-new-advertisers"),
    "accounts.sanction_on_match": Route("accounts", "/sanction-on-match"),
    "search.suppress_suggestions": Route("search", "/suppress-suggestions"),
    "hashes.share": Route("hashes", "/lists/share"),
    "users.show_warning": Route("warnings", "/show"),
}


class PlatformRejected(Exception):
    """The platform refused the request (4xx): retrying cannot help."""


class PlatformUnavailable(Exception):
    """The platform did not answer, or failed (5xx): the call is retried per the step's policy."""


def tried_s(scheduled: datetime, began: str | None, now: datetime) -> float:
    """How long the call has been trying: since the worker scheduled it, or since the workflow
    made it (`began`) when that was more than RESCHEDULED_AFTER_S earlier. Then the call was
    scheduled anew (its worker restarted meanwhile) and, timed from its new scheduling, its
    outcome was stamped that much too early. Within the margin the worker's own schedule time is
    kept: it does not depend on how far the worker's clock is from the server's."""
    start = scheduled
    if began is not None:
        made = datetime.fromisoformat(began)
        if (scheduled - made).total_seconds() > RESCHEDULED_AFTER_S:
            start = made
    return max((now - start).total_seconds(), 0.0)


# The request may have reached the platform, which may have applied it, but no answer came
# back: a read or write that timed out, a connection dropped mid-request. (A connection never
# made sent nothing.)
_UNANSWERED = (httpx.ReadTimeout, httpx.WriteTimeout, httpx.RemoteProtocolError, httpx.ReadError)


def _failed(
    message: str,
    kind: type[Exception],
    began: str | None,
    *,
    non_retryable: bool = False,
    unanswered: bool = False,
) -> ApplicationError:
    """The call's failure, with how long it has been trying (`tried_s`) and which attempt this
    was: the incident stamps a failure when it happened, not when the call began
    (`failure_facts` in workflows.incident_run). `unanswered`: sent, maybe applied, no answer."""
    info = activity.info()
    tried = tried_s(info.scheduled_time, began, datetime.now(UTC))
    facts: dict[str, Any] = {"tried_s": round(tried, 6), "attempt": info.attempt}
    if unanswered:
        facts["unanswered"] = True
    return ApplicationError(
        message,
        facts,
        type=kind.__name__,
        non_retryable=non_retryable,
        # The lever's own log line has said what failed; benign keeps the SDK from logging a
        # traceback of this raise for every attempt (it logs at debug instead).
        category=ApplicationErrorCategory.BENIGN,
    )


@dataclass
class _Attempts:
    """What a worker remembers of a lever call's attempts until the platform answers it."""

    # One was sent and never answered: the platform may have applied it, whatever later
    # attempts hear.
    unanswered: bool = False
    # When each attempt is cut off (monotonic): Temporal's core leaves an earlier attempt's
    # start-to-close timer running, and it cuts off a later attempt (sdk-rust#1454).
    cutoffs: list[float] = field(default_factory=list)

    def wait(self, limit: timedelta | None) -> float | None:
        """How long a new attempt waits for the platform: to OWN_DEADLINE_MARGIN_S before the
        first cut-off, its own or an earlier attempt's; None (Temporal cuts it off) when that
        leaves too little."""
        if limit is None:
            return None
        now = time.monotonic()
        self.cutoffs = [at for at in self.cutoffs if at > now] + [now + limit.total_seconds()]
        wait = min(self.cutoffs) - now - OWN_DEADLINE_MARGIN_S
        return wait if wait >= OWN_DEADLINE_MARGIN_S else None


# Which of httpx's timeouts each of its timeout errors is.
_TIMEOUT_KINDS: dict[type[httpx.TimeoutException], str] = {
    httpx.ConnectTimeout: "connect",
    httpx.ReadTimeout: "read",
    httpx.WriteTimeout: "write",
    httpx.PoolTimeout: "pool",
}


def _unreachable(url: str, error: httpx.HTTPError, timeout: httpx.Timeout, *, sent: bool) -> str:
    """What went wrong with a call that had no answer: `sent` and unanswered (the platform may
    have applied it) or never sent; with how long it waited when it timed out."""
    what = f"no answer from the platform at {url}" if sent else f"platform unreachable at {url}"
    if isinstance(error, httpx.TimeoutException):
        waited = timeout.as_dict().get(_TIMEOUT_KINDS.get(type(error), "read"))
        within = f"within {round(waited, 1):g}s" if waited is not None else "in time"
        return f"{what} {within}" if sent else f"{what}: no connection {within}"
    return f"{what}: {error or type(error).__name__}"


def _within(timeout: httpx.Timeout, wait: float | None) -> httpx.Timeout | None:
    """The client's timeouts, none longer than `wait` (None: the client's own, as when all of
    them are shorter: the usual case, so most calls build nothing)."""
    if wait is None:
        return None
    given = timeout.as_dict()
    if all(v is not None and v <= wait for v in given.values()):
        return None
    return httpx.Timeout(**{k: wait if v is None else min(v, wait) for k, v in given.items()})


def _remember(kept: dict[str, Any], key: str, value: Any, most: int) -> None:
    """Keep `value` under `key` as the newest entry, forgetting the oldest beyond `most`."""
    kept.pop(key, None)
    kept[key] = value
    if len(kept) > most:
        del kept[next(iter(kept))]


class PlatformLevers:
    """Activities that pull levers; holds the worker's one shared HTTP client."""

    def __init__(
        self, *, settings: Settings, client: httpx.AsyncClient, audit: AuditWriter | None = None
    ) -> None:
        self._settings = settings
        self._client = client
        self._audit = audit
        self._lent: dict[str, AuditBatch] = {}  # by incident: see LENT_KEPT
        self._calls: dict[str, _Attempts] = {}  # by idempotency key: see CALLS_KEPT

    @activity.defn(name=APPLY_LEVER)
    async def apply_lever(self, request: LeverRequest) -> LeverOutcome:
        info = activity.info()
        bound = log.bind(
            incident_id=request.incident_id,
            step_id=request.step_id,
            workflow_run=info.workflow_run_id,
            lever=request.lever,
            operation=request.operation,
            attempt=info.attempt,
        )
        route = ROUTES[request.lever]
        path = route.path
        if "{to}" in path:  # a stakeholder's name: checked at trigger, quoted all the same
            path = path.replace("{to}", quote(str(request.args["to"]), safe=""))
        url = self._settings.connector_url(route.connector) + path
        if request.restore is not None:
            url += "/restore"
            body: dict[str, Any] = {"args": request.args, "previous": request.restore}
        elif request.lever == "notify.send":
            body = self._message(request)
        else:
            body = dict(request.args)
        content = json.dumps(body, sort_keys=True).encode()
        headers = self._headers(request, content)
        key = request.idempotency_key
        attempts = self._calls.get(key) or _Attempts()
        _remember(self._calls, key, attempts, CALLS_KEPT)  # the newest, so kept longest
        timeout = _within(self._client.timeout, attempts.wait(info.start_to_close_timeout))
        try:
            response = await self._send(
                url,
                content,
                headers,
                self._early(request),
                bound,
                keep=request.lent is not None,
                timeout=timeout,
            )
        except httpx.HTTPError as error:
            sent = isinstance(error, _UNANSWERED)
            attempts.unanswered = attempts.unanswered or sent
            bound.warning("lever.unreachable", url=url, error=str(error) or type(error).__name__)
            said = _unreachable(url, error, timeout or self._client.timeout, sent=sent)
            raise _failed(
                f"{request.lever}: {said}",
                PlatformUnavailable,
                request.began,
                unanswered=attempts.unanswered,
            ) from None  # its message says it all: a cause would be shown instead
        except asyncio.CancelledError:
            # Cut off by Temporal (or the worker stops) with the request out.
            attempts.unanswered = True
            raise
        if response.status_code >= 500:
            bound.warning("lever.platform_error", status=response.status_code)
            raise _failed(
                f"{request.lever}: platform error HTTP {response.status_code}",
                PlatformUnavailable,
                request.began,
                # A 5xx says nothing of an earlier attempt that had no answer.
                unanswered=attempts.unanswered,
            )
        self._calls.pop(key, None)  # the platform has answered this call for good
        if response.status_code >= 400:
            bound.error("lever.rejected", status=response.status_code, body=response.text[:500])
            raise _failed(
                f"{request.lever}: platform rejected the request (HTTP {response.status_code}): "
                f"{response.text[:300]}",
                PlatformRejected,
                request.began,
                non_retryable=True,
            )
        answer = response.json()
        previous = answer.get("previous") if LEVERS[request.lever].reversible else None
        # Since the workflow first scheduled the call, earlier attempts and their backoff
        # included: the incident stamps the outcome when the platform confirmed it.
        elapsed = tried_s(info.scheduled_time, request.began, datetime.now(UTC))
        bound.info("lever.restored" if request.restore is not None else "lever.applied")
        written = await self._write_carried(request, elapsed, previous, bound)
        return LeverOutcome(previous=previous, elapsed_s=elapsed, audit=written)

    async def _send(
        self,
        url: str,
        content: bytes,
        headers: dict[str, str],
        early: AuditBatch | None,
        bound: structlog.typing.FilteringBoundLogger,
        *,
        keep: bool = False,
        timeout: httpx.Timeout | None = None,
    ) -> httpx.Response:
        """POST; with `early` events, write them once the platform has taken EARLY_WRITE_AFTER_S
        without answering, or before answering a failure (the events hold whatever the outcome).
        `keep`: `early` was lent to this call; unwritten, it is kept for the next calls."""
        if early is None:
            return await post(self._client, url, content=content, headers=headers, timeout=timeout)
        started = time.monotonic()
        loop = asyncio.get_running_loop()
        writing: list[asyncio.Task[AuditWritten | None]] = []
        timer = loop.call_later(
            EARLY_WRITE_AFTER_S,
            lambda: writing.append(loop.create_task(self._write(early, started, "early", bound))),
        )
        failure: httpx.HTTPError | None = None
        try:
            response = await post(
                self._client, url, content=content, headers=headers, timeout=timeout
            )
        except httpx.HTTPError as error:
            failure = error
        except asyncio.CancelledError:
            for task in writing:  # the attempt is abandoned: stop waiting for its write too
                task.cancel()
            raise
        finally:
            timer.cancel()  # the early write starts only while the POST is in flight
        if writing or failure is not None or response.status_code >= 400:
            await (writing[0] if writing else self._write(early, started, "early", bound))
        elif keep:
            self._keep_lent(early)
        if failure is not None:
            raise failure
        return response

    def _early(self, request: LeverRequest) -> AuditBatch | None:
        """The events this call writes early, if slow or failing: those it carries (before its
        outcome), or those it was lent, or else those an earlier call of the incident was lent
        and did not write (the workflow lends them once)."""
        if self._audit is None:
            return None
        if request.audit is not None and request.audit.events:
            carry = request.audit
            return AuditBatch(events=carry.events, task=carry.task, task_time=carry.task_time)
        return request.lent or self._lent.get(request.incident_id)

    def _keep_lent(self, batch: AuditBatch) -> None:
        _remember(self._lent, batch.events[0].incident_id, batch, LENT_KEPT)

    async def _write_carried(
        self,
        request: LeverRequest,
        elapsed: float,
        previous: dict[str, Any] | None,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> AuditWritten | None:
        """Write the audit events the call carries, its outcome's included; None if they were
        not written (the workflow then writes them itself)."""
        carry = request.audit
        if carry is None or self._audit is None:
            return None
        events = [*carry.events, *carried_events(carry, elapsed_s=elapsed, previous=previous)]
        batch = AuditBatch(events=events, task=carry.task, task_time=carry.task_time)
        return await self._write(batch, time.monotonic() - elapsed, "carried", bound)

    async def _write(
        self,
        batch: AuditBatch,
        started: float,
        what: str,
        bound: structlog.typing.FilteringBoundLogger,
    ) -> AuditWritten | None:
        """Write a batch within CARRIED_WRITE_S and the attempt's deadline (`started`: when the
        attempt began); None if it was not written (the workflow writes its events itself)."""
        assert self._audit is not None
        budget = CARRIED_WRITE_S
        limit = activity.info().start_to_close_timeout
        if limit is not None:
            elapsed = time.monotonic() - started
            budget = min(budget, limit.total_seconds() - elapsed - DEADLINE_MARGIN_S)
        if budget <= 0:
            bound.warning(f"audit.{what}_write_skipped", reason="too close to the call's deadline")
            return None
        try:
            written = await asyncio.wait_for(self._audit.write(batch), budget)
        except Exception as error:  # the lever is applied either way; its trail is not lost
            bound.warning(f"audit.{what}_write_failed", error=str(error) or type(error).__name__)
            return None
        kept = self._lent.get(batch.events[0].incident_id) if self._lent else None
        if kept is not None and kept.events[-1].seq <= written.last_seq:
            del self._lent[batch.events[0].incident_id]  # done: no later call need write it
        return written

    @staticmethod
    def _message(request: LeverRequest) -> dict[str, Any]:
        template = request.args["template"]
        if request.message is None:
            raise ApplicationError(
                f"message template {template!r} was not frozen at trigger",
                type="MessageError",
                non_retryable=True,
            )
        try:
            subject, text = render_message(
                request.message, request.context, request.args.get("data", {})
            )
        except MessageError as error:
            raise ApplicationError(str(error), type="MessageError", non_retryable=True) from None
        return {
            "stakeholder": request.args["to"],
            "template": template,
            "severity": request.args.get("severity", "warning"),
            "subject": subject,
            "message": text,
            "incident_id": request.incident_id,
            "data": request.args.get("data", {}),
        }

    def _headers(self, request: LeverRequest, content: bytes) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": request.idempotency_key,
            "X-Incident-Id": request.incident_id,
            "X-Step-Id": request.step_id,
            "X-Operation": request.operation,
        }
        if self._settings.platform_token:
            headers["Authorization"] = f"Bearer {self._settings.platform_token}"
        if ROUTES[request.lever].connector == "notify":
            headers.update(signature_headers(self._settings.webhook_secret, content))
        return headers

"""Delivering one notification to one channel of a stakeholder: the activity behind `notify.send`.

The workflow runs one of these per channel, so a dead Slack webhook neither blocks nor repeats
the e-mail to the regulator. Errors are classified for Temporal: a receiver that is down or
rate-limiting raises a retryable error (the step's retry policy applies); a refused message, a
broken template or a missing secret is non-retryable and fails the delivery at once.
"""

from __future__ import annotations

import time
from typing import Any

import httpx
import structlog
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.channels.base import DeliveryError, Outgoing, Sender
from activities.channels.email import EmailSender
from activities.channels.pagerduty import PagerDutySender
from activities.channels.slack import SlackSender
from activities.channels.webhook import WebhookSender
from activities.messages import MessageError, render_message
from core.settings import Settings
from workflows.notifications import DELIVER_NOTIFICATION, DeliveryReceipt, DeliveryRequest

log = structlog.get_logger(__name__)


class NotificationDelivery:
    """The delivery activity; holds the worker's shared HTTP client and one sender per channel."""

    def __init__(self, *, settings: Settings, client: httpx.AsyncClient) -> None:
        self._senders: dict[str, Sender[Any]] = {
            "webhook": WebhookSender(settings=settings, client=client),
            "email": EmailSender(settings=settings),
            "slack": SlackSender(client=client),
            "pagerduty": PagerDutySender(settings=settings, client=client),
        }

    @activity.defn(name=DELIVER_NOTIFICATION)
    async def deliver(self, request: DeliveryRequest) -> DeliveryReceipt:
        info = activity.info()
        channel = request.channel
        bound = log.bind(
            incident_id=request.incident_id,
            step_id=request.step_id,
            workflow_run=info.workflow_run_id,
            stakeholder=request.stakeholder,
            channel=channel.describe(),
            attempt=info.attempt,
        )
        started = time.monotonic()
        try:
            subject, body = render_message(request.template, request.context, request.data)
        except MessageError as error:
            bound.error(
                "notification.unrenderable", template=request.template_name, error=str(error)
            )
            raise ApplicationError(
                f"template {request.template_name!r}: {error}",
                type=MessageError.__name__,
                non_retryable=True,
                category=ApplicationErrorCategory.BENIGN,  # logged above: no SDK traceback too
            ) from None
        outgoing = Outgoing(request=request, subject=subject, body=body)
        try:
            message_id = await self._senders[channel.type].send(channel, outgoing)
        except DeliveryError as error:
            kind = type(error).__name__
            if error.retryable:
                bound.warning("notification.delivery_failed", error=str(error), kind=kind)
            else:
                bound.error("notification.delivery_refused", error=str(error), kind=kind)
            raise ApplicationError(
                str(error),
                type=kind,
                non_retryable=not error.retryable,
                next_retry_delay=error.retry_after,
                category=ApplicationErrorCategory.BENIGN,
            ) from None
        elapsed = time.monotonic() - started
        bound.info("notification.sent", message_id=message_id, elapsed_s=round(elapsed, 3))
        return DeliveryReceipt(
            channel=channel.type,
            target=channel.describe(),
            message_id=message_id,
            elapsed_s=elapsed,
        )

"""PagerDuty Events API v2: a `trigger` event that pages whoever is on call for the service.

The dedup key is the delivery's idempotency key, so PagerDuty itself folds a retried trigger into
the alert the first attempt opened.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx

from activities.channels.base import DeliveryRejected, Outgoing, post, secret_from_env
from core.settings import Settings
from workflows.notifications import PagerDutyChannel

SUMMARY_LIMIT = 1024
DEDUP_KEY_LIMIT = 255
SOURCE = "crisis-engine"


def dedup_key(idempotency_key: str) -> str:
    if len(idempotency_key) <= DEDUP_KEY_LIMIT:
        return idempotency_key
    return hashlib.sha256(idempotency_key.encode()).hexdigest()


def pagerduty_event(message: Outgoing, *, routing_key: str) -> dict[str, Any]:
    request = message.request
    summary = " ".join(message.subject.split()) or request.template_name
    if len(summary) > SUMMARY_LIMIT:
        summary = summary[: SUMMARY_LIMIT - 1] + "…"
    return {
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key(request.idempotency_key),
        "payload": {
            "summary": summary,
            "source": SOURCE,
            "severity": request.severity,
            "component": request.template_name,
            "group": request.incident_id,
            "custom_details": {
                "message": message.body,
                "incident_id": request.incident_id,
                "step_id": request.step_id,
                "stakeholder": request.stakeholder,
                "data": request.data,
            },
        },
    }


class PagerDutySender:
    def __init__(self, *, settings: Settings, client: httpx.AsyncClient) -> None:
        self._settings = settings
        self._client = client

    async def send(self, channel: PagerDutyChannel, message: Outgoing) -> str:
        target = channel.describe()
        routing_key = secret_from_env(channel.routing_key_env, channel)
        event = pagerduty_event(message, routing_key=routing_key)
        response = await post(
            self._client,
            self._settings.pagerduty_events_url,
            target=target,
            content=json.dumps(event).encode(),
            headers={"Content-Type": "application/json"},
            secrets=(routing_key,),
        )
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or answer.get("status") != "success":
            raise DeliveryRejected(f"{target}: unexpected answer HTTP {response.status_code}")
        return str(answer.get("dedup_key") or event["dedup_key"])

"""Signed JSON webhooks: to the platform's notify connector by default, or to any URL."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx

from activities.channels.base import Outgoing, post, secret_from_env
from core.settings import Settings
from core.signing import signature_headers
from workflows.notifications import WebhookChannel


def webhook_body(message: Outgoing) -> dict[str, Any]:
    """The JSON a receiver gets (the notify connector's contract, docs/platform-api.md)."""
    request = message.request
    return {
        "stakeholder": request.stakeholder,
        "template": request.template_name,
        "severity": request.severity,
        "subject": message.subject,
        "message": message.body,
        "incident_id": request.incident_id,
        "data": request.data,
    }


class WebhookSender:
    def __init__(self, *, settings: Settings, client: httpx.AsyncClient) -> None:
        self._settings = settings
        self._client = client

    async def send(self, channel: WebhookChannel, message: Outgoing) -> str:
        request = message.request
        target = channel.describe()
        if channel.secret_env is None:
            secret = self._settings.webhook_secret
        else:
            secret = secret_from_env(channel.secret_env, channel)
        content = json.dumps(webhook_body(message), sort_keys=True).encode()
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": request.idempotency_key,
            "X-Incident-Id": request.incident_id,
            "X-Step-Id": request.step_id,
            **signature_headers(secret, content),
        }
        if request.operation is not None:
            headers["X-Operation"] = request.operation
        if channel.url is None:
            name = quote(request.stakeholder, safe="")
            url = f"{self._settings.connector_url('notify')}/webhooks/{name}"
            # The platform token is for the platform's own connector, never for third parties.
            if self._settings.platform_token:
                headers["Authorization"] = f"Bearer {self._settings.platform_token}"
        else:
            url = channel.url
        response = await post(
            self._client,
            url,
            target=target,
            content=content,
            headers=headers,
            secrets=(secret, self._settings.platform_token),
        )
        return _answered_id(response) or request.idempotency_key


def _answered_id(response: httpx.Response) -> str | None:
    try:
        answer = response.json()
    except ValueError:
        return None
    found = answer.get("id") if isinstance(answer, dict) else None
    return str(found) if isinstance(found, str | int) and str(found) else None

"""Slack-compatible incoming webhooks (Slack, Mattermost, Rocket.Chat accept this payload).

The webhook URL is itself the credential, so it comes from an environment variable and is never
quoted in a message or a log. Incoming webhooks answer plain `ok` and no message id: the
delivery's idempotency key is the id.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from activities.channels.base import Outgoing, check_http_url, post, secret_from_env
from workflows.notifications import SlackChannel

# Slack's limits: a header block's text, a section's text.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000


def slack_payload(message: Outgoing) -> dict[str, Any]:
    request = message.request
    return {
        # Shown in notifications and by clients that do not render blocks.
        "text": _truncate(f"{message.subject}\n{message.body}", SECTION_LIMIT),
        "blocks": [
            {
                "type": "header",
                "text": {"type": "plain_text", "text": _truncate(message.subject, HEADER_LIMIT)},
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _truncate(_escape(message.body), SECTION_LIMIT)},
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"Incident *{_escape(request.incident_id)}* · severity "
                        f"*{request.severity}* · step {_escape(request.step_id)}",
                    }
                ],
            },
        ],
    }


class SlackSender:
    def __init__(self, *, client: httpx.AsyncClient) -> None:
        self._client = client

    async def send(self, channel: SlackChannel, message: Outgoing) -> str:
        target = channel.describe()
        url = secret_from_env(channel.url_env, channel)
        check_http_url(url, target=target, variable=channel.url_env)
        await post(
            self._client,
            url,
            target=target,
            content=json.dumps(slack_payload(message)).encode(),
            headers={"Content-Type": "application/json"},
        )
        return message.request.idempotency_key


def _escape(text: str) -> str:
    # Slack's mrkdwn treats these three as control characters.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"

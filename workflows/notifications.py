"""Notification channels and one delivery to one of them: what crosses the workflow boundary.

A stakeholder in the directory has channels (a signed webhook, e-mail, Slack, PagerDuty); a
`notify.send` step runs one delivery activity per channel. Configuration names environment
variables for secrets and never holds a secret itself, so the directory (and the workflow history,
where channels travel inside requests) can be read by anyone who reads playbooks.
"""

from __future__ import annotations

import re
from email.utils import parseaddr
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

DELIVER_NOTIFICATION = "deliver_notification"

# An environment variable's name; anything else (a URL, a key) is a secret written into config.
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Deliberately plain: one @, no spaces or angle brackets, a dot in the domain.
ADDRESS = re.compile(r"^[^@\s<>,;]+@[^@\s<>,;]+\.[^@\s<>,;]+$")


def _env_name(value: str) -> str:
    if not ENV_NAME.match(value):
        # Not echoed: a value that is no name may well be the secret itself.
        raise ValueError(
            "must name an environment variable (letters, digits, _) that holds the secret, "
            "not the secret itself"
        )
    return value


def _address(value: str) -> str:
    _, address = parseaddr(value)
    if "\n" in value or "\r" in value or not ADDRESS.match(address):
        raise ValueError(f"{value!r} is not an e-mail address")
    return value


# Validated one by one, so an error points at the address (`to[1]`), not the whole list.
Address = Annotated[str, AfterValidator(_address)]


class MessageTemplate(BaseModel):
    """A notification's subject and body (Jinja2, rendered in a sandbox at send time).

    Defined here, beside the requests that carry it; `workflows.incident` re-exports it.
    """

    model_config = ConfigDict(frozen=True)

    subject: str
    body: str


class _Channel(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class WebhookChannel(_Channel):
    """A JSON POST signed with HMAC-SHA256 (headers X-Crisis-Timestamp, X-Crisis-Signature)."""

    type: Literal["webhook"] = "webhook"
    # None = the notify connector's /webhooks/<stakeholder>.
    url: str | None = None
    # Environment variable holding the HMAC secret; None = the engine's CRISIS_WEBHOOK_SECRET.
    secret_env: str | None = None

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"{value!r} is not an http(s) URL")
            if parts.username or parts.password:
                raise ValueError("the URL holds credentials: use secret_env for the secret")
        return value

    @field_validator("secret_env")
    @classmethod
    def _secret_env(cls, value: str | None) -> str | None:
        return None if value is None else _env_name(value)

    def describe(self) -> str:
        if self.url is None:
            return "webhook:notify-connector"
        parts = urlsplit(self.url)
        # Without the query: receivers sometimes put tokens there.
        return f"webhook:{parts.scheme}://{parts.netloc}{parts.path}"


class EmailChannel(_Channel):
    """Plain-text e-mail over the deployment's SMTP relay (CRISIS_SMTP_*)."""

    type: Literal["email"] = "email"
    to: list[Address] = Field(min_length=1)
    cc: list[Address] = Field(default_factory=list)

    def describe(self) -> str:
        return "email:" + ",".join(parseaddr(value)[1] for value in self.to)


class SlackChannel(_Channel):
    """A Slack-compatible incoming webhook; its URL is a secret, so config names its variable."""

    type: Literal["slack"] = "slack"
    url_env: str

    @field_validator("url_env")
    @classmethod
    def _url_env(cls, value: str) -> str:
        return _env_name(value)

    def describe(self) -> str:
        return "slack"


class PagerDutyChannel(_Channel):
    """A PagerDuty Events API v2 trigger; the integration's routing key lives in the environment."""

    type: Literal["pagerduty"] = "pagerduty"
    routing_key_env: str

    @field_validator("routing_key_env")
    @classmethod
    def _routing_key_env(cls, value: str) -> str:
        return _env_name(value)

    def describe(self) -> str:
        return "pagerduty"


Channel = Annotated[
    WebhookChannel | EmailChannel | SlackChannel | PagerDutyChannel,
    Field(discriminator="type"),
]
ChannelType = Literal["webhook", "email", "slack", "pagerduty"]
CHANNEL_TYPES: tuple[ChannelType, ...] = ("webhook", "email", "slack", "pagerduty")


class DeliveryRequest(BaseModel):
    """One message to one channel of one stakeholder."""

    incident_id: str
    step_id: str
    stakeholder: str  # the directory key, e.g. regulator
    channel: Channel
    template_name: str
    template: MessageTemplate
    context: dict[str, Any] = Field(default_factory=dict)  # what the template may refer to
    data: dict[str, Any] = Field(default_factory=dict)  # the step's `data:`
    severity: Literal["info", "warning", "critical"] = "warning"
    idempotency_key: str = Field(min_length=1)
    # The step's operation and the channel's place among the stakeholder's (`apply-1/0`), as a
    # webhook's X-Operation header; None in requests scheduled before the header existed.
    operation: str | None = None


class DeliveryReceipt(BaseModel):
    """What the channel answered: the id to quote when asking the receiver about the message."""

    channel: ChannelType
    target: str  # channel.describe(): no secrets
    message_id: str
    elapsed_s: float

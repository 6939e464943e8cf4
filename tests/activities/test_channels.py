"""The delivery activity against real receivers on loopback: a webhook endpoint that verifies
signatures, Slack- and PagerDuty-like endpoints, SMTP relays (plain, and STARTTLS with AUTH).

Every failure is classified for Temporal (retry later, or stop now), and no secret ever shows in a
receipt, a log event or an error message.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import timedelta
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from structlog.testing import capture_logs
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.channels.email import message_id
from activities.delivery import NotificationDelivery
from core.net import free_port
from core.settings import Settings
from tests.activities.receivers import (
    Inbox,
    PagerDutyReceiver,
    SlackReceiver,
    TlsFiles,
    WebhookReceiver,
    make_tls_files,
    password_authenticator,
    smtp_server,
)
from tests.helpers import dropping_receiver, serve_app
from workflows.notifications import (
    Channel,
    DeliveryReceipt,
    DeliveryRequest,
    EmailChannel,
    MessageTemplate,
    PagerDutyChannel,
    SlackChannel,
    WebhookChannel,
)

TEMPLATE = MessageTemplate(
    subject="Crisis protocol activated: {{ playbook.title }} ({{ incident.id }})",
    body="Incident {{ incident.id }} in {{ inputs.region }}: {{ data.note }}",
)
CONTEXT = {
    "incident": {"id": "INC-7", "level": "high"},
    "playbook": {"title": "Violent disorder"},
    "inputs": {"region": "GB"},
}
SUBJECT = "Crisis protocol activated: Violent disorder (INC-7)"
BODY = "Incident INC-7 in GB: reach cut to 25%"
SLACK_TOKEN = "T0001/B0001/slack-secret-token-4f9a"
ROUTING_KEY = "R0UT1NGKEY5ECRET0000000000000001"
SMTP_USER = "crisis-relay"
SMTP_PASSWORD = "smtp-password-never-logged-7c1e"
SENDER = "Crisis desk <crisis@platform.example>"


def delivery_request(channel: Channel, **changes: Any) -> DeliveryRequest:
    fields: dict[str, Any] = {
        "incident_id": "INC-7",
        "step_id": "notify-regulator",
        "stakeholder": "regulator",
        "channel": channel,
        "template_name": "crisis-opened",
        "template": TEMPLATE,
        "context": CONTEXT,
        "data": {"note": "reach cut to 25%"},
        "severity": "critical",
        "idempotency_key": "INC-7/notify-regulator/apply-1/0",
        "operation": "apply-1/0",
    }
    return DeliveryRequest(**{**fields, **changes})


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5) as client:
        yield client


async def deliver(
    settings: Settings, http: httpx.AsyncClient, request: DeliveryRequest
) -> DeliveryReceipt:
    delivery = NotificationDelivery(settings=settings, client=http)
    return await ActivityEnvironment().run(delivery.deliver, request)


async def delivery_error(
    settings: Settings, http: httpx.AsyncClient, request: DeliveryRequest
) -> ApplicationError:
    with pytest.raises(ApplicationError) as caught:
        await deliver(settings, http, request)
    return caught.value


def assert_nowhere(secret: str, *things: Any) -> None:
    for thing in things:
        text = thing.model_dump_json() if isinstance(thing, DeliveryReceipt) else repr(thing)
        assert secret not in text, f"secret leaked into {text[:300]}"


def events(logs: list[dict[str, Any]]) -> list[str]:
    return [entry["event"] for entry in logs]


# --- signed webhooks ----------------------------------------------------------------------------
async def test_webhook_is_signed_and_the_receiver_verifies_it(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver of one's own gets the connector's message shape, signed with its own secret,
    and the platform token stays with the platform."""
    monkeypatch.setenv("PARTNER_HOOK_SECRET", "partner-hook-secret-91ab")
    receiver = WebhookReceiver(secret="partner-hook-secret-91ab", answer_id="partner-msg-17")
    with serve_app(receiver.app()) as url, capture_logs() as logs:
        channel = WebhookChannel(url=f"{url}/hooks/partner", secret_env="PARTNER_HOOK_SECRET")
        settings = Settings(platform_token="platform-token-5d2")
        receipt = await deliver(settings, http, delivery_request(channel))

    assert ("webhook", f"webhook:{url}/hooks/partner", "partner-msg-17") == (
        receipt.channel,
        receipt.target,
        receipt.message_id,
    )
    (seen,) = receiver.accepted
    assert {
        "stakeholder": "regulator",
        "template": "crisis-opened",
        "severity": "critical",
        "subject": SUBJECT,
        "message": BODY,
        "incident_id": "INC-7",
        "data": {"note": "reach cut to 25%"},
    } == seen.json
    assert "INC-7/notify-regulator/apply-1/0" == seen.headers["idempotency-key"]
    assert ("INC-7", "notify-regulator", "apply-1/0") == (
        seen.headers["x-incident-id"],
        seen.headers["x-step-id"],
        seen.headers["x-operation"],
    )
    assert "authorization" not in seen.headers
    assert "notification.sent" in events(logs)
    assert_nowhere("partner-hook-secret-91ab", receipt, logs)


async def test_default_webhook_is_the_notify_connector(http: httpx.AsyncClient) -> None:
    """No URL: the notify connector's /webhooks/<stakeholder>, signed with the engine's secret and
    authorised with the platform token; no id answered, so the idempotency key is the id."""
    settings = Settings(platform_token="platform-token-5d2")
    receiver = WebhookReceiver(secret=settings.webhook_secret, answer_id=None)
    with serve_app(receiver.app()) as url:
        settings = Settings(platform_token="platform-token-5d2", notify_url=f"{url}/notify")
        receipt = await deliver(settings, http, delivery_request(WebhookChannel()))

    (seen,) = receiver.accepted
    assert "/notify/webhooks/regulator" == seen.path
    assert "Bearer platform-token-5d2" == seen.headers["authorization"]
    assert ("webhook:notify-connector", "INC-7/notify-regulator/apply-1/0") == (
        receipt.target,
        receipt.message_id,
    )


async def test_a_delivery_whose_connection_was_dropped_is_sent_again_at_once(
    http: httpx.AsyncClient,
) -> None:
    """The receiver closes the first connection without an answer (a kept-alive connection it
    had just closed): the message goes again at once, with its idempotency key, and the delivery
    succeeds in the same attempt."""
    async with dropping_receiver(b'{"id": "msg-1"}') as receiver:
        channel = WebhookChannel(url=f"{receiver.url}/hooks/regulator")
        receipt = await deliver(Settings(), http, delivery_request(channel))
    assert "msg-1" == receipt.message_id
    assert ["INC-7/notify-regulator/apply-1/0"] * 2 == receiver.keys


async def test_a_wrongly_signed_webhook_is_refused_and_not_retried(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The receiver checks the signature for real: another secret gets a 401, which is final."""
    monkeypatch.setenv("PARTNER_HOOK_SECRET", "a-secret-the-receiver-does-not-know")
    receiver = WebhookReceiver(secret="partner-hook-secret-91ab")
    with serve_app(receiver.app()) as url:
        channel = WebhookChannel(url=f"{url}/hooks/partner", secret_env="PARTNER_HOOK_SECRET")
        error = await delivery_error(Settings(), http, delivery_request(channel))

    assert (True, "DeliveryRejected") == (error.non_retryable, error.type)
    assert "HTTP 401" in str(error)
    assert [] == receiver.accepted
    assert ["signature does not match the body and timestamp"] == [r for _, r in receiver.refused]


@pytest.mark.parametrize(
    ("status", "retryable", "kind"),
    [
        (400, False, "DeliveryRejected"),
        (404, False, "DeliveryRejected"),
        (410, False, "DeliveryRejected"),
        (408, True, "DeliveryUnavailable"),
        (429, True, "DeliveryUnavailable"),
        (500, True, "DeliveryUnavailable"),
        (503, True, "DeliveryUnavailable"),
    ],
)
async def test_http_answers_are_classified(
    http: httpx.AsyncClient, status: int, retryable: bool, kind: str
) -> None:
    """4xx is final except 408 and 429; 5xx is worth another attempt."""
    settings = Settings()
    receiver = WebhookReceiver(secret=settings.webhook_secret, status=status)
    with serve_app(receiver.app()) as url:
        channel = WebhookChannel(url=f"{url}/hooks/regulator")
        error = await delivery_error(settings, http, delivery_request(channel))
    assert (not retryable, kind) == (error.non_retryable, error.type)
    assert f"HTTP {status}" in str(error)
    assert [status] == receiver.answered


async def test_retry_after_is_handed_to_temporal(http: httpx.AsyncClient) -> None:
    """A rate-limited delivery waits as long as the receiver asked before the next attempt."""
    settings = Settings()
    receiver = WebhookReceiver(secret=settings.webhook_secret, status=429, retry_after="7")
    with serve_app(receiver.app()) as url:
        channel = WebhookChannel(url=f"{url}/hooks/regulator")
        error = await delivery_error(settings, http, delivery_request(channel))
    assert timedelta(seconds=7) == error.next_retry_delay
    assert not error.non_retryable


async def test_unreachable_receiver_is_retryable(http: httpx.AsyncClient) -> None:
    """Nothing listening (connection refused) is an outage, not a verdict on the message."""
    channel = WebhookChannel(url=f"http://127.0.0.1:{free_port()}/hooks/regulator")
    error = await delivery_error(Settings(), http, delivery_request(channel))
    assert (False, "DeliveryUnavailable") == (error.non_retryable, error.type)
    assert "unreachable" in str(error)


async def test_a_receiver_too_slow_to_answer_is_retryable() -> None:
    slow = FastAPI()

    @slow.post("/hooks/regulator")
    async def hook() -> dict[str, str]:
        await asyncio.sleep(2)
        return {"id": "late"}

    with serve_app(slow) as url:
        async with httpx.AsyncClient(timeout=0.3) as impatient:
            channel = WebhookChannel(url=f"{url}/hooks/regulator")
            error = await delivery_error(Settings(), impatient, delivery_request(channel))
    assert (False, "DeliveryUnavailable") == (error.non_retryable, error.type)
    assert "timed out" in str(error)


@pytest.mark.parametrize(
    ("channel", "variable"),
    [
        (
            WebhookChannel(url="https://partner.example/hook", secret_env="UNSET_HOOK_SECRET"),
            "UNSET_HOOK_SECRET",
        ),
        (SlackChannel(url_env="UNSET_SLACK_URL"), "UNSET_SLACK_URL"),
        (PagerDutyChannel(routing_key_env="UNSET_PD_KEY"), "UNSET_PD_KEY"),
    ],
    ids=["webhook", "slack", "pagerduty"],
)
async def test_an_unset_secret_is_a_configuration_error(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, channel: Channel, variable: str
) -> None:
    """Retrying cannot conjure a secret: the delivery fails at once, naming the variable."""
    monkeypatch.delenv(variable, raising=False)
    error = await delivery_error(Settings(), http, delivery_request(channel))
    assert (True, "ChannelMisconfigured") == (error.non_retryable, error.type)
    assert f"environment variable {variable} is not set" in str(error)


async def test_a_template_that_cannot_render_fails_at_once(http: httpx.AsyncClient) -> None:
    broken = MessageTemplate(subject="{{ incident.id }}", body="{{ measures_in_force.count }}")
    request = delivery_request(WebhookChannel(url="http://127.0.0.1:9/never"), template=broken)
    error = await delivery_error(Settings(), http, request)
    assert (True, "MessageError") == (error.non_retryable, error.type)
    assert "crisis-opened" in str(error)


# --- Slack ------------------------------------------------------------------------------------
async def test_slack_gets_header_section_and_context_blocks(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The incoming-webhook payload renders in Slack; the URL (a secret) is never repeated."""
    receiver = SlackReceiver()
    body = MessageTemplate(subject=TEMPLATE.subject, body="Measures: <reach cut> & review")
    with serve_app(receiver.app()) as url, capture_logs() as logs:
        monkeypatch.setenv("TEAM_SLACK_URL", f"{url}/services/{SLACK_TOKEN}")
        request = delivery_request(SlackChannel(url_env="TEAM_SLACK_URL"), template=body)
        receipt = await deliver(Settings(), http, request)

    assert ("slack", "slack", request.idempotency_key) == (
        receipt.channel,
        receipt.target,
        receipt.message_id,
    )
    (seen,) = receiver.received
    payload = seen.json
    assert payload["text"].startswith(SUBJECT)
    header, section, context = payload["blocks"]
    assert {"type": "header", "text": {"type": "plain_text", "text": SUBJECT}} == header
    assert {"type": "mrkdwn", "text": "Measures: &lt;reach cut&gt; &amp; review"} == section["text"]
    assert "context" == context["type"]
    assert "INC-7" in context["elements"][0]["text"]
    assert "critical" in context["elements"][0]["text"]
    assert "notification.sent" in events(logs)
    assert_nowhere(SLACK_TOKEN, receipt, logs)


@pytest.mark.parametrize(("status", "retryable"), [(404, False), (403, False), (500, True)])
@pytest.mark.parametrize(
    ("answer", "said"),
    [
        ("no_service for {url}", "no_service for ***"),
        # Express's default 404, many proxies and chat servers: the path, not the whole URL.
        ("Cannot POST {path}", "Cannot POST ***"),
    ],
)
async def test_slack_errors_are_classified_and_never_quote_the_url(
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    status: int,
    retryable: bool,
    answer: str,
    said: str,
) -> None:
    receiver = SlackReceiver(status=status, text=answer)
    with serve_app(receiver.app()) as url, capture_logs() as logs:
        monkeypatch.setenv("TEAM_SLACK_URL", f"{url}/services/{SLACK_TOKEN}")
        request = delivery_request(SlackChannel(url_env="TEAM_SLACK_URL"))
        error = await delivery_error(Settings(), http, request)
    assert (not retryable) == error.non_retryable
    assert said in str(error)
    assert_nowhere(SLACK_TOKEN, str(error), logs)


async def test_slack_variable_holding_no_url_is_a_configuration_error(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEAM_SLACK_URL", "xoxb-not-a-url-secret")
    error = await delivery_error(
        Settings(), http, delivery_request(SlackChannel(url_env="TEAM_SLACK_URL"))
    )
    assert (True, "ChannelMisconfigured") == (error.non_retryable, error.type)
    assert "TEAM_SLACK_URL does not hold an http(s) URL" in str(error)
    assert_nowhere("xoxb-not-a-url-secret", str(error))


# --- PagerDuty --------------------------------------------------------------------------------
async def test_pagerduty_trigger_carries_the_documented_fields(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trigger the Events API accepts: its dedup key is the delivery's, so retries fold into one
    alert; a summary longer than PagerDuty allows is cut to 1024 characters."""
    monkeypatch.setenv("TEAM_PD_KEY", ROUTING_KEY)
    receiver = PagerDutyReceiver(routing_key=ROUTING_KEY)
    long_subject = MessageTemplate(subject="{{ incident.id }} " + "x" * 2000, body=TEMPLATE.body)
    with serve_app(receiver.app()) as url, capture_logs() as logs:
        settings = Settings(pagerduty_events_url=f"{url}/v2/enqueue")
        request = delivery_request(
            PagerDutyChannel(routing_key_env="TEAM_PD_KEY"), template=long_subject
        )
        receipt = await deliver(settings, http, request)

    assert ("pagerduty", "pagerduty", request.idempotency_key) == (
        receipt.channel,
        receipt.target,
        receipt.message_id,
    )
    (seen,) = receiver.received
    event = seen.json
    assert ("trigger", request.idempotency_key) == (event["event_action"], event["dedup_key"])
    payload = event["payload"]
    assert 1024 == len(payload["summary"])
    assert payload["summary"].startswith("INC-7 xxx")
    assert ("crisis-engine", "critical") == (payload["source"], payload["severity"])
    assert ("crisis-opened", "INC-7") == (payload["component"], payload["group"])
    assert BODY == payload["custom_details"]["message"]
    assert "notification.sent" in events(logs)
    assert_nowhere(ROUTING_KEY, receipt, logs)


@pytest.mark.parametrize(("status", "retryable"), [(429, True), (502, True)])
async def test_pagerduty_throttling_and_outages_are_retryable(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, status: int, retryable: bool
) -> None:
    monkeypatch.setenv("TEAM_PD_KEY", ROUTING_KEY)
    receiver = PagerDutyReceiver(routing_key=ROUTING_KEY, status=status)
    with serve_app(receiver.app()) as url:
        settings = Settings(pagerduty_events_url=f"{url}/v2/enqueue")
        request = delivery_request(PagerDutyChannel(routing_key_env="TEAM_PD_KEY"))
        error = await delivery_error(settings, http, request)
    assert (not retryable, "DeliveryUnavailable") == (error.non_retryable, error.type)


async def test_pagerduty_refusing_the_event_is_final(
    http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 400 (here: a routing key of another integration) is not retried, and the key is not
    quoted in the error or the logs."""
    monkeypatch.setenv("TEAM_PD_KEY", "WRONGKEY0000000000000000000000001")
    receiver = PagerDutyReceiver(routing_key=ROUTING_KEY)
    with serve_app(receiver.app()) as url, capture_logs() as logs:
        settings = Settings(pagerduty_events_url=f"{url}/v2/enqueue")
        request = delivery_request(PagerDutyChannel(routing_key_env="TEAM_PD_KEY"))
        error = await delivery_error(settings, http, request)
    assert (True, "DeliveryRejected") == (error.non_retryable, error.type)
    assert "HTTP 400" in str(error) and "routing_key does not match" in str(error)
    assert_nowhere("WRONGKEY0000000000000000000000001", str(error), logs)


# --- e-mail -----------------------------------------------------------------------------------
def smtp_settings(port: int, **changes: Any) -> Settings:
    return Settings(
        **{
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_starttls": False,
            "smtp_from": SENDER,
            "smtp_timeout_s": 5,
            **changes,
        }
    )


def parsed(inbox: Inbox) -> Message:
    (envelope,) = inbox.messages
    assert isinstance(envelope.content, bytes)
    return message_from_bytes(envelope.content)


EMAIL = EmailChannel(
    to=["crisis@regulator.example", "Supervision team <supervision@regulator.example>"],
    cc=["duty-officer@platform.example"],
)


async def test_email_over_plain_smtp(http: httpx.AsyncClient) -> None:
    """A plain-text message to every address, with a Message-ID derived from the delivery's key."""
    inbox = Inbox()
    with smtp_server(inbox) as port:
        receipt = await deliver(smtp_settings(port), http, delivery_request(EMAIL))

    (envelope,) = inbox.messages
    assert "crisis@platform.example" == envelope.mail_from
    assert [
        "crisis@regulator.example",
        "supervision@regulator.example",
        "duty-officer@platform.example",
    ] == envelope.rcpt_tos
    email = parsed(inbox)
    assert SUBJECT == email["Subject"]
    assert SENDER == email["From"]
    assert (
        "crisis@regulator.example, Supervision team <supervision@regulator.example>" == email["To"]
    )
    assert "duty-officer@platform.example" == email["Cc"]
    assert ("INC-7", "critical") == (email["X-Crisis-Incident-Id"], email["X-Crisis-Severity"])
    assert "auto-generated" == email["Auto-Submitted"]
    assert BODY == email.get_payload(decode=True).decode().strip()
    expected_id = message_id("INC-7/notify-regulator/apply-1/0", SENDER)
    assert (expected_id, expected_id) == (email["Message-ID"], receipt.message_id)
    assert expected_id.endswith("@platform.example>")
    assert ("email", "email:crisis@regulator.example,supervision@regulator.example") == (
        receipt.channel,
        receipt.target,
    )


async def test_a_retried_email_is_recognisably_the_same_message(http: httpx.AsyncClient) -> None:
    """Same idempotency key, same Message-ID; another delivery, another id."""
    inbox = Inbox()
    with smtp_server(inbox) as port:
        settings = smtp_settings(port)
        first = await deliver(settings, http, delivery_request(EMAIL))
        again = await deliver(settings, http, delivery_request(EMAIL))
        other = await deliver(
            settings,
            http,
            delivery_request(EMAIL, idempotency_key="INC-7/notify-regulator/undo-1/0"),
        )
    assert first.message_id == again.message_id != other.message_id
    assert [first.message_id, first.message_id, other.message_id] == [
        message_from_bytes(envelope.content)["Message-ID"] for envelope in inbox.messages
    ]


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def secure_relay(inbox: Inbox, tls: TlsFiles) -> Any:
    return smtp_server(
        inbox,
        tls_context=tls.server_context(),
        require_starttls=True,
        auth_required=True,
        auth_require_tls=True,
        authenticator=password_authenticator(SMTP_USER, SMTP_PASSWORD, inbox),
    )


async def test_email_over_starttls_with_login(http: httpx.AsyncClient, tls: TlsFiles) -> None:
    """The relay's certificate is verified against the configured CA, then the engine logs in;
    the password appears nowhere."""
    inbox = Inbox()
    with secure_relay(inbox, tls) as port, capture_logs() as logs:
        settings = smtp_settings(
            port,
            smtp_starttls=True,
            smtp_ca_file=str(tls.ca_file),
            smtp_username=SMTP_USER,
            smtp_password=SMTP_PASSWORD,
        )
        receipt = await deliver(settings, http, delivery_request(EMAIL))
    assert [SMTP_USER] == inbox.logins
    assert receipt.message_id == parsed(inbox)["Message-ID"]
    assert "notification.sent" in events(logs)
    assert_nowhere(SMTP_PASSWORD, receipt, logs, settings)


async def test_an_untrusted_relay_certificate_is_refused(
    http: httpx.AsyncClient, tls: TlsFiles
) -> None:
    """Without the CA the certificate does not verify: no credentials are sent, and it is final."""
    inbox = Inbox()
    with secure_relay(inbox, tls) as port:
        settings = smtp_settings(
            port, smtp_starttls=True, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD
        )
        error = await delivery_error(settings, http, delivery_request(EMAIL))
    assert (True, "ChannelMisconfigured") == (error.non_retryable, error.type)
    assert "certificate is not trusted" in str(error)
    assert ([], []) == (inbox.logins, inbox.messages)


async def test_a_wrong_smtp_password_is_final_and_not_quoted(
    http: httpx.AsyncClient, tls: TlsFiles
) -> None:
    inbox = Inbox()
    with secure_relay(inbox, tls) as port, capture_logs() as logs:
        settings = smtp_settings(
            port,
            smtp_starttls=True,
            smtp_ca_file=str(tls.ca_file),
            smtp_username=SMTP_USER,
            smtp_password="not-the-password-3e8",
        )
        error = await delivery_error(settings, http, delivery_request(EMAIL))
    assert (True, "ChannelMisconfigured") == (error.non_retryable, error.type)
    assert "SMTP login refused (535)" in str(error)
    assert_nowhere("not-the-password-3e8", str(error), logs)
    assert [] == inbox.messages


async def test_credentials_are_never_sent_in_the_clear(http: httpx.AsyncClient) -> None:
    inbox = Inbox()
    with smtp_server(inbox) as port:
        settings = smtp_settings(port, smtp_username=SMTP_USER, smtp_password=SMTP_PASSWORD)
        error = await delivery_error(settings, http, delivery_request(EMAIL))
    assert (True, "ChannelMisconfigured") == (error.non_retryable, error.type)
    assert "without STARTTLS" in str(error)
    assert [] == inbox.messages


@pytest.mark.parametrize(
    ("inbox", "retryable", "kind", "says"),
    [
        (
            Inbox(data_reply="451 4.3.0 Temporary local problem, try again later"),
            True,
            "DeliveryUnavailable",
            "SMTP 451",
        ),
        (
            Inbox(data_reply="554 5.6.0 Message content rejected"),
            False,
            "DeliveryRejected",
            "SMTP 554",
        ),
        (
            Inbox(
                refuse_recipients={
                    address: "550 5.1.1 No such user"
                    for address in (
                        "crisis@regulator.example",
                        "supervision@regulator.example",
                        "duty-officer@platform.example",
                    )
                }
            ),
            False,
            "DeliveryRejected",
            "every recipient refused",
        ),
        (
            Inbox(refuse_recipients={"crisis@regulator.example": "452 4.2.2 Mailbox full"}),
            False,
            "DeliveryRejected",
            "delivered, but refused for crisis@regulator.example (452",
        ),
    ],
    ids=["temporary", "permanent", "no-recipient", "one-recipient"],
)
async def test_smtp_replies_are_classified(
    http: httpx.AsyncClient, inbox: Inbox, retryable: bool, kind: str, says: str
) -> None:
    """4xx replies are retried, 5xx are final; a message that reached only some recipients is
    reported, not sent again to those who have it."""
    with smtp_server(inbox) as port:
        error = await delivery_error(smtp_settings(port), http, delivery_request(EMAIL))
    assert (not retryable, kind) == (error.non_retryable, error.type)
    assert says in str(error)


async def test_an_unreachable_relay_is_retryable(http: httpx.AsyncClient) -> None:
    error = await delivery_error(smtp_settings(free_port()), http, delivery_request(EMAIL))
    assert (False, "DeliveryUnavailable") == (error.non_retryable, error.type)
    assert "unreachable" in str(error)


async def test_email_without_a_relay_is_a_configuration_error(http: httpx.AsyncClient) -> None:
    error = await delivery_error(Settings(smtp_host=""), http, delivery_request(EMAIL))
    assert (True, "ChannelMisconfigured") == (error.non_retryable, error.type)
    assert "CRISIS_SMTP_HOST is not set" in str(error)


def test_email_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The documented variable names are the ones read; the password stays out of reprs."""
    values = {
        "CRISIS_SMTP_HOST": "relay.platform.example",
        "CRISIS_SMTP_PORT": "2525",
        "CRISIS_SMTP_STARTTLS": "false",
        "CRISIS_SMTP_USERNAME": SMTP_USER,
        "CRISIS_SMTP_PASSWORD": SMTP_PASSWORD,
        "CRISIS_SMTP_FROM": SENDER,
        "CRISIS_SMTP_TIMEOUT": "3.5",
        "CRISIS_SMTP_CA_FILE": str(tmp_path / "ca.pem"),
        "CRISIS_PAGERDUTY_EVENTS_URL": "http://pd.internal/v2/enqueue",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    assert (
        "relay.platform.example",
        2525,
        False,
        SMTP_USER,
        SMTP_PASSWORD,
        SENDER,
        3.5,
        str(tmp_path / "ca.pem"),
        "http://pd.internal/v2/enqueue",
    ) == (
        settings.smtp_host,
        settings.smtp_port,
        settings.smtp_starttls,
        settings.smtp_username,
        settings.smtp_password.get_secret_value(),
        settings.smtp_from,
        settings.smtp_timeout_s,
        settings.smtp_ca_file,
        settings.pagerduty_events_url,
    )
    assert_nowhere(
        SMTP_PASSWORD, settings, json.dumps(settings.model_dump(mode="json"), default=str)
    )

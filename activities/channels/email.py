"""E-mail over the deployment's SMTP relay (stdlib smtplib, in a thread so the worker's event loop
keeps running other activities).

The Message-ID is derived from the idempotency key: a retry after a lost answer sends a message
mail systems and people recognise as the same one, not a second notification.
"""

from __future__ import annotations

import asyncio
import hashlib
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, parseaddr

from activities.channels.base import (
    ChannelMisconfigured,
    DeliveryError,
    DeliveryRejected,
    DeliveryUnavailable,
    Outgoing,
    redact,
)
from core.settings import Settings
from workflows.notifications import EmailChannel


def message_id(idempotency_key: str, sender: str) -> str:
    """A Message-ID stable for one delivery: a digest of its key at the sender's domain."""
    domain = parseaddr(sender)[1].rpartition("@")[2] or "crisis-engine.invalid"
    return f"<{hashlib.sha256(idempotency_key.encode()).hexdigest()[:40]}@{domain}>"


def build_email(channel: EmailChannel, message: Outgoing, *, sender: str) -> EmailMessage:
    request = message.request
    email = EmailMessage()
    email["From"] = sender
    email["To"] = ", ".join(channel.to)
    if channel.cc:
        email["Cc"] = ", ".join(channel.cc)
    # A template may render line breaks into the subject; a header cannot hold them.
    email["Subject"] = " ".join(message.subject.split())
    email["Date"] = formatdate(usegmt=True)
    email["Message-ID"] = message_id(request.idempotency_key, sender)
    # RFC 3834: keeps out-of-office replies from answering a crisis notice.
    email["Auto-Submitted"] = "auto-generated"
    email["X-Crisis-Incident-Id"] = request.incident_id
    email["X-Crisis-Step-Id"] = request.step_id
    email["X-Crisis-Severity"] = request.severity
    email.set_content(message.body + "\n")
    return email


class EmailSender:
    def __init__(self, *, settings: Settings) -> None:
        self._settings = settings

    async def send(self, channel: EmailChannel, message: Outgoing) -> str:
        target = channel.describe()
        settings = self._settings
        if not settings.smtp_host:
            raise ChannelMisconfigured(f"{target}: CRISIS_SMTP_HOST is not set on the worker")
        sender = settings.smtp_from
        if "@" not in parseaddr(sender)[1]:
            raise ChannelMisconfigured(f"{target}: CRISIS_SMTP_FROM is not an e-mail address")
        if settings.smtp_username and not settings.smtp_starttls:
            raise ChannelMisconfigured(
                f"{target}: refusing to send SMTP credentials without STARTTLS "
                "(set CRISIS_SMTP_STARTTLS=true)"
            )
        email = build_email(channel, message, sender=sender)
        recipients = [parseaddr(value)[1] for value in (*channel.to, *channel.cc)]
        await asyncio.to_thread(self._transmit, email, recipients, target)
        return str(email["Message-ID"])

    def _transmit(self, email: EmailMessage, recipients: list[str], target: str) -> None:
        settings = self._settings
        password = settings.smtp_password.get_secret_value()
        try:
            with smtplib.SMTP(
                settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout_s
            ) as smtp:
                smtp.ehlo()
                if settings.smtp_starttls:
                    smtp.starttls(context=self._tls_context())
                    smtp.ehlo()
                if settings.smtp_username:
                    smtp.login(settings.smtp_username, password)
                # Raises unless at least one recipient was accepted; the rest are refused ones.
                refused = smtp.send_message(email, to_addrs=recipients)
        except (smtplib.SMTPException, OSError) as error:
            raise classify(error, target, secrets=(password,)) from None
        if refused:
            raise DeliveryRejected(
                f"{target}: delivered, but refused for {_refusals(refused)}"
                " (retrying would send it again to the others)"
            )

    def _tls_context(self) -> ssl.SSLContext:
        # A private CA bundle for relays with an internal certificate; else the system's CAs.
        return ssl.create_default_context(cafile=self._settings.smtp_ca_file or None)


def classify(error: Exception, target: str, *, secrets: tuple[str, ...] = ()) -> DeliveryError:
    """SMTP 4xx and network trouble are worth retrying; 5xx, TLS and login failures are not."""
    text = redact(str(error), secrets)
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        codes = [code for code, _ in error.recipients.values()]
        detail = f"{target}: every recipient refused: {_refusals(error.recipients)}"
        if any(400 <= code < 500 for code in codes):
            return DeliveryUnavailable(detail)
        return DeliveryRejected(detail)
    if isinstance(error, smtplib.SMTPAuthenticationError):
        return ChannelMisconfigured(
            f"{target}: SMTP login refused ({error.smtp_code}): check CRISIS_SMTP_USERNAME "
            "and CRISIS_SMTP_PASSWORD"
        )
    if isinstance(error, smtplib.SMTPNotSupportedError):
        return ChannelMisconfigured(f"{target}: the SMTP relay does not support it: {text}")
    if isinstance(error, smtplib.SMTPResponseException):
        reply = redact(_decode(error.smtp_error), secrets)
        detail = f"{target}: SMTP {error.smtp_code} {reply}".rstrip()
        if 500 <= error.smtp_code < 600:
            return DeliveryRejected(detail)
        return DeliveryUnavailable(detail)
    if isinstance(error, ssl.SSLCertVerificationError):
        return ChannelMisconfigured(
            f"{target}: the SMTP relay's TLS certificate is not trusted ({error.verify_message}); "
            "set CRISIS_SMTP_CA_FILE for a private CA"
        )
    if isinstance(error, smtplib.SMTPServerDisconnected | OSError):
        return DeliveryUnavailable(
            f"{target}: SMTP relay unreachable: {text or type(error).__name__}"
        )
    return DeliveryRejected(f"{target}: SMTP failed: {text}")


def _refusals(refused: dict[str, tuple[int, bytes]]) -> str:
    return "; ".join(
        f"{address} ({code} {_decode(reply)})" for address, (code, reply) in refused.items()
    )


def _decode(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else reply

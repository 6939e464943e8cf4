"""Real receivers for the notification channels, on loopback: a webhook endpoint that verifies
signatures, Slack-like and PagerDuty-like endpoints that check payload shapes, SMTP servers (plain,
and STARTTLS with AUTH behind a certificate from a throwaway CA)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import ssl
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response

from core.net import free_port
from core.signing import SignatureInvalid, verify
from sandbox.server import serving_in_thread


# --- HTTP -------------------------------------------------------------------------------------
def serving_on(app: Any, port: int) -> AbstractContextManager[str]:
    """Serve an ASGI app on a given loopback port (a receiver that comes up late)."""
    return serving_in_thread(app, port)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    raw: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.raw)


@dataclass
class WebhookReceiver:
    """Verifies every request with core.signing.verify; refuses bad ones with 401.

    `status` makes it answer something else once verified (503 while "down"); `answer_id` is the
    id it gives accepted messages (None: it answers no id).
    """

    secret: str
    status: int = 200
    answer_id: str | None = "msg-1"
    retry_after: str | None = None
    accepted: list[Received] = field(default_factory=list)
    refused: list[tuple[Received, str]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/{path:path}")
        async def hook(path: str, request: Request) -> Response:
            seen = Received(f"/{path}", dict(request.headers), await request.body())
            try:
                verify(self.secret, request.headers, seen.raw)
            except SignatureInvalid as error:
                with self.lock:
                    self.refused.append((seen, str(error)))
                    self.answered.append(401)
                return JSONResponse({"error": str(error)}, status_code=401)
            with self.lock:
                self.answered.append(self.status)
                if self.status != 200:
                    headers = {"Retry-After": self.retry_after} if self.retry_after else {}
                    return JSONResponse({"error": "unavailable"}, self.status, headers=headers)
                self.accepted.append(seen)
            return JSONResponse({"id": self.answer_id} if self.answer_id else {"ok": True})

        return app


@dataclass
class SlackReceiver:
    """Answers like a Slack incoming webhook: `ok`, or an error code with an HTTP status."""

    status: int = 200
    text: str = "ok"
    received: list[Received] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/services/{token:path}")
        async def incoming(token: str, request: Request) -> Response:
            self.received.append(
                Received(request.url.path, dict(request.headers), await request.body())
            )
            # A careless receiver quoting the request URL, which holds the secret token.
            text = self.text.replace("{url}", str(request.url)).replace("{path}", request.url.path)
            return PlainTextResponse(text, status_code=self.status)

        return app


@dataclass
class PagerDutyReceiver:
    """Answers like the Events API v2: 202 with the dedup key, after checking the event's shape."""

    routing_key: str
    status: int = 202
    received: list[Received] = field(default_factory=list)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v2/enqueue")
        async def enqueue(request: Request) -> Response:
            seen = Received(request.url.path, dict(request.headers), await request.body())
            self.received.append(seen)
            if self.status != 202:
                return JSONResponse({"status": "throttled"}, status_code=self.status)
            event = seen.json
            problems = pagerduty_problems(event, self.routing_key)
            if problems:
                return JSONResponse(
                    {
                        "status": "invalid event",
                        "message": "Event object is invalid",
                        "errors": problems,
                    },
                    status_code=400,
                )
            return JSONResponse(
                {
                    "status": "success",
                    "message": "Event processed",
                    "dedup_key": event["dedup_key"],
                },
                status_code=202,
            )

        return app


def pagerduty_problems(event: dict[str, Any], routing_key: str) -> list[str]:
    """What PagerDuty's Events API v2 would refuse in an event (its documented required fields)."""
    problems = []
    if event.get("routing_key") != routing_key:
        problems.append("routing_key does not match the integration")
    if event.get("event_action") not in ("trigger", "acknowledge", "resolve"):
        problems.append("event_action must be trigger, acknowledge or resolve")
    payload = event.get("payload") or {}
    if not isinstance(payload.get("summary"), str) or not 0 < len(payload["summary"]) <= 1024:
        problems.append("payload.summary must be 1 to 1024 characters")
    if not payload.get("source"):
        problems.append("payload.source is required")
    if payload.get("severity") not in ("critical", "error", "warning", "info"):
        problems.append("payload.severity must be critical, error, warning or info")
    if not isinstance(event.get("dedup_key"), str) or len(event["dedup_key"]) > 255:
        problems.append("dedup_key must be a string of at most 255 characters")
    return problems


# --- SMTP -------------------------------------------------------------------------------------
@dataclass
class Inbox:
    """An aiosmtpd handler: keeps what it accepts; can refuse recipients or messages."""

    messages: list[Envelope] = field(default_factory=list)
    refuse_recipients: dict[str, str] = field(default_factory=dict)  # address -> SMTP reply
    data_reply: str | None = None  # e.g. "451 4.3.0 try again later"
    logins: list[str] = field(default_factory=list)

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        if address in self.refuse_recipients:
            return self.refuse_recipients[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_reply:
            return self.data_reply
        self.messages.append(envelope)
        return "250 Message accepted for delivery"


@dataclass(frozen=True)
class TlsFiles:
    ca_file: Path  # what a client trusts
    cert_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_tls_files(directory: Path) -> TlsFiles:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost, signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test relay CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "relay.pem", directory / "relay-key.pem")
    files.ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def password_authenticator(username: str, password: str, inbox: Inbox) -> Any:
    def authenticate(
        server: SMTP, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == username
            and auth_data.password.decode() == password
        )
        if ok:
            inbox.logins.append(username)
        return AuthResult(success=ok, handled=False)

    return authenticate


@contextmanager
def smtp_server(inbox: Inbox, **smtp_parameters: Any) -> Iterator[int]:
    """An aiosmtpd server on a free loopback port for the block; yields the port."""
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, **smtp_parameters)
    controller.start()
    try:
        yield port
    finally:
        controller.stop()

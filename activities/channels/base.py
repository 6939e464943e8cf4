"""What every channel sender shares: the rendered message, the Sender protocol, the error kinds,
and how an HTTP answer is classified (retry later, or give up now)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol, TypeVar

import httpx

from activities import posting
from workflows.notifications import Channel, DeliveryRequest

# The longest Retry-After honoured; a receiver asking for more gets the workflow's own backoff.
MAX_RETRY_AFTER = timedelta(minutes=5)

C_contra = TypeVar("C_contra", contravariant=True)


class DeliveryError(Exception):
    """A delivery that did not happen. `retryable` decides whether Temporal tries again."""

    retryable = False

    def __init__(self, message: str, *, retry_after: timedelta | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class DeliveryUnavailable(DeliveryError):
    """The receiver is down, slow, overloaded or rate-limiting: a later attempt can succeed."""

    retryable = True


class DeliveryRejected(DeliveryError):
    """The receiver refused this message (bad request, unknown recipient, bad credentials)."""


class ChannelMisconfigured(DeliveryError):
    """The deployment lacks what the channel needs (an unset secret, no SMTP relay)."""


@dataclass(frozen=True)
class Outgoing:
    """A rendered message on its way to one channel."""

    request: DeliveryRequest
    subject: str
    body: str


class Sender(Protocol[C_contra]):
    """Delivers to one kind of channel; answers the receiver's id for the message."""

    async def send(self, channel: C_contra, message: Outgoing) -> str: ...


def secret_from_env(name: str, channel: Channel) -> str:
    """The secret an environment variable holds; a configuration error if it is unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise ChannelMisconfigured(
            f"{channel.describe()}: environment variable {name} is not set on the worker"
        )
    return value


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret replaced, for error messages that quote libraries or receivers."""
    for secret in sorted(secrets, key=len, reverse=True):  # a whole before its parts
        if secret:
            text = text.replace(secret, "***")
    return text


# A URL part shorter than this is no credential (`/hook`), and redacting it would mangle text.
_SECRET_PART_CHARS = 8


def url_secrets(url: str) -> tuple[str, ...]:
    """The URL and the parts of it a receiver may echo (`Cannot POST /services/T0/B0/XYZ`): its
    path and query, raw and decoded, and each long path segment (a webhook's token). A chat
    webhook's URL is its credential."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return (url,)
    raw = parsed.raw_path.decode("ascii", "replace")  # path and query, as sent
    parts = {url, raw, parsed.path, parsed.query.decode("ascii", "replace")}
    parts |= set(parsed.path.split("/")) | set(raw.split("?")[0].split("/"))
    return tuple(part for part in parts if len(part) >= _SECRET_PART_CHARS or part == url)


async def post(
    client: httpx.AsyncClient,
    url: str,
    *,
    target: str,
    content: bytes,
    headers: dict[str, str],
    secrets: tuple[str, ...] = (),
) -> httpx.Response:
    """POST and classify: a 2xx answer is returned, anything else raises a DeliveryError.

    `target` names the receiver in messages; the URL itself is never quoted (it may be a secret).
    """
    try:
        response = await posting.post(client, url, content=content, headers=headers)
    except httpx.TimeoutException as error:
        raise DeliveryUnavailable(f"{target}: timed out ({type(error).__name__})") from None
    except httpx.TransportError as error:
        reason = redact(str(error), (*url_secrets(url), *secrets)) or type(error).__name__
        raise DeliveryUnavailable(f"{target}: unreachable: {reason}") from None
    status = response.status_code
    if 200 <= status < 300:
        return response
    answer = redact(response.text[:300], (*url_secrets(url), *secrets)).strip()
    message = f"{target}: HTTP {status}" + (f": {answer}" if answer else "")
    if status in (408, 429) or status >= 500:
        raise DeliveryUnavailable(message, retry_after=retry_after(response))
    raise DeliveryRejected(message)


def retry_after(response: httpx.Response) -> timedelta | None:
    """The receiver's Retry-After in seconds (the HTTP-date form is rare enough to ignore)."""
    raw = response.headers.get("retry-after", "").strip()
    if not raw.isdigit():
        return None
    return min(timedelta(seconds=int(raw)), MAX_RETRY_AFTER)


def check_http_url(value: str, *, target: str, variable: str) -> None:
    """Refuse a secret URL that cannot be posted to, without quoting it."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL:
        url = None
    if url is None or url.scheme not in ("http", "https") or not url.host:
        raise ChannelMisconfigured(f"{target}: {variable} does not hold an http(s) URL")

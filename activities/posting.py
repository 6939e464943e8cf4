"""The one way activities POST over the worker's shared HTTP client."""

from __future__ import annotations

from typing import Any

import httpx


async def post(
    client: httpx.AsyncClient,
    url: str,
    *,
    content: bytes,
    headers: dict[str, str],
    timeout: httpx.Timeout | None = None,
) -> httpx.Response:
    """POST; if the connection drops before any answer, POST once more on a new connection.

    Most such drops are a kept-alive connection the receiver closed just as the pool reused it
    (its keep-alive timeout races with ours). Sending again at once costs nothing a retry would
    not: lever calls carry an idempotency key, deliveries carry theirs, and the activity's retry
    policy would send the same request again anyway, only half a second or more later.
    `timeout`: instead of the client's own.
    """
    given: Any = timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT
    try:
        return await client.post(url, content=content, headers=headers, timeout=given)
    except (httpx.RemoteProtocolError, httpx.ReadError):
        return await client.post(url, content=content, headers=headers, timeout=given)

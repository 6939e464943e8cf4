"""Test helpers in one place: serving apps on loopback, waiting for conditions."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import pytest

from sandbox.server import serving_in_thread

T = TypeVar("T")


# Serving an app on loopback is product code too (the simulator uses it).
serve_app = serving_in_thread


def sdk_failure_tracebacks(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The SDK's warnings (with a traceback) for activity attempts that failed: none for the
    failures our activities log themselves (they raise benign errors)."""
    return [
        record
        for record in caplog.records
        if record.name == "temporalio.activity"
        and record.levelno >= logging.WARNING
        and record.getMessage().startswith("Completing activity as failed")
    ]


async def assert_eventually(
    check: Callable[[], Awaitable[T]], *, timeout: float = 20.0, interval: float = 0.1
) -> T:
    """Retry an async check (which raises AssertionError until true); return its last value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(interval)


@dataclass
class DroppingReceiver:
    """A receiver that reads the first request and closes its connection without an answer (a
    kept-alive connection closed under the client), then answers every later one with `body`."""

    url: str
    keys: list[str] = field(default_factory=list)  # each request's Idempotency-Key, in order


@contextlib.asynccontextmanager
async def dropping_receiver(body: bytes) -> AsyncIterator[DroppingReceiver]:
    connections = 0

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        headers = {k.lower(): v for k, v in (line.split(": ", 1) for line in lines if ": " in line)}
        await reader.readexactly(int(headers["content-length"]))
        receiver.keys.append(headers.get("idempotency-key", ""))
        if connections > 1:
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    receiver = DroppingReceiver(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}")
    async with server:
        yield receiver

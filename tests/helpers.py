"""Test helpers in one place: serving apps on loopback, waiting for conditions."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sandbox.server import serving_in_thread

T = TypeVar("T")


# Serving an app on loopback is product code too (the simulator uses it).
serve_app = serving_in_thread


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

"""Run the platform sandbox as a process (what `crisis sandbox` calls)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from core.net import free_port, wait_for_port
from sandbox.app import create_app


def run_sandbox(*, host: str, port: int) -> None:
    """Serve the sandbox until interrupted.

    Args:
        host: Interface to bind, e.g. 127.0.0.1.
        port: TCP port to listen on, e.g. 8100.
    """
    uvicorn.run(create_app(), host=host, port=port, log_level="warning")


@contextmanager
def serving_in_thread(app: Any, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app over loopback HTTP in a background thread; yield its base URL.

    Used by `crisis playbook simulate` and the tests, where the sandbox lives in-process. `port`
    defaults to a free one (a given one serves, e.g., a receiver that comes up late).
    """
    port = port or free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for_port("127.0.0.1", port, timeout_s=10)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)

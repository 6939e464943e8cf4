"""Run the platform sandbox as a process (what `crisis sandbox` calls)."""

from __future__ import annotations

import uvicorn

from sandbox.app import create_app


def run_sandbox(*, host: str, port: int) -> None:
    """Serve the sandbox until interrupted.

    Args:
        host: Interface to bind, e.g. 127.0.0.1.
        port: TCP port to listen on, e.g. 8100.
    """
    uvicorn.run(create_app(), host=host, port=port, log_level="warning")

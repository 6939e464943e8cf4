"""Loopback networking helpers: free ports, waiting for a server to listen."""

from __future__ import annotations

import secrets
import socket
import subprocess
import time


class ServerStartError(RuntimeError):
    """A server process did not come up."""


def wait_for_port(
    host: str, port: int, *, timeout_s: float, process: subprocess.Popen[bytes] | None = None
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise ServerStartError(
                f"process exited with {process.returncode} before listening on {port}"
            )
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise ServerStartError(f"nothing listening on {host}:{port} after {timeout_s:.0f}s")


# Below Linux's default ephemeral range (32768-60999), from which the kernel hands out the ports
# of outgoing connections and of servers bound to port 0 (the Temporal dev server's HTTP and
# metrics ports among them): a port free now but taken from there before our server binds it left
# that server dead while someone else answered on its port.
PORT_RANGE = range(20_000, 32_768)


def free_port() -> int:
    """A loopback port free to listen on now, picked at random outside the ephemeral range."""
    for _ in range(200):
        port = PORT_RANGE[secrets.randbelow(len(PORT_RANGE))]
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # a crowded range: let the kernel choose
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

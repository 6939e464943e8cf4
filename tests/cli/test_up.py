"""`crisis up`: the stack starts as one group, serves, stops cleanly, and keeps incidents."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from engine.devserver import ServerStartError, free_port, wait_for_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]


def start_stack(data_dir: Path, ports: dict[str, int]) -> subprocess.Popen[str]:
    command = [
        sys.executable,
        "-m",
        "cli",
        "up",
        "--data-dir",
        str(data_dir),
        "--temporal-port",
        str(ports["temporal"]),
        "--ui-port",
        str(ports["ui"]),
        "--api-port",
        str(ports["api"]),
        "--sandbox-port",
        str(ports["sandbox"]),
    ]
    env = dict(os.environ, CRISIS_TASK_QUEUE="crisis-up-test")
    env.pop("CRISIS_DATABASE_URL", None)
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for_port("127.0.0.1", ports["api"], timeout_s=90, process=process)
    except ServerStartError as error:
        output = process.communicate(timeout=30)[0] if process.poll() is not None else ""
        raise ServerStartError(f"{error}\n{output}") from None
    return process


def stop_stack(process: subprocess.Popen[str]) -> str:
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    return output


def children_of(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False)
    return [int(p) for p in found.stdout.split()]


def wait_closed(port: int, timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=0.5)
        except httpx.TransportError:
            return True
        time.sleep(0.1)
    return False


def test_up_serves_every_part_stops_cleanly_and_incidents_survive_a_restart(tmp_path: Path) -> None:
    """An incident triggered through the API is still there, with its state, after a restart."""
    data_dir = tmp_path / "data"
    for attempt in range(3):  # a free port can be taken by another process before the stack binds
        ports = {name: free_port() for name in ("temporal", "ui", "api", "sandbox")}
        try:
            stack = start_stack(data_dir, ports)
            break
        except ServerStartError:
            if attempt == 2:
                raise
    try:
        api = f"http://127.0.0.1:{ports['api']}/v1"
        assert 200 == httpx.get(f"{api}/health", timeout=10).status_code
        assert 200 == httpx.get(f"http://127.0.0.1:{ports['ui']}/", timeout=10).status_code
        created = httpx.post(f"{api}/incidents", json={"playbook": "violent-disorder"}, timeout=30)
        assert 201 == created.status_code, created.text
        incident_id = created.json()["incident_id"]
        deadline = time.monotonic() + 30
        while (
            httpx.get(f"{api}/incidents/{incident_id}", timeout=10).json()["steps"][-1]["state"]
            != "applied"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.1)
        sandbox_state = httpx.get(f"http://127.0.0.1:{ports['sandbox']}/state", timeout=10).json()
        assert 0.25 == sandbox_state["detection"]["incitement_to_violence"]
        children = children_of(stack.pid)
        assert 4 == len(children)
    finally:
        output = stop_stack(stack)
    assert 0 == stack.returncode, output
    assert "Temporal UI" in output and "/docs" in output
    for child in children:
        assert (
            not Path(f"/proc/{child}").exists()
            or "zombie" in Path(f"/proc/{child}/status").read_text()
        )
    assert all(wait_closed(port) for port in ports.values())
    assert (data_dir / "temporal.db").is_file() and (data_dir / "audit.db").is_file()

    stack = start_stack(data_dir, ports)
    try:
        status = httpx.get(f"{api}/incidents/{incident_id}", timeout=30).json()
        assert ("running", ["applied"] * 5) == (
            status["state"],
            [s["state"] for s in status["steps"]],
        )
        closed = httpx.post(
            f"{api}/incidents/{incident_id}/stand-down", json={"reason": "test over"}, timeout=60
        ).json()
        assert "closed" == closed["state"]
        audit = httpx.get(f"{api}/incidents/{incident_id}/audit", timeout=10).json()
        assert audit["verified"] and "incident.closed" == audit["events"][-1]["kind"]
    finally:
        stop_stack(stack)

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

from cli.up import ADMIN_TOKEN_FILE, ensure_admin_token
from core.settings import Settings
from engine.devserver import ServerStartError, free_port, wait_for_port
from store.tokens import TokenStore

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


def started_stack(data_dir: Path) -> tuple[subprocess.Popen[str], dict[str, int]]:
    for attempt in range(3):  # a free port can be taken by another process before the stack binds
        ports = {name: free_port() for name in ("temporal", "ui", "api", "sandbox")}
        try:
            return start_stack(data_dir, ports), ports
        except ServerStartError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def healthy(api: str) -> dict[str, object]:
    """The API's health once every check passes (the worker's first poll reached the server a
    moment after the API came up)."""
    deadline = time.monotonic() + 60
    while (health := httpx.get(f"{api}/health", timeout=10)).status_code != 200:
        assert time.monotonic() < deadline, health.text
        time.sleep(0.2)
    return health.json()


def stood_down(api: str, incident_id: str, auth: dict[str, str]) -> dict[str, object]:
    answer = httpx.post(
        f"{api}/incidents/{incident_id}/stand-down",
        json={"reason": "test over"},
        headers=auth,
        timeout=60,
    )
    return answer.json()  # type: ignore[no-any-return]


def test_up_serves_every_part_stops_cleanly_and_incidents_survive_a_restart(tmp_path: Path) -> None:
    """An incident triggered through the API is still there, with its state, after a restart.
    The first start issues the operator's API token into a file only they can read; the token
    is printed nowhere, and a restart keeps it."""
    data_dir = tmp_path / "data"
    token_file = data_dir / "admin-token"
    stack, ports = started_stack(data_dir)
    try:
        api = f"http://127.0.0.1:{ports['api']}/v1"
        assert {"temporal", "workers", "audit_store"} == set(healthy(api)["checks"])  # type: ignore[arg-type]
        assert 200 == httpx.get(f"http://127.0.0.1:{ports['ui']}/", timeout=10).status_code
        assert 0o600 == token_file.stat().st_mode & 0o777
        token = token_file.read_text().strip()
        auth = {"Authorization": f"Bearer {token}"}
        anonymous = httpx.post(f"{api}/incidents", json={"playbook": "violent-disorder"})
        assert 401 == anonymous.status_code, anonymous.text
        created = httpx.post(
            f"{api}/incidents", json={"playbook": "violent-disorder"}, headers=auth, timeout=30
        )
        assert 201 == created.status_code, created.text
        incident_id = created.json()["incident_id"]
        deadline = time.monotonic() + 30

        def last_step_state() -> str:
            status = httpx.get(f"{api}/incidents/{incident_id}", headers=auth, timeout=10)
            return status.json()["steps"][-1]["state"]

        while last_step_state() != "applied":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        sandbox_state = httpx.get(f"http://127.0.0.1:{ports['sandbox']}/state", timeout=10).json()
        assert 0.25 == sandbox_state["detection"]["incitement_to_violence"]
        children = children_of(stack.pid)
        assert 4 == len(children)
    finally:
        output = stop_stack(stack)
        print(output)  # shown when the test fails: what the stack and its children said
    assert 0 == stack.returncode, output
    assert "Temporal UI" in output and "/docs" in output
    # (A start retried for a taken port has issued the token already: no "new" to check here.)
    assert f"API token    {token_file.resolve()}" in output, output
    assert token not in output
    for child in children:
        assert (
            not Path(f"/proc/{child}").exists()
            or "zombie" in Path(f"/proc/{child}/status").read_text()
        )
    assert all(wait_closed(port) for port in ports.values())
    assert (data_dir / "temporal.db").is_file() and (data_dir / "audit.db").is_file()

    stack = start_stack(data_dir, ports)
    try:
        assert token == token_file.read_text().strip()
        status = httpx.get(f"{api}/incidents/{incident_id}", headers=auth, timeout=30).json()
        assert ("running", ["applied"] * 5) == (
            status["state"],
            [s["state"] for s in status["steps"]],
        )
        assert "closed" == stood_down(api, incident_id, auth)["state"]
        audit = httpx.get(f"{api}/incidents/{incident_id}/audit", headers=auth, timeout=10).json()
        assert audit["verified"] and "incident.closed" == audit["events"][-1]["kind"]
    finally:
        output = stop_stack(stack)
        print(output)  # shown when the test fails: what the stack and its children said
    assert f"API token    {token_file.resolve()}\n" in output, output
    assert token not in output


def test_the_first_start_issues_the_operators_token_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no active token, an admin+commander token for the operator (CRISIS_ACTOR) goes into
    a 0600 file; later starts keep it; once every token is revoked, the next start issues anew."""
    monkeypatch.setenv("CRISIS_ACTOR", "olivia")
    settings = Settings(data_dir=tmp_path / "data", database_url="")
    settings.data_dir.mkdir()
    token_file = settings.data_dir.resolve() / ADMIN_TOKEN_FILE

    first = ensure_admin_token(settings)
    assert first is not None
    assert (token_file, "olivia", True) == (first.path, first.principal, first.new)
    assert 0o600 == token_file.stat().st_mode & 0o777
    token = token_file.read_text().strip()
    tokens = TokenStore(settings.resolved_database_url)
    try:
        found = tokens.authenticate(token)
        assert found is not None
        assert ("olivia", ("admin", "commander")) == (found.name, found.roles)

        again = ensure_admin_token(settings)
        assert again is not None and (token_file, False) == (again.path, again.new)
        assert token == token_file.read_text().strip()
        assert 1 == len(tokens.list())

        tokens.revoke(principal="olivia")
        renewed = ensure_admin_token(settings)
        assert renewed is not None and renewed.new
        assert token != token_file.read_text().strip()
        assert 0o600 == token_file.stat().st_mode & 0o777
    finally:
        tokens.dispose()


def test_children_that_exit_are_started_again_and_none_outlives_a_killed_supervisor(
    tmp_path: Path,
) -> None:
    """The worker killed, then the API and, while the API waits to start again, Temporal: the
    supervisor starts Temporal again first, then the others (the API cannot start without it),
    and the new worker runs the incidents. The supervisor killed (no chance to stop its
    children): each child is told to stop and does, freeing every port."""
    data_dir = tmp_path / "data"
    stack, ports = started_stack(data_dir)
    survivors: list[int] = []
    try:
        api = f"http://127.0.0.1:{ports['api']}/v1"
        healthy(api)
        children = children_of(stack.pid)
        assert 4 == len(children), children
        killed = [
            _child(children, " worker"),
            _child(children, " api"),
            _child(children, "temporal"),
        ]
        for pid in killed:
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)  # the API's exit seen before Temporal's: its restart must wait
        deadline = time.monotonic() + 60
        while len(now := children_of(stack.pid)) != 4 or set(killed) & set(now):
            assert stack.poll() is None, stack.stdout.read() if stack.stdout else ""
            assert time.monotonic() < deadline, now
            time.sleep(0.2)
        wait_for_port("127.0.0.1", ports["api"], timeout_s=60, process=stack)
        healthy(api)
        auth = {"Authorization": f"Bearer {(data_dir / ADMIN_TOKEN_FILE).read_text().strip()}"}
        opened = httpx.post(
            f"{api}/incidents", json={"playbook": "violent-disorder"}, headers=auth, timeout=60
        )
        assert 201 == opened.status_code, opened.text
        closed = stood_down(api, opened.json()["incident_id"], auth)
        assert "closed" == closed["state"], closed  # the new worker ran it

        survivors = children_of(stack.pid)
        stack.kill()
        stack.wait(timeout=30)
        for port in ports.values():
            assert wait_closed(port), f"port {port} still served after the supervisor died"
        deadline = time.monotonic() + 30
        while alive := [
            pid for pid in survivors if Path(f"/proc/{pid}").exists() and b"Z" not in _state(pid)
        ]:
            assert time.monotonic() < deadline, alive
            time.sleep(0.2)
    finally:
        if stack.poll() is None:
            stop_stack(stack)
        for pid in survivors:  # a child left behind holds the output pipe open
            if _state(pid) != b"Z":
                os.kill(pid, signal.SIGKILL)
        print(stack.stdout.read() if stack.stdout else "")  # shown when the test fails


def _child(children: list[int], named: str) -> int:
    """The child whose command line holds `named`."""
    return next(
        pid
        for pid in children
        if named.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    )


def _state(pid: int) -> bytes:
    """The process's state letter (Z: exited, not yet reaped by its new parent)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return b"Z"

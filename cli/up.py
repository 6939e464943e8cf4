"""`crisis up`: the embedded stack as one supervised group of child processes."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from cli.common import actor_name
from cli.output import CliError
from core.settings import Settings
from engine.devserver import ServerStartError, dev_server_command, wait_for_port
from store.errors import TokenError
from store.tokens import TokenStore

log = structlog.get_logger(__name__)
STOP_GRACE_S = 10.0
# A child that exits on its own is started again, unless it keeps exiting: more than this many
# exits within RESTART_WINDOW_S stop the stack (exit 1) rather than loop.
RESTARTS_ALLOWED = 5
RESTART_WINDOW_S = 60.0
RESTART_PAUSE_S = 1.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h
ADMIN_TOKEN_FILE = "admin-token"
ADMIN_ROLES = ["admin", "commander"]


@dataclass
class Child:
    name: str
    command: list[str]
    port: int | None
    needs: str | None = None  # the child that must serve its port before this one starts again
    process: subprocess.Popen[bytes] | None = None
    exits: list[float] = field(default_factory=list)  # when it exited on its own, lately
    restart_at: float | None = None  # exited: when it is due to start again


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _in_use(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def child_environment(settings: Settings) -> dict[str, str]:
    """The settings every child must share, as the environment variables they read."""
    env = dict(os.environ)
    env.update(
        {
            "CRISIS_DATA_DIR": str(settings.data_dir.resolve()),
            "CRISIS_DATABASE_URL": settings.resolved_database_url,
            "TEMPORAL_ADDRESS": settings.temporal_address,
            "CRISIS_API_PORT": str(settings.api_port),
            "CRISIS_SANDBOX_PORT": str(settings.sandbox_port),
            "TEMPORAL_UI_PORT": str(settings.temporal_ui_port),
            # The embedded server registers the incident search attributes (engine/devserver.py).
            "CRISIS_SEARCH_ATTRIBUTES": "true",
        }
    )
    return env


@dataclass(frozen=True)
class AdminToken:
    """Where the local operator's API token is kept; `new` on the start that issued it."""

    path: Path
    principal: str | None = None
    new: bool = False


def _write_private(path: Path, text: str) -> None:
    """Write `text` readable by the owner only (0600), replacing any older file whole."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text + "\n")
    os.replace(temporary, path)


def ensure_admin_token(settings: Settings) -> AdminToken | None:
    """On the first start (no active token: none issued yet, or every one revoked), issue one in
    roles admin and commander for the local operator, into `<data_dir>/admin-token`; the token
    itself is never printed or logged. Later starts only say where the file is, if it is there."""
    path = settings.data_dir.resolve() / ADMIN_TOKEN_FILE
    where = make_url(settings.resolved_database_url).render_as_string(hide_password=True)
    tokens: TokenStore | None = None
    try:
        tokens = TokenStore(settings.resolved_database_url)
        if tokens.has_tokens(active_only=True):
            return AdminToken(path) if path.is_file() else None
        principal = actor_name(None)
        issued = tokens.create(principal, ADMIN_ROLES)
        try:
            _write_private(path, issued.token)
        except OSError as error:
            # A token nobody can read must not count as the first one: take it back.
            tokens.revoke(issued.info.id)
            raise CliError(f"cannot write the API token to {path}: {error.strerror}") from None
    except TokenError as error:
        raise CliError(f"cannot issue the first API token (set CRISIS_ACTOR): {error}") from None
    except SQLAlchemyError as error:
        cause = "".join(str(error.__cause__ or error).strip().splitlines()[:1])
        raise CliError(f"cannot issue the first API token in {where}: {cause}") from None
    finally:
        if tokens is not None:
            tokens.dispose()
    log.info(
        "stack.admin_token_issued", principal=principal, token_id=issued.info.id, file=str(path)
    )
    return AdminToken(path, principal, new=True)


def plan(settings: Settings) -> list[Child]:
    me = [sys.executable, "-m", "cli"]
    return [
        Child(
            "temporal",
            dev_server_command(
                db_file=settings.temporal_db_file.resolve(),
                port=_port_of(settings.temporal_address),
                ui_port=settings.temporal_ui_port,
            ),
            _port_of(settings.temporal_address),
        ),
        Child("sandbox", [*me, "sandbox"], settings.sandbox_port),
        # Both exit at once if Temporal cannot be reached when they start.
        Child("worker", [*me, "worker"], None, needs="temporal"),
        Child("api", [*me, "api"], settings.api_port, needs="temporal"),
    ]


def run_stack(settings: Settings) -> int:
    """Start every child in order, print the URLs, supervise; return the exit status."""
    children = plan(settings)
    ports = {child.name: child.port for child in children if child.port is not None}
    ports["temporal UI"] = settings.temporal_ui_port
    named: dict[int, str] = {}
    for name, port in ports.items():
        if port in named:
            raise CliError(
                f"{named[port]} and {name} are both given port {port}: give each its own"
            )
        named[port] = name
    for name, port in ports.items():
        if _in_use(port):
            raise CliError(f"port {port} for {name} is already in use (another `crisis up`?)")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    admin_token = ensure_admin_token(settings)
    env = child_environment(settings)
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        log.info("stack.stopping", signal=signal.Signals(signum).name)

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    try:
        for child in children:
            _start(child, env, settings.data_dir)
            if stopping:
                return 0
        _print_urls(settings, admin_token)
        while not stopping:
            if not _supervise(children, env, settings.data_dir):
                return 1
            time.sleep(0.2)
        return 0
    except ServerStartError as error:
        log.error("stack.start_failed", error=str(error))
        return 1
    finally:
        _stop(children)


def _supervise(children: list[Child], env: dict[str, str], data_dir: Path) -> bool:
    """One look at every child: note one that exited, start again one that is due (without
    waiting for its port, so that the others stay watched meanwhile: one that exits again before
    serving it counts as another exit). False if one keeps exiting."""
    now = time.monotonic()
    by_name = {child.name: child for child in children}
    for child in children:
        assert child.process is not None
        if child.restart_at is None:
            if child.process.poll() is None:
                continue
            child.exits = [t for t in child.exits if now - t < RESTART_WINDOW_S] + [now]
            status = child.process.returncode
            if len(child.exits) > RESTARTS_ALLOWED:
                log.error(
                    "stack.child_keeps_exiting",
                    child=child.name,
                    status=status,
                    exits=len(child.exits),
                    within_s=RESTART_WINDOW_S,
                )
                return False
            log.warning("stack.child_exited", child=child.name, status=status, restart=True)
            child.restart_at = now + RESTART_PAUSE_S
        elif now >= child.restart_at and _serving(by_name.get(child.needs or "")):
            child.restart_at = None
            _spawn(child, env, data_dir)
            log.info("stack.child_restarted", child=child.name, pid=child.process.pid)
    return True


def _serving(child: Child | None) -> bool:
    """Whether the child (None: nothing needed) runs and, if it has a port, serves it."""
    if child is None:
        return True
    assert child.process is not None
    if child.restart_at is not None or child.process.poll() is not None:
        return False
    return child.port is None or _in_use(child.port)


def _start(child: Child, env: dict[str, str], data_dir: Path) -> None:
    """Start the child and wait until it serves its port."""
    _spawn(child, env, data_dir)
    assert child.process is not None
    if child.port is not None:
        wait_for_port("127.0.0.1", child.port, timeout_s=60, process=child.process)
    log.info("stack.child_started", child=child.name, pid=child.process.pid, port=child.port)


def _spawn(child: Child, env: dict[str, str], data_dir: Path) -> None:
    output = (
        open(data_dir / f"{child.name}.log", "ab")  # noqa: SIM115 - lives as long as the child
        if child.name == "temporal"
        else None
    )
    # Own session: Ctrl-C reaches only this supervisor, which stops children in order.
    child.process = subprocess.Popen(
        child.command,
        env=env,
        start_new_session=True,
        stdout=output,
        stderr=output,
        preexec_fn=_dies_with(os.getpid()),  # safe: the supervisor runs no other thread
    )
    if output is not None:
        output.close()  # the child holds its own copy


def _dies_with(supervisor: int) -> Callable[[], None]:
    """Run in the child before it execs: it is sent SIGTERM when the supervisor dies, however
    (a SIGKILL gives the supervisor no chance to stop it, and its own session keeps it from the
    terminal's signals), and exits at once if the supervisor is already gone. Linux only."""

    def arrange() -> None:
        if not sys.platform.startswith("linux"):
            return
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != supervisor:
            os._exit(1)

    return arrange


def _print_urls(settings: Settings, admin_token: AdminToken | None) -> None:
    lines = [
        f"Temporal     {settings.temporal_address}  (data {settings.temporal_db_file.resolve()})",
        f"Temporal UI  http://127.0.0.1:{settings.temporal_ui_port}",
        f"API          {settings.api_url}/v1  (OpenAPI {settings.api_url}/docs)",
        f"Console      {settings.api_url}/console  (sign in with the API token)",
        f"Sandbox      {settings.sandbox_url}/state",
        f"Audit store  {settings.resolved_database_url}",
    ]
    if admin_token is not None and admin_token.new:
        lines.append(
            f"API token    {admin_token.path}  (new: {admin_token.principal}, roles "
            f"{', '.join(ADMIN_ROLES)}; send it as 'Authorization: Bearer <token>')"
        )
    elif admin_token is not None:
        lines.append(f"API token    {admin_token.path}")
    lines.append("Ctrl-C stops everything.")
    print("\n".join(lines), flush=True)


def _stop(children: list[Child]) -> None:
    for child in reversed(children):
        process = child.process
        if process is None or process.poll() is not None:
            continue
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            log.warning("stack.kill", child=child.name)
            process.kill()
            process.wait()
        # uvicorn re-raises the SIGTERM it handled gracefully: -15 here is a clean stop.
        clean = process.returncode in (0, -signal.SIGTERM)
        log.info("stack.child_stopped", child=child.name, clean=clean, status=process.returncode)

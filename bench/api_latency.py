"""API latency with many open incidents: the board and approvals over real HTTP, against the same
work without the API layers.

Starts a Temporal dev server, the sandbox (in-process) and the API (`crisis api`, its own process,
embedded worker on), opens `--incidents` incidents of a playbook whose one measure needs two
approvers, and waits until the board shows them all awaiting approval. Then, with `--concurrency`
clients over loopback:

- the board, `GET /v1/incidents?limit=50` and `?limit=200`, `--requests` per client; baseline:
  the board's own query and entries (`AuditStore.search` + `engine.board.board_entry`) in-process;
- approvals, `POST /v1/incidents/{id}/approve`, each on a different incident, by the first
  approver and then by the second (whose approval lets the step run); baseline: the same workflow
  Update sent with the Temporal client (`Incidents.act` with `ACTIONS["approve"]`).

Each figure alternates API and baseline runs (ABBA) so drift hits both alike, and gives median,
p90, p99 and max in ms, requests per second, and API / baseline ratios. Progress goes to stderr;
the figures to stdout, as a table or as JSON (`--json`). Nothing is asserted about the times.

Usage: python bench/api_latency.py [--incidents 200] [--requests 50] [--concurrency 4] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402

from bench.script import STOPPED_STATUS, stop_on_sigterm  # noqa: E402
from core.logging import configure_logging  # noqa: E402
from core.net import ServerStartError, free_port, wait_for_port  # noqa: E402
from core.settings import Settings  # noqa: E402
from engine.board import OPEN_STATES, BoardEntry, board_entry  # noqa: E402
from engine.devserver import start_dev_server  # noqa: E402
from engine.errors import IncidentError  # noqa: E402
from engine.incidents import ACTIONS, Incidents  # noqa: E402
from engine.temporal import connect  # noqa: E402
from sandbox.app import create_app as create_sandbox  # noqa: E402
from sandbox.server import serving_in_thread  # noqa: E402
from store.audit_store import AuditStore  # noqa: E402
from store.tokens import TokenStore  # noqa: E402

PLAYBOOK = "bench-approval"
STEP = "throttle"
ROLE = "policy-lead"
PLAYBOOK_YAML = f"""\
playbook: {PLAYBOOK}
version: 1
title: Two approvers before one measure
owner: trust-and-safety
description: For the API latency benchmark. One measure that waits for two policy leads.
steps:
  - id: {STEP}
    do: recommender.throttle
    with: {{region: GB, categories: [spam], reach_multiplier: 0.5}}
    expires_after: 24h
    approval: {{roles: [{ROLE}], quorum: 2, timeout: 24h, on_timeout: skip}}
"""
COMMANDER, APPROVERS = "bench-commander", ("bench-approver-1", "bench-approver-2")
WARMUP = 5  # untimed calls per variant before a board figure
OPEN_CONCURRENCY = 10  # trigger calls in flight while opening incidents
# A stuck phase fails the run instead of hanging it.
WAIT_S = float(os.environ.get("BENCH_WAIT_S", "300"))
MACHINE_NOTE = "2 cores, other work running: compare the ratios, not absolute times across runs"


class BenchError(RuntimeError):
    """The run cannot go on: a server did not start, a call failed, a state never came."""


def progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- figures -------------------------------------------------------------------------------------
@dataclass
class Sample:
    """Latencies (ms) of one variant of one figure, over one or more timed runs."""

    latencies_ms: list[float]
    wall_s: float

    def add(self, other: Sample) -> None:
        self.latencies_ms += other.latencies_ms
        self.wall_s += other.wall_s

    def figures(self) -> dict[str, float | int]:
        ordered = sorted(self.latencies_ms)
        return {
            "n": len(ordered),
            "median_ms": round(statistics.median(ordered), 2),
            "p90_ms": round(_nearest_rank(ordered, 0.90), 2),
            "p99_ms": round(_nearest_rank(ordered, 0.99), 2),
            "max_ms": round(ordered[-1], 2),
            "requests_per_s": round(len(ordered) / self.wall_s, 1),
        }


def _nearest_rank(ordered: list[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def compare(api: Sample, baseline: Sample) -> dict[str, Any]:
    ours, theirs = api.figures(), baseline.figures()
    return {
        "api": ours,
        "baseline": theirs,
        "ratio": {
            key.removesuffix("_ms"): round(ours[key] / theirs[key], 2)
            for key in ("median_ms", "p90_ms", "p99_ms", "requests_per_s")
        },
    }


# A call is made by client number n (0 <= n < concurrency), which sends it on its own connection.
Call = Callable[[int], Awaitable[None]]


async def timed_load(calls: list[Call], *, concurrency: int) -> Sample:
    """Run `calls` with `concurrency` clients in flight, each taking the next call when its last
    one is answered; time each call."""
    pending = iter(calls)
    latencies: list[float] = []

    async def client(number: int) -> None:
        for call in pending:  # one shared iterator: no call runs twice
            started = time.perf_counter()
            await call(number)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(client(number) for number in range(concurrency)))
    return Sample(latencies, time.perf_counter() - started)


@contextlib.asynccontextmanager
async def http_clients(base_url: str, count: int) -> AsyncIterator[list[httpx.AsyncClient]]:
    """One client (one keep-alive connection) per simulated user."""
    clients = [httpx.AsyncClient(base_url=base_url, timeout=60) for _ in range(count)]
    try:
        yield clients
    finally:
        for http in clients:
            await http.aclose()


# --- the stack -----------------------------------------------------------------------------------
@dataclass
class Stack:
    settings: Settings
    api_url: str
    store: AuditStore
    tokens: dict[str, str]  # principal -> bearer token


@contextlib.contextmanager
def running_stack(tmp: Path) -> Iterator[Stack]:
    """Dev server, sandbox and API up; the audit store and tokens in place. Stopped on exit."""
    with contextlib.ExitStack() as stack:
        port = free_port()
        server = start_dev_server(
            db_file=tmp / "temporal.db", port=port, log_file=tmp / "temporal.log"
        )
        stack.callback(_stop, server)
        sandbox_url = stack.enter_context(serving_in_thread(create_sandbox()))
        library = tmp / "library"
        library.mkdir()
        (library / f"{PLAYBOOK}.yaml").write_text(PLAYBOOK_YAML)
        settings = Settings(
            temporal_address=f"127.0.0.1:{port}",
            sandbox_port=int(sandbox_url.rsplit(":", 1)[1]),
            database_url=f"sqlite:///{tmp / 'audit.db'}",
            data_dir=tmp / "data",
            playbooks_dir=library,
            task_queue="api-latency",
            api_port=free_port(),
            api_embedded_worker=True,
            log_level="warning",
        )
        # The bench's store migrates the database before the API opens it.
        store = AuditStore(settings.resolved_database_url)
        stack.callback(store.dispose)
        issuer = TokenStore(store.engine)
        tokens = {COMMANDER: issuer.create(COMMANDER, ["commander"]).token}
        for approver in APPROVERS:
            tokens[approver] = issuer.create(approver, [ROLE]).token
        api = start_api(settings, log_file=tmp / "api.log")
        stack.callback(_stop, api)
        yield Stack(settings, settings.api_url, store, tokens)


def start_api(settings: Settings, *, log_file: Path) -> subprocess.Popen[bytes]:
    """`crisis api` in its own process, so the load generator never shares its interpreter."""
    env = {
        **os.environ,
        "TEMPORAL_ADDRESS": settings.temporal_address,
        "CRISIS_DATABASE_URL": settings.database_url,
        "CRISIS_DATA_DIR": str(settings.data_dir),
        "CRISIS_PLAYBOOKS_DIR": str(settings.playbooks_dir),
        "CRISIS_TASK_QUEUE": settings.task_queue,
        "CRISIS_SANDBOX_PORT": str(settings.sandbox_port),
        "CRISIS_API_HOST": "127.0.0.1",
        "CRISIS_API_PORT": str(settings.api_port),
        "CRISIS_API_EMBEDDED_WORKER": "true",
        "CRISIS_LOG_LEVEL": settings.log_level,
    }
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "api"],
        cwd=ROOT,
        env=env,
        stdout=log_file.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_for_port("127.0.0.1", settings.api_port, timeout_s=60, process=process)
    except ServerStartError as error:
        process.kill()
        raise BenchError(f"the API did not start ({error}); see {log_file}") from None
    return process


def _stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def expect(response: httpx.Response, status: int = 200) -> httpx.Response:
    if response.status_code != status:
        raise BenchError(
            f"{response.request.method} {response.request.url.path}: "
            f"{response.status_code} {response.text[:200]}"
        )
    return response


async def wait_until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not await check():
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not reached after {WAIT_S:.0f}s")
        await asyncio.sleep(0.2)


# --- phases --------------------------------------------------------------------------------------
async def open_incidents(stack: Stack, count: int) -> tuple[list[str], dict[str, float]]:
    """Trigger `count` incidents through the API; wait until the board shows each one
    awaiting its approvals."""
    ids: list[str] = []
    headers = bearer(stack.tokens[COMMANDER])
    started = time.perf_counter()
    async with http_clients(stack.api_url, OPEN_CONCURRENCY) as clients:
        http = clients[0]

        async def trigger(client: int) -> None:
            response = await clients[client].post(
                "/v1/incidents", json={"playbook": PLAYBOOK}, headers=headers
            )
            ids.append(expect(response, 201).json()["incident_id"])
            if len(ids) % 50 == 0 or len(ids) == count:
                progress(f"opened {len(ids)}/{count} incidents")

        await timed_load([trigger] * count, concurrency=OPEN_CONCURRENCY)
        triggered_s = time.perf_counter() - started

        async def all_awaiting() -> bool:
            seen = 0
            for offset in range(0, count, 200):
                response = await http.get(
                    "/v1/incidents",
                    params={"playbook": PLAYBOOK, "limit": 200, "offset": offset},
                    headers=headers,
                )
                items = expect(response).json()["items"]
                seen += sum(1 for item in items if _awaiting(item, approvals=0))
            return seen == count

        await wait_until(all_awaiting, f"{count} incidents awaiting approval on the board")
    awaited_s = time.perf_counter() - started
    progress(f"all {count} incidents awaiting approval after {awaited_s:.1f}s")
    return ids, {"trigger_s": round(triggered_s, 2), "until_board_shows_all_s": round(awaited_s, 2)}


def _awaiting(item: dict[str, Any], *, approvals: int) -> bool:
    return any(
        pending["step_id"] == STEP and pending["approvals"] == approvals
        for pending in item["pending_approvals"]
    )


def board_direct(store: AuditStore, limit: int) -> list[BoardEntry]:
    """What `GET /v1/incidents` computes, without HTTP, auth or serialisation: the board's
    query (`state=open`) and its entries, as `engine.board.board_page` does."""
    rows = store.search(state=OPEN_STATES, limit=limit + 1, offset=0)
    now = datetime.now(UTC)
    return [board_entry(row, now) for row in rows[:limit]]


async def measure_board(
    stack: Stack, *, limit: int, requests: int, concurrency: int
) -> dict[str, Any]:
    headers = bearer(stack.tokens[COMMANDER])
    async with http_clients(stack.api_url, concurrency) as clients:

        async def api_call(client: int) -> None:
            response = await clients[client].get(
                "/v1/incidents", params={"limit": limit}, headers=headers
            )
            expect(response)

        async def direct_call(_: int) -> None:
            await asyncio.to_thread(board_direct, stack.store, limit)

        # Both must show the same page before anything is timed.
        response = await clients[0].get("/v1/incidents", params={"limit": limit}, headers=headers)
        page = expect(response).json()
        direct = await asyncio.to_thread(board_direct, stack.store, limit)
        if [i["incident_id"] for i in page["items"]] != [e.incident_id for e in direct]:
            raise BenchError(f"the API's board and the direct query differ (limit={limit})")
        for number in range(WARMUP * concurrency):
            await api_call(number % concurrency)
            await direct_call(number)
        per_run = max(1, requests // 2) * concurrency
        api, baseline = Sample([], 0.0), Sample([], 0.0)
        for variant in ("api", "baseline", "baseline", "api"):  # ABBA: drift hits both alike
            call = api_call if variant == "api" else direct_call
            run = await timed_load([call] * per_run, concurrency=concurrency)
            (api if variant == "api" else baseline).add(run)
            progress(f"board limit={limit}: {variant} {len(run.latencies_ms)} requests")
    return {"items": len(page["items"]), **compare(api, baseline)}


async def measure_approvals(
    stack: Stack, incidents: Incidents, ids: list[str], *, concurrency: int
) -> dict[str, Any]:
    """Each incident is approved by both approvers, half through the API and half directly."""
    update, request_model = ACTIONS["approve"]
    through_api, direct = ids[0::2], ids[1::2]

    def api_call(incident_id: str, approver: str) -> Call:
        headers = bearer(stack.tokens[approver])

        async def call(client: int) -> None:
            response = await clients[client].post(
                f"/v1/incidents/{incident_id}/approve", json={"step_id": STEP}, headers=headers
            )
            expect(response)

        return call

    def direct_call(incident_id: str, approver: str) -> Call:
        request = request_model(step_id=STEP, actor=approver, role=ROLE)

        async def call(_: int) -> None:
            await incidents.act(incident_id, update, request)

        return call

    results: dict[str, Any] = {}
    async with http_clients(stack.api_url, concurrency) as clients:
        for number, approver in enumerate(APPROVERS, start=1):
            api, baseline = Sample([], 0.0), Sample([], 0.0)
            halves = {
                "api": (through_api[: len(through_api) // 2], through_api[len(through_api) // 2 :]),
                "baseline": (direct[: len(direct) // 2], direct[len(direct) // 2 :]),
            }
            for run_number, variant in enumerate(("api", "baseline", "baseline", "api")):
                chunk = halves[variant][0 if run_number < 2 else 1]
                make = api_call if variant == "api" else direct_call
                run = await timed_load([make(i, approver) for i in chunk], concurrency=concurrency)
                (api if variant == "api" else baseline).add(run)
                # Let the run's own aftermath (audit writes; the step running once the quorum
                # is reached) finish before the next run is timed.
                await settle(stack.store, chunk, approvals=number)
                progress(f"approval {number}: {variant} {len(chunk)} incidents")
            key = "approve_first" if number == 1 else "approve_second_step_runs"
            results[key] = compare(api, baseline)
    return results


async def settle(store: AuditStore, chunk: list[str], *, approvals: int) -> None:
    wanted = set(chunk)

    def reached() -> bool:
        rows = store.search(playbook=PLAYBOOK, limit=10**6)
        now = datetime.now(UTC)
        entries = [board_entry(row, now) for row in rows if row.incident_id in wanted]
        if approvals == 1:
            done = [
                e
                for e in entries
                if any(p.step_id == STEP and p.approvals == 1 for p in e.pending_approvals)
            ]
        else:
            done = [e for e in entries if any(m.step_id == STEP for m in e.measures)]
        return len(done) == len(wanted)

    async def check() -> bool:
        return await asyncio.to_thread(reached)

    what = "first approval recorded" if approvals == 1 else "measure applied after two approvals"
    await wait_until(check, f"{len(chunk)} incidents: {what}")


# --- the run -------------------------------------------------------------------------------------
async def run(arguments: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    stop_on_sigterm()  # through `running_stack`'s exit, which stops the server and the API
    load_at_start = round(os.getloadavg()[0], 2)  # how busy the machine was, ours aside
    with running_stack(tmp) as stack:
        progress(f"stack up: API {stack.api_url}, Temporal {stack.settings.temporal_address}")
        client = await connect(stack.settings)
        incidents = Incidents(client, stack.settings)
        ids, opened = await open_incidents(stack, arguments.incidents)
        figures: dict[str, Any] = {}
        for limit in (50, 200):
            figures[f"board_limit_{limit}"] = await measure_board(
                stack, limit=limit, requests=arguments.requests, concurrency=arguments.concurrency
            )
        figures |= await measure_approvals(stack, incidents, ids, concurrency=arguments.concurrency)
    return {
        "benchmark": "api_latency",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_1m_at_start": load_at_start,
            "note": MACHINE_NOTE,
        },
        "config": {
            "incidents": arguments.incidents,
            "requests_per_client": arguments.requests,
            "concurrency": arguments.concurrency,
        },
        "baselines": {
            "board": "AuditStore.search + engine.board.board_entry in-process (a thread per call)",
            "approve": "Incidents.act(ACTIONS['approve']): the workflow Update, Temporal client",
        },
        "open": {"incidents": arguments.incidents, **opened},
        "figures": figures,
    }


def table(result: dict[str, Any]) -> str:
    columns = ("median", "p90", "p99", "max", "req/s")
    head = f"{'figure':<26} {'variant':<9} {'n':>5} " + " ".join(f"{c:>8}" for c in columns)
    lines = [head, "-" * len(head)]
    for name, figure in result["figures"].items():
        for variant in ("api", "baseline"):
            f = figure[variant]
            lines.append(
                f"{name if variant == 'api' else '':<26} {variant:<9} {f['n']:>5} "
                f"{f['median_ms']:>8.2f} {f['p90_ms']:>8.2f} {f['p99_ms']:>8.2f} "
                f"{f['max_ms']:>8.2f} {f['requests_per_s']:>8.1f}"
            )
        r = figure["ratio"]
        lines.append(
            f"{'':<26} {'ratio':<9} {'':>5} {r['median']:>8.2f} {r['p90']:>8.2f} "
            f"{r['p99']:>8.2f} {'':>8} {r['requests_per_s']:>8.2f}"
        )
    opened = result["open"]
    lines.append(
        f"opened {opened['incidents']} incidents in {opened['trigger_s']}s; the board showed all "
        f"awaiting approval after {opened['until_board_shows_all_s']}s. Times in ms; ratio = "
        f"API / baseline. {result['machine']['note']}."
    )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--incidents", type=int, default=200, help="open incidents (default 200)")
    parser.add_argument(
        "--requests", type=int, default=50, help="board requests per client (default 50)"
    )
    parser.add_argument("--concurrency", type=int, default=4, help="clients at once (default 4)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    arguments = parser.parse_args()
    if arguments.incidents < 4 or arguments.requests < 1 or arguments.concurrency < 1:
        print(
            "api_latency: error: need --incidents >= 4, --requests >= 1, --concurrency >= 1",
            file=sys.stderr,
        )
        return 2
    configure_logging(level="warning")
    try:
        with tempfile.TemporaryDirectory(prefix="crisis-api-latency-") as tmp:
            result = asyncio.run(run(arguments, Path(tmp)))
    except (BenchError, ServerStartError, IncidentError, OSError, httpx.HTTPError) as error:
        print(f"api_latency: error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("api_latency: error: stopped before it finished", file=sys.stderr)
        return STOPPED_STATUS
    print(json.dumps(result, indent=2) if arguments.json else table(result))
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # the SDK can crash at interpreter exit (sdk-python#300)

"""Benchmark: the playbook interpreter (CrisisWorkflow) against a hand-written baseline.

Run `python bench/run_bench.py` (or `--quick`); JSON figures go to stdout, a summary to stderr.
See bench/README.md for what each figure means and how it is measured.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import platform
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# The frozen playbook the engine's tests run on (baseline.py writes it out by hand), so that
# tuning the shipped library never changes what the benchmark measures.
os.environ["CRISIS_PLAYBOOKS_DIR"] = str(ROOT / "tests" / "fixtures" / "playbooks")
SNAPSHOT_IGNORE = shutil.ignore_patterns(
    ".venv",
    ".git",
    "__pycache__",
    ".pytest_cache",
    ".ruff_cache",
    ".crisis",
    "*.egg-info",
    "results",
    "tests",
    "node_modules",
    "*.db",
    "*.db-*",
)
PRODUCT_DIRS = (
    "workflows",
    "activities",
    "engine",
    "store",
    "sandbox",
    "core",
    "cli",
    "api",
    "playbooks",
    "bench",
    "tests/fixtures",  # the frozen playbook the bench runs (see CRISIS_PLAYBOOKS_DIR above)
)


def _newest_change(root: Path) -> float:
    newest = 0.0
    for directory in PRODUCT_DIRS:
        for path in (root / directory).rglob("*"):
            with contextlib.suppress(OSError):
                if path.is_file() and "__pycache__" not in path.parts:
                    newest = max(newest, path.stat().st_mtime)
    return newest


def _snapshot_and_reexec() -> None:
    """Run from a frozen copy of the product, taken when its files have been quiet a moment.

    The workflow sandbox re-reads workflow modules from disk for every run and every replay, and
    the sandbox child imports the product when it starts: an edit to the working tree during a
    run would otherwise mix two versions of the product in one measurement.
    """
    if (
        os.environ.get("BENCH_SNAPSHOT")
        or "--in-place" in sys.argv[1:]
        or {"-h", "--help"} & set(sys.argv[1:])
    ):
        return
    quiet, deadline = 10.0, time.time() + 600
    while time.time() - _newest_change(ROOT) < quiet and time.time() < deadline:
        print(
            f"product files changed in the last {quiet:.0f}s: waiting for them to settle",
            file=sys.stderr,
            flush=True,
        )
        time.sleep(quiet)
    tmp = Path(tempfile.mkdtemp(prefix="crisis-bench-"))
    target = tmp / "product"
    shutil.copytree(ROOT, target, ignore=SNAPSHOT_IGNORE)
    fixtures = Path("tests") / "fixtures"  # the tests stay out of the copy, but not this
    shutil.copytree(ROOT / fixtures, target / fixtures, symlinks=True)
    os.environ.update(BENCH_SNAPSHOT=str(target), BENCH_TMP=str(tmp), BENCH_SOURCE=str(ROOT))
    os.execv(
        sys.executable, [sys.executable, str(target / "bench" / "run_bench.py"), *sys.argv[1:]]
    )


if __name__ == "__main__":
    _snapshot_and_reexec()
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import temporalio  # noqa: E402
from temporalio import client as temporal_client  # noqa: E402
from temporalio.client import Client  # noqa: E402
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy  # noqa: E402
from temporalio.contrib.pydantic import pydantic_data_converter  # noqa: E402
from temporalio.runtime import (  # noqa: E402
    LogForwardingConfig,
    LoggingConfig,
    Runtime,
    TelemetryConfig,
    TelemetryFilter,
)
from temporalio.worker import Replayer, Worker  # noqa: E402
from temporalio.worker.workflow_sandbox import (  # noqa: E402
    SandboxedWorkflowRunner,
)

from bench.baseline import (  # noqa: E402
    BaselineInput,
    BaselinePlatform,
    BaselineWorkflow,
    StandDown,
    Step,
    violent_disorder,
)
from bench.diagnose import DIAGNOSTIC_MODULE, DIAGNOSTIC_WORKFLOWS  # noqa: E402
from bench.instructions import OUT_ENV as CALLGRIND_OUT_ENV  # noqa: E402
from bench.instructions import (  # noqa: E402
    InstructionCounter,
    InstructionCountError,
    run_under_callgrind,
)
from bench.script import STOPPED_STATUS, positive_int, stop_on_sigterm  # noqa: E402
from core.heap import freeze_startup_heap  # noqa: E402
from core.logging import configure_logging  # noqa: E402
from core.settings import Settings  # noqa: E402
from core.signing import SignatureInvalid, verify  # noqa: E402
from engine.devserver import free_port, start_dev_server, wait_for_port  # noqa: E402
from engine.incidents import Incidents  # noqa: E402
from engine.playbook_files import load_playbook  # noqa: E402
from engine.temporal import (  # noqa: E402
    SANDBOX,
    WORKFLOWS,
    build_worker,
    connect,
    shipped_runner,
)
from engine.updates import send_update  # noqa: E402

# The baseline gets what the engine's shipped workers get (engine.temporal.SANDBOX): its workflow
# module is imported once, outside the workflow sandbox, instead of once per run and replay,
# and the sandbox does not swap the builtins it checks for wrappers while activations run.
BASELINE_SANDBOX = shipped_runner(BaselineWorkflow.__module__)
# The diagnostic variants get the same: without it their module (a CrisisWorkflow subclass) was
# re-imported for every run, re-reading every handler, which charged them several ms per incident
# that the shipped interpreter does not pay.
DIAGNOSTIC_SANDBOX = SandboxedWorkflowRunner(
    restrictions=SANDBOX.restrictions.with_passthrough_modules(DIAGNOSTIC_MODULE)
)
from activities.audit import AuditWriter  # noqa: E402
from store.audit_store import AuditStore  # noqa: E402
from workflows.audit import AuditBatch, AuditWritten  # noqa: E402

PLAYBOOK = "violent-disorder"
ACTOR = "bench"
REASON = "benchmark stand-down"
PATHS = {
    "recommender.throttle": "/recommender/throttle",
    "detection.set_threshold": "/detection/threshold",
    "moderation.surge": "/moderation/surge",
}
# Known to the sandbox (sandbox/state.py): every apply and restore of these succeeds.
CLASSIFIERS = [
    "incitement_to_violence",
    "racial_hatred",
    "terrorism",
    "fraud",
    "self_harm",
    "threats",
]
QUEUES = ["general", "hate", "violent_extremism", "fraud", "self_harm", "child_safety"]
REGIONS = ["GB", "FR", "DE", "IE", "ES", "IT", "NL"]
# A stuck incident fails the run (with what its history says) instead of hanging it.
WAIT_S = float(os.environ.get("BENCH_WAIT_S", "300"))
CHILDREN = ("temporal_server", "sandbox")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- statistics ---------------------------------------------------------------------------------
def pct(values: list[float], q: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summary(values: list[float]) -> dict[str, Any]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return {"n": 0}
    return {
        "median": round(statistics.median(values), 3),
        "p90": round(pct(values, 0.9), 3),
        "mean": round(statistics.fmean(values), 3),
        "min": round(min(values), 3),
        "max": round(max(values), 3),
        "n": len(values),
    }


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def ratio_interval(
    a: list[float],
    b: list[float],
    stat: Callable[[list[float]], float],
    *,
    paired: bool = False,
) -> list[float] | None:
    """A 95% bootstrap interval of stat(a) / stat(b), from 2,000 resamples with a fixed seed.
    Unpaired, each variant's samples are drawn on their own; paired, a[i] and b[i] (two runs
    close in time) are drawn together, so drift between pairs does not widen the interval. Where
    it straddles a goal's threshold, the run cannot tell the figure from the machine's noise."""
    if len(a) < 2 or len(b) < 2 or (paired and len(a) != len(b)):
        return None
    draw = random.Random(0)
    ratios = []
    for _ in range(2000):
        if paired:
            picks = draw.choices(range(len(a)), k=len(a))
            ratios.append(stat([a[i] for i in picks]) / stat([b[i] for i in picks]))
        else:
            ratios.append(stat(draw.choices(a, k=len(a))) / stat(draw.choices(b, k=len(b))))
    ratios.sort()
    return [round(ratios[49], 3), round(ratios[1949], 3)]


# --- observing: platform answers, workflow starts, SDK warnings, CPU ----------------------------
class Tracker:
    """Event hooks on every worker's shared httpx client (identical for all variants).

    A response means the sandbox has applied the request, so counting successful `apply-*`
    answers per incident tells when an incident has all its steps applied without asking the
    workflow (a query) or the sandbox (GET /state deep-copies everything under its lock).
    """

    def __init__(self) -> None:
        self._expected: dict[str, tuple[int, asyncio.Future[float]]] = {}
        self._counts: dict[str, int] = {}
        self.captured: dict[str, list[dict[str, Any]]] = {}

    def applied(self, incident_id: str, steps: int) -> asyncio.Future[float]:
        """A future set (to time.time()) once `steps` applies of the incident were answered."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._expected[incident_id] = (steps, future)
        return future

    def capture(self, incident_id: str) -> None:
        self.captured[incident_id] = []

    def hooks(self) -> dict[str, list[Callable[[Any], Awaitable[None]]]]:
        return {"request": [self._on_request], "response": [self._on_response]}

    async def _on_request(self, request: httpx.Request) -> None:
        if not self.captured:
            return
        incident = request.headers.get("x-incident-id")
        if incident in self.captured:
            self.captured[incident].append(
                {
                    "method": request.method,
                    "url": str(request.url),
                    "headers": {
                        k.lower(): v
                        for k, v in request.headers.items()
                        if k.lower() not in ("content-length", "user-agent", "host")
                    },
                    "body": request.content.decode(),
                }
            )

    async def _on_response(self, response: httpx.Response) -> None:
        request = response.request
        incident = request.headers.get("x-incident-id")
        if incident is None or response.status_code >= 400:
            return
        if not request.headers.get("x-operation", "").startswith("apply"):
            return
        count = self._counts[incident] = self._counts.get(incident, 0) + 1
        expected = self._expected.get(incident)
        if expected is not None and count >= expected[0] and not expected[1].done():
            expected[1].set_result(time.time())
            del self._expected[incident]


class StartHook(temporal_client.Interceptor):
    """Client interceptor: when each start_workflow call leaves the caller's code, the input's
    size per workflow type, and (diagnostics only) a workflow type renamed on its way out."""

    def __init__(self, rename: dict[str, str] | None = None) -> None:
        self.entered: dict[str, float] = {}
        self.input_bytes: dict[str, int] = {}
        self.rename = rename or {}

    def intercept_client(
        self, next: temporal_client.OutboundInterceptor
    ) -> temporal_client.OutboundInterceptor:
        return _StartOutbound(next, self)


class _StartOutbound(temporal_client.OutboundInterceptor):
    def __init__(self, next: temporal_client.OutboundInterceptor, hook: StartHook) -> None:
        super().__init__(next)
        self._hook = hook

    async def start_workflow(self, input: temporal_client.StartWorkflowInput) -> Any:
        self._hook.entered[input.id] = time.perf_counter()
        if input.workflow not in self._hook.input_bytes:
            payloads = pydantic_data_converter.payload_converter.to_payloads(list(input.args))
            self._hook.input_bytes[input.workflow] = sum(len(p.data) for p in payloads)
        if input.workflow in self._hook.rename:
            input = dataclasses.replace(input, workflow=self._hook.rename[input.workflow])
        return await super().start_workflow(input)


class WarningCounter(logging.Handler):
    """Counts the SDK's warnings (slow workflow tasks, late activity completions) per phase."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        message = record.getMessage()[:160]
        if len(self.samples) < 3 and message not in self.samples:
            self.samples.append(message)

    def take(self) -> dict[str, Any]:
        result = {"count": self.count, "samples": self.samples}
        self.count, self.samples = 0, []
        return result


def install_runtime(counter: WarningCounter) -> None:
    """Send the SDK core's own warnings (printed on stdout by default) to `counter`."""
    core = logging.getLogger("bench.temporal_core")
    core.propagate = False
    core.setLevel(logging.WARNING)
    core.addHandler(counter)
    Runtime.set_default(
        Runtime(
            telemetry=TelemetryConfig(
                logging=LoggingConfig(
                    filter=TelemetryFilter(core_level="WARN", other_level="ERROR"),
                    forwarding=LogForwardingConfig(logger=core),
                )
            )
        )
    )


def process_cpu(pid: int) -> float:
    """utime + stime of a process from /proc (Linux), in seconds."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_pressure_us() -> float:
    """Total µs during which some runnable task waited for a CPU (PSI; Linux 4.20+)."""
    try:
        line = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return float("nan")
    return float(line.rsplit("total=", 1)[1])


# --- the variants -------------------------------------------------------------------------------
class Variant:
    """How one kind of incident is started, stood down and awaited."""

    name: str
    steps: int  # lever applies per incident

    def __init__(self, client: Client) -> None:
        self.client = client

    async def start(self, incident_id: str) -> None:
        raise NotImplementedError

    async def stand_down(self, incident_id: str) -> None:
        raise NotImplementedError

    async def finish(self, incident_id: str) -> None:
        await self.client.get_workflow_handle(incident_id).result()


class Interpreter(Variant):
    """The product path: `Incidents.trigger(..., eager=True)`, then `Incidents.stand_down`."""

    def __init__(
        self,
        client: Client,
        settings: Settings,
        *,
        playbook: str,
        steps: int,
        name: str = "interpreter",
    ) -> None:
        super().__init__(client)
        self.incidents = Incidents(client, settings)
        self.playbook, self.steps, self.name = playbook, steps, name

    async def start(self, incident_id: str) -> None:
        await self.incidents.trigger(
            self.playbook, {}, actor=ACTOR, incident_id=incident_id, eager=True
        )

    async def stand_down(self, incident_id: str) -> None:
        await self.incidents.stand_down(incident_id, actor=ACTOR, reason=REASON)


class Baseline(Variant):
    """The hand-written workflow, started eagerly with the same client."""

    name = "baseline"

    def __init__(
        self,
        client: Client,
        task_queue: str,
        make: Callable[[str], BaselineInput],
        action_timeout_s: float,
    ) -> None:
        super().__init__(client)
        self.task_queue, self.make = task_queue, make
        self.steps = len(make("probe").steps)
        self.action_timeout_s = action_timeout_s

    async def start(self, incident_id: str) -> None:
        await self.client.start_workflow(
            BaselineWorkflow.run,
            self.make(incident_id),
            id=incident_id,
            task_queue=self.task_queue,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
            request_eager_start=True,
        )

    async def stand_down(self, incident_id: str) -> None:
        # As the product sends it (engine.updates): re-sent while the server is too busy.
        await send_update(
            self.client,
            incident_id,
            BaselineWorkflow.stand_down,
            StandDown(ACTOR, REASON),
            timeout_s=self.action_timeout_s,
        )


def shipped_violent_disorder(incident_id: str) -> BaselineInput:
    return violent_disorder(incident_id, actor=ACTOR)


@dataclass
class Run:
    """One incident's life as the bench saw it (perf_counter times unless said otherwise)."""

    incident_id: str
    wall_before_trigger: float  # time.time() just before the trigger call
    t0: float  # just before the trigger call
    entered: float = math.nan  # when the trigger called start_workflow (client interceptor)
    started: float = 0.0  # when the trigger call returned
    applied: float = 0.0  # when the last apply was answered
    done: float = 0.0  # when the workflow result arrived


async def lifecycle(
    env: Env, variant: Variant, incident_id: str, start_gate: asyncio.Semaphore | None = None
) -> Run:
    """Trigger, wait until every step is applied, stand down (update), await completion."""
    applied = env.tracker.applied(incident_id, variant.steps)
    async with start_gate or contextlib.nullcontext():
        run = Run(incident_id, time.time(), time.perf_counter())
        await variant.start(incident_id)
        run.started = time.perf_counter()
    run.entered = env.hook.entered.pop(incident_id, math.nan)
    try:
        await asyncio.wait_for(applied, WAIT_S)
        run.applied = time.perf_counter()
        await asyncio.wait_for(variant.stand_down(incident_id), WAIT_S)
        await asyncio.wait_for(variant.finish(incident_id), WAIT_S)
    except TimeoutError:
        raise Stuck(
            f"{variant.name} incident {incident_id} stuck for {WAIT_S:.0f}s: "
            f"{await why_stuck(env, incident_id)}"
        ) from None
    run.done = time.perf_counter()
    return run


class Stuck(RuntimeError):
    """An incident that made no progress: what its history says."""


async def why_stuck(env: Env, incident_id: str) -> str:
    try:
        history = await env.client.get_workflow_handle(incident_id).fetch_history()
    except Exception as error:
        return f"no history ({error})"
    last = history.events[-1].WhichOneof("attributes")
    failures = [
        e.workflow_task_failed_event_attributes.failure.message
        for e in history.events
        if e.HasField("workflow_task_failed_event_attributes")
    ]
    detail = f"last event {last}"
    if failures:
        detail += f"; workflow task failed: {failures[-1][:300]}"
    return detail + f"; SDK warnings: {env.warnings.samples}"


def new_id(variant: str, phase: str, index: int) -> str:
    return f"bench-{variant[:6]}-{phase}-{index:04d}-{uuid.uuid4().hex[:8]}"


# --- the environment ----------------------------------------------------------------------------
@dataclass
class Env:
    tmp: Path
    client: Client  # every variant's client: the product's connect() plus the StartHook
    hook: StartHook
    settings: Settings
    admin: httpx.AsyncClient  # the sandbox's /state and /reset only
    tracker: Tracker
    warnings: WarningCounter
    children: list[subprocess.Popen[bytes]] = field(default_factory=list)
    largest_burst: int = 0  # incidents at once of the largest burst run so far (warm-up)
    instructions: InstructionCounter | None = None  # --count-instructions

    def settings_for(self, task_queue: str) -> Settings:
        return self.settings.model_copy(update={"task_queue": task_queue})

    def http(self) -> httpx.AsyncClient:
        """A worker's one shared AsyncClient (the product's timeout), with the tracker's hooks."""
        return httpx.AsyncClient(
            timeout=self.settings.platform_timeout_s, event_hooks=self.tracker.hooks()
        )

    def store(self, name: str) -> AuditStore:
        return AuditStore(f"sqlite:///{self.tmp / 'audit' / (name + '.db')}")

    def cpu(self) -> dict[str, float]:
        """CPU seconds used so far by this process (all threads) and by each child."""
        own = os.times()
        return {
            "bench": own.user + own.system,
            **{name: process_cpu(p.pid) for name, p in zip(CHILDREN, self.children, strict=True)},
        }

    async def reset_sandbox(self) -> None:
        (await self.admin.post("/reset")).raise_for_status()

    async def sandbox_state(self) -> dict[str, Any]:
        response = await self.admin.get("/state", timeout=60)
        response.raise_for_status()
        return response.json()


def start_sandbox(tmp: Path, port: int) -> subprocess.Popen[bytes]:
    """The sandbox in its own process, so it never shares the worker's event loop or GIL."""
    env = dict(os.environ, CRISIS_LOG_LEVEL=os.environ.get("BENCH_SANDBOX_LOG_LEVEL", "warning"))
    output = open(tmp / "sandbox.log", "ab")  # noqa: SIM115 - lives as long as the child
    process = subprocess.Popen(
        [sys.executable, "-m", "cli", "sandbox", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    wait_for_port("127.0.0.1", port, timeout_s=30, process=process)
    return process


def stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for process in children:
        if process.poll() is None:
            process.terminate()
    for process in children:
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


class DiscardingWriter(AuditWriter):
    """The audit writer with the store taken out: the same activity and the same writes carried by
    lever calls, each answered as if every event had been written and sealed; nothing is."""

    def __init__(self) -> None:  # no store and no signing key: nothing is written or sealed
        pass

    async def write(self, batch: AuditBatch) -> AuditWritten:
        head = batch.events[-1]
        return AuditWritten(
            inserted=len(batch.events), superseded=0, last_seq=head.seq, head_hash=head.hash
        )


@contextlib.asynccontextmanager
async def interpreter_running(
    env: Env,
    *,
    audit: str = "store",
    playbook: str = PLAYBOOK,
    steps: int = 5,
    diagnostic: str | None = None,
) -> AsyncIterator[Interpreter]:
    """A fresh task queue with an interpreter worker; yields the Interpreter variant.

    The worker is `engine.temporal.build_worker` (real SQLite audit store in the temp dir). With
    `audit="discard"` its audit writer is a `DiscardingWriter`; with `diagnostic`, it is rebuilt
    from that worker's own config with that bench/diagnose.py workflow instead of CrisisWorkflow,
    and started through the unchanged `Incidents.trigger` by a client whose StartHook renames the
    workflow type.
    """
    name = diagnostic or ("interpreter" if audit == "store" else "audit_off")
    settings = env.settings_for(f"bench-{name.replace('_', '')}-{uuid.uuid4().hex[:8]}")
    store = env.store(settings.task_queue)
    client = env.client
    try:
        async with env.http() as http:
            if diagnostic:
                # The shipped worker's own config, built on a throwaway queue (a worker holds its
                # queue from construction, so it is started and stopped again to let go of it).
                probe = build_worker(
                    env.client,
                    settings=settings,
                    http=http,
                    store=store,
                    task_queue=f"bench-probe-{uuid.uuid4().hex[:8]}",
                )
                config = probe.config()
                async with probe:
                    pass
                config["task_queue"] = settings.task_queue
                cls = DIAGNOSTIC_WORKFLOWS[diagnostic]
                hook = StartHook(rename={"CrisisWorkflow": cls.__name__})
                client = Client(**{**env.client.config(), "interceptors": [hook]})
                config["client"], config["workflows"] = client, [cls]
                config["workflow_runner"] = DIAGNOSTIC_SANDBOX
                worker = Worker(**config)
            else:
                writer = DiscardingWriter() if audit == "discard" else None
                worker = build_worker(
                    env.client, settings=settings, http=http, store=store, audit=writer
                )
            async with worker:
                yield Interpreter(client, settings, playbook=playbook, steps=steps, name=name)
    finally:
        store.dispose()


@contextlib.asynccontextmanager
async def baseline_running(
    env: Env,
    make: Callable[[str], BaselineInput] = shipped_violent_disorder,
) -> AsyncIterator[Baseline]:
    task_queue = f"bench-base-{uuid.uuid4().hex[:8]}"
    async with env.http() as http:
        platform_ = BaselinePlatform(
            base_url=env.settings.sandbox_url,
            client=http,
            webhook_secret=env.settings.webhook_secret,
            token=env.settings.platform_token,
        )
        async with Worker(
            env.client,
            task_queue=task_queue,
            workflows=[BaselineWorkflow],
            activities=[platform_.post_lever],
            workflow_runner=BASELINE_SANDBOX,
        ):
            yield Baseline(env.client, task_queue, make, env.settings.action_timeout_s)


# --- 0. parity: both variants send the same requests --------------------------------------------
def _normalise(requests: list[dict[str, Any]], incident_id: str, secret: str) -> list[str]:
    """Requests as comparable text: the incident id masked, the HMAC signature checked.

    The signature covers the body, which names the incident, so it differs between any two
    incidents; what must agree is that it is a valid signature of the body sent.
    """
    out = []
    for request in requests:
        headers = dict(request["headers"])
        if "x-crisis-signature" in headers:
            try:
                verify(secret, headers, request["body"].encode())
                valid = True
            except SignatureInvalid:
                valid = False
            headers["x-crisis-signature"] = "<valid>" if valid else "<INVALID>"
            headers["x-crisis-timestamp"] = "<TIMESTAMP>"
        text = json.dumps({**request, "headers": headers}, sort_keys=True)
        out.append(text.replace(incident_id, "<INCIDENT>"))
    return out


async def parity_and_warmup(
    env: Env, interp: Variant, base: Variant, warmup: int
) -> dict[str, Any]:
    """Warm both workers up; compare, request by request, what each variant sent the platform."""
    ids = {}
    for variant in (interp, base):
        incident_id = new_id(variant.name, "parity", 0)
        env.tracker.capture(incident_id)
        await lifecycle(env, variant, incident_id)
        ids[variant.name] = incident_id
        for index in range(1, warmup):
            await lifecycle(env, variant, new_id(variant.name, "warmup", index))
    secret = env.settings.webhook_secret
    sent = {name: _normalise(env.tracker.captured.pop(i), i, secret) for name, i in ids.items()}
    same = sent[interp.name] == sent[base.name]
    result: dict[str, Any] = {"same_requests": same, "requests_per_incident": len(sent[base.name])}
    if not same:
        result["interpreter"], result["baseline"] = sent[interp.name], sent[base.name]
    return result


# --- 1. trigger -> first lever ------------------------------------------------------------------
async def first_lever(env: Env, interp: Variant, base: Variant, n: int) -> dict[str, Any]:
    """Incidents one after another, interpreter and baseline alternating (AB, BA, AB, ...)."""
    runs: dict[str, list[Run]] = {interp.name: [], base.name: []}
    for index in range(n):
        for variant in (interp, base) if index % 2 == 0 else (base, interp):
            runs[variant.name].append(
                await lifecycle(env, variant, new_id(variant.name, "first", index))
            )
    state = await env.sandbox_state()
    arrivals: dict[str, float] = {}
    with_fraction = 0
    for entry in state["applications"]:
        if entry["operation"].startswith("apply") and entry["incident"] not in arrivals:
            arrivals[entry["incident"]] = datetime.fromisoformat(entry["time"]).timestamp()
            with_fraction += "." in entry["time"]
    out: dict[str, Any] = {}
    firsts: dict[str, list[float]] = {}
    for name, variant_runs in runs.items():
        first = [(arrivals[r.incident_id] - r.wall_before_trigger) * 1000 for r in variant_runs]
        firsts[name] = first
        out[name] = {
            **summary(first),
            "pre_start_ms": summary([(r.entered - r.t0) * 1000 for r in variant_runs]),
            "trigger_call_ms": summary([(r.started - r.t0) * 1000 for r in variant_runs]),
            "all_applied_ms": summary([(r.applied - r.t0) * 1000 for r in variant_runs]),
            "stand_down_to_completed_ms": summary(
                [(r.done - r.applied) * 1000 for r in variant_runs]
            ),
        }
    value = ratio(out[interp.name]["median"], out[base.name]["median"])
    out.update(
        {
            "ratio": value,
            "ratio_ci95": ratio_interval(firsts[interp.name], firsts[base.name], statistics.median),
            "ratio_p90": ratio(out[interp.name]["p90"], out[base.name]["p90"]),
            "goal": "<= 1.15",
            "met": value is not None and value <= 1.15,
            "arrival_clock": "sandbox /state applications[].time = datetime.now(UTC).isoformat(): "
            "system clock (same as time.time()), microseconds; stamped when the "
            "sandbox records the application, after reading, parsing and applying "
            "the request",
            "arrival_stamps_with_microseconds": f"{with_fraction}/{len(arrivals)}",
        }
    )
    return out


# --- 2./4. throughput ---------------------------------------------------------------------------
async def timeline(env: Env, incident_id: str) -> dict[str, Any]:
    """One incident's history, compacted: event kinds (consecutive repeats merged) and times."""
    history = await env.client.get_workflow_handle(incident_id).fetch_history()
    start = history.events[0].event_time.ToDatetime().timestamp()
    kinds: dict[str, int] = {}
    steps: list[str] = []
    for event in history.events:
        kind = event.WhichOneof("attributes").removesuffix("_event_attributes")
        kinds[kind] = kinds.get(kind, 0) + 1
        at = event.event_time.ToDatetime().timestamp() - start
        label = (
            kind.replace("workflow_execution_", "wf_")
            .replace("workflow_task_", "wft_")
            .replace("activity_task_", "act_")
        )
        if steps and steps[-1].split(" ")[0] == label:
            continue
        steps.append(f"{label} +{at * 1000:.0f}ms")
    return {
        "incident_id": incident_id,
        "events": len(history.events),
        "by_kind": kinds,
        "timeline": steps,
    }


async def throughput_run(
    env: Env, variant: Variant, n: int, concurrency: int, phase: str
) -> dict[str, Any]:
    """`n` incidents at once (at most `concurrency` trigger calls in flight); wall time from
    the first trigger call to the last completion."""
    await env.reset_sandbox()
    env.warnings.take()
    gate = asyncio.Semaphore(concurrency)
    cpu_before, pressure_before = env.cpu(), cpu_pressure_us()
    faults_before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    counting = env.instructions is not None and not phase.endswith("-warmup")
    if counting:
        env.instructions.start()
    t0 = time.perf_counter()
    results = await asyncio.gather(
        *(lifecycle(env, variant, new_id(variant.name, phase, i), gate) for i in range(n)),
        return_exceptions=True,
    )
    instructions = env.instructions.stop() if counting else None
    runs = [r for r in results if isinstance(r, Run)]
    errors = [f"{type(r).__name__}: {r}"[:200] for r in results if not isinstance(r, Run)]
    wall = (max(r.done for r in runs) - t0) if runs else math.nan
    cpu_after, pressure = env.cpu(), cpu_pressure_us() - pressure_before
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults_before
    cpu = {name: round(cpu_after[name] - cpu_before[name], 2) for name in cpu_before}
    state = await env.sandbox_state()
    slowest = max(runs, key=lambda r: r.done - r.t0) if runs else None
    return {
        "variant": variant.name,
        "incidents": n,
        "completed": len(runs),
        "failed": len(errors),
        "errors": errors[:3],
        "wall_s": round(wall, 3),
        "incidents_per_s": round(len(runs) / wall, 3) if runs else 0.0,
        "all_applied_ms": summary([(r.applied - r.t0) * 1000 for r in runs]),
        "incident_ms": summary([(r.done - r.t0) * 1000 for r in runs]),
        "cpu_s": cpu,
        "cpu_ms_per_incident": {k: round(v * 1000 / max(1, len(runs)), 1) for k, v in cpu.items()},
        "cpu_busy_share": round(sum(cpu.values()) / (wall * (os.cpu_count() or 1)), 3),
        # Per process: CPU seconds per second of wall time. Near 1.0 for the bench process means
        # its one interpreter lock is what limits the rate, whatever the other core does.
        "cores_used": {name: round(seconds / wall, 2) for name, seconds in cpu.items()},
        # Share of the run during which something (ours or another tenant's) waited for a CPU.
        "cpu_pressure_some": round(pressure / 1e6 / wall, 3),
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        # The bench process's: many mean its heap grew during the run (a first burst does).
        "minor_page_faults": faults,
        # --count-instructions: the bench process's, all threads (the children are not counted)
        "instructions_per_incident": (
            round(instructions / max(1, len(runs))) if instructions is not None else None
        ),
        "sandbox_stats": state["stats"],
        "sdk_warnings": env.warnings.take(),
        "slowest_incident": await timeline(env, slowest.incident_id) if slowest else None,
    }


def abba(first: str, second: str, rounds: int) -> list[str]:
    """first, second, second, first, ... so a drift over the run cancels out."""
    order: list[str] = []
    for index in range(rounds):
        order += [first, second] if index % 2 == 0 else [second, first]
    return order


def _running(env: Env, name: str) -> contextlib.AbstractAsyncContextManager[Variant]:
    if name == "baseline":
        return baseline_running(env)
    if name == "interpreter":
        return interpreter_running(env)
    if name == "audit_off":
        return interpreter_running(env, audit="discard")
    return interpreter_running(env, diagnostic=name)


async def compare_runs(
    env: Env,
    names: list[str],
    n: int,
    rounds: int,
    concurrency: int,
    label: str,
) -> list[dict[str, Any]]:
    """Throughput runs of each variant, `rounds` times, in ABBA order; first an untimed burst of
    each if this process has not yet run one as large."""
    order = (
        abba(names[0], names[1], rounds)
        if len(names) == 2
        else [x for r in range(rounds) for x in (names if r % 2 == 0 else names[::-1])]
    )
    if n > env.largest_burst:
        # One untimed burst of each variant first: the first burst in a process grows its heap
        # to hold `n` live workflows (page faults, allocator arenas), a cost of going first, not of
        # the variant. Later bursts reuse that memory (see `minor_page_faults` per run).
        for name in names:
            async with _running(env, name) as variant:
                warm = await throughput_run(env, variant, n, concurrency, f"{label}-warmup")
            log(f"  {label} warm-up {name}: {warm['minor_page_faults']} minor page faults")
        env.largest_burst = n
    runs = []
    for name in order:
        async with _running(env, name) as variant:
            result = await throughput_run(env, variant, n, concurrency, label)
        log(
            f"  {label} {name}: {result['incidents_per_s']:.2f}/s ({result['completed']}/{n} in "
            f"{result['wall_s']:.1f}s), cpu ms/incident {result['cpu_ms_per_incident']}, "
            f"cores used {result['cores_used']}, cpu pressure {result['cpu_pressure_some']}"
        )
        runs.append(result)
    return runs


def mean_rate(runs: list[dict[str, Any]], name: str) -> float | None:
    rates = [r["incidents_per_s"] for r in runs if r["variant"] == name]
    return round(statistics.fmean(rates), 3) if rates else None


def compare(
    runs: list[dict[str, Any]],
    a: str,
    b: str,
    *,
    keys: tuple[str, str],
    goal: str,
    threshold: float,
) -> dict[str, Any]:
    value = ratio(mean_rate(runs, a), mean_rate(runs, b))
    complete = all(r["failed"] == 0 for r in runs)
    # Each consecutive pair of runs (AB, BA, ...) holds one run of each variant, close in time:
    # how far their ratios spread is how far the machine moved the figure during the run.
    pairs = []
    paired: dict[str, list[float]] = {a: [], b: []}
    for first, second in zip(runs[::2], runs[1::2], strict=False):
        by_name = {first["variant"]: first, second["variant"]: second}
        if a in by_name and b in by_name:
            pairs.append(ratio(by_name[a]["incidents_per_s"], by_name[b]["incidents_per_s"]))
            for name in (a, b):
                paired[name].append(by_name[name]["incidents_per_s"])
    known = [x for x in pairs if x is not None]
    counted = {name: _mean_instructions(runs, name) for name in (a, b)}
    by_instructions = None
    if counted[a] and counted[b]:
        # Work per incident, inverted to read as the rate ratio does when the CPU is the limit.
        by_instructions = {
            "per_incident": {keys[0]: counted[a], keys[1]: counted[b]},
            "ratio": round(counted[b] / counted[a], 4),
            "met": counted[b] / counted[a] >= threshold,
        }
    return {
        keys[0]: mean_rate(runs, a),
        keys[1]: mean_rate(runs, b),
        "ratio": value,
        "ratio_ci95": ratio_interval(paired[a], paired[b], statistics.fmean, paired=True),
        "pair_ratios": pairs,
        "ratio_range": [min(known), max(known)] if known else None,
        "goal": goal,
        "met": value is not None and value >= threshold and complete,
        "all_completed": complete,
        "by_instructions": by_instructions,
        "runs": runs,
    }


def _mean_instructions(runs: list[dict[str, Any]], name: str) -> float | None:
    counts = [r["instructions_per_incident"] for r in runs if r["variant"] == name]
    known = [c for c in counts if c is not None]
    return round(statistics.fmean(known)) if known and len(known) == len(counts) else None


# --- 3. replay ----------------------------------------------------------------------------------
def long_steps(count: int) -> list[tuple[str, str, dict[str, Any]]]:
    """`count` valid steps cycling through throttle, threshold and surge."""
    steps = []
    for index in range(count):
        turn = index // 3
        if index % 3 == 0:
            lever, short = "recommender.throttle", "throttle"
            args: dict[str, Any] = {
                "region": REGIONS[turn % len(REGIONS)],
                "categories": [CLASSIFIERS[turn % len(CLASSIFIERS)]],
                "reach_multiplier": 0.5,
                "reshare_limit": 10,
            }
        elif index % 3 == 1:
            lever, short = "detection.set_threshold", "threshold"
            args = {"classifier": CLASSIFIERS[turn % len(CLASSIFIERS)], "threshold": 0.3}
        else:
            lever, short = "moderation.surge", "surge"
            args = {"queue": QUEUES[turn % len(QUEUES)], "extra_reviewers": 5, "priority": "high"}
        steps.append((f"s{index + 1:02d}-{short}", lever, args))
    return steps


def write_long_playbook(directory: Path, count: int) -> Path:
    lines = [
        "playbook: bench-long",
        "version: 1",
        f"title: Benchmark playbook of {count} steps",
        "description: Generated by bench/run_bench.py for the replay figure.",
        "steps:",
    ]
    for step_id, lever, args in long_steps(count):
        lines += [f"  - id: {step_id}", f"    do: {lever}", f"    with: {json.dumps(args)}"]
    path = directory / "bench-long.yaml"
    path.write_text("\n".join(lines) + "\n")
    load_playbook(path)  # refuse to benchmark an invalid playbook
    return path


async def replay(env: Env, steps: int, replays: int) -> dict[str, Any]:
    path = write_long_playbook(env.tmp, steps)
    spec = long_steps(steps)

    def make(incident_id: str) -> BaselineInput:
        return BaselineInput(incident_id, [Step(i, PATHS[lever], args) for i, lever, args in spec])

    histories = {}
    async with interpreter_running(env, playbook=str(path), steps=steps) as interp:
        incident_id = new_id("interpreter", "replay", 0)
        await lifecycle(env, interp, incident_id)
        histories["interpreter"] = await env.client.get_workflow_handle(incident_id).fetch_history()
    async with baseline_running(env, make) as base:
        incident_id = new_id("baseline", "replay", 0)
        await lifecycle(env, base, incident_id)
        histories["baseline"] = await env.client.get_workflow_handle(incident_id).fetch_history()

    replayers = {
        "interpreter": Replayer(
            workflows=WORKFLOWS, workflow_runner=SANDBOX, data_converter=pydantic_data_converter
        ),
        "baseline": Replayer(
            workflows=[BaselineWorkflow],
            workflow_runner=BASELINE_SANDBOX,
            data_converter=pydantic_data_converter,
        ),
    }
    times: dict[str, list[float]] = {"interpreter": [], "baseline": []}
    firsts = {}
    for name, replayer in replayers.items():  # a warm-up replay each, reported apart
        t0 = time.perf_counter()
        await replayer.replay_workflow(histories[name])
        firsts[name] = round((time.perf_counter() - t0) * 1000, 3)
    for index in range(replays):  # alternating, so machine noise hits both alike
        for name in ("interpreter", "baseline") if index % 2 == 0 else ("baseline", "interpreter"):
            t0 = time.perf_counter()
            await replayers[name].replay_workflow(histories[name])
            times[name].append((time.perf_counter() - t0) * 1000)
    counted: dict[str, int] = {}
    if env.instructions is not None:  # a few replays of each, every instruction of them counted
        for name, replayer in replayers.items():
            env.instructions.start()
            for _ in range(COUNTED_REPLAYS):
                await replayer.replay_workflow(histories[name])
            counted[name] = round(env.instructions.stop() / COUNTED_REPLAYS)
    out: dict[str, Any] = {}
    for name, history in histories.items():
        by_kind: dict[str, int] = {}
        for event in history.events:
            kind = event.WhichOneof("attributes").removesuffix("_event_attributes")
            by_kind[kind] = by_kind.get(kind, 0) + event.ByteSize()
        out[name] = {
            **summary(times[name]),
            "first_replay_ms": firsts[name],
            "history_events": len(history.events),
            "history_bytes": len(history.to_json()),
            "protobuf_bytes_by_kind": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
        }
    value = ratio(out["interpreter"]["median"], out["baseline"]["median"])
    by_instructions = None
    if counted:
        work = counted["interpreter"] / counted["baseline"]
        by_instructions = {"per_replay": counted, "ratio": round(work, 4), "met": work <= 1.10}
    out.update(
        {
            "by_instructions": by_instructions,
            "steps": steps,
            "replays": replays,
            "ratio": value,
            "ratio_ci95": ratio_interval(
                times["interpreter"], times["baseline"], statistics.median
            ),
            "goal": "<= 1.10",
            "met": value is not None and value <= 1.10,
        }
    )
    return out


# --- diagnostics --------------------------------------------------------------------------------
async def history_shape(env: Env, interp: Variant, base: Variant) -> dict[str, Any]:
    """Events per 5-step incident: workflow tasks and activities are what the server pays for."""
    shape = {}
    for variant in (interp, base):
        incident_id = new_id(variant.name, "shape", 0)
        await lifecycle(env, variant, incident_id)
        kinds = (await timeline(env, incident_id))["by_kind"]
        shape[variant.name] = {
            "events": sum(kinds.values()),
            "workflow_tasks": kinds.get("workflow_task_completed", 0),
            "activities": kinds.get("activity_task_scheduled", 0),
            "markers": kinds.get("marker_recorded", 0),
            "by_kind": kinds,
        }
    return shape


def compile_ms(*modules: str) -> dict[str, float]:
    """What compiling each module re-imported by the workflow sandbox costs, per workflow run,
    when no cached bytecode can be read (PYTHONDONTWRITEBYTECODE and no __pycache__)."""
    out = {}
    for module in modules:
        path = ROOT / (module.replace(".", "/") + ".py")
        source = path.read_text()
        t0 = time.perf_counter()
        for _ in range(20):
            compile(source, str(path), "exec")
        out[module] = round((time.perf_counter() - t0) / 20 * 1000, 2)
    return out


def product_digest(root: Path) -> dict[str, str]:
    """sha256 of every product source and playbook file under `root`, by relative path."""
    hashes = {}
    for directory in PRODUCT_DIRS:
        for path in sorted((root / directory).rglob("*")):
            if (
                path.is_file()
                and path.suffix in (".py", ".yaml", ".yml", ".json")
                and "__pycache__" not in path.parts
                and "results" not in path.parts
            ):
                hashes[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def code_version() -> dict[str, Any]:
    """Which code this run measured: a digest of the snapshot (or the tree run in place)."""
    files = product_digest(ROOT)
    digest = hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()[:16]
    return {
        "snapshot_of": os.environ.get("BENCH_SOURCE"),
        "ran_from": str(ROOT),
        "files": len(files),
        "digest": digest,
    }


def changed_since(files_at_start: dict[str, str]) -> list[str]:
    """Files of the live working tree that differ from what this run measured (information
    only when running from a snapshot; with --in-place such a run mixes versions: re-run it)."""
    source = Path(os.environ.get("BENCH_SOURCE") or ROOT)
    now = product_digest(source)
    return sorted(f for f in set(now) | set(files_at_start) if now.get(f) != files_at_start.get(f))


def machine() -> dict[str, Any]:
    try:
        from engine.temporal import installed_binary

        temporal = subprocess.run(
            [str(installed_binary("temporal")), "--version"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        temporal = None
    return {
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "temporalio": temporalio.__version__,
        "httpx": httpx.__version__,
        "temporal_cli": temporal,
        "platform": platform.platform(),
        "dont_write_bytecode": sys.dont_write_bytecode,
        "pycache_prefix": sys.pycache_prefix,
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }


# --- main ---------------------------------------------------------------------------------------
@dataclass
class Counts:
    latency: int
    throughput: int
    audit: int
    rounds: int
    replay_steps: int
    replays: int
    warmup: int
    concurrency: int


SECTIONS = ["first_lever", "throughput", "replay", "audit"]
COUNTED_REPLAYS = 3  # --count-instructions: replays of each variant counted (a replay repeats)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Counts]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small counts: a smoke run (~1 min)")
    parser.add_argument(
        "--latency-incidents",
        type=positive_int,
        help="incidents per variant for first_lever_ms, one after another (50)",
    )
    parser.add_argument(
        "--throughput-incidents",
        type=positive_int,
        help="incidents started at once per throughput run (500)",
    )
    parser.add_argument(
        "--audit-incidents",
        type=positive_int,
        help="incidents started at once per audit on/off run (300)",
    )
    parser.add_argument(
        "--rounds",
        type=positive_int,
        help="throughput and audit runs per variant, in ABBA order (4)",
    )
    parser.add_argument(
        "--replay-steps", type=positive_int, help="steps of the replayed playbook (50)"
    )
    parser.add_argument("--replays", type=positive_int, help="timed replays per variant (20)")
    parser.add_argument(
        "--warmup", type=positive_int, help="untimed incidents per variant first (5)"
    )
    parser.add_argument(
        "--start-concurrency",
        type=positive_int,
        help="trigger calls in flight at once in throughput runs (100)",
    )
    parser.add_argument(
        "--only", action="append", choices=SECTIONS, help="run only these sections (repeatable)"
    )
    parser.add_argument(
        "--variant",
        choices=("interpreter", "baseline"),
        help="profiling aid: the throughput section with this variant alone (two untimed and "
        "twice --rounds timed bursts; no ratio), so that a profiler attached to the process "
        "sees one variant; run one process per variant",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="also: throughput of bench/diagnose.py's interpreter variants and of audit_off, "
        "each beside the baseline",
    )
    parser.add_argument(
        "--bytecode-cache",
        action="store_true",
        help="diagnostic: let this process cache bytecode (in the temp dir), so "
        "the workflow sandbox stops recompiling workflow modules per run",
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        help="structlog level of the worker in this process (default warning)",
    )
    parser.add_argument(
        "--count-instructions",
        action="store_true",
        help="run under valgrind's callgrind and also count the instructions this process "
        "executes per incident (throughput, audit) and per replay: figures the machine's other "
        "load does not move; about fifty times slower, so pass small counts",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON to this file")
    parser.add_argument(
        "--in-place",
        action="store_true",
        help="run the working tree as it is instead of a snapshot of it",
    )
    parser.add_argument(
        "--keep-tmp",
        action="store_true",
        help="keep the temp dir (server and sandbox logs, databases)",
    )
    args = parser.parse_args(argv)
    if args.count_instructions and "first_lever" in (args.only or SECTIONS):
        parser.error(
            "--count-instructions counts throughput, audit and replay, not latency: pass --only"
        )
    if args.variant and (args.only != ["throughput"] or args.diagnose):
        parser.error("--variant runs the throughput section alone: pass --only throughput")
    quick = args.quick
    counts = Counts(
        latency=args.latency_incidents or (10 if quick else 50),
        throughput=args.throughput_incidents or (40 if quick else 500),
        audit=args.audit_incidents or (30 if quick else 300),
        rounds=args.rounds or (1 if quick else 4),
        replay_steps=args.replay_steps or 50,
        replays=args.replays or (5 if quick else 20),
        warmup=args.warmup or (2 if quick else 5),
        concurrency=args.start_concurrency or 100,
    )
    return args, counts


async def bench(args: argparse.Namespace, counts: Counts, tmp: Path) -> dict[str, Any]:
    stop_on_sigterm()  # through the `finally` below, which stops the server and the sandbox
    sections = set(args.only or SECTIONS)
    measured = product_digest(ROOT)
    result: dict[str, Any] = {
        "machine": machine(),
        "counts": dataclasses.asdict(counts),
        "code": code_version(),
    }
    diagnostics: dict[str, Any] = {
        "workflow_module_compile_ms": compile_ms("workflows.crisis", "bench.baseline")
    }
    children: list[subprocess.Popen[bytes]] = []
    try:
        temporal_port, sandbox_port = free_port(), free_port()
        log(f"starting a Temporal dev server on {temporal_port} and the sandbox on {sandbox_port}")
        children.append(
            start_dev_server(
                db_file=tmp / "temporal.db", port=temporal_port, log_file=tmp / "temporal.log"
            )
        )
        children.append(start_sandbox(tmp, sandbox_port))
        settings = Settings(
            temporal_address=f"127.0.0.1:{temporal_port}",
            sandbox_port=sandbox_port,
            data_dir=tmp / "data",
            database_url=f"sqlite:///{tmp / 'audit' / 'default.db'}",
            task_queue="unused",
            log_level=args.log_level,
            strict_workflow_sandbox=False,  # measure what ships, whatever the environment says
            action_timeout_s=WAIT_S,  # a stand-down waits as long as any other stage may
        )
        warnings = WarningCounter()
        logging.getLogger("temporalio").addHandler(warnings)
        install_runtime(warnings)
        hook = StartHook()
        product_client = await connect(settings)
        client = Client(**{**product_client.config(), "interceptors": [hook]})
        # No kept-alive connection: the sandbox closes an idle one after 5 s, and a burst under
        # callgrind lasts longer, so the next request could meet it closing mid-send.
        no_keepalive = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(
            base_url=settings.sandbox_url, timeout=30, limits=no_keepalive
        ) as admin:
            env = Env(tmp, client, hook, settings, admin, Tracker(), warnings, children)
            if args.count_instructions:
                env.instructions = InstructionCounter()
            freeze_startup_heap()  # as the shipped worker process does once it is ready

            if "first_lever" in sections:
                async with interpreter_running(env) as interp, baseline_running(env) as base:
                    log("parity check and warm-up")
                    result["parity"] = await parity_and_warmup(env, interp, base, counts.warmup)
                    diagnostics["history_per_incident"] = await history_shape(env, interp, base)
                    diagnostics["workflow_input_bytes"] = dict(hook.input_bytes)
                    log(f"first_lever_ms: {counts.latency} incidents each, one after another")
                    await env.reset_sandbox()
                    result["first_lever_ms"] = await first_lever(env, interp, base, counts.latency)
            if "throughput" in sections:
                log(
                    f"throughput: {counts.throughput} incidents at once, "
                    f"{counts.rounds} run(s) each"
                )
                runs = await compare_runs(
                    env,
                    [args.variant] * 2 if args.variant else ["interpreter", "baseline"],
                    counts.throughput,
                    counts.rounds,
                    counts.concurrency,
                    "throughput",
                )
                result["throughput_incidents_per_s"] = compare(
                    runs,
                    "interpreter",
                    "baseline",
                    keys=("interpreter", "baseline"),
                    goal=">= 0.9",
                    threshold=0.9,
                )
            if "replay" in sections:
                log(f"replay: {counts.replay_steps}-step incidents, {counts.replays} replays each")
                result["replay_ms_50_steps"] = await replay(
                    env, counts.replay_steps, counts.replays
                )
            if "audit" in sections:
                log(f"audit on/off: {counts.audit} incidents at once, {counts.rounds} run(s) each")
                runs = await compare_runs(
                    env,
                    ["interpreter", "audit_off"],
                    counts.audit,
                    counts.rounds,
                    counts.concurrency,
                    "audit",
                )
                result["audit_on_off"] = compare(
                    runs,
                    "interpreter",
                    "audit_off",
                    keys=("on", "off"),
                    goal=">= 0.95",
                    threshold=0.95,
                )
            if args.diagnose:
                # audit_off beside audit_dropped splits the audit trail's cost in two: its local
                # activities (with nothing stored) and the store.
                names = ["interpreter", "audit_off", "audit_dropped", "audit_at_close", "baseline"]
                log(
                    f"diagnose: {counts.audit} incidents at once per variant, "
                    f"{counts.rounds} round(s)"
                )
                runs = await compare_runs(
                    env, names, counts.audit, counts.rounds, counts.concurrency, "diagnose"
                )
                rates = {name: mean_rate(runs, name) for name in names}
                diagnostics["throughput_variants"] = {
                    "incidents_per_s": rates,
                    "instructions_per_incident": {
                        name: _mean_instructions(runs, name) for name in names
                    },
                    "ratio_to_baseline": {k: ratio(v, rates["baseline"]) for k, v in rates.items()},
                    "runs": runs,
                }
    finally:
        stop_children(children)
    result["diagnostics"] = diagnostics
    result["code"]["working_tree_changed_since_snapshot"] = changed_since(measured)
    result["code"]["trustworthy"] = (
        bool(os.environ.get("BENCH_SNAPSHOT"))
        or not result["code"]["working_tree_changed_since_snapshot"]
    )
    return result


def human(result: dict[str, Any]) -> str:
    lines = [
        f"machine: {result['machine']['cpu_count']} CPUs, Python "
        f"{result['machine']['python']}, temporalio {result['machine']['temporalio']}"
    ]
    code = result.get("code", {})
    where = f"snapshot of {code['snapshot_of']}" if code.get("snapshot_of") else "in place"
    lines.append(f"code measured: {code.get('digest')} ({code.get('files')} files, {where})")
    if not code.get("trustworthy", True):
        lines.append(
            "WARNING: product files changed during this in-place run: re-run it: "
            + ", ".join(code["working_tree_changed_since_snapshot"][:10])
        )
    parity = result.get("parity")
    if parity is not None:
        lines.append(
            f"parity: same requests per incident: {parity['same_requests']} "
            f"({parity['requests_per_incident']} requests)"
        )
    for key, unit in (
        ("first_lever_ms", "ms"),
        ("throughput_incidents_per_s", "/s"),
        ("replay_ms_50_steps", "ms"),
        ("audit_on_off", "/s"),
    ):
        figure = result.get(key)
        if not figure:
            continue
        a, b = ("on", "off") if key == "audit_on_off" else ("interpreter", "baseline")
        va, vb = figure[a], figure[b]
        if va is None or vb is None:  # --variant: one variant's runs, nothing to compare
            name, value = (a, va) if va is not None else (b, vb)
            lines.append(f"{key}: {name} {value:.2f}{unit} (one variant only: no ratio)")
            continue
        if isinstance(va, dict):
            text = (
                f"{a} {va['median']:.1f}{unit} (p90 {va['p90']:.1f}) vs "
                f"{b} {vb['median']:.1f}{unit} (p90 {vb['p90']:.1f})"
            )
        else:
            text = f"{a} {va:.2f}{unit} vs {b} {vb:.2f}{unit}"
        verdict = "met" if figure["met"] else "MISSED"
        spread = figure.get("ratio_range")
        if spread:
            text += f"; pairs of runs {spread[0]}..{spread[1]}"
        interval = figure.get("ratio_ci95")
        within = f", 95% interval {interval[0]}..{interval[1]}" if interval else ""
        lines.append(
            f"{key}: {text}; ratio {figure['ratio']}{within} (goal {figure['goal']}: {verdict})"
        )
        work = figure.get("by_instructions")
        if work:
            counts = work.get("per_incident") or work.get("per_replay")
            lines.append(
                f"  by instructions: {a} {counts[a]:,} vs {b} {counts[b]:,}; "
                f"ratio {work['ratio']} ({'met' if work['met'] else 'MISSED'})"
            )
    variants = result.get("diagnostics", {}).get("throughput_variants")
    if variants:
        lines.append(f"diagnose (ratio to baseline): {variants['ratio_to_baseline']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    args, counts = parse_args(argv)
    if args.count_instructions and not os.environ.get(CALLGRIND_OUT_ENV):
        # Before anything starts: this script again, as a child under callgrind.
        try:
            script = str(Path(__file__).resolve())
            sys.exit(run_under_callgrind([script, *sys.argv[1:]], keep=args.keep_tmp))
        except InstructionCountError as error:
            log(f"error: {error}")
            sys.exit(2)
    # stdout carries the JSON and nothing else: keep a copy of it, and send everything else
    # that would be written to fd 1 (libraries, the SDK core) to stderr.
    json_out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    configure_logging(level=args.log_level)
    tmp = Path(os.environ.get("BENCH_TMP") or tempfile.mkdtemp(prefix="crisis-bench-"))
    if args.bytecode_cache:
        sys.dont_write_bytecode = False
        sys.pycache_prefix = str(tmp / "pycache")
    status = 0
    try:
        result = asyncio.run(bench(args, counts, tmp))
        text = json.dumps(result, indent=2)
        print(text, file=json_out, flush=True)
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(text + "\n")
        log(human(result))
    except (KeyboardInterrupt, asyncio.CancelledError):
        log("error: benchmark stopped before it finished (its server and sandbox are stopped)")
        status = STOPPED_STATUS
    except BaseException as error:  # report, then leave with a status
        import traceback

        traceback.print_exc()
        log(f"error: benchmark failed: {type(error).__name__}: {error}")
        status = 1
    finally:
        if args.keep_tmp:
            log(f"temp dir kept: {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
        sys.stdout.flush()
        sys.stderr.flush()
        json_out.flush()
    # The SDK can crash the interpreter at exit (sdk-python#300): leave without teardown.
    os._exit(status)


if __name__ == "__main__":
    main()

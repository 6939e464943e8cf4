"""What the auditors' replay check adds to a bare Temporal replay, by history size.

Runs incidents with about 100, 1,000 and 10,000 history events (notes added by update), then
times, on each history: the bare `Replayer` (the baseline) and `replay_incident` (replay while
capturing audit events, decode what the history recorded, compare with the audit table).
Prints JSON. Usage: python bench/replay_compare.py [--sizes 100,1000,10000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from bench.script import STOPPED_STATUS, positive_int, positive_ints, stop_on_sigterm
from core.logging import configure_logging
from core.settings import Settings
from engine.devserver import free_port, start_dev_server
from engine.incidents import Incidents
from engine.temporal import SANDBOX, WORKFLOWS, connect, running_worker
from engine.verification import export_history, replay_incident
from sandbox.app import create_app
from sandbox.server import serving_in_thread
from store.audit_store import AuditStore
from workflows.crisis import CrisisWorkflow
from workflows.incident import NoteRequest

# The frozen playbook the engine's tests run on: library tuning never changes the figures.
os.environ["CRISIS_PLAYBOOKS_DIR"] = str(
    Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "playbooks"
)

EVENTS_PER_NOTE = 6  # an update (accepted, completed) and its workflow task and audit write


async def build(incidents: Incidents, target: int) -> str:
    triggered = await incidents.trigger(
        "violent-disorder", {}, actor="bench", eager=True, history_limit=10**9
    )
    for number in range(max(0, (target - 50) // EVENTS_PER_NOTE)):
        await incidents.act(
            triggered.incident_id,
            CrisisWorkflow.add_note,
            NoteRequest(actor="bench", text=f"n{number}"),
        )
    await incidents.stand_down(triggered.incident_id, actor="bench", reason="done")
    return triggered.incident_id


async def main(sizes: list[int], repeats: int) -> dict:
    stop_on_sigterm()  # through the `finally` below, which stops the server
    results = []
    with tempfile.TemporaryDirectory() as tmp, serving_in_thread(create_app()) as sandbox_url:
        port = free_port()
        server = start_dev_server(db_file=Path(tmp) / "t.db", port=port)
        try:
            store = AuditStore(f"sqlite:///{Path(tmp) / 'audit.db'}")
            settings = Settings(
                temporal_address=f"127.0.0.1:{port}",
                sandbox_port=int(sandbox_url.rsplit(":", 1)[1]),
                database_url=store.url,
                data_dir=Path(tmp),
                task_queue="replay-bench",
                log_level="warning",
            )
            client = await connect(settings)
            replayer = Replayer(
                workflows=WORKFLOWS, workflow_runner=SANDBOX, data_converter=pydantic_data_converter
            )
            async with running_worker(client, settings=settings, store=store):
                incidents = Incidents(client, settings)
                for size in sizes:
                    incident_id = await build(incidents, size)
                    history = await export_history(client, incident_id)
                    events = store.events(incident_id)
                    bare, ours, ok = [], [], True
                    for _ in range(repeats):
                        started = time.perf_counter()
                        for run in history.runs:
                            await replayer.replay_workflow(run)
                        bare.append((time.perf_counter() - started) * 1000)
                        started = time.perf_counter()
                        report = await replay_incident(history, events)
                        ours.append((time.perf_counter() - started) * 1000)
                        ok = ok and report.ok
                    results.append(
                        {
                            "history_events": sum(len(r.events) for r in history.runs),
                            "audit_events": len(events),
                            "bare_replayer_ms": round(statistics.median(bare), 1),
                            "replay_and_compare_ms": round(statistics.median(ours), 1),
                            "ratio": round(statistics.median(ours) / statistics.median(bare), 2),
                            "verified": ok,
                        }
                    )
                    print(json.dumps(results[-1]), file=sys.stderr)
        finally:
            server.terminate()
            server.wait()
    return {"baseline": "bare Temporal Replayer on the same history", "results": results}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes", type=positive_ints, default="100,1000,10000", help="history events, about"
    )
    parser.add_argument("--repeats", type=positive_int, default=3, help="timed replays per size")
    arguments = parser.parse_args()
    # stdout carries the JSON alone: the worker's logs go to stderr, and only its warnings.
    configure_logging(level="warning")
    status = 0
    try:
        print(json.dumps(asyncio.run(main(arguments.sizes, arguments.repeats)), indent=2))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("replay_compare: error: stopped before it finished", file=sys.stderr)
        status = STOPPED_STATUS
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)  # the SDK can crash at interpreter exit (sdk-python#300)

"""The benchmark scripts in `bench/` run end to end and print their figures as JSON.

Smoke runs: small counts, so the figures mean nothing and none is checked against a goal. What
they guard is that the benchmarks anyone can run still run: the interpreter and the baseline
send the same requests, every incident completes, every figure has a ratio, stdout carries the
JSON alone, and bad arguments are one error line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("first_lever_ms", "throughput_incidents_per_s", "replay_ms_50_steps", "audit_on_off")
DIAGNOSED = ("interpreter", "audit_off", "audit_dropped", "audit_at_close", "baseline")


def script_env(tmp_path: Path) -> dict[str, str]:
    """The scripts set up their own servers and settings: nothing of the suite's may leak in.
    Their temp dirs, and so their servers' files, go under `tmp_path`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRISIS_", "BENCH_"))}
    return env | {"TMPDIR": str(tmp_path)}


def run_script(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run a script; past its time, stop it as a user would (SIGTERM), so that it stops the
    servers it started in sessions of their own, which a kill would leave running."""
    command = [sys.executable, *args]
    with subprocess.Popen(
        command,
        cwd=ROOT,
        env=script_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=280)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                process.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            raise
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def json_of(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)


# Counts below `--quick`'s: the suite checks that every figure is produced, not what it is.
SMOKE_COUNTS = (
    "--latency-incidents=4",
    "--warmup=1",
    "--throughput-incidents=12",
    "--audit-incidents=10",
    "--replay-steps=10",
    "--replays=2",
)


def test_run_bench_quick_reports_every_figure_beside_the_baseline(tmp_path: Path) -> None:
    result = json_of(
        run_script(
            tmp_path, "bench/run_bench.py", "--quick", *SMOKE_COUNTS, "--diagnose", "--in-place"
        )
    )

    assert result["parity"]["same_requests"] is True, result["parity"]
    for figure in FIGURES:
        ratio = result[figure]["ratio"]
        assert isinstance(ratio, float) and ratio > 0, (figure, result[figure])
        assert "goal" in result[figure] and "met" in result[figure]
    for figure in ("throughput_incidents_per_s", "audit_on_off"):
        assert result[figure]["all_completed"] is True, result[figure]
    variants = result["diagnostics"]["throughput_variants"]
    for name in DIAGNOSED:
        assert variants["ratio_to_baseline"][name] > 0, variants["ratio_to_baseline"]
    for run in variants["runs"]:
        assert run["completed"] == run["incidents"], (run["variant"], run["errors"])


def test_run_bench_runs_one_variant_alone_for_a_profiler(tmp_path: Path) -> None:
    """`--variant`: the throughput bursts of that variant only, and no ratio to claim."""
    result = json_of(
        run_script(
            tmp_path,
            "bench/run_bench.py",
            "--quick",
            *SMOKE_COUNTS,
            "--only=throughput",
            "--variant=interpreter",
            "--in-place",
        )
    )

    figure = result["throughput_incidents_per_s"]
    assert ["interpreter", "interpreter"] == [run["variant"] for run in figure["runs"]]
    assert all(run["completed"] == run["incidents"] for run in figure["runs"]), figure["runs"]
    assert figure["interpreter"] > 0 and figure["baseline"] is None
    assert figure["ratio"] is None and figure["met"] is False


def test_run_bench_counts_the_instructions_of_each_replay(tmp_path: Path) -> None:
    """`--count-instructions`: under callgrind, a replay of each variant is counted; the
    interpreter, which also builds and hashes its audit trail, does more than the baseline."""
    result = json_of(
        run_script(
            tmp_path,
            "bench/run_bench.py",
            "--only=replay",
            "--replay-steps=3",
            "--replays=1",
            "--count-instructions",
            "--in-place",
        )
    )

    work = result["replay_ms_50_steps"]["by_instructions"]
    per_replay = work["per_replay"]
    assert per_replay["interpreter"] > per_replay["baseline"] > 1_000_000, work
    assert work["ratio"] == round(per_replay["interpreter"] / per_replay["baseline"], 4)
    assert not list(tmp_path.glob("crisis-bench-callgrind-*")), "its dumps are left behind"


def test_api_latency_reports_each_figure_beside_its_in_process_baseline(tmp_path: Path) -> None:
    result = json_of(
        run_script(
            tmp_path,
            "bench/api_latency.py",
            "--incidents=8",
            "--requests=3",
            "--concurrency=2",
            "--json",
        )
    )

    assert result["open"]["incidents"] == 8
    assert set(result["figures"]) == {
        "board_limit_50",
        "board_limit_200",
        "approve_first",
        "approve_second_step_runs",
    }
    for name, figure in result["figures"].items():
        assert figure["ratio"]["median"] > 0, (name, figure)


def test_replay_compare_verifies_the_history_it_times(tmp_path: Path) -> None:
    result = json_of(run_script(tmp_path, "bench/replay_compare.py", "--sizes=100", "--repeats=1"))

    [measured] = result["results"]
    assert measured["verified"] is True, measured
    assert measured["history_events"] > 50 and measured["audit_events"] > 0
    assert measured["bare_replayer_ms"] > 0 and measured["ratio"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("bench/replay_compare.py", "--sizes=100,x"), "argument --sizes: expected positive"),
        (("bench/replay_compare.py", "--repeats=0"), "argument --repeats: expected a positive"),
        (("bench/api_latency.py", "--incidents=2"), "need --incidents >= 4"),
        (("bench/run_bench.py", "--rounds=0", "--in-place"), "argument --rounds: expected"),
        (
            ("bench/run_bench.py", "--variant=baseline", "--in-place"),
            "--variant runs the throughput section alone",
        ),
        (
            ("bench/run_bench.py", "--count-instructions", "--in-place"),
            "--count-instructions counts throughput, audit and replay",
        ),
    ],
)
def test_bad_arguments_are_one_error_line(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    done = run_script(tmp_path, *args)

    assert done.returncode == 2
    assert done.stdout == ""
    errors = [line for line in done.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and message in errors[0], done.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("bench/run_bench.py", "--quick", "--in-place"),
            "error: benchmark stopped before it finished",
        ),
        (
            ("bench/api_latency.py", "--incidents=40", "--requests=50"),
            "api_latency: error: stopped before it finished",
        ),
        (
            ("bench/replay_compare.py", "--sizes=100000", "--repeats=1"),
            "replay_compare: error: stopped before it finished",
        ),
    ],
)
def test_sigterm_stops_a_script_and_the_servers_it_started(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    process = subprocess.Popen(
        [sys.executable, *args],
        cwd=ROOT,
        env=script_env(tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not children_using(tmp_path):
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.2)
    time.sleep(1)

    process.send_signal(signal.SIGTERM)
    stdout, stderr = process.communicate(timeout=60)

    assert process.returncode == 130, stderr[-2000:]
    assert stdout == ""
    assert message in stderr and "Traceback" not in stderr, stderr[-2000:]
    deadline = time.monotonic() + 10
    while children_using(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert children_using(tmp_path) == []


def children_using(directory: Path) -> list[str]:
    """Command lines of running processes, other than the bench, that name `directory` (the
    bench's temp dir) or hold a file in it open: its server (database) and sandbox (log)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            files = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if "bench/" in command:  # the script itself
            continue
        if str(directory) in command or any(f.startswith(str(directory)) for f in files):
            found.append(command)
    return found

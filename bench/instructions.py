"""Instructions executed by the bench process during a stretch of a run (`--count-instructions`).

A rate or a time measured on a shared machine moves with whatever else the machine runs; the
number of instructions the process executes for the same work does not. Under
`--count-instructions` the bench process runs under valgrind's callgrind with instrumentation off
(the start-up and untimed stretches run at valgrind's plain speed), and `InstructionCounter`
switches it on around each timed stretch, zeroes the counters, and reads them back from a dump.
Every thread of the process is counted: the event loop, the workflow activations, the SDK core's
threads and the store's SQLite. The Temporal server and the sandbox are child processes, which
valgrind does not follow.

Instrumented code runs about fifty times slower, so keep the counts small: a stretch that makes a
workflow task or a local activity wait longer than its timeout would measure retries instead.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

OUT_ENV = "BENCH_CALLGRIND_OUT"  # set once the process runs under callgrind: its dump file


class InstructionCountError(RuntimeError):
    """valgrind is missing, or callgrind did not answer or left no readable dump."""


def run_under_callgrind(argv: list[str], *, keep: bool = False) -> int:
    """Run this script again as a child under callgrind and answer its exit status.

    A child, not an exec: callgrind writes a last dump when the process exits, and the directory
    it writes to is removed only after that (`keep`: it is not, and its path goes to stderr; the
    dumps, one per counted stretch, open in `callgrind_annotate` or KCachegrind).
    """
    valgrind = shutil.which("valgrind")
    if valgrind is None or shutil.which("callgrind_control") is None:
        raise InstructionCountError("--count-instructions needs valgrind (Debian: valgrind)")
    directory = Path(tempfile.mkdtemp(prefix="crisis-bench-callgrind-"))
    command = [
        valgrind,
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={directory / 'callgrind.out'}",
        "--quiet",
        sys.executable,
        *argv,
    ]
    # A fixed hash seed: the same sets and dicts in the same order, run after run.
    env = {"PYTHONHASHSEED": "0", **os.environ, OUT_ENV: str(directory / "callgrind.out")}
    child = subprocess.Popen(command, env=env)

    # Ctrl-C and SIGTERM go to the child, which stops its server and sandbox and leaves.
    def forward(number: int, _frame: object) -> None:
        child.send_signal(number)

    previous = {n: signal.signal(n, forward) for n in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        if keep:
            print(f"callgrind dumps kept: {directory}", file=sys.stderr, flush=True)
        else:
            shutil.rmtree(directory, ignore_errors=True)


class InstructionCounter:
    """Counts the instructions of stretches of this process (which must run under callgrind)."""

    def __init__(self) -> None:
        out = os.environ.get(OUT_ENV)
        if not out:
            raise InstructionCountError("this process does not run under callgrind")
        self._out = Path(out)
        self._dumps = 0

    def start(self) -> None:
        self._control("--instr=on")
        self._control("--zero")

    def stop(self) -> int:
        """Instructions executed since `start`; instrumentation is off again afterwards."""
        self._dumps += 1
        self._control(f"--dump=stretch-{self._dumps}")
        self._control("--instr=off")
        dump = Path(f"{self._out}.{self._dumps}")
        try:
            for line in dump.read_text().splitlines():
                if line.startswith("totals:"):
                    return int(line.split()[1])
        except (OSError, ValueError, IndexError) as error:
            raise InstructionCountError(f"{dump}: unreadable: {error}") from None
        raise InstructionCountError(f"{dump}: no totals line")

    @staticmethod
    def _control(command: str) -> None:
        # callgrind_control is a script run natively (valgrind does not follow children); it
        # waits until the instrumented process has acted on the command.
        done = subprocess.run(
            ["callgrind_control", command, str(os.getpid())],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0 or "OK" not in done.stdout:
            raise InstructionCountError(
                f"callgrind_control {command}: {(done.stdout + done.stderr).strip()[-200:]}"
            )

"""`bench/run_bench.py --quick --diagnose` runs end to end and reports every figure.

A smoke run: small counts, so its figures mean nothing and none is checked against a goal. What
it guards is that the benchmark anyone can run still runs: both variants send the same requests,
every incident of every variant completes, and each figure and diagnostic variant has a ratio.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("first_lever_ms", "throughput_incidents_per_s", "replay_ms_50_steps", "audit_on_off")
DIAGNOSED = ("interpreter", "audit_off", "audit_dropped", "audit_at_close", "baseline")


def test_quick_run_reports_every_figure_beside_the_baseline(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CRISIS_", "BENCH_"))}
    env["BENCH_TMP"] = str(tmp_path)
    done = subprocess.run(
        [sys.executable, "bench/run_bench.py", "--quick", "--diagnose", "--in-place"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)

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

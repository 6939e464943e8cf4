"""What the benchmark scripts share: their argument types, and stopping cleanly on SIGTERM.

A bad count is one argparse error line (exit 2), never a run with a surprising default or a
traceback. The scripts start a Temporal dev server (and more) in sessions of their own, so a
terminal's Ctrl-C never reaches those children; they are stopped by the scripts' `finally`
blocks, which SIGTERM must reach too.
"""

from __future__ import annotations

import argparse
import asyncio
import signal

STOPPED_STATUS = 130  # as for Ctrl-C


def positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, not {text!r}")
    return int(text)


def positive_ints(text: str) -> list[int]:
    """Positive integers joined by commas, e.g. `100,1000,10000`."""
    try:
        return [positive_int(part) for part in text.split(",")]
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected positive integers joined by commas, not {text!r}"
        ) from None


def stop_on_sigterm() -> None:
    """From inside the script's main coroutine: SIGTERM cancels it, as Ctrl-C does."""
    this_run = asyncio.current_task()
    assert this_run is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, this_run.cancel)

"""Command-line argument types shared by the benchmark scripts: a bad count is one argparse
error line (exit 2), never a run with a surprising default or a traceback."""

from __future__ import annotations

import argparse


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

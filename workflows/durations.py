"""Durations as playbooks write them: `90s`, `15m`, `6h`, `2d`, or combined `1h30m`."""

from __future__ import annotations

import re
from datetime import timedelta
from functools import lru_cache

_PART = re.compile(r"(\d+)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
# Far beyond any real measure or wait, far short of the calendar's end: a deadline past the year
# 9999 would fail the workflow task that computes it and wedge the incident.
LONGEST = timedelta(days=36_500)


def format_duration(seconds: float) -> str:
    """`0s`, `5m`, `2h30m`, `1d6h`: a length as playbooks write durations (to the second)."""
    whole = round(seconds)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{v}{u}" for v, u in ((days, "d"), (hours, "h"), (minutes, "m"), (secs, "s")) if v]
    return "".join(parts) or "0s"


@lru_cache(maxsize=1024)  # a playbook has a handful of distinct durations, read at every step
def parse_duration(text: str) -> timedelta:
    """Parse `15m`, `6h`, `1h30m` into a timedelta; raise ValueError on anything else."""
    cleaned = text.strip().replace(" ", "")
    if not cleaned or _PART.sub("", cleaned):
        raise ValueError(f"invalid duration {text!r} (use e.g. 30s, 15m, 6h, 2d)")
    seconds = sum(int(n) * _UNITS[unit] for n, unit in _PART.findall(cleaned))
    if seconds > LONGEST.total_seconds():
        raise ValueError(f"duration {text!r} is longer than {LONGEST.days}d")
    return timedelta(seconds=seconds)


def parse_renewal(text: str) -> timedelta:
    """Parse a renewal's duration, which must be longer than zero: a measure renewed "until now"
    would lapse at once."""
    duration = parse_duration(text)
    if duration <= timedelta(0):
        raise ValueError(f"duration {text!r} must be longer than zero (e.g. 30m, 24h)")
    return duration

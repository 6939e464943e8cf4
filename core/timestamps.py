"""Timestamps are UTC everywhere; what comes back naive (SQLite columns, offset-less ISO text) was
written in UTC, so it is read as UTC."""

from __future__ import annotations

from datetime import UTC, datetime


def as_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_utc(text: str) -> datetime:
    """An ISO 8601 timestamp; without an offset it is taken as UTC."""
    return as_utc(datetime.fromisoformat(text))

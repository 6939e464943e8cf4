"""How long a lever call has been trying, which the incident adds to when it made the call to
stamp the outcome (`activities.platform.tried_s`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from activities.platform import RESCHEDULED_AFTER_S, tried_s

MADE = datetime(2026, 12, 1, 13, 55, 58, tzinfo=UTC)


def test_a_call_is_timed_from_its_scheduling_by_the_worker() -> None:
    """Scheduled as the workflow made it: the worker's own clock times it (however far it is
    from the server's, which dated `began`)."""
    scheduled = MADE + timedelta(milliseconds=3)
    assert 2.0 == tried_s(scheduled, MADE.isoformat(), scheduled + timedelta(seconds=2))
    assert 2.0 == tried_s(scheduled, None, scheduled + timedelta(seconds=2))  # older workflows


def test_a_call_scheduled_anew_after_a_restart_is_timed_from_when_the_workflow_made_it() -> None:
    """The worker restarted while the call retried: scheduled again 67 s later and answered 15 s
    after that, it has been trying for 82 s (timed from its new scheduling, its outcome was
    stamped 67 s before the platform answered)."""
    scheduled = MADE + timedelta(seconds=67)
    assert 82.0 == tried_s(scheduled, MADE.isoformat(), scheduled + timedelta(seconds=15))
    within = MADE + timedelta(seconds=RESCHEDULED_AFTER_S)
    assert 1.0 == tried_s(within, MADE.isoformat(), within + timedelta(seconds=1))


def test_a_clock_behind_never_times_a_call_below_zero() -> None:
    assert 0.0 == tried_s(MADE, MADE.isoformat(), MADE - timedelta(seconds=1))

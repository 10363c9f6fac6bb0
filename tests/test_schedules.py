"""Schedules as declared: validation that names what is wrong, tick times (cronsim) including
DST changes in Europe/Berlin, the catch-up window and the deterministic message ids."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from eventworker.schedules import Schedule, declared_in, schedule


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def test_every_second_with_the_seconds_field_first() -> None:
    every = schedule("* * * * * *", "tick.second")
    start = datetime(2026, 1, 1, 10, 0, 0, 500_000, tzinfo=UTC)
    assert every.next_times(3, start) == [_utc(2026, 1, 1, 10, 0, s) for s in (1, 2, 3)]
    quarter = schedule("*/15 * * * * *", "tick.quarter")
    assert quarter.next_times(2, _utc(2026, 1, 1, 10, 0, 0)) == [
        _utc(2026, 1, 1, 10, 0, 15),
        _utc(2026, 1, 1, 10, 0, 30),
    ]


def test_a_daily_time_in_berlin_follows_the_offset_and_the_dst_changes() -> None:
    daily = schedule("30 2 * * *", "books.close", timezone="Europe/Berlin")
    # Spring forward (29 March 2026, 02:00 -> 03:00): 02:30 does not exist; Debian cron runs
    # the job right after the change, 03:00 CEST = 01:00 UTC.
    assert daily.next_times(3, _utc(2026, 3, 28)) == [
        _utc(2026, 3, 28, 1, 30),  # 02:30 CET
        _utc(2026, 3, 29, 1, 0),  # 03:00 CEST, right after the change
        _utc(2026, 3, 30, 0, 30),  # 02:30 CEST
    ]
    # Fall back (25 October 2026, 03:00 -> 02:00): 02:30 happens twice; it runs once, at the
    # first (CEST) occurrence.
    assert daily.next_times(3, _utc(2026, 10, 24)) == [
        _utc(2026, 10, 24, 0, 30),
        _utc(2026, 10, 25, 0, 30),
        _utc(2026, 10, 26, 1, 30),
    ]


def test_an_hourly_schedule_runs_at_every_real_hour_across_the_change() -> None:
    hourly = schedule("0 * * * *", "reports.hourly", timezone="Europe/Berlin")
    # 25 October 2026: 02:00 CEST (00:00 UTC), 02:00 CET (01:00 UTC), 03:00 CET (02:00 UTC).
    assert hourly.next_times(3, _utc(2026, 10, 24, 23, 30)) == [
        _utc(2026, 10, 25, 0, 0),
        _utc(2026, 10, 25, 1, 0),
        _utc(2026, 10, 25, 2, 0),
    ]


def test_ticks_between_keeps_the_latest_and_counts_them_all() -> None:
    every = schedule("* * * * * *", "tick.second")
    start, end = _utc(2026, 1, 1, 10, 0, 0), _utc(2026, 1, 1, 10, 0, 10)
    ticks, count = every.ticks_between(start, end, 3)
    assert count == 10  # 10:00:01 .. 10:00:10: the start is excluded, the end included
    assert ticks == [_utc(2026, 1, 1, 10, 0, s) for s in (8, 9, 10)]
    assert every.ticks_between(end, end, 3) == ([], 0)


def test_the_message_id_is_the_name_and_the_utc_tick() -> None:
    berlin = schedule("0 9 * * *", "mail.digest", name="digest", timezone="Europe/Berlin")
    (tick,) = berlin.next_times(1, _utc(2026, 7, 1))
    assert berlin.message_id(tick) == "digest@2026-07-01T07:00:00Z"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"cron": "61 * * * *"}, "schedule 'r.k': bad cron expression '61 * * * *': Bad minute"),
        ({"cron": "* * * *"}, "bad cron expression '* * * *': Wrong number of fields"),
        ({"timezone": "Europe/Berln"}, "unknown timezone 'Europe/Berln'"),
        ({"routing_key": "r.*"}, "the routing key 'r.*'"),
        ({"catch_up": "some"}, "catch_up 'some': expected none, last or all"),
        ({"data": {1j}}, "schedule 'r.k': "),
        ({"name": ""}, "a name is 1 to 200 printable characters"),
    ],
)
def test_a_bad_schedule_is_refused_naming_it(changes: dict[str, object], expected: str) -> None:
    fields: dict[str, object] = {"name": "r.k", "cron": "* * * * *", "routing_key": "r.k"}
    fields.update(changes)
    with pytest.raises(ValueError) as refused:
        Schedule(**fields)  # type: ignore[arg-type]
    assert expected in str(refused.value)


def test_a_module_declares_by_assignment_and_by_decoration() -> None:
    from docs.examples import schedules as module

    names = [s.name for s in declared_in(module)]
    assert names == ["reports.hourly", "probe"]
    assert module.probe.name == "probe"  # the @handler under @schedule, unchanged


@pytest.mark.parametrize(
    ("cron", "timezone", "day"),
    [
        ("30 2 * * *", "Europe/Berlin", _utc(2026, 3, 27)),
        ("0 * * * *", "Europe/Berlin", _utc(2026, 10, 23)),
        ("15 2,3 * * *", "America/New_York", _utc(2026, 3, 6)),
        # Lord Howe Island moves its clocks by half an hour: cronsim backwards would list one
        # tick more here than forwards; the catch-up window lists the forward ticks.
        ("0 */2 * * *", "Australia/Lord_Howe", _utc(2026, 4, 3)),
    ],
)
@pytest.mark.parametrize("limit", [1, 3, 1000])
def test_the_ticks_of_a_window_are_those_cronsim_lists_forwards(
    cron: str, timezone: str, day: datetime, limit: int
) -> None:
    item = schedule(cron, "r.k", timezone=timezone)
    end = day + timedelta(days=4)
    forwards = list(itertools.takewhile(lambda t: t <= end, item.ticks_after(day)))
    ticks, count = item.ticks_between(day, end, limit)
    assert ticks == forwards[-limit:]
    if limit >= len(forwards):
        assert count == len(forwards)

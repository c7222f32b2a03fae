"""Cron and fixed-interval schedules give the ticks a person computes by hand.

Pure functions, no server: :class:`~streamflow.jobs.cron.CronSchedule` and
:class:`~streamflow.jobs.cron.Every` against hand-computed datetimes (steps, names, Feb 29,
the Vixie day-of-month / day-of-week rule, DST in Europe/Berlin and America/New_York),
their error messages, and a minute-by-minute brute force over UTC instants (hypothesis,
derandomized) as the reference for ``next_after`` and ``last_at_or_before``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from itertools import islice
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streamflow.errors import ConfigError
from streamflow.jobs.cron import CronSchedule, Every

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def utc(*fields: int) -> datetime:
    """A UTC datetime from year, month, day[, hour, minute, second]."""
    return datetime(*fields, tzinfo=UTC)  # type: ignore[misc]


def nexts(expr: str, start: datetime, n: int, tz: ZoneInfo | None = None) -> list[datetime]:
    """The ``n`` ticks of ``expr`` after ``start``, as UTC datetimes."""
    schedule, out, t = CronSchedule.parse(expr, tz), [], start
    for _ in range(n):
        t = schedule.next_after(t)
        out.append(t.astimezone(UTC))
    return out


def test_step_is_strictly_after_and_drops_seconds() -> None:
    """*/15 goes to the next quarter hour, and a time exactly on a tick moves on to the next one."""
    every15 = CronSchedule.parse("*/15 * * * *")
    assert every15.next_after(utc(2024, 1, 1, 10, 7, 30)) == utc(2024, 1, 1, 10, 15)
    assert every15.next_after(utc(2024, 1, 1, 10, 15)) == utc(2024, 1, 1, 10, 30)
    assert every15.next_after(utc(2024, 12, 31, 23, 59, 59)) == utc(2025, 1, 1, 0, 0)


def test_ranges_with_steps_and_start_with_step() -> None:
    """'5-20/5' is minutes 5,10,15,20 and '10/20' is 10,30,50, each then rolling over to the next hour."""
    assert nexts("5-20/5 * * * *", utc(2024, 1, 1, 0, 0), 5) == [
        utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 0, 10), utc(2024, 1, 1, 0, 15),
        utc(2024, 1, 1, 0, 20), utc(2024, 1, 1, 1, 5),
    ]
    assert nexts("10/20 * * * *", utc(2024, 1, 1, 0, 0), 4) == [
        utc(2024, 1, 1, 0, 10), utc(2024, 1, 1, 0, 30), utc(2024, 1, 1, 0, 50), utc(2024, 1, 1, 1, 10),
    ]


def test_lists_hours_and_month_rollover() -> None:
    """'0 8,17 * * *' on Jan 31 at 18:00 fires next at Feb 1 08:00 and then 17:00."""
    assert nexts("0 8,17 * * *", utc(2024, 1, 31, 18), 2) == [utc(2024, 2, 1, 8), utc(2024, 2, 1, 17)]


def test_month_and_weekday_names_any_case() -> None:
    """'30 9 * jan-Mar MON-fri' after Friday Mar 29 2024 10:00 skips to Wed Jan 1 2025, then Thu Jan 2."""
    assert nexts("30 9 * jan-Mar MON-fri", utc(2024, 3, 29, 10, 0), 2) == [
        utc(2025, 1, 1, 9, 30), utc(2025, 1, 2, 9, 30),
    ]
    assert CronSchedule.parse("0 0 * JAN,dec SAT") == CronSchedule.parse("0 0 * 1,12 6")


def test_weekday_seven_is_sunday() -> None:
    """Day-of-week 7 and 0 both mean Sunday: '0 0 * * 7' after Mon Jan 1 2024 fires on Sun Jan 7."""
    assert CronSchedule.parse("0 0 * * 7") == CronSchedule.parse("0 0 * * 0") == CronSchedule.parse("@weekly")
    assert nexts("0 0 * * 7", utc(2024, 1, 1), 1) == [utc(2024, 1, 7)]
    assert nexts("0 0 * * 5-7", utc(2024, 1, 1), 3) == [utc(2024, 1, 5), utc(2024, 1, 6), utc(2024, 1, 7)]


def test_weekday_start_with_step_ends_on_saturday() -> None:
    """Day-of-week '1/2' is Monday, Wednesday, Friday: the 7 that is Sunday again is not reached by a step."""
    assert CronSchedule.parse("0 0 * * 1/2") == CronSchedule.parse("0 0 * * MON,WED,FRI")
    assert CronSchedule.parse("0 0 * * */2").weekdays == (0, 2, 4, 6)  # the star flag differs from 0,2,4,6


def test_feb_29_only_in_leap_years() -> None:
    """'0 0 29 2 *' after Mar 1 2024 next fires on Feb 29 2028, and 2100 (no leap year) is skipped."""
    assert nexts("0 0 29 2 *", utc(2024, 3, 1), 1) == [utc(2028, 2, 29)]
    assert nexts("0 0 29 2 *", utc(2096, 3, 1), 1) == [utc(2104, 2, 29)]


def test_day_of_month_or_day_of_week_when_both_restricted() -> None:
    """'0 12 13 * FRI' fires on every Friday and on every 13th: Jan 5, 12, 13, 19 2024."""
    assert nexts("0 12 13 * FRI", utc(2024, 1, 1), 4) == [
        utc(2024, 1, 5, 12), utc(2024, 1, 12, 12), utc(2024, 1, 13, 12), utc(2024, 1, 19, 12),
    ]
    # 31 February never happens, but every Monday in February matches (Feb 1 2024 is a Thursday).
    assert nexts("0 0 31 2 MON", utc(2024, 1, 1), 1) == [utc(2024, 2, 5)]


def test_star_step_day_field_counts_as_unrestricted() -> None:
    """Like Vixie cron, day-of-month '*/2' ANDs with the weekday (odd Mondays) while '1-31/2' ORs with it."""
    assert nexts("0 0 */2 * MON", utc(2024, 1, 1), 2) == [utc(2024, 1, 15), utc(2024, 1, 29)]
    odd_or_monday = [utc(2024, 1, 3), utc(2024, 1, 5), utc(2024, 1, 7), utc(2024, 1, 8), utc(2024, 1, 9)]
    assert nexts("0 0 1-31/2 * MON", utc(2024, 1, 1), 5) == odd_or_monday


def test_aliases_equal_their_expressions() -> None:
    """Every alias is the same schedule as the five fields it stands for, and describe() keeps the text."""
    for alias, fields in [
        ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"), ("@monthly", "0 0 1 * *"),
        ("@weekly", "0 0 * * 0"), ("@daily", "0 0 * * *"), ("@midnight", "0 0 * * *"),
        ("@HOURLY", "0 * * * *"),
    ]:
        assert CronSchedule.parse(alias) == CronSchedule.parse(fields), alias
    assert CronSchedule.parse("@monthly").next_after(utc(2024, 1, 31, 12)) == utc(2024, 2, 1)
    assert CronSchedule.parse(" @daily ").describe() == "@daily"


def test_last_at_or_before() -> None:
    """The current tick is t itself when t is a tick, else the previous one, even years back."""
    quarter = CronSchedule.parse("*/15 * * * *")
    assert quarter.last_at_or_before(utc(2024, 1, 1, 10, 15)) == utc(2024, 1, 1, 10, 15)
    assert quarter.last_at_or_before(utc(2024, 1, 1, 0, 14, 59)) == utc(2024, 1, 1, 0, 0)
    assert quarter.last_at_or_before(utc(2024, 1, 1, 0, 0, 0) - timedelta(microseconds=1)) == utc(
        2023, 12, 31, 23, 45
    )
    assert CronSchedule.parse("0 0 29 2 *").last_at_or_before(utc(2027, 6, 1)) == utc(2024, 2, 29)
    assert CronSchedule.parse("0 12 13 * FRI").last_at_or_before(utc(2024, 1, 13, 11)) == utc(2024, 1, 12, 12)


def test_rare_schedule_is_found_fast() -> None:
    """Feb 29 on a Sunday (2004, then 2032) is found both ways well within a second, not minute by minute."""
    sunday_leap = CronSchedule.parse("0 0 29 2 */7")  # '*/7' is Sunday only, and it ANDs with the 29th
    started = time.perf_counter()
    assert sunday_leap.next_after(utc(2004, 3, 1)) == utc(2032, 2, 29)
    assert sunday_leap.last_at_or_before(utc(2032, 2, 28)) == utc(2004, 2, 29)
    assert time.perf_counter() - started < 1.0


def test_berlin_spring_forward_skips_the_missing_time() -> None:
    """On Mar 31 2024 Berlin has no 02:30, so '30 2 * * *' goes from Mar 30 01:30Z to Apr 1 00:30Z."""
    assert nexts("30 2 * * *", utc(2024, 3, 29, 12), 3, BERLIN) == [
        utc(2024, 3, 30, 1, 30), utc(2024, 4, 1, 0, 30), utc(2024, 4, 2, 0, 30),
    ]
    # Every half hour: 01:30 CET is followed by 03:00 CEST, one real half hour later.
    half_hours = [utc(2024, 3, 31, 0, 30), utc(2024, 3, 31, 1, 0)]
    assert nexts("*/30 * * * *", utc(2024, 3, 31, 0, 15), 2, BERLIN) == half_hours
    cron = CronSchedule.parse("30 2 * * *", BERLIN)
    assert cron.last_at_or_before(datetime(2024, 3, 31, 12, tzinfo=BERLIN)) == utc(2024, 3, 30, 1, 30)


def test_berlin_fall_back_fires_the_repeated_time_once() -> None:
    """Berlin passes 02:30 twice on 2024-10-27; '30 2 * * *' fires the first (00:30Z), next 10-28 01:30Z."""
    cron = CronSchedule.parse("30 2 * * *", BERLIN)
    first = cron.next_after(utc(2024, 10, 26, 12))
    assert first.astimezone(UTC) == utc(2024, 10, 27, 0, 30)
    assert (first.hour, first.minute, first.utcoffset()) == (2, 30, timedelta(hours=2))  # in Berlin time
    assert cron.next_after(first).astimezone(UTC) == utc(2024, 10, 28, 1, 30)
    assert cron.last_at_or_before(utc(2024, 10, 27, 1, 30)).astimezone(UTC) == utc(2024, 10, 27, 0, 30)


def test_new_york_spring_forward_and_fall_back() -> None:
    """New York 2024: no 02:00 on Mar 10 (next: Mar 11 06:00Z); 01:30 on Nov 3 fires once, in EDT (05:30Z)."""
    assert nexts("0 2 * * *", utc(2024, 3, 9, 12), 2, NEW_YORK) == [utc(2024, 3, 11, 6), utc(2024, 3, 12, 6)]
    once = [utc(2024, 11, 3, 5, 30), utc(2024, 11, 4, 6, 30)]
    assert nexts("30 1 * * *", utc(2024, 11, 2, 12), 2, NEW_YORK) == once


def test_new_york_second_pass_of_the_repeated_hour() -> None:
    """At 01:30 EST (06:30Z, the second 01:30) '*/15' last fired at 01:45 EDT (05:45Z), next at 02:00 EST."""
    quarter = CronSchedule.parse("*/15 * * * *", NEW_YORK)
    t = datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=NEW_YORK)
    assert t.astimezone(UTC) == utc(2024, 11, 3, 6, 30)
    assert quarter.next_after(t).astimezone(UTC) == utc(2024, 11, 3, 7, 0)
    assert quarter.last_at_or_before(t).astimezone(UTC) == utc(2024, 11, 3, 5, 45)


def test_any_input_zone_and_fixed_offsets() -> None:
    """Only the input's instant matters, not its zone, and a fixed-offset tz shifts ticks by its offset."""
    cron = CronSchedule.parse("0 9 * * *", timezone(timedelta(hours=5, minutes=30)))
    tick = cron.next_after(datetime(2024, 1, 1, 12, tzinfo=NEW_YORK))  # 17:00Z, 22:30 in India
    assert tick.astimezone(UTC) == utc(2024, 1, 2, 3, 30)
    assert cron.describe() == "0 9 * * * (UTC+05:30)"
    assert CronSchedule.parse("0 9 * * *", BERLIN).describe() == "0 9 * * * (Europe/Berlin)"


def test_ticks_between_is_half_open() -> None:
    """ticks_between(a, b) yields the ticks after a up to and including b (islice: a bug cannot hang it)."""
    hourly = CronSchedule.parse("@hourly")
    assert list(islice(hourly.ticks_between(utc(2024, 1, 1, 0), utc(2024, 1, 1, 3)), 9)) == [
        utc(2024, 1, 1, 1), utc(2024, 1, 1, 2), utc(2024, 1, 1, 3),
    ]
    assert list(islice(Every(600).ticks_between(utc(2024, 1, 1, 0, 5), utc(2024, 1, 1, 0, 25)), 9)) == [
        utc(2024, 1, 1, 0, 10), utc(2024, 1, 1, 0, 20),
    ]


def test_naive_datetimes_are_refused() -> None:
    """A naive datetime raises ValueError from both schedules, in both directions."""
    naive = datetime(2024, 1, 1, 12)
    for schedule in (CronSchedule.parse("* * * * *"), Every(60)):
        with pytest.raises(ValueError, match="naive datetime"):
            schedule.next_after(naive)
        with pytest.raises(ValueError, match="naive datetime"):
            schedule.last_at_or_before(naive)


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("61 * * * *", "minute field '61' is out of range 0-59 in '61 * * * *'"),
        ("0 24 * * *", "hour field '24' is out of range 0-23 in '0 24 * * *'"),
        ("0 0 0 * *", "day-of-month field '0' is out of range 1-31 in '0 0 0 * *'"),
        ("0 0 * 1-13 *", "month field '1-13' is out of range 1-12 in '0 0 * 1-13 *'"),
        ("0 0 * * 8", "day-of-week field '8' is out of range 0-7 in '0 0 * * 8'"),
        ("*/0 * * * *", "minute field '*/0' has step 0 (a step must be at least 1) in '*/0 * * * *'"),
        ("*/x * * * *", "minute field '*/x' has step 'x', which is not a number in '*/x * * * *'"),
        ("0 5-2 * * *", "hour field '5-2' is a range whose start is after its end in '0 5-2 * * *'"),
        ("0 0 * FOO *", "month field 'FOO' has 'FOO', which is not a number or a name in '0 0 * FOO *'"),
        ("0 MON * * *", "hour field 'MON' has 'MON', which is not a number in '0 MON * * *'"),
        ("1,,2 * * * *", "minute field '1,,2' has an empty list item in '1,,2 * * * *'"),
        ("* * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 4 in '* * * *'"),
        ("0 0 0 * * *", "expected 5 fields (minute hour day-of-month month day-of-week), got 6"),
        ("@reboot", "unknown alias '@reboot' (known: @yearly, @annually, @monthly, @weekly, @daily,"),
        ("0 0 30 2 *", "day-of-month '30' never occurs in month '2' in '0 0 30 2 *'"),
        ("0 0 31 4,6,9,11 *", "day-of-month '31' never occurs in month '4,6,9,11'"),
        ("0 0 31 APR */2", "day-of-month '31' never occurs in month 'APR'"),
    ],
)
def test_bad_expressions_name_field_and_value(expr: str, problem: str) -> None:
    """Each bad expression raises ConfigError('cron', ...) whose message names the field and the bad value."""
    with pytest.raises(ConfigError) as caught:
        CronSchedule.parse(expr)
    assert caught.value.setting == "cron"
    assert caught.value.problem.startswith(problem), caught.value.problem
    assert str(caught.value).startswith("invalid setting cron: ")


def test_schedules_are_hashable_and_compare_by_meaning() -> None:
    """Equal schedules hash alike whatever their spelling; another zone or period makes a different one."""
    schedules = {
        CronSchedule.parse("0 0 * * *"), CronSchedule.parse("@daily"),
        CronSchedule.parse("0 0 * * *", BERLIN),
        Every(300), Every(timedelta(minutes=5)), Every(301),
    }
    assert len(schedules) == 4
    with pytest.raises(AttributeError):
        Every(60).period = timedelta(seconds=1)  # type: ignore[misc]


def test_every_is_aligned_to_the_epoch() -> None:
    """Every(7) ticks at multiples of 7 s since 1970: after 00:00:10 comes :14, current at :13 is :07."""
    seven = Every(7)
    assert seven.next_after(utc(1970, 1, 1, 0, 0, 10)) == utc(1970, 1, 1, 0, 0, 14)
    assert seven.last_at_or_before(utc(1970, 1, 1, 0, 0, 13)) == utc(1970, 1, 1, 0, 0, 7)
    assert seven.last_at_or_before(utc(1970, 1, 1, 0, 0, 14)) == utc(1970, 1, 1, 0, 0, 14)
    assert seven.next_after(utc(1970, 1, 1, 0, 0, 14)) == utc(1970, 1, 1, 0, 0, 21)
    assert seven.last_at_or_before(utc(1969, 12, 31, 23, 59, 59)) == utc(1969, 12, 31, 23, 59, 53)
    minute = Every(timedelta(minutes=1))
    assert minute.next_after(datetime(2024, 6, 1, 12, 0, 30, tzinfo=BERLIN)) == utc(2024, 6, 1, 10, 1)
    quarter = Every(0.25)
    assert quarter.next_after(utc(2024, 1, 1) + timedelta(microseconds=1)) == utc(2024, 1, 1) + timedelta(
        milliseconds=250
    )
    assert (minute.describe(), quarter.describe(), quarter.seconds) == ("every 60s", "every 0.25s", 0.25)


@pytest.mark.parametrize("bad", [0, -1, 0.0005, float("nan"), float("inf"), timedelta(0), True, "60"])
def test_every_refuses_bad_periods(bad: object) -> None:
    """A period that is not a number of seconds of at least 0.001 raises ConfigError('every', ...)."""
    with pytest.raises(ConfigError) as caught:
        Every(bad)  # type: ignore[arg-type]
    assert caught.value.setting == "every"
    assert Every(0.001).period == timedelta(milliseconds=1)


# Brute force: reference predicates written independently of the parser, checked on UTC minutes.
REFERENCE: list[tuple[str, Callable[[datetime], bool]]] = [
    ("*/15 9-17 * * MON-FRI", lambda d: d.minute % 15 == 0 and 9 <= d.hour <= 17 and d.weekday() < 5),
    ("0 0 13 * FRI", lambda d: (d.minute, d.hour) == (0, 0) and (d.day == 13 or d.weekday() == 4)),
    ("5,35 */6 1-7 * *", lambda d: d.minute in (5, 35) and d.hour % 6 == 0 and d.day <= 7),
    ("0 12 */2 * SUN", lambda d: (d.minute, d.hour) == (0, 12) and d.day % 2 == 1 and d.weekday() == 6),
    ("*/20 2 * * *", lambda d: d.minute % 20 == 0 and d.hour == 2),
]
ZONES: list[tzinfo] = [UTC, BERLIN, NEW_YORK]
DST_CHANGES_2024 = [datetime(2024, m, d) for m, d in [(3, 10), (3, 31), (10, 27), (11, 3)]]  # US, EU, EU, US
# Around the 2024 DST changes of both zones, and anywhere in 2023-2025.
STARTS = st.one_of(
    st.datetimes(datetime(2023, 1, 1), datetime(2025, 12, 31)),
    *(
        st.datetimes(day - timedelta(days=2), day + timedelta(days=2))
        for day in DST_CHANGES_2024
    ),
)


def _reference_tick(expr_index: int, zone: tzinfo, u: datetime) -> bool:
    """Whether the UTC minute ``u`` is a tick: its wall time matches and is that wall time's first pass."""
    local = u.astimezone(zone)
    return local.fold == 0 and REFERENCE[expr_index][1](local)


@settings(max_examples=60, derandomize=True, deadline=None)
@given(st.integers(0, len(REFERENCE) - 1), st.sampled_from(ZONES), STARTS)
def test_matches_brute_force(expr_index: int, zone: tzinfo, start: datetime) -> None:
    """next_after / last_at_or_before equal the nearest ticks found by stepping UTC minute by minute."""
    schedule = CronSchedule.parse(REFERENCE[expr_index][0], zone)
    t = start.replace(tzinfo=UTC)
    u = t.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while not _reference_tick(expr_index, zone, u):
        u += timedelta(minutes=1)
    assert schedule.next_after(t).astimezone(UTC) == u
    v = t.replace(second=0, microsecond=0)
    while not _reference_tick(expr_index, zone, v):
        v -= timedelta(minutes=1)
    assert schedule.last_at_or_before(t).astimezone(UTC) == v

"""When periodic jobs are due: cron expressions and fixed intervals, as pure functions of time.

:class:`CronSchedule` parses a standard five-field cron expression (``minute hour
day-of-month month day-of-week``) and :class:`Every` is a fixed period aligned to the Unix
epoch (for ``@app.periodic(every=...)``). Both answer the two questions a scheduler asks:
``next_after(t)``, the first tick strictly after ``t``, and ``last_at_or_before(t)``, the
tick that is current at ``t`` (after a restart). No I/O, no clock, no dependencies: times
go in and come out as aware datetimes. Bad expressions raise
:class:`~streamflow.errors.ConfigError` naming the field and the value.
"""

from __future__ import annotations

import calendar
import math
from bisect import bisect_left, bisect_right
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo

from streamflow.errors import ConfigError

__all__ = ["CronSchedule", "Every", "Schedule"]

_MINUTE = timedelta(minutes=1)
_MICROSECOND = timedelta(microseconds=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LONGEST_PERIOD = timedelta.max // _MICROSECOND
_HORIZON_YEARS = 400  # the Gregorian calendar repeats after 400 years: a feasible tick is nearer
_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day-of-month", 1, 31), ("month", 1, 12),
           ("day-of-week", 0, 7))  # (name, lowest, highest); day-of-week 7 is Sunday again
_MONTH_NAMES = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAY_NAMES = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
_NAMES = {3: {n: i + 1 for i, n in enumerate(_MONTH_NAMES)}, 4: {n: i for i, n in enumerate(_DAY_NAMES)}}
_ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_LONGEST_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _aware_utc(t: datetime) -> datetime:
    """``t`` as a UTC datetime; a naive ``t`` is an error (its zone would be a guess)."""
    if t.tzinfo is None or t.utcoffset() is None:
        raise ValueError(f"naive datetime {t.isoformat()}: pass an aware one (e.g. tzinfo=datetime.UTC)")
    return t.astimezone(UTC)


def _ceil(values: tuple[int, ...], x: int) -> int | None:
    """The smallest of the sorted ``values`` that is >= ``x``, or None."""
    i = bisect_left(values, x)
    return values[i] if i < len(values) else None


def _floor(values: tuple[int, ...], x: int) -> int | None:
    """The largest of the sorted ``values`` that is <= ``x``, or None."""
    i = bisect_right(values, x)
    return values[i - 1] if i else None


def _parse_field(expr: str, index: int, text: str) -> tuple[int, ...]:
    """The sorted values one field of ``expr`` allows (day-of-week 7 folded into 0)."""
    name, lo, hi = _FIELDS[index]
    top = 6 if index == 4 else hi  # '*' and 'a/n' in day-of-week end on Saturday
    names = _NAMES.get(index, {})
    values: set[int] = set()

    def bad(problem: str) -> ConfigError:
        return ConfigError("cron", f"{name} field {problem} in '{expr}'")

    def number(item: str, token: str) -> int:
        if token.upper() in names:
            return names[token.upper()]
        if token.isascii() and token.isdigit():
            return int(token)
        raise bad(f"'{item}' has '{token}', which is not a number" + (" or a name" if names else ""))

    for item in text.split(","):
        if not item:
            raise bad(f"'{text}' has an empty list item")
        base, slash, step_text = item.partition("/")
        if slash and not (step_text.isascii() and step_text.isdigit()):
            raise bad(f"'{item}' has step '{step_text}', which is not a number")
        step = int(step_text) if slash else 1
        if step < 1:
            raise bad(f"'{item}' has step 0 (a step must be at least 1)")
        if base == "*":
            start, end = lo, top
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = number(item, first), number(item, last)
        else:
            start = number(item, base)
            end = max(start, top) if slash else start
        if not (lo <= start <= hi and lo <= end <= hi):
            raise bad(f"'{item}' is out of range {lo}-{hi}")
        if start > end:
            raise bad(f"'{item}' is a range whose start is after its end")
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:
        values.discard(7)
        values.add(0)
    return tuple(sorted(values))


class Schedule:
    """What a periodic-job scheduler needs of a schedule; :class:`CronSchedule` and :class:`Every`."""

    __slots__ = ()

    def next_after(self, t: datetime) -> datetime:
        """The first tick strictly after the aware datetime ``t``."""
        raise NotImplementedError

    def last_at_or_before(self, t: datetime) -> datetime:
        """The latest tick at or before the aware datetime ``t``."""
        raise NotImplementedError

    def describe(self) -> str:
        """A short human-readable form of the schedule, for logs and admin output."""
        raise NotImplementedError

    def ticks_between(self, a: datetime, b: datetime) -> Iterator[datetime]:
        """Every tick ``x`` with ``a < x <= b``, in order (lazily: a long span is fine to stop early)."""
        b_utc = _aware_utc(b)
        tick = self.next_after(a)
        while tick <= b_utc:
            yield tick
            tick = self.next_after(tick)


@dataclass(frozen=True, slots=True)
class CronSchedule(Schedule):
    """A five-field cron expression in a time zone; build one with :meth:`parse`.

    Fields are ``minute hour day-of-month month day-of-week`` with ``*``, ``*/n``, ``a``,
    ``a-b``, ``a-b/n``, ``a/n`` (``a`` to the field's maximum, step ``n``) and comma lists;
    months JAN-DEC and weekdays SUN-SAT by name (any case); day-of-week 0-7 with 0 and 7
    both Sunday. The aliases ``@yearly @annually @monthly @weekly @daily @midnight
    @hourly`` stand for their usual expressions.

    Vixie-cron day rule: when day-of-month and day-of-week are both restricted, a day
    matches if *either* does. As in Vixie cron, a field that begins with ``*`` (also
    ``*/2``) counts as unrestricted here, so ``0 0 */2 * MON`` means odd days that are
    Mondays, while ``0 0 1-31/2 * MON`` means odd days or Mondays.

    Ticks are whole minutes of the zone's wall clock (zoneinfo rules), so ``30 2 * * *``
    in Europe/Berlin is 02:30 local in winter and summer. Across DST changes: a wall time
    that does not exist (skipped when clocks go forward) is no tick at all, that day has
    none at 02:30; a wall time that occurs twice (clocks go back) fires once, at its first
    occurrence. Equality and hashing compare what the schedule matches and its zone, not
    the text: ``@daily`` equals ``0 0 * * *``.
    """

    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days: tuple[int, ...]
    months: tuple[int, ...]
    weekdays: tuple[int, ...]  # 0 = Sunday .. 6 = Saturday
    dom_star: bool  # the day-of-month field begins with '*'
    dow_star: bool  # the day-of-week field begins with '*'
    tz: tzinfo
    expr: str = field(compare=False)

    @classmethod
    def parse(cls, expr: str, tz: tzinfo | None = None) -> CronSchedule:
        """Parse ``expr`` for the zone ``tz`` (default UTC); ConfigError("cron", ...) if it is bad."""
        text = expr.strip()
        if text.startswith("@"):
            if text.lower() not in _ALIASES:
                raise ConfigError("cron", f"unknown alias '{text}' (known: {', '.join(_ALIASES)})")
            text = _ALIASES[text.lower()]
        parts = text.split()
        if len(parts) != 5:
            raise ConfigError(
                "cron", f"expected 5 fields (minute hour day-of-month month day-of-week), "
                f"got {len(parts)} in '{expr}'"
            )
        minutes, hours, days, months, weekdays = (_parse_field(expr, i, p) for i, p in enumerate(parts))
        dom_star, dow_star = parts[2].startswith("*"), parts[4].startswith("*")
        # Each date falls on every weekday within 400 years, so only day-of-month x month can be empty.
        if (dom_star or dow_star) and not any(d <= _LONGEST_MONTH[m - 1] for m in months for d in days):
            problem = f"day-of-month '{parts[2]}' never occurs in month '{parts[3]}' in '{expr}'"
            raise ConfigError("cron", problem)
        zone = UTC if tz is None else tz
        return cls(minutes, hours, days, months, weekdays, dom_star, dow_star, zone, expr.strip())

    def describe(self) -> str:
        """The expression as written, with the zone when it is not UTC."""
        return self.expr if self.tz is UTC else f"{self.expr} ({self.tz})"

    def next_after(self, t: datetime) -> datetime:
        """The first tick strictly after ``t``, in the schedule's zone (ValueError if ``t`` is naive)."""
        t_utc = _aware_utc(t)
        wall = t_utc.astimezone(self.tz).replace(tzinfo=None, fold=0, second=0, microsecond=0)
        # Walls before t's own map before t; when t is the second pass of a repeated hour the
        # first-pass walls after it are in the past too and are skipped by the check.
        candidate = self._scan(wall + _MINUTE, up=True)
        while (instant := self._instant(candidate)) is None or instant <= t_utc:
            candidate = self._scan(candidate + _MINUTE, up=True)
        return instant.astimezone(self.tz)

    def last_at_or_before(self, t: datetime) -> datetime:
        """The latest tick at or before ``t``, in the schedule's zone (ValueError if ``t`` is naive)."""
        t_utc = _aware_utc(t)
        local = t_utc.astimezone(self.tz)
        wall = local.replace(tzinfo=None, fold=0, second=0, microsecond=0)
        first_offset, offset = local.replace(fold=0).utcoffset(), local.utcoffset()
        if local.fold and first_offset is not None and offset is not None and first_offset > offset:
            wall += first_offset - offset  # second pass of a repeated hour: its first pass is all past
        candidate = self._scan(wall, up=False)
        while (instant := self._instant(candidate)) is None or instant > t_utc:
            candidate = self._scan(candidate - _MINUTE, up=False)
        return instant.astimezone(self.tz)

    def _instant(self, wall: datetime) -> datetime | None:
        """The UTC instant of the naive wall time (first occurrence), or None if it does not exist."""
        instant = wall.replace(tzinfo=self.tz).astimezone(UTC)
        return instant if instant.astimezone(self.tz).replace(tzinfo=None) == wall else None

    def _day_matches(self, y: int, m: int, d: int) -> bool:
        """Whether the date matches day-of-month and day-of-week (OR when both are restricted)."""
        dom, dow = d in self.days, (date(y, m, d).weekday() + 1) % 7 in self.weekdays
        return (dom and dow) if (self.dom_star or self.dow_star) else (dom or dow)

    def _day(self, y: int, m: int, d: int, up: bool) -> int | None:
        """The nearest matching day of month ``m`` from ``d`` on (up) or back (down), or None."""
        last = calendar.monthrange(y, m)[1]
        days = range(d, last + 1) if up else range(min(d, last), 0, -1)
        return next((day for day in days if self._day_matches(y, m, day)), None)

    def _scan(self, w: datetime, up: bool) -> datetime:
        """The nearest matching naive wall minute at or after (up) / at or before (down) ``w``.

        Skips whole months, days and hours that cannot match, so a rare schedule costs a
        few hundred steps per year searched, never one per minute.
        """
        y, mo, d, h, mi = w.year, w.month, w.day, w.hour, w.minute
        near, first = (_ceil, (1, 0, 0)) if up else (_floor, (31, 23, 59))
        step = 1 if up else -1
        limit = w.year + step * _HORIZON_YEARS
        while (y <= min(limit, 9999)) if up else (y >= max(limit, 1)):
            month = near(self.months, mo)
            if month is None:
                y, mo, (d, h, mi) = y + step, 1 if up else 12, first
                continue
            if month != mo:
                mo, (d, h, mi) = month, first
            day = self._day(y, mo, d, up)
            if day is None:
                mo, (d, h, mi) = mo + step, first
                continue
            if day != d:
                d, h, mi = day, first[1], first[2]
            hour = near(self.hours, h)
            if hour is None:
                d, h, mi = d + step, first[1], first[2]
                continue
            if hour != h:
                h, mi = hour, first[2]
            minute = near(self.minutes, mi)
            if minute is None:
                h, mi = h + step, first[2]
                continue
            return datetime(y, mo, d, h, minute)
        raise ValueError(f"cron: '{self.expr}' has no tick within {_HORIZON_YEARS} years of {w} before 10000")


@dataclass(frozen=True, slots=True, init=False)
class Every(Schedule):
    """A fixed period: tick ``k`` is at ``k * period`` after the Unix epoch (UTC), for any integer ``k``.

    ``Every(30)``, ``Every(0.25)`` or ``Every(timedelta(minutes=5))``; the period is kept in
    whole microseconds (``Every(1/3)`` is 333333 µs) and must be at least 0.001 s. Ticks do
    not depend on time zones or on when the process started; results are UTC datetimes.
    """

    period: timedelta

    def __init__(self, every: float | timedelta) -> None:
        if isinstance(every, timedelta):
            micros = every // _MICROSECOND
        elif isinstance(every, bool) or not isinstance(every, int | float) or not math.isfinite(every):
            raise ConfigError("every", f"{every!r} is not a number of seconds or a timedelta")
        else:
            micros = round(every * 1_000_000)
        if not 1000 <= micros <= _LONGEST_PERIOD:
            raise ConfigError("every", f"the period must be at least 0.001 seconds (and fit a timedelta), "
                              f"got {every!r}")
        object.__setattr__(self, "period", timedelta(microseconds=micros))

    @property
    def seconds(self) -> float:
        """The period in seconds."""
        return self.period.total_seconds()

    def describe(self) -> str:
        """``every <seconds>s``, e.g. ``every 300s`` or ``every 0.25s``."""
        micros = self.period // _MICROSECOND
        return f"every {micros // 1_000_000}s" if micros % 1_000_000 == 0 else f"every {micros / 1e6}s"

    def next_after(self, t: datetime) -> datetime:
        """The first tick strictly after ``t`` (UTC; ValueError if ``t`` is naive)."""
        return self._tick((_aware_utc(t) - _EPOCH) // self.period + 1)

    def last_at_or_before(self, t: datetime) -> datetime:
        """The latest tick at or before ``t`` (UTC; ValueError if ``t`` is naive)."""
        return self._tick((_aware_utc(t) - _EPOCH) // self.period)

    def _tick(self, k: int) -> datetime:
        """Tick number ``k``: ``k`` periods after the epoch."""
        return _EPOCH + k * self.period

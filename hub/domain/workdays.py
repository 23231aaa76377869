"""Official working days (工作日) and the clocks that count them.

Time limits of government services (承诺时限, 法定时限) are counted in working days of the official
calendar: Monday to Friday, except the public holidays the State Council announces each year, plus
the weekend days it declares working days in exchange (调休). That calendar comes from the
maintained ``chinese-calendar`` package; a date beyond the years it knows raises
:class:`~hub.errors.CalendarUnknown` rather than guessing.

How a clock counts (:class:`Clock`):

* the day the applicant was received is not counted ("期间开始的当日不计入"): counting starts at
  00:00 China Standard Time of the next day (:func:`counting_start`);
* each working day counts as one day, spread evenly over its 24 hours, so half a working day has
  passed at noon; a holiday or an ordinary weekend day counts nothing;
* time inside a pause (一次性告知 until 补正, 特别程序 until it ends) counts nothing;
* the clock stops for good when the case ends (办结, 不予受理, 撤回).

So a 5-working-day promise received on a Monday is due at the end of the next Monday, and its
90 % mark (4.5 days) is at noon of that day. All arithmetic is in whole microseconds, so the node
and an auditor computing the same instant from the same log always agree.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from fractions import Fraction

import chinese_calendar

from hub.errors import CalendarUnknown

#: China Standard Time (UTC+8, no daylight saving since 1991): the calendar's days are its days.
CHINA_TIME = timezone(timedelta(hours=8), "CST")

_DAY = timedelta(days=1)
_DAY_US = 86_400 * 1_000_000


@functools.cache
def known_years() -> tuple[int, int]:
    """The first and last year the installed calendar knows."""
    years = [day.year for day in chinese_calendar.holidays]
    return min(years), max(years)


def is_workday(day: date) -> bool:
    """Whether ``day`` is an official working day (调休 working weekends included).

    Raises :class:`~hub.errors.CalendarUnknown` for a year the calendar does not know.
    """
    first, last = known_years()
    if not first <= day.year <= last:
        raise CalendarUnknown(day.isoformat(), first, last)
    return _is_workday(day)


@functools.lru_cache(maxsize=8192)
def _is_workday(day: date) -> bool:
    # Cached: the library checks its whole year range on every call, and a clock asks about
    # the same few hundred days again and again.
    return bool(chinese_calendar.is_workday(day))


def china_day(instant: datetime) -> date:
    """The calendar day (China Standard Time) of ``instant``."""
    return instant.astimezone(CHINA_TIME).date()


def midnight(day: date) -> datetime:
    """00:00 China Standard Time at the start of ``day``."""
    return datetime.combine(day, time(0), tzinfo=CHINA_TIME)


def counting_start(received_at: datetime) -> datetime:
    """When a clock started by ``received_at`` begins to count: 00:00 of the next day."""
    return midnight(china_day(received_at) + _DAY)


@dataclass(frozen=True)
class Clock:
    """A clock of working days (see the module docstring).

    ``pauses`` are (start, end) in order; the last one may be open (end None) while the case is
    paused. ``stopped_at`` is when the case ended, if it has.
    """

    start: datetime
    pauses: tuple[tuple[datetime, datetime | None], ...] = ()
    stopped_at: datetime | None = None

    @property
    def paused(self) -> bool:
        """Whether the clock is paused now (its last pause is open)."""
        return bool(self.pauses) and self.pauses[-1][1] is None and self.stopped_at is None

    def _running(self) -> Iterator[tuple[datetime, datetime | None]]:
        """The intervals in which the clock runs, in order; the last may be open (None)."""
        cursor: datetime | None = self.start
        for pause_start, pause_end in self.pauses:
            if cursor is None:
                return
            if pause_start > cursor:
                yield cursor, pause_start
            if pause_end is None:
                return
            cursor = max(cursor, pause_end)
        if cursor is not None:
            yield cursor, None

    def _segments(self) -> Iterator[tuple[datetime, datetime | None]]:
        """The running intervals cut at ``stopped_at``."""
        for begin, end in self._running():
            if self.stopped_at is not None:
                if begin >= self.stopped_at:
                    return
                if end is None or end > self.stopped_at:
                    yield begin, self.stopped_at
                    return
            yield begin, end

    def crossing(self, days: Fraction) -> datetime | None:
        """The instant at which ``days`` working days have been counted.

        None when the clock stops, or is paused now, before it gets there (the instant is then
        unknown: it depends on when the pause ends). ``days`` of 0 is the first instant the
        clock runs (a 即办件 is due when its receipt day is over). Raises
        :class:`~hub.errors.CalendarUnknown` when the count reaches a year the calendar does not
        know.
        """
        target = round(days * _DAY_US)
        counted = 0
        for begin, end in self._segments():
            if target <= 0:
                return begin
            day = china_day(begin)
            chunk_start = begin
            while end is None or chunk_start < end:
                day_end = midnight(day + _DAY)
                chunk_end = day_end if end is None else min(day_end, end)
                if is_workday(day):
                    length = _microseconds(chunk_end - chunk_start)
                    if counted + length >= target:
                        return chunk_start + timedelta(microseconds=target - counted)
                    counted += length
                day += _DAY
                chunk_start = day_end
        return None

    def elapsed(self, now: datetime) -> Fraction:
        """Working days counted up to ``now`` (exact)."""
        counted = 0
        for begin, end in self._segments():
            stop = now if end is None else min(end, now)
            if stop <= begin:
                break
            day = china_day(begin)
            chunk_start = begin
            while chunk_start < stop:
                chunk_end = min(midnight(day + _DAY), stop)
                if is_workday(day):
                    counted += _microseconds(chunk_end - chunk_start)
                day += _DAY
                chunk_start = chunk_end
        return Fraction(counted, _DAY_US)


def _microseconds(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


__all__ = [
    "CHINA_TIME",
    "Clock",
    "china_day",
    "counting_start",
    "is_workday",
    "known_years",
    "midnight",
]

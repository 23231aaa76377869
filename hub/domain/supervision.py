"""电子监察: when a case's time marks fall due, computed from the case's own history.

Three marks, each a :class:`~hub.domain.values.WarningKind`:

* YELLOW (黄牌) when 90 % of the promised time limit (承诺时限) has been used;
* RED (红牌) when the promised time limit is over;
* RECTIFICATION_OVERDUE when a 差评's rectification (整改) is not done by its deadline.

Time is counted in official working days (:mod:`hub.domain.workdays`) from the business
time the applicant was received, without the days the clock was paused (一次性告知 until
补正, 特别程序), until the case ends. The rectification clock counts its deadline from the
business time of the 差评.

The node's supervisor and anyone checking its log (the integrator's gate, the auditor) call the
same :func:`warning_due` on the same history, so a recorded warning can always be re-derived.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from fractions import Fraction

from hub.domain.case import Case
from hub.domain.values import WarningKind
from hub.domain.workdays import Clock, counting_start
from hub.errors import CalendarUnknown

#: The share of the promised time at which the yellow warning falls due.
YELLOW_SHARE = Fraction(9, 10)


def clock_of(
    received_at: datetime,
    pauses: tuple[tuple[datetime, datetime], ...],
    paused_since: datetime | None,
    stopped_at: datetime | None,
) -> Clock:
    """The supervision clock of a case received at ``received_at`` with these pauses."""
    every: tuple[tuple[datetime, datetime | None], ...] = tuple(pauses)
    if paused_since is not None:
        every = (*every, (paused_since, None))
    return Clock(counting_start(received_at), every, stopped_at)


def case_clock(case: Case) -> Clock | None:
    """The case's supervision clock (None before it was received)."""
    if case.clock_started_at is None:
        return None
    return clock_of(case.clock_started_at, case.pauses, case.paused_since, case.clock_stopped_at)


@dataclass(frozen=True)
class Deadlines:
    """A case's time marks as far as they are known now."""

    yellow_at: datetime | None  # 90 % of the promised time
    due_at: datetime | None  # the promised time limit
    statutory_due_at: datetime | None  # the statutory time limit
    #: Why a mark is unknown although the clock runs: a year the calendar does not know.
    calendar_note: str = ""


def deadlines(clock: Clock, promised_days: int, statutory_days: int) -> Deadlines:
    """Each mark of ``clock`` (None where stopped or paused short of it, see Clock.crossing)."""
    note = ""
    marks: list[datetime | None] = []
    for days in (
        promised_days * YELLOW_SHARE if promised_days > 0 else None,
        Fraction(promised_days),
        Fraction(statutory_days),
    ):
        if days is None:
            marks.append(None)
            continue
        try:
            marks.append(clock.crossing(days))
        except CalendarUnknown as error:
            note = note or str(error)
            marks.append(None)
    return Deadlines(marks[0], marks[1], marks[2], note)


def rectification_clock(case: Case) -> Clock | None:
    """The clock of the case's rectification (None when no 差评 opened one)."""
    if case.rectification_opened_at is None:
        return None
    return Clock(
        counting_start(case.rectification_opened_at),
        (),
        case.rectification_completed_at,
    )


def warning_due(case: Case, kind: WarningKind) -> datetime | None:
    """The instant ``kind`` falls (or fell) due for ``case``; None if it does not (yet).

    None when the case has no such mark (no promised time for a yellow warning, no 差评 for a
    rectification), when the clock stopped before the mark, or while the clock is paused short
    of it. Raises :class:`~hub.errors.CalendarUnknown` when the mark lies in a year the
    calendar does not know.
    """
    if kind is WarningKind.RECTIFICATION_OVERDUE:
        clock = rectification_clock(case)
        return None if clock is None else clock.crossing(Fraction(case.rectification_deadline_days))
    clock = case_clock(case)
    if clock is None:
        return None
    if kind is WarningKind.YELLOW:
        if case.promised_days <= 0:
            return None  # a 即办件 has no 90 % mark before it is due
        return clock.crossing(case.promised_days * YELLOW_SHARE)
    return clock.crossing(Fraction(case.promised_days))


__all__ = [
    "YELLOW_SHARE",
    "Deadlines",
    "case_clock",
    "clock_of",
    "deadlines",
    "rectification_clock",
    "warning_due",
]

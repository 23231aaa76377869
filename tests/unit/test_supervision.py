"""电子监察 clocks: official working days, business time, pauses, and when each warning is due."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from fractions import Fraction

import pytest
from factories import TOWNSHIP_HALL, new_case

from hub.domain.case import Case, business_time, step_time
from hub.domain.supervision import case_clock, warning_due
from hub.domain.values import DeliveryMethod, Rating, SuspensionReason, WarningKind
from hub.domain.workdays import CHINA_TIME, Clock, counting_start, is_workday, known_years
from hub.errors import CalendarUnknown, TransitionRefused


def cst(*args: int) -> datetime:
    """A time in China Standard Time."""
    return datetime(*args, tzinfo=CHINA_TIME)  # type: ignore[misc]


# ------------------------------------------------------------------ the official calendar


def test_weekends_holidays_and_adjusted_working_weekends() -> None:
    assert is_workday(date(2026, 3, 2))  # a Monday
    assert not is_workday(date(2026, 3, 7))  # a Saturday
    assert not is_workday(date(2026, 10, 1))  # 国庆节
    assert not is_workday(date(2026, 2, 17))  # 春节, a Tuesday
    assert is_workday(date(2026, 2, 14))  # 调休: a Saturday worked for the Spring Festival
    assert is_workday(date(2026, 10, 10))  # 调休: a Saturday worked for the National Day


def test_a_date_beyond_the_known_years_is_a_clear_error() -> None:
    first, last = known_years()
    with pytest.raises(CalendarUnknown) as caught:
        is_workday(date(last + 1, 1, 5))
    message = str(caught.value)
    assert f"{first}-{last}" in message and "chinese-calendar" in message
    with pytest.raises(CalendarUnknown):
        is_workday(date(first - 1, 6, 1))


def test_the_receipt_day_is_not_counted() -> None:
    assert counting_start(cst(2026, 3, 2, 10, 0)) == cst(2026, 3, 3)
    # 23:30 UTC on March 1st is already March 2nd in China.
    assert counting_start(datetime(2026, 3, 1, 23, 30, tzinfo=UTC)) == cst(2026, 3, 3)


def test_five_working_days_over_an_ordinary_weekend() -> None:
    clock = Clock(counting_start(cst(2026, 3, 2, 10)))  # received Monday
    assert clock.crossing(Fraction(5)) == cst(2026, 3, 10)  # end of the next Monday
    assert clock.crossing(Fraction(9, 2)) == cst(2026, 3, 9, 12)  # 90 %: noon that Monday
    assert clock.elapsed(cst(2026, 3, 7, 12)) == 4  # Tue-Fri, nothing on Saturday
    assert clock.elapsed(cst(2026, 3, 9, 18)) == Fraction(19, 4)


def test_the_national_day_week_and_its_adjusted_saturday() -> None:
    clock = Clock(counting_start(cst(2026, 9, 30, 16)))  # received the day before 国庆
    # Oct 1-7 off; Oct 8, 9, 10 (调休 Saturday), 12, 13 count.
    assert clock.crossing(Fraction(5)) == cst(2026, 10, 14)
    assert clock.crossing(Fraction(3)) == cst(2026, 10, 11)


def test_paused_time_does_not_count() -> None:
    start = counting_start(cst(2026, 3, 2, 10))
    paused = Clock(start, ((cst(2026, 3, 3, 9), cst(2026, 3, 5, 9)),))  # exactly two days
    assert paused.crossing(Fraction(5)) == cst(2026, 3, 12)
    assert paused.elapsed(cst(2026, 3, 5, 9)) == Fraction(9, 24)  # Tuesday 00:00-09:00
    # A pause over a weekend costs only its working part.
    weekend = Clock(start, ((cst(2026, 3, 6, 12), cst(2026, 3, 9, 12)),))
    assert weekend.crossing(Fraction(5)) == cst(2026, 3, 11)


def test_an_open_pause_or_a_stop_before_the_mark_means_no_instant() -> None:
    start = counting_start(cst(2026, 3, 2, 10))
    assert Clock(start, ((cst(2026, 3, 4), None),)).crossing(Fraction(5)) is None
    # Crossed before the pause began: the instant is known.
    assert Clock(start, ((cst(2026, 3, 4), None),)).crossing(Fraction(1)) == cst(2026, 3, 4)
    assert Clock(start, (), cst(2026, 3, 6)).crossing(Fraction(5)) is None
    assert Clock(start, (), cst(2026, 3, 11)).crossing(Fraction(5)) == cst(2026, 3, 10)


def test_an_immediate_item_is_due_when_its_receipt_day_is_over() -> None:
    saturday = Clock(counting_start(cst(2026, 3, 7, 10)))
    assert saturday.crossing(Fraction(0)) == cst(2026, 3, 8)


def test_counting_into_an_unknown_year_raises() -> None:
    _, last = known_years()
    clock = Clock(counting_start(cst(last, 12, 20, 10)))
    with pytest.raises(CalendarUnknown):
        clock.crossing(Fraction(20))


# ------------------------------------------------------------------ business time


def test_business_time_is_the_signed_time_within_what_the_node_can_vouch_for() -> None:
    signed, received = cst(2026, 3, 6, 16), cst(2026, 3, 9, 8)  # a village outbox: Friday
    assert business_time(signed, received, None) == signed
    # A hall's clock ahead of the node's: never after the node received it.
    assert business_time(received + timedelta(minutes=3), received, None) == received
    # Never before the case's previous step.
    later_step = cst(2026, 3, 7, 9)
    assert business_time(signed, received, later_step) == later_step


def test_case_events_carry_the_business_time_of_their_step() -> None:
    with step_time(cst(2026, 3, 6, 16)):
        case = new_case(actor=TOWNSHIP_HALL, competent=TOWNSHIP_HALL.region)
    assert case.clock_started_at == cst(2026, 3, 6, 16)
    with step_time(cst(2026, 3, 9, 9)):
        case.accept(TOWNSHIP_HALL)
    events = case.collect_events()
    assert [e.timestamp for e in events] == [cst(2026, 3, 6, 16), cst(2026, 3, 9, 9)]
    assert case.last_step_at == cst(2026, 3, 9, 9)


# ------------------------------------------------------------------ the warnings


def _case_received(at: datetime) -> Case:
    """A 5-working-day promised case (老年人优待证 with promised days set for the test)."""
    with step_time(at):
        case = new_case(actor=TOWNSHIP_HALL, competent=TOWNSHIP_HALL.region)
    case.promised_days = 5
    return case


def test_yellow_and_red_marks_from_the_case_history() -> None:
    case = _case_received(cst(2026, 3, 2, 10))
    assert warning_due(case, WarningKind.YELLOW) == cst(2026, 3, 9, 12)
    assert warning_due(case, WarningKind.RED) == cst(2026, 3, 10)
    assert warning_due(case, WarningKind.RECTIFICATION_OVERDUE) is None


def test_correction_and_suspension_pause_the_marks() -> None:
    case = _case_received(cst(2026, 3, 2, 10))
    with step_time(cst(2026, 3, 3, 9)):
        case.request_correction(TOWNSHIP_HALL, ("户口簿",), "一次性告知")
    assert warning_due(case, WarningKind.RED) is None  # paused: unknown until resubmission
    with step_time(cst(2026, 3, 5, 9)):
        case.resubmit(TOWNSHIP_HALL, case.materials)
    assert warning_due(case, WarningKind.RED) == cst(2026, 3, 12)
    with step_time(cst(2026, 3, 5, 10)):
        case.start_handling(TOWNSHIP_HALL)
    with step_time(cst(2026, 3, 6, 0)):
        case.suspend(TOWNSHIP_HALL, SuspensionReason.EXPERT_REVIEW, "专家评审")
    with step_time(cst(2026, 3, 9, 0)):  # Friday in suspension; the weekend counts nothing
        case.resume(TOWNSHIP_HALL)
    assert case_clock(case) is not None
    assert warning_due(case, WarningKind.RED) == cst(2026, 3, 13)


def test_a_case_concluded_in_time_is_never_due() -> None:
    case = _case_received(cst(2026, 3, 2, 10))
    with step_time(cst(2026, 3, 3, 10)):
        _conclude(case)
    assert warning_due(case, WarningKind.RED) is None


def _conclude(case: Case) -> None:
    case.accept(TOWNSHIP_HALL)
    case.start_handling(TOWNSHIP_HALL)
    case.decide(TOWNSHIP_HALL, approved=False, reason="不符合条件")
    case.conclude(TOWNSHIP_HALL)


def test_the_rectification_deadline_counts_from_the_bad_rating() -> None:
    case = _case_received(cst(2026, 3, 2, 10))
    with step_time(cst(2026, 3, 2, 15)):
        _conclude(case)
        case.deliver(TOWNSHIP_HALL, DeliveryMethod.WINDOW, "")
        case.rate(TOWNSHIP_HALL, Rating.NOT_SATISFIED, "等太久", rectification_days=15)
    # 15 working days from Tuesday, March 3rd: due at the end of Monday, March 23rd.
    assert warning_due(case, WarningKind.RECTIFICATION_OVERDUE) == cst(2026, 3, 24)
    with step_time(cst(2026, 3, 10, 9)):
        case.complete_rectification(TOWNSHIP_HALL, "已整改", "回访满意")
    assert warning_due(case, WarningKind.RECTIFICATION_OVERDUE) is None


def test_each_kind_of_warning_is_recorded_once() -> None:
    case = _case_received(cst(2026, 3, 2, 10))
    case.record_warning(WarningKind.RED, cst(2026, 3, 10), cst(2026, 3, 10, 0, 5))
    assert case.warnings == (WarningKind.RED,)
    with pytest.raises(TransitionRefused, match="RED is recorded"):
        case.record_warning(WarningKind.RED, cst(2026, 3, 10), cst(2026, 3, 10, 0, 6))
    # The node's act does not count as a hall's step.
    assert case.last_step_at == cst(2026, 3, 2, 10)

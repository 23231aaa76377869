"""预约办 in the node's application: booking, cancelling, receiving and expiring appointments.

:class:`~hub.application.hub.HubApplication` runs the signed commands (``book_appointment``,
``cancel_appointment``, and a ``submit`` citing an appointment) through its usual steps — parse,
signer, signature, node, retry, time — and then calls the functions here, which decide and
return the aggregates to save with the command's record. The node's own act, the expiry of an
appointment nobody came to, is :func:`record_expiry` (called by the supervisor).

See ``docs/appointments.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

from hub.application.openings import open_commitments
from hub.commands import model as cmd
from hub.commands.model import PersonalValue
from hub.domain.appointments import (
    APPOINTMENT_FIELDS,
    HOME_VISIT_SLOT,
    MAX_ORDINAL,
    Appointment,
    AppointmentKind,
    AppointmentState,
    appointment_id,
)
from hub.domain.hall import Hall
from hub.domain.values import Actor, Applicant
from hub.errors import InvalidInput, NotFound, PermissionRefused, SlotTaken

#: Loads an aggregate by id (None when there is none).
Loader = Callable[[UUID], Any]

_PREFIX = "command.book_appointment"


def open_booking(
    action: cmd.BookAppointment, personal: Sequence[PersonalValue]
) -> tuple[Applicant, str, dict[str, bytes]]:
    """The clear applicant, address ("" for a window) and salts of a booking, each value
    opening the commitment the hall signed; InvalidInput naming the value at fault otherwise."""
    commitments = action.applicant
    wanted = tuple(
        f"book_appointment.applicant.{name}"
        for name in APPOINTMENT_FIELDS
        if getattr(commitments, name)
    )
    opened = open_commitments(commitments, wanted, personal)
    values = dict(opened.values)
    address = values.pop("address", "")
    if len(address) > 256:
        raise opened.refuse("book_appointment.applicant.address", "at most 256 characters")
    try:
        applicant = Applicant(**values)
    except InvalidInput as error:
        raise opened.refuse(f"book_appointment.{error.field}", error.reason) from None
    return applicant, address, opened.salts


def slot_of(hall: Hall, action: cmd.BookAppointment) -> tuple[str, str]:
    """The booked window (a window booking; its first when empty) and the slot's name."""
    if action.kind is AppointmentKind.HOME_VISIT:
        if action.window:
            raise InvalidInput(f"{_PREFIX}.window", action.window, "a home visit has no window")
        return "", HOME_VISIT_SLOT
    hall.check_window(action.window, f"{_PREFIX}.window")
    window = action.window or hall.windows[0]
    return window, window


def free_ordinal(load: Loader, hall_id: str, slot: str, starts_at: datetime) -> int:
    """The ordinal under which the slot is free: the first never booked, after bookings that
    were cancelled. SlotTaken when the slot is booked (or was used: received or expired)."""
    for ordinal in range(1, MAX_ORDINAL + 1):
        existing = load(appointment_id(hall_id, slot, starts_at, ordinal))
        if existing is None:
            return ordinal
        if existing.state is not AppointmentState.CANCELLED:
            raise SlotTaken(f"the slot {slot} at {starts_at.isoformat()} is already booked")
    raise SlotTaken(f"the slot {slot} at {starts_at.isoformat()} was cancelled too often")


def check_booking_hall(actor: Actor, action: cmd.BookAppointment) -> None:
    """A hall books at its own windows (and home visits) only."""
    if action.hall_id and action.hall_id != actor.hall_id:
        # Never names the other hall: the refusal only says whose windows may be booked.
        raise PermissionRefused(actor.hall_id, "a hall books appointments at its own windows only")
    if not action.hall_id:
        raise InvalidInput(f"{_PREFIX}.hall_id", "", "name the hall that serves the slot")


def appointment_for_hall(load: Loader, text: str, hall_id: str, field: str) -> Appointment:
    """The appointment ``text`` names, if it is ``hall_id``'s; the same NotFound otherwise."""
    try:
        wanted = UUID(text)
    except ValueError:
        raise InvalidInput(field, text, "not a UUID") from None
    if str(wanted) != text:
        raise InvalidInput(field, text, f"write the appointment id as the node gave it: {wanted}")
    appointment = load(wanted)
    if not isinstance(appointment, Appointment) or appointment.hall_id != hall_id:
        raise NotFound("appointment", wanted)  # as for none: never reveal another hall's
    return appointment


def check_applicant(booked: Applicant | None, arriving: Applicant, field: str) -> None:
    """The applicant received is the one who booked (by ID number; never echoed)."""
    if booked is not None and booked.id_number != arriving.id_number:
        raise InvalidInput(field, "<redacted>", "the appointment was booked for another applicant")


__all__ = [
    "appointment_for_hall",
    "check_applicant",
    "check_booking_hall",
    "free_ordinal",
    "open_booking",
    "slot_of",
]

"""``CaseExchange.ListAppointments`` (预约办): a hall's appointments of one day.

Read from the ``appointments`` projection. A hall reads its own appointments, with the applicant's
name, phone and (home visit) address in clear — opened from the sealed values in the log, never
after erasure. Asking for another hall's is NOT_FOUND, the same as for a hall that does not
exist, so a hall learns nothing of another's; a retired hall reads nothing (PERMISSION_DENIED),
whatever its certificate says. A supervisor reads the halls of its region and an
auditor every hall, both without personal data.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from uuid import UUID

from tongban.v1 import case_exchange_pb2

from hub.api.convert import timestamp_to_proto
from hub.api.errors import guard
from hub.api.servicer import Authenticator, Caller
from hub.commands.wire import enum_from_proto, enum_to_proto
from hub.domain.appointments import AppointmentKind, AppointmentState, BookingChannel
from hub.domain.regions import RegionCode
from hub.errors import InvalidInput, NotFound
from hub.pki import Role
from hub.projections import queries
from hub.projections.appointments import AppointmentRow, appointments_of_day


def parse_day(text: str, field: str = "day") -> date:
    """A ``YYYY-MM-DD`` day; InvalidInput naming ``field`` otherwise."""
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InvalidInput(field, text, "a day is written YYYY-MM-DD") from None


def _scope(app: Any, caller: Caller, hall_id: str) -> str:
    """The hall whose appointments the caller reads; NOT_FOUND for any it may not read."""
    caller.require(Role.HALL, Role.SUPERVISOR, Role.AUDITOR)
    if caller.role is Role.HALL:
        wanted = hall_id or caller.name or ""
        if wanted != caller.name:
            raise NotFound("hall", wanted)  # as for a hall that does not exist
        if caller.name is not None:
            app.reading_hall(caller.name)  # a retired hall reads nothing, as for its queue
        return wanted
    if not hall_id:
        raise InvalidInput("hall_id", hall_id, "name the hall whose appointments to list")
    if caller.role is Role.SUPERVISOR and caller.identity is not None:
        try:
            region = RegionCode(app.get_hall(hall_id).region)
        except NotFound:
            raise NotFound("hall", hall_id) from None
        if not RegionCode.parse(caller.identity.region).contains(region):
            raise NotFound("hall", hall_id)
    return hall_id


def appointment_view(row: AppointmentRow, opened: Any = None) -> case_exchange_pb2.AppointmentView:
    """One appointment on the wire; the applicant only when ``opened`` is given."""
    view = case_exchange_pb2.AppointmentView(
        appointment_id=row.appointment_id,
        hall_id=row.hall_id,
        item_code=row.item_code,
        item_name=row.item_name,
        kind=enum_to_proto(AppointmentKind[row.kind]),
        window=row.window,
        starts_at=timestamp_to_proto(row.starts_at),
        ends_at=timestamp_to_proto(row.ends_at),
        state=enum_to_proto(AppointmentState[row.state]),
        channel=enum_to_proto(BookingChannel[row.channel]),
        agent=row.agent,
        case_id=row.case_id,
    )
    if opened is not None:
        view.applicant_name = opened.applicant.name
        view.applicant_phone = opened.applicant.phone
        view.address = opened.extra.get("address", "")
    return view


def list_appointments(
    app: Any, access: Any, authenticate: Authenticator, request: Any, context: Any
) -> Any:
    """ListAppointments (see the .proto and the module docstring)."""

    def run() -> case_exchange_pb2.ListAppointmentsResponse:
        caller = Caller(authenticate(context))
        hall_id = _scope(app, caller, request.hall_id)
        day = parse_day(request.day)
        state = ""
        if request.state:
            state = enum_from_proto(AppointmentState, request.state, "state").name
        access.check()
        rows = appointments_of_day(access.store, hall_id, day, state)
        views = []
        for row in rows:
            opened = None
            if caller.role is Role.HALL:  # the hall itself (never without TLS, nor others)
                opened = app.open_appointment(app.get_appointment(UUID(row.appointment_id)))
            views.append(appointment_view(row, opened))
        return case_exchange_pb2.ListAppointmentsResponse(
            appointments=views, position=queries.position(access.store, "appointments")
        )

    return guard(context, run)


__all__ = ["appointment_view", "list_appointments", "parse_day"]

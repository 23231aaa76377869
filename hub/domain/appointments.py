"""The ``Appointment`` aggregate (预约办): a booked slot at a hall's window, or a home visit.

A hall books a slot for an item on behalf of whoever asked for it — a citizen through the online
hall or by phone, an agent (代办员), or the clerk at the window (:class:`BookingChannel`). The slot
is at one of the hall's windows, or a home visit (上门办) at the applicant's address, from
``starts_at`` to ``ends_at``. The applicant is held exactly like a case's: the hall signed salted
commitments (name, ID number, phone, and for a home visit the address) and the clear values are
sealed under a key of the appointment's own.

An appointment then ends in one of three ways, each an event of its own:

* :class:`Appointment.Received` — the applicant was received: the submission of the case cites
  the appointment, and the same command records the case's id here;
* :class:`Appointment.Cancelled` — the hall cancelled it (the applicant asked, or the hall
  cannot keep it);
* :class:`Appointment.Expired` — nobody came: the node itself records it once the slot is over
  (a node act, like the 电子监察 warnings), which is what the statistics count as a no-show.

Whatever its state, an admin may crypto-shred an appointment's personal data (``tongban erase
--id-number``): :class:`Appointment.PersonalDataErased` records it, and the node drops the key
its applicant (and address) were sealed under, exactly as for a case.

Slots are unique: an appointment's id follows from its hall, window (or home visit), start and
an ordinal (:func:`appointment_id`), so two bookings of one slot collide on the event store's
key, and a cancelled slot is booked again under the next ordinal.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from hub.domain.values import _SHA256_HEX, Actor, ApplicantCommitments, SealedApplicant
from hub.errors import InvalidInput, PermissionRefused, TransitionRefused

#: The slot name of a home visit (上门办) in an appointment's id, in place of a window.
HOME_VISIT_SLOT = "上门办"
#: How many times one slot may be booked again after cancellations.
MAX_ORDINAL = 50
#: The personal fields of a booking, by wire path (the address only for a home visit).
APPOINTMENT_FIELDS = ("name", "id_number", "phone", "address")


class AppointmentKind(enum.Enum):
    """Where the applicant is served."""

    WINDOW = "WINDOW"  # at one of the hall's windows
    HOME_VISIT = "HOME_VISIT"  # 上门办: at the applicant's address


class BookingChannel(enum.Enum):
    """Who asked for the slot (the hall signs the booking in every case)."""

    ONLINE = "ONLINE"  # the applicant, through the online hall (网上预约)
    PHONE = "PHONE"  # the applicant, by phone (电话预约)
    AGENT = "AGENT"  # an agent (代办员) for the applicant
    WINDOW = "WINDOW"  # the clerk at the window (现场预约)


class AppointmentState(enum.Enum):
    """Where an appointment stands."""

    BOOKED = "BOOKED"
    RECEIVED = "RECEIVED"  # the applicant came: a case cites it
    CANCELLED = "CANCELLED"
    EXPIRED = "EXPIRED"  # the slot is over and nobody came (a no-show)


@dataclass(frozen=True)
class AppointmentCommitments:
    """What a hall signs of an appointment's applicant: one salted commitment per field (hex);
    ``address`` is empty for a window booking (see :mod:`hub.domain.commitments`)."""

    name: str
    id_number: str
    phone: str
    address: str

    def __post_init__(self) -> None:
        for field in APPOINTMENT_FIELDS:
            value = getattr(self, field)
            if field == "address" and not value:
                continue
            if not _SHA256_HEX.fullmatch(value):
                raise InvalidInput(
                    f"applicant.{field}", value, "a commitment is 32 bytes (SHA-256)"
                )

    @property
    def applicant(self) -> ApplicantCommitments:
        """The name, ID number and phone commitments (as a case's applicant holds them)."""
        return ApplicantCommitments(self.name, self.id_number, self.phone)


def appointment_id(hall_id: str, slot: str, starts_at: datetime, ordinal: int) -> UUID:
    """The id of the ``ordinal``-th booking of a slot (a window, or :data:`HOME_VISIT_SLOT`)."""
    return uuid5(
        NAMESPACE_URL,
        f"tongban:appointment:{hall_id}:{slot}:{starts_at.isoformat()}:{ordinal}",
    )


class Appointment(Aggregate):
    """One booked slot for one applicant and one item (see the module docstring)."""

    class Booked(Aggregate.Created):
        """预约: the hall booked the slot."""

        actor: Actor
        item_code: str
        item_name: str
        kind: AppointmentKind
        window: str  # the window (a window booking); empty for a home visit
        starts_at: datetime
        ends_at: datetime
        applicant: SealedApplicant
        address: str  # the commitment to the home visit's address (hex); empty for a window
        channel: BookingChannel
        agent: str  # the agent who asked (empty: none)
        ordinal: int  # the how-many-th booking of this slot (after cancellations)

        def apply(self, aggregate: Appointment) -> None:
            aggregate.state = AppointmentState.BOOKED
            aggregate.hall_id = self.actor.hall_id
            aggregate.region = self.actor.region
            aggregate.item_code = self.item_code
            aggregate.item_name = self.item_name
            aggregate.kind = self.kind
            aggregate.window = self.window
            aggregate.starts_at = self.starts_at
            aggregate.ends_at = self.ends_at
            aggregate.applicant = self.applicant
            aggregate.address = self.address
            aggregate.channel = self.channel
            aggregate.agent = self.agent
            aggregate.booked_at = self.timestamp

    class Received(Aggregate.Event):
        """The applicant was received: the case ``case_id`` was taken in for it."""

        actor: Actor
        case_id: UUID

        def apply(self, aggregate: Appointment) -> None:
            aggregate.state = AppointmentState.RECEIVED
            aggregate.case_id = self.case_id

    class Cancelled(Aggregate.Event):
        """The hall cancelled the appointment."""

        actor: Actor
        reason: str

        def apply(self, aggregate: Appointment) -> None:
            aggregate.state = AppointmentState.CANCELLED
            aggregate.closing_reason = self.reason

    class Expired(Aggregate.Event):
        """Nobody came: the node recorded, after the slot's end (``due_at``), that it lapsed.

        A node act (its ledger leaf has the NODE authority): anyone can check it from the
        appointment's own history — still booked, ``due_at`` its slot's end, no later than the
        event's own time.
        """

        due_at: datetime

        def apply(self, aggregate: Appointment) -> None:
            aggregate.state = AppointmentState.EXPIRED

    class PersonalDataErased(Aggregate.Event):
        """An admin crypto-shredded the appointment's personal data (its sealed applicant and
        address): the node dropped their key. Not a hall's act: the admin is named by ``admin``.
        """

        admin: str
        reason: str

        def apply(self, aggregate: Appointment) -> None:
            aggregate.personal_data_erased = True

    def __init__(self) -> None:
        # Set by Booked.apply; declared here for readers and type checkers.
        self.state = AppointmentState.BOOKED
        self.hall_id = ""
        self.region = ""
        self.item_code = ""
        self.item_name = ""
        self.kind = AppointmentKind.WINDOW
        self.window = ""
        self.starts_at: datetime | None = None
        self.ends_at: datetime | None = None
        self.applicant: SealedApplicant | None = None
        self.address = ""
        self.channel = BookingChannel.ONLINE
        self.agent = ""
        self.booked_at: datetime | None = None
        self.case_id: UUID | None = None
        self.closing_reason = ""
        self.personal_data_erased = False

    # ---------------------------------------------------------------- commands

    @classmethod
    def book(
        cls,
        *,
        actor: Actor,
        item_code: str,
        item_name: str,
        kind: AppointmentKind,
        window: str,
        starts_at: datetime,
        ends_at: datetime,
        applicant: SealedApplicant,
        address: str,
        channel: BookingChannel,
        agent: str,
        ordinal: int,
        now: datetime,
        timestamp: datetime,
    ) -> Appointment:
        """预约: book the slot; ``now`` is the node's time (a slot that has begun is refused)."""
        check_slot(starts_at, ends_at, now)
        if kind is AppointmentKind.HOME_VISIT and not address:
            raise InvalidInput("applicant.address", "", "a home visit needs the address")
        if kind is AppointmentKind.WINDOW and address:
            raise InvalidInput("applicant.address", "<redacted>", "only a home visit has one")
        if channel is BookingChannel.AGENT and not agent.strip():
            raise InvalidInput("agent", agent, "name the agent who booked (channel AGENT)")
        slot = window if kind is AppointmentKind.WINDOW else HOME_VISIT_SLOT
        return cls._create(
            cls.Booked,
            id=appointment_id(actor.hall_id, slot, starts_at, ordinal),
            timestamp=timestamp,
            actor=actor,
            item_code=item_code,
            item_name=item_name,
            kind=kind,
            window=window if kind is AppointmentKind.WINDOW else "",
            starts_at=starts_at,
            ends_at=ends_at,
            applicant=applicant,
            address=address,
            channel=channel,
            agent=agent,
            ordinal=ordinal,
        )

    def receive(self, actor: Actor, case_id: UUID, item_code: str, timestamp: datetime) -> None:
        """The applicant came: the case ``case_id`` (for ``item_code``) was taken in for it."""
        self._check_hall(actor)
        self._check_booked("receive")
        if item_code != self.item_code:
            raise InvalidInput(
                "appointment_id", str(self.id), f"the appointment is for item {self.item_code}"
            )
        self.trigger_event(self.Received, actor=actor, case_id=case_id, timestamp=timestamp)

    def cancel(self, actor: Actor, reason: str, timestamp: datetime) -> None:
        """The hall cancels the appointment, saying why."""
        self._check_hall(actor)
        self._check_booked("cancel")
        if not reason.strip():
            raise InvalidInput("reason", reason, "say why the appointment is cancelled")
        self.trigger_event(self.Cancelled, actor=actor, reason=reason, timestamp=timestamp)

    def expire(self, now: datetime) -> None:
        """Record that nobody came; refused before the slot's end or when not booked."""
        self._check_booked("expire")
        due = self.expiry_due()
        if due is None or now < due:
            raise InvalidInput(
                "appointment_id", str(self.id), "the slot is not over yet: it cannot expire"
            )
        self.trigger_event(self.Expired, due_at=due, timestamp=max(now, due))

    def erase_personal_data(self, admin: str, reason: str, timestamp: datetime) -> None:
        """Record that an admin crypto-shredded the applicant's data (once, in any state)."""
        if self.personal_data_erased:
            raise TransitionRefused("erase_personal_data", self.state.name, "already erased")
        if not reason.strip():
            raise InvalidInput("reason", reason, "say why the personal data is erased")
        self.trigger_event(self.PersonalDataErased, admin=admin, reason=reason, timestamp=timestamp)

    # ---------------------------------------------------------------- checks

    def expiry_due(self) -> datetime | None:
        """When a booked appointment lapses (its slot's end); None when it is not booked."""
        return self.ends_at if self.state is AppointmentState.BOOKED else None

    def check_expiry(self, event: Any) -> str | None:
        """Why ``event`` (an :class:`Expired`) is not justified by this history; None if it is."""
        due = self.expiry_due()
        if due is None:
            return f"an expiry of an appointment that is {self.state.name}"
        if event.due_at != due:
            return f"the expiry says due at {event.due_at.isoformat()}, the slot ends {due}"
        if event.timestamp < due:
            return f"an expiry recorded at {event.timestamp.isoformat()}, before the slot ended"
        return None

    def _check_hall(self, actor: Actor) -> None:
        if actor.hall_id != self.hall_id:
            # The caller checked this before revealing the appointment; a second line of defence.
            raise PermissionRefused(actor.hall_id, "the appointment is at another hall")

    def _check_booked(self, command: str) -> None:
        if self.state is not AppointmentState.BOOKED:
            raise TransitionRefused(command, self.state.name)


def check_slot(starts_at: datetime, ends_at: datetime, now: datetime) -> None:
    """A bookable slot: it has not begun at ``now`` and ends after it starts (at most a day)."""
    if starts_at <= now:
        raise InvalidInput(
            "starts_at",
            starts_at.isoformat(),
            f"the slot begins in the past (the node's time is {now.isoformat(timespec='seconds')})",
        )
    if ends_at <= starts_at:
        raise InvalidInput("ends_at", ends_at.isoformat(), "the slot must end after it starts")
    if (ends_at - starts_at).total_seconds() > 24 * 3600:
        raise InvalidInput("ends_at", ends_at.isoformat(), "a slot lasts at most one day")


__all__ = [
    "APPOINTMENT_FIELDS",
    "HOME_VISIT_SLOT",
    "Appointment",
    "AppointmentCommitments",
    "AppointmentKind",
    "AppointmentState",
    "BookingChannel",
    "appointment_id",
    "check_slot",
]

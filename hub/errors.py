"""The hub's one error hierarchy.

Every error the hub raises on purpose is a :class:`TongbanError`. Each boundary maps these once:
the gRPC servicer has one table from these classes to status codes, the CLI one table to exit
codes. Messages name the input at fault (field and value) so a clerk or an operator can act.
"""

from __future__ import annotations


class TongbanError(Exception):
    """Base class of every deliberate error raised by the hub."""


class InvalidInput(TongbanError):
    """A field of a command is malformed, unknown or out of range. Maps to INVALID_ARGUMENT."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        super().__init__(f"{field}={value!r}: {reason}")

    def within(self, action: str) -> InvalidInput:
        """This error with its field as a full wire path inside ``command.<action>``.

        The domain names fields by their own names (``to_hall``, ``materials[0].sha256``); the
        client sent ``command.hand_off.to_hall``. Already full paths are kept.
        """
        if self.field.startswith(("command", "personal", "request")):
            return self
        field = _WIRE_ALIASES.get(self.field, self.field)
        return InvalidInput(f"command.{action}.{field}", self.value, self.reason)


#: Domain field names that are not the wire field a client sent.
_WIRE_ALIASES = {"to_region": "to_hall", "item": "case_id"}


class NotFound(TongbanError):
    """A case, hall or other addressed thing does not exist. Maps to NOT_FOUND."""

    def __init__(self, kind: str, key: object) -> None:
        self.kind = kind
        self.key = key
        super().__init__(f"{kind} {key!s} not found")


class TransitionRefused(TongbanError):
    """The case's state machine does not allow this command now. Maps to FAILED_PRECONDITION."""

    def __init__(self, command: str, state: str, detail: str = "") -> None:
        self.command = command
        self.state = state
        self.detail = detail
        message = f"command {command!r} is not allowed in state {state}"
        super().__init__(f"{message}: {detail}" if detail else message)


class CheckMissing(TransitionRefused):
    """A case is not accepted while an identity check its item requires has not passed.

    Maps to FAILED_PRECONDITION; ``check`` names the method (e.g. ``LIVENESS``).
    """

    def __init__(self, command: str, state: str, check: str, item_code: str) -> None:
        super().__init__(
            command,
            state,
            f"item {item_code} requires the identity check {check}, which has not passed",
        )
        self.check = check
        self.item_code = item_code


class PermissionRefused(TongbanError):
    """The acting hall may not do this (wrong level, not the holder, retired). PERMISSION_DENIED."""

    def __init__(self, hall_id: str, reason: str) -> None:
        self.hall_id = hall_id
        self.reason = reason
        super().__init__(f"hall {hall_id}: {reason}")


class SignatureRefused(TongbanError):
    """A hall's command signature is missing, wrong, or made with a key not accepted now.

    Maps to UNAUTHENTICATED.
    """

    def __init__(self, hall_id: str, reason: str) -> None:
        self.hall_id = hall_id
        self.reason = reason
        super().__init__(f"hall {hall_id}: signature refused: {reason}")


class AlreadyExists(TongbanError):
    """Something with this identity exists already. Maps to ALREADY_EXISTS."""


class IdempotencyConflict(AlreadyExists):
    """An idempotency key was reused with a different command or payload. Maps to ALREADY_EXISTS."""

    def __init__(self, key: str, detail: str) -> None:
        self.key = key
        super().__init__(f"idempotency key {key!r} was already used {detail}")


class SlotTaken(AlreadyExists):
    """预约办: the slot is already booked (by another booking). Maps to ALREADY_EXISTS."""


class ConcurrencyConflict(TongbanError):
    """Another writer changed the same aggregate first; the caller may retry. Maps to ABORTED."""


class StorageUnavailable(TongbanError):
    """The event store cannot be reached. Maps to UNAVAILABLE."""


class ConfigurationError(TongbanError):
    """Settings or package data are wrong; raised at start-up, naming the entry and field."""


class IntegrityViolation(TongbanError):
    """A stored event is not what the log may hold (no authorising signed command, a command
    that does not ask for it, a forbidden transition ...). The ledger integrator stops on one
    rather than signing it into the log. Maps to DATA_LOSS.
    """

    def __init__(self, index: int, notification_id: int | None, problems: list[str]) -> None:
        self.index = index
        self.notification_id = notification_id
        self.problems = problems
        where = f"notification {notification_id}" if notification_id is not None else "event"
        super().__init__(f"{where} (would be leaf {index}): {'; '.join(problems)}")


class StoreMismatch(TongbanError):
    """The data directory's keys or checkpoint do not belong with this store (a restored backup,
    another node's store, a forked log). Raised at start-up or before signing; maps to
    FAILED_PRECONDITION, and the CLI exits with a message saying what happened.
    """


class MaterialDamaged(TongbanError):
    """A stored material file no longer reads back as the bytes of its digest (a chunk missing,
    altered or not decrypting). Maps to DATA_LOSS."""

    def __init__(self, sha256: str, detail: str) -> None:
        self.sha256 = sha256
        self.detail = detail
        super().__init__(f"material {sha256} is damaged in this node's store: {detail}")


class PeerUnavailable(TongbanError):
    """A peer node could not be reached, or refused a call as a whole (its address, this node's
    peer certificate, the peer's CA). Nothing was lost; try again later. Maps to UNAVAILABLE."""

    def __init__(self, peer: str, detail: str) -> None:
        self.peer = peer
        self.detail = detail
        super().__init__(f"peer {peer}: {detail}")


class CalendarUnknown(TongbanError):
    """A working-day count reaches a date beyond the years the official holiday calendar knows.

    The State Council publishes each year's holidays and adjusted working days late in the year
    before; until the calendar library is updated, no deadline in that year can be computed, and
    the node says so instead of guessing. Maps to FAILED_PRECONDITION.
    """

    def __init__(self, day: object, first_year: int, last_year: int) -> None:
        self.day = str(day)
        self.first_year = first_year
        self.last_year = last_year
        super().__init__(
            f"the official working-day calendar knows {first_year}-{last_year} only, not "
            f"{day}: update the chinese-calendar package (the State Council publishes each "
            "year's holidays late in the year before)"
        )


class ProjectionFailed(TongbanError):
    """A projection could not apply an event: it stopped there (it never skips one).

    Names the projection and the notification id, so an operator can look at the event, fix the
    cause and restart (or rebuild) the projection. The node's health turns NOT_SERVING with this
    message. Maps to UNAVAILABLE for queries that need the projection.
    """

    def __init__(self, projection: str, notification_id: int, reason: str) -> None:
        self.projection = projection
        self.notification_id = notification_id
        self.reason = reason
        super().__init__(
            f"projection {projection!r} stopped at notification {notification_id}: {reason}"
        )

"""The hall registry's aggregate: a service hall (大厅) with its windows and signing key.

A hall is registered with its region, level, windows and an Ed25519 public key; its key rotates
(old keys stay on record so signatures made with them can still be checked by auditors, but they
are no longer accepted for new commands); a retired hall can no longer act.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import re
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from hub.domain.regions import Level, RegionCode
from hub.domain.values import Actor, HallKind
from hub.errors import InvalidInput, PermissionRefused, TransitionRefused

_HALL_ID = re.compile(r"^[a-z0-9][a-z0-9.-]{2,63}$")
ED25519_PUBLIC_KEY_BYTES = 32


@functools.lru_cache(maxsize=65_536)  # asked on every command a hall signs
def hall_aggregate_id(hall_id: str) -> UUID:
    """Halls are addressed by their id; the aggregate id is derived from it."""
    return uuid5(NAMESPACE_URL, f"tongban:hall:{hall_id}")


def decode_public_key(text: str, field: str = "public_key") -> bytes:
    """Decode a base64 Ed25519 public key, naming ``field`` when it is malformed."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(field, text, "not base64") from None
    if len(raw) != ED25519_PUBLIC_KEY_BYTES:
        raise InvalidInput(field, text, f"an Ed25519 public key has 32 bytes, got {len(raw)}")
    return raw


def key_id(public_key_b64: str) -> str:
    """A signing key's id: hex of the first 8 bytes of SHA-256 of the raw 32-byte key.

    Halls' and admins' command-signing keys are named by it in the ledger's leaves.
    """
    return hashlib.sha256(decode_public_key(public_key_b64)).hexdigest()[:16]


class Hall(Aggregate):
    """A service place at one region: village service room, township hall, county hall ..."""

    class Registered(Aggregate.Created):
        """A hall joined the node."""

        hall_id: str
        name: str
        region: str
        windows: tuple[str, ...]
        public_key: str
        #: A staffed hall (UNSPECIFIED, as before kinds existed) or a self-service kiosk.
        kind: HallKind = HallKind.UNSPECIFIED

        def apply(self, aggregate: Hall) -> None:
            aggregate.kind = self.kind
            aggregate.hall_id = self.hall_id
            aggregate.name = self.name
            aggregate.region = self.region
            aggregate.windows = tuple(self.windows)
            aggregate.public_keys = (self.public_key,)

    class KeyRotated(Aggregate.Event):
        """A new signing key replaces the current one."""

        public_key: str

        def apply(self, aggregate: Hall) -> None:
            aggregate.public_keys = (*aggregate.public_keys, self.public_key)

    class Retired(Aggregate.Event):
        """The hall no longer acts."""

        reason: str

        def apply(self, aggregate: Hall) -> None:
            aggregate.retired = True

    class WindowStaffed(Aggregate.Event):
        """AB岗: who serves a window (its A post, and its B post when the A post is absent).

        The hall signs it itself (an operator marking the A post absent sends it again).
        """

        actor: Actor
        window: str
        a_post: str
        b_post: str
        a_post_absent: bool
        # No state of the aggregate changes: who serves a window is read from the projection's
        # rosters (hub.projections.queries.rosters), which the supervisor and the halls query.

    def __init__(self) -> None:
        self.hall_id = ""
        self.name = ""
        self.region = ""
        self.windows: tuple[str, ...] = ()
        self.public_keys: tuple[str, ...] = ()
        self.retired = False
        self.kind = HallKind.UNSPECIFIED

    @classmethod
    def register(
        cls,
        *,
        hall_id: str,
        name: str,
        region: RegionCode,
        windows: tuple[str, ...],
        public_key: str,
        kind: HallKind = HallKind.UNSPECIFIED,
    ) -> Hall:
        """Register a hall (or a kiosk: ``kind``); the level is the level of its region."""
        if not _HALL_ID.fullmatch(hall_id):
            raise InvalidInput("hall_id", hall_id, "use 3-64 of a-z, 0-9, '.', '-'")
        if not name.strip():
            raise InvalidInput("name", name, "must not be empty")
        if not windows or any(not w.strip() for w in windows):
            raise InvalidInput("windows", list(windows), "name at least one window")
        decode_public_key(public_key)
        return cls._create(
            cls.Registered,
            id=hall_aggregate_id(hall_id),
            hall_id=hall_id,
            name=name,
            region=region.value,
            windows=tuple(windows),
            public_key=public_key,
            kind=kind,
        )

    @property
    def level(self) -> Level:
        """The hall's level is its region's level."""
        return RegionCode(self.region).level

    @property
    def current_key(self) -> str:
        """The key accepted for new commands (base64)."""
        return self.public_keys[-1]

    def rotate_key(self, public_key: str) -> None:
        """Replace the signing key; the old one is kept for verifying old signatures."""
        if self.retired:
            raise TransitionRefused("rotate_key", "RETIRED")
        decode_public_key(public_key)
        if public_key in self.public_keys:
            raise InvalidInput("public_key", public_key, "this key was already used by the hall")
        self.trigger_event(self.KeyRotated, public_key=public_key)

    def staff_window(
        self, actor: Actor, window: str, a_post: str, b_post: str, a_post_absent: bool
    ) -> None:
        """AB岗: set who serves ``window``; the hall itself signs this."""
        if actor.hall_id != self.hall_id:
            raise PermissionRefused(actor.hall_id, "a hall staffs its own windows only")
        self.check_window(window, "window")
        if not a_post.strip():
            raise InvalidInput("a_post", a_post, "name the operator of the A post")
        if not b_post.strip() or b_post == a_post:
            raise InvalidInput("b_post", b_post, "name another operator for the B post")
        self.trigger_event(
            self.WindowStaffed,
            actor=actor,
            window=window,
            a_post=a_post,
            b_post=b_post,
            a_post_absent=a_post_absent,
        )

    def check_window(self, window: str, field: str) -> None:
        """``window`` must be empty (the first window) or one of the hall's windows."""
        if window and window not in self.windows:
            raise InvalidInput(
                field, window, f"not a window of hall {self.hall_id} ({'、'.join(self.windows)})"
            )

    def retire(self, reason: str) -> None:
        """Retire the hall; it can no longer act."""
        if self.retired:
            raise TransitionRefused("retire", "RETIRED")
        if not reason.strip():
            raise InvalidInput("reason", reason, "must not be empty")
        self.trigger_event(self.Retired, reason=reason)

"""An offline-first adapter for a village service room (村便民服务室).

A village room's network is the least reliable link of the whole system: a shared 4G router, a
township line that goes down for an afternoon. Work at the window must not stop for that. So every
command is first written to a local SQLite **outbox** and acknowledged to the clerk at once; a
**forwarder** sends the queued commands to the node, in order, whenever the node can be reached.

Guarantees (see docs/adapters.md, "Village outbox"):

- **Nothing lost.** A command is committed to the outbox (SQLite WAL, ``synchronous=FULL``, so a
  power cut after the clerk saw "queued" does not lose it) before anything is sent, and stays
  until the node acknowledged it.
- **Nothing doubled.** A command is signed once and the whole ``SignedCommand`` is stored: its
  exact bytes, signature and the clear personal values beside them; a resend after a timeout, a
  crash or a restart sends exactly that again, with the same idempotency key, so the node returns
  its first result (``replayed``) instead of acting twice. The key is the caller's: the room's
  software passes its own (``--idem-key``), so that queuing itself may be retried, or asks for a
  fresh one (:func:`queue_key`), which the outbox stores with the command before anything is
  sent.
- **Deferred, with the clerk's time.** Every command is signed as *deferred*
  (``CommandHeader.deferred``) with ``issued_at`` = the time the clerk queued it, also when it is
  signed later (a follow-up waiting for its case id): the node accepts it when it arrives, up to
  its deferred-age limit (30 days by default), and records when the clerk acted.
- **No personal data signed.** A submit's applicant is kept in the outbox to sign it; the signed
  bytes hold only the SDK's salted commitments, the clear values travel beside them. Status
  output (:meth:`QueuedCommand.to_json`, :func:`describe`) never shows them.
- **Order.** Commands go out in the order they were queued. A transient failure (node down,
  timeout, busy: :data:`adapters.errors.RETRYABLE_CODES`) stops the pass and the forwarder backs
  off exponentially (the schedule of :class:`adapters.sdk.RetryPolicy`); nothing later overtakes
  the command that could not be delivered.
- **Refusals.** A command the node refuses for good (INVALID_ARGUMENT, FAILED_PRECONDITION,
  PERMISSION_DENIED, ...) is marked ``failed`` with the status and message. It does not block the
  commands of other cases. Later commands of the **same** case are *held* behind it: each was
  queued by a clerk who assumed the earlier step took effect (an 受理 after a refused 收件 makes no
  sense; an 办结 after a refused 决定 would record the wrong story), so they wait until the clerk
  retries the failed command (``retry``, e.g. after the hall's registration is fixed) or cancels
  it (``cancel``), which releases them.
- **Cases not yet known to the node.** A submission queued offline has no case id yet (the node
  assigns it). Commands are therefore addressed to a *local reference* (``ref``, the room's own
  登记号 or a generated ``V-…``): the outbox records, per reference, the case id from the submit's
  reply. A follow-up queued before that reply is stored unsigned with its body; when the submit is
  acknowledged, the forwarder fills in the case id, signs the command and stores the signed bytes
  in the outbox *before* the first send, so from then on every resend is byte-identical too.

The outbox is bound to one hall and one node (hall id, region and node origin, stored in the
file): its commands are that hall's signed statements for that node. An outbox of schema version
1 (which stored the applicant inside the submit's body and signed it in clear) is migrated in
place when opened: each submit's applicant moves to its own column, and commands not yet
acknowledged lose their old signature, so that they are signed under the current contract
(commitments, node, deferred) before they are sent.
"""

from __future__ import annotations

import hashlib
import json
import mimetypes
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import grpc
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from google.protobuf import json_format, unknown_fields
from google.protobuf.message import Message
from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.errors import ConfigError, InputError, NodeRefused
from adapters.sdk import (
    RPC_OF_ACTION,
    HallCredentials,
    RetryPolicy,
    check_idempotency_key,
    sign_command,
)

#: 2: the applicant in its own column, the whole SignedCommand stored; 1 is migrated on open.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- One row per local case reference: the lane its commands travel in, in order.
CREATE TABLE IF NOT EXISTS lanes (
    ref        TEXT PRIMARY KEY,
    case_id    TEXT,              -- the node's case id, once the submit is acknowledged
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS commands (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,   -- global queue order
    ref             TEXT NOT NULL REFERENCES lanes(ref),
    action          TEXT NOT NULL,                       -- wire action: submit, accept, ...
    idempotency_key TEXT NOT NULL UNIQUE,
    operator        TEXT NOT NULL,
    agent           TEXT NOT NULL DEFAULT '',            -- the hall's 代办员 who acted, or ''
    body            BLOB NOT NULL,    -- the action message: no case_id (until known), no applicant
    applicant       BLOB,             -- a submit's applicant in clear (tongban.v1.Applicant)
    signed          BLOB,             -- the SignedCommand (bytes, signature, personal values)
    status          TEXT NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed', 'cancelled')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    case_id         TEXT,
    version         INTEGER,
    replayed        INTEGER,
    error_code      TEXT,             -- last error (kept for pending commands too)
    error_message   TEXT,
    created_at      TEXT NOT NULL,
    last_attempt_at TEXT,
    sent_at         TEXT
);
CREATE INDEX IF NOT EXISTS commands_by_status ON commands (status, seq);
CREATE INDEX IF NOT EXISTS commands_by_ref ON commands (ref, seq);
-- Scanned material files, uploaded to the node before the first command that lists them.
-- (Added to version 2 files as they are opened: an older adapter ignores the table.)
CREATE TABLE IF NOT EXISTS files (
    sha256      TEXT PRIMARY KEY,
    path        TEXT NOT NULL,
    size        INTEGER NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending'
                CHECK (status IN ('pending', 'uploaded', 'failed')),
    error       TEXT,
    created_at  TEXT NOT NULL,
    uploaded_at TEXT
);
"""

#: The v1 ``commands`` columns copied as they are into v2 (``body``, ``applicant`` and ``signed``
#: are rewritten row by row).
_V1_KEPT = (
    "seq, ref, action, idempotency_key, operator, status, attempts, case_id, version, replayed,"
    " error_code, error_message, created_at, last_attempt_at, sent_at"
)

#: Statuses shown by ``status``: the four stored ones plus ``held`` (pending, but waiting behind a
#: failed command of the same case or for a case id that will not come).
STATUSES = ("pending", "held", "sent", "failed", "cancelled")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _awaits_case_id(row: sqlite3.Row) -> bool:
    """Whether a queued command cannot be signed yet: a follow-up whose case id is unknown."""
    return bool(row["signed"] is None and row["lane_case_id"] is None and row["action"] != "submit")


#: The actions a hall sends (the CaseExchange service's commands); the admin actions of the
#: same ``Command`` oneof (register_hall, ...) are the node admin's, never queued by a room.
HALL_ACTIONS = frozenset(
    action
    for action, rpc in RPC_OF_ACTION.items()
    if rpc in case_exchange_pb2.DESCRIPTOR.services_by_name["CaseExchange"].methods_by_name
)


def wire_message(action: str) -> Message:
    """An empty wire message of ``action`` (``"accept"`` → ``Accept()``)."""
    if action not in HALL_ACTIONS:
        raise InputError(
            "action", f"unknown action {action!r}; known: {', '.join(sorted(HALL_ACTIONS))}"
        )
    message: Message = type(getattr(case_exchange_pb2.Command(), action))()
    return message


class Signer:
    """Signs commands without a network connection.

    The SDK's :func:`adapters.sdk.sign_command` (what ``HallClient.sign`` uses) bound to this
    room's credentials: it needs no gRPC channel, so a clerk can queue commands offline. Every
    command is *deferred*: it reaches the node later than it was signed, and its ``issued_at``
    is the time the clerk acted.
    """

    def __init__(
        self,
        credentials: HallCredentials,
        agent_keys: Mapping[str, Ed25519PrivateKey] | None = None,
    ) -> None:
        self.credentials = credentials
        #: The room's agents who sign their own steps, by agent id: their private keys.
        self.agent_keys = dict(agent_keys or {})

    def sign(
        self,
        action: str,
        body: Message,
        *,
        idempotency_key: str,
        operator: str,
        issued_at: datetime | None = None,
        applicant: common_pb2.Applicant | None = None,
        agent: str = "",
    ) -> case_exchange_pb2.SignedCommand:
        """The signed, deferred command; ``issued_at`` defaults to now. A submit's
        ``applicant`` (in clear) is committed to by the SDK, with fresh random salts.
        ``agent``: the room's 代办员 who took the step (on a home visit, say); an agent with a
        key in ``agent_keys`` signs it with that key, any other step is signed by the hall."""
        return sign_command(
            self.credentials,
            action,
            body,
            idempotency_key=idempotency_key,
            operator=operator,
            issued_at=issued_at,
            deferred=True,
            applicant=applicant,
            agent=agent,
            agent_key=self.agent_keys.get(agent) if agent else None,
        )


@dataclass(frozen=True)
class QueuedCommand:
    """One outbox row, as the status query shows it."""

    seq: int
    ref: str
    action: str
    idempotency_key: str
    operator: str
    status: str
    attempts: int
    case_id: str
    version: int | None
    replayed: bool
    error_code: str
    error_message: str
    created_at: str
    sent_at: str
    signed: bool
    #: Why a pending command is held ("" when it is not).
    held_by: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (no personal data: bodies are not included)."""
        return {
            "seq": self.seq,
            "ref": self.ref,
            "action": self.action,
            "status": self.status,
            "attempts": self.attempts,
            "case_id": self.case_id,
            "version": self.version,
            "replayed": self.replayed,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "held_by": self.held_by,
            "idempotency_key": self.idempotency_key,
            "operator": self.operator,
            "created_at": self.created_at,
            "sent_at": self.sent_at,
            "signed": self.signed,
        }


class Outbox:
    """The local SQLite outbox of one hall. Safe to open from several processes at once."""

    def __init__(
        self,
        path: Path,
        credentials: HallCredentials,
        *,
        agent_keys: Mapping[str, Ed25519PrivateKey] | None = None,
    ) -> None:
        """Open (or create) the outbox; ``agent_keys``: the private keys of the room's agents
        who sign their own steps, by agent id (see :class:`Signer`)."""
        self.path = Path(path)
        self.credentials = credentials
        self.signer = Signer(credentials, agent_keys)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # Autocommit mode: every write is an explicit BEGIN IMMEDIATE ... COMMIT below, so a
            # writer takes the lock up front instead of failing half-way on an upgrade.
            self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
        except (OSError, sqlite3.Error) as error:
            raise ConfigError(f"cannot open the outbox {self.path}: {error}") from None
        try:
            self._open()
        except sqlite3.DatabaseError as error:
            self._db.close()
            raise ConfigError(f"{self.path} cannot be used as an outbox: {error}") from None
        except BaseException:
            self._db.close()
            raise

    def _open(self) -> None:
        """Set the connection up, migrate an old schema, bind the file to this hall."""
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives a power cut, not only a crash of this process.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA foreign_keys=ON")
        with self._write() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            )
            version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
            if version is not None and version["value"] == "1":
                self._migrate_v1(db)
            elif version is not None and version["value"] != str(SCHEMA_VERSION):
                raise ConfigError(
                    f"{self.path} is an outbox of schema version {version['value']}; this adapter "
                    f"reads version {SCHEMA_VERSION} (and migrates version 1): use the adapter "
                    "that wrote it"
                )
            for statement in filter(str.strip, _SCHEMA.split(";")):
                db.execute(statement)
            columns = {row["name"] for row in db.execute("PRAGMA table_info(commands)")}
            if "agent" not in columns:
                # Added to version 2 files as they are opened (an older adapter ignores it).
                db.execute("ALTER TABLE commands ADD COLUMN agent TEXT NOT NULL DEFAULT ''")
            self._bind_hall()

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _bind_hall(self) -> None:
        stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        wanted = {
            "schema_version": str(SCHEMA_VERSION),
            "hall_id": self.credentials.hall_id,
            "region": self.credentials.region,
            "node": self.credentials.node_origin,
        }
        for key, value in wanted.items():
            if key not in stored:
                # A new outbox, or one migrated from version 1 (which did not record the node).
                self._db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
            elif stored[key] != value:
                raise ConfigError(
                    f"{self.path} belongs to {key}={stored[key]!r}, not {value!r}: "
                    "an outbox holds one hall's signed commands for one node"
                )

    def _migrate_v1(self, db: sqlite3.Connection) -> None:
        """Version 1 → 2, in the open transaction (all or nothing).

        A v1 submit's body held the applicant in clear (the old ``SubmitCase.applicant``, field
        2, reserved now); it moves to the ``applicant`` column. The v1 signature covered bytes
        the current contract refuses (the applicant in clear, no node, not deferred), so a
        command the node has not acknowledged is left unsigned, to be signed anew (same key,
        body and time) before it is sent; acknowledged ones keep their record of what was sent.
        """
        db.execute("DROP INDEX IF EXISTS commands_by_status")
        db.execute("DROP INDEX IF EXISTS commands_by_ref")
        db.execute("ALTER TABLE commands RENAME TO commands_v1")
        for statement in filter(str.strip, _SCHEMA.split(";")):
            db.execute(statement)
        db.execute(
            f"INSERT INTO commands ({_V1_KEPT}, body) SELECT {_V1_KEPT}, body FROM commands_v1"
        )
        rows = db.execute("SELECT seq, action, status, body, command, signature FROM commands_v1")
        for row in rows.fetchall():
            body, applicant = bytes(row["body"]), None
            if row["action"] == "submit":
                body, applicant = _split_v1_submit(body)
            signed = None
            if row["status"] == "sent" and row["command"] is not None:
                signed = case_exchange_pb2.SignedCommand(
                    command=bytes(row["command"]), signature=bytes(row["signature"])
                ).SerializeToString()
            db.execute(
                "UPDATE commands SET body = ?, applicant = ?, signed = ? WHERE seq = ?",
                (body, applicant, signed, row["seq"]),
            )
        db.execute("DROP TABLE commands_v1")
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ queueing

    def submit(
        self,
        submit: case_exchange_pb2.SubmitCase,
        *,
        applicant: common_pb2.Applicant,
        ref: str = "",
        operator: str,
        idempotency_key: str,
        files: Sequence[tuple[common_pb2.Material, Path]] = (),
        agent: str = "",
    ) -> QueuedCommand:
        """Queue a 收件 under a new local reference (generated when not given).

        ``applicant`` is the applicant in clear; the outbox keeps it to sign the submit, whose
        signed bytes carry only commitments to it (any ``submit.applicant`` is replaced).

        ``files``: the scanned files of materials the submit lists (:func:`material_from_file`
        made the references), recorded in the same transaction; the forwarder uploads each to
        the node before it sends the submit.

        ``idempotency_key`` is required: the room's own key for this act, or :func:`queue_key`.
        Queuing the same act again — the same room key, or the same reference, with the same
        content — returns the queued command, so the room's software may retry its own call;
        other content under a used key or reference is refused.
        """
        if ref and _is_uuid(ref):
            raise InputError("ref", f"{ref!r}: a local reference must not look like a case id")
        key = check_idempotency_key(idempotency_key)
        message = case_exchange_pb2.SubmitCase()
        message.CopyFrom(submit)
        message.ClearField("applicant")
        body = message.SerializeToString(deterministic=True)
        person = applicant.SerializeToString(deterministic=True)
        with self._write() as db:
            queued = db.execute(
                "SELECT ref, action FROM commands WHERE idempotency_key = ?", (key,)
            ).fetchone()
            if queued is not None:
                # The room's key names the act: a retry without its reference finds it too.
                if queued["action"] != "submit" or (ref and ref != queued["ref"]):
                    raise InputError(
                        "idempotency_key", f"{key!r} is already queued for another command"
                    )
                ref = queued["ref"]
            ref = ref or f"V-{uuid.uuid4().hex[:16]}"
            existing = db.execute(
                "SELECT seq, body, applicant FROM commands WHERE ref = ? AND action = 'submit'",
                (ref,),
            ).fetchone()
            if existing is not None:
                if bytes(existing["body"]) != body or bytes(existing["applicant"] or b"") != person:
                    if queued is not None:
                        raise InputError(
                            "idempotency_key", f"{key!r} is already queued with other content"
                        )
                    raise InputError("ref", f"{ref!r} is already queued with other content")
                return self.get(int(existing["seq"]))
            if db.execute("SELECT 1 FROM lanes WHERE ref = ?", (ref,)).fetchone():
                raise InputError("ref", f"{ref!r} is already in use")
            db.execute("INSERT INTO lanes (ref, created_at) VALUES (?, ?)", (ref, _now()))
            seq = self._insert(
                db, ref, "submit", key, operator, body, case_id=None, applicant=person,
                agent=agent,
            )  # fmt: skip
            listed = {material.sha256 for material in message.materials}
            for material, path in files:
                if material.sha256 not in listed:
                    raise InputError("files", f"{material.name!r} is not a material of the submit")
                # A file queued before (another case, the same scan) is uploaded once.
                db.execute(
                    "INSERT INTO files (sha256, path, size, created_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (sha256) DO UPDATE SET path = excluded.path,"
                    " status = 'pending', error = NULL WHERE files.status = 'failed'",
                    (material.sha256, str(Path(path).resolve()), material.size, _now()),
                )
        return self.get(seq)

    def follow(
        self,
        target: str,
        action: str,
        body: Message | None = None,
        *,
        operator: str,
        idempotency_key: str,
        agent: str = "",
    ) -> QueuedCommand:
        """Queue a lifecycle command for a local reference or a known case id (``agent``: the
        room's 代办员 who takes the step, named in the signed header).

        ``target`` is a reference given to :meth:`submit`, or the node's case id of a case this
        hall already holds (a lane is opened for it). ``body`` is the action's wire message; its
        ``case_id`` is filled in by the outbox. ``idempotency_key`` is required: the room's own
        key for this act (queuing it again with that key returns the queued command), or
        :func:`queue_key`.
        """
        if action == "submit":
            raise InputError("action", "use submit() to queue a 收件")
        message = wire_message(action)
        if body is not None:
            message.CopyFrom(body)
        key = check_idempotency_key(idempotency_key)
        with self._write() as db:
            lane = db.execute("SELECT ref, case_id FROM lanes WHERE ref = ?", (target,)).fetchone()
            if lane is None:
                if not _is_uuid(target):
                    raise InputError(
                        "ref",
                        f"unknown reference {target!r}: queue its submit first, or give a case id",
                    )
                db.execute(
                    "INSERT INTO lanes (ref, case_id, created_at) VALUES (?, ?, ?)",
                    (target, target, _now()),
                )
                case_id: str | None = target
            else:
                case_id = lane["case_id"]
            message.case_id = ""  # type: ignore[attr-defined]
            data = message.SerializeToString(deterministic=True)
            existing = db.execute(
                "SELECT seq, ref, action, body FROM commands WHERE idempotency_key = ?", (key,)
            ).fetchone()
            if existing is not None:
                if (
                    existing["ref"] != target
                    or existing["action"] != action
                    or bytes(existing["body"]) != data
                ):
                    raise InputError(
                        "idempotency_key", f"{key!r} is already queued for another command"
                    )
                return self.get(int(existing["seq"]))
            seq = self._insert(
                db, target, action, key, operator, data, case_id=case_id, agent=agent
            )
        return self.get(seq)

    def _insert(
        self,
        db: sqlite3.Connection,
        ref: str,
        action: str,
        key: str,
        operator: str,
        body: bytes,
        *,
        case_id: str | None,
        applicant: bytes | None = None,
        agent: str = "",
    ) -> int:
        if db.execute("SELECT 1 FROM commands WHERE idempotency_key = ?", (key,)).fetchone():
            raise InputError("idempotency_key", f"{key!r} is already queued for another command")
        created_at = _now()
        signed = None
        if action == "submit" or case_id is not None:
            signed = self._sign(action, body, key, operator, created_at, case_id, applicant, agent)
        cursor = db.execute(
            "INSERT INTO commands (ref, action, idempotency_key, operator, body, applicant,"
            " signed, created_at, agent) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                ref,
                action,
                key,
                operator,
                body,
                applicant,
                signed.SerializeToString() if signed else None,
                created_at,
                agent,
            ),
        )
        assert cursor.lastrowid is not None
        return int(cursor.lastrowid)

    def _sign(
        self,
        action: str,
        body: bytes,
        key: str,
        operator: str,
        created_at: str,
        case_id: str | None,
        applicant: bytes | None,
        agent: str = "",
    ) -> case_exchange_pb2.SignedCommand:
        message: Any = wire_message(action)
        message.ParseFromString(body)
        if case_id is not None and action != "submit":
            message.case_id = case_id
        person = None
        if action == "submit":
            if applicant is None:
                raise ConfigError(f"{self.path}: submit {key!r} has no applicant stored: cancel it")
            person = common_pb2.Applicant.FromString(applicant)
        # The command says when the clerk acted (queued it), not when the network came back.
        return self.signer.sign(
            action,
            message,
            idempotency_key=key,
            operator=operator,
            issued_at=datetime.fromisoformat(created_at),
            applicant=person,
            agent=agent,
        )

    # ------------------------------------------------------------------ forwarding support

    def next_batch(self) -> list[sqlite3.Row]:
        """Pending commands in queue order, with their lane's case id."""
        return list(
            self._db.execute(
                "SELECT c.*, l.case_id AS lane_case_id FROM commands c"
                " JOIN lanes l ON l.ref = c.ref WHERE c.status = 'pending' ORDER BY c.seq"
            )
        )

    def files_to_upload(self, row: sqlite3.Row) -> list[sqlite3.Row]:
        """The pending files of the materials a queued command lists."""
        if row["action"] not in ("submit", "resubmit"):
            return []
        message: Any = wire_message(row["action"])
        message.ParseFromString(bytes(row["body"]))
        digests = [material.sha256 for material in message.materials]
        if not digests:
            return []
        marks = ", ".join("?" for _ in digests)
        return list(
            self._db.execute(
                f"SELECT * FROM files WHERE status = 'pending' AND sha256 IN ({marks})", digests
            )
        )

    def mark_file(self, sha256: str, *, error: str = "") -> None:
        """A file uploaded (``error`` empty) or refused for good (``error`` says why)."""
        with self._write() as db:
            if error:
                db.execute(
                    "UPDATE files SET status = 'failed', error = ? WHERE sha256 = ?",
                    (error, sha256),
                )
            else:
                db.execute(
                    "UPDATE files SET status = 'uploaded', error = NULL, uploaded_at = ?"
                    " WHERE sha256 = ?",
                    (_now(), sha256),
                )

    def file_counts(self) -> dict[str, int]:
        """How many scanned files are pending, uploaded or failed."""
        counts = dict.fromkeys(("pending", "uploaded", "failed"), 0)
        for row in self._db.execute("SELECT status, COUNT(*) AS n FROM files GROUP BY status"):
            counts[row["status"]] = int(row["n"])
        return counts

    def failed_files(self) -> list[dict[str, Any]]:
        """The files the node refused (or that changed on disk), with why."""
        return [
            {"sha256": row["sha256"], "path": row["path"], "error": row["error"]}
            for row in self._db.execute(
                "SELECT sha256, path, error FROM files WHERE status = 'failed' ORDER BY created_at"
            )
        ]

    def failed_lanes(self) -> dict[str, int]:
        """Lanes with a failed command → the seq of their first failed command."""
        return {
            row["ref"]: int(row["first"])
            for row in self._db.execute(
                "SELECT ref, MIN(seq) AS first FROM commands WHERE status = 'failed' GROUP BY ref"
            )
        }

    def ensure_signed(self, seq: int) -> case_exchange_pb2.SignedCommand:
        """The stored signed command; signs it now (with the lane's case id) if it is not yet.

        The whole ``SignedCommand`` (bytes, signature, personal values) is committed before it
        is returned, so every send of this command, now or after a restart, is the same. Two
        forwarders racing here keep the first.
        """
        row = self._db.execute(
            "SELECT c.*, l.case_id AS lane_case_id FROM commands c"
            " JOIN lanes l ON l.ref = c.ref WHERE c.seq = ?",
            (seq,),
        ).fetchone()
        if row is None:
            raise InputError("seq", f"no command #{seq}")
        if row["signed"] is None:
            if row["lane_case_id"] is None and row["action"] != "submit":
                raise InputError("seq", f"#{seq}: the case id of {row['ref']!r} is not known yet")
            signed = self._sign_row(row)
            with self._write() as db:
                db.execute(
                    "UPDATE commands SET signed = ? WHERE seq = ? AND signed IS NULL",
                    (signed.SerializeToString(), seq),
                )
            row = self._db.execute("SELECT signed FROM commands WHERE seq = ?", (seq,)).fetchone()
        return case_exchange_pb2.SignedCommand.FromString(bytes(row["signed"]))

    def _sign_row(self, row: sqlite3.Row) -> case_exchange_pb2.SignedCommand:
        applicant = row["applicant"]
        return self._sign(
            row["action"],
            bytes(row["body"]),
            row["idempotency_key"],
            row["operator"],
            row["created_at"],
            row["lane_case_id"],
            None if applicant is None else bytes(applicant),
            row["agent"],
        )

    def mark_sent(self, seq: int, reply: case_exchange_pb2.CommandReply) -> None:
        """Record the node's acknowledgement; a submit's reply gives its lane the case id."""
        with self._write() as db:
            row = db.execute("SELECT ref, action FROM commands WHERE seq = ?", (seq,)).fetchone()
            db.execute(
                "UPDATE commands SET status = 'sent', case_id = ?, version = ?, replayed = ?,"
                " attempts = attempts + 1, last_attempt_at = ?, sent_at = ?,"
                " error_code = NULL, error_message = NULL WHERE seq = ?",
                (reply.case_id, reply.version, int(reply.replayed), _now(), _now(), seq),
            )
            if row["action"] == "submit":
                db.execute(
                    "UPDATE lanes SET case_id = ? WHERE ref = ?", (reply.case_id, row["ref"])
                )

    def mark_attempt(self, seq: int, failure: NodeRefused, *, final: bool) -> None:
        """Record a failed attempt; ``final`` marks the command failed for good."""
        with self._write() as db:
            db.execute(
                "UPDATE commands SET attempts = attempts + 1, last_attempt_at = ?,"
                " error_code = ?, error_message = ?, status = CASE WHEN ? THEN 'failed'"
                " ELSE status END WHERE seq = ?",
                (_now(), failure.code.name, failure.message, final, seq),
            )

    # ------------------------------------------------------------------ operator actions

    def retry(self, seq: int, *, resign: bool = False) -> QueuedCommand:
        """Send a failed command again; held followers queue behind it.

        By default the very same signed command goes again (right after fixing the cause at the
        node, e.g. a hall registration). ``resign`` signs the command anew with the outbox's
        current key (same idempotency key, body and time; a submit commits to the same applicant
        with fresh salts) for when the signature itself was refused, e.g. after the hall's key
        was rotated while the command waited offline. That is safe only because a *failed*
        command is one the node refused, and a refused command leaves nothing stored under its
        key.
        """
        with self._write() as db:
            row = db.execute(
                "SELECT c.*, l.case_id AS lane_case_id FROM commands c"
                " JOIN lanes l ON l.ref = c.ref WHERE c.seq = ?",
                (seq,),
            ).fetchone()
            if row is None:
                raise InputError("seq", f"no command #{seq}")
            if row["status"] != "failed":
                raise InputError(
                    "seq", f"#{seq} is {row['status']}; only a failed command is retried"
                )
            db.execute("UPDATE commands SET status = 'pending' WHERE seq = ?", (seq,))
            if resign:
                signed = None
                if row["lane_case_id"] is not None or row["action"] == "submit":
                    signed = self._sign_row(row).SerializeToString()
                db.execute("UPDATE commands SET signed = ? WHERE seq = ?", (signed, seq))
        return self.get(seq)

    def cancel(self, seq: int) -> list[QueuedCommand]:
        """Give up a failed or pending command; returns every command cancelled.

        Its held followers are released. If it is a submit the node never acknowledged, the
        case will never exist, so the followers of that reference are cancelled with it.
        """
        with self._write() as db:
            row = db.execute(
                "SELECT c.status, c.action, c.ref, l.case_id FROM commands c"
                " JOIN lanes l ON l.ref = c.ref WHERE c.seq = ?",
                (seq,),
            ).fetchone()
            if row is None:
                raise InputError("seq", f"no command #{seq}")
            if row["status"] not in ("failed", "pending"):
                raise InputError("seq", f"#{seq} is {row['status']}; it can no longer be cancelled")
            cancelled = [seq]
            if row["action"] == "submit" and row["case_id"] is None:
                cancelled += [
                    int(r["seq"])
                    for r in db.execute(
                        "SELECT seq FROM commands WHERE ref = ? AND status = 'pending' AND seq > ?",
                        (row["ref"], seq),
                    )
                ]
            db.executemany(
                "UPDATE commands SET status = 'cancelled' WHERE seq = ?",
                [(s,) for s in cancelled],
            )
        return [self.get(s) for s in cancelled]

    # ------------------------------------------------------------------ queries

    def commands(self, *, ref: str = "", status: str = "") -> list[QueuedCommand]:
        """Commands in queue order, optionally of one reference or one (shown) status."""
        if status and status not in STATUSES:
            raise InputError("status", f"unknown status {status!r}; one of {', '.join(STATUSES)}")
        query = (
            "SELECT c.*, l.case_id AS lane_case_id FROM commands c JOIN lanes l ON l.ref = c.ref"
        )
        args: tuple[Any, ...] = ()
        if ref:
            query += " WHERE c.ref = ?"
            args = (ref,)
        rows = list(self._db.execute(query + " ORDER BY c.seq", args))
        failed = self.failed_lanes()
        result = [self._from_row(row, failed) for row in rows]
        return [command for command in result if not status or command.status == status]

    def counts(self) -> dict[str, int]:
        """How many commands are in each shown status."""
        counts = dict.fromkeys(STATUSES, 0)
        for command in self.commands():
            counts[command.status] += 1
        return counts

    def lane_case_id(self, ref: str) -> str | None:
        """The node's case id for a local reference, once known."""
        row = self._db.execute("SELECT case_id FROM lanes WHERE ref = ?", (ref,)).fetchone()
        return None if row is None else row["case_id"]

    def get(self, seq: int) -> QueuedCommand:
        """One command by its queue number."""
        row = self._db.execute(
            "SELECT c.*, l.case_id AS lane_case_id FROM commands c"
            " JOIN lanes l ON l.ref = c.ref WHERE c.seq = ?",
            (seq,),
        ).fetchone()
        if row is None:
            raise InputError("seq", f"no command #{seq}")
        return self._from_row(row, self.failed_lanes())

    @staticmethod
    def _from_row(row: sqlite3.Row, failed: dict[str, int]) -> QueuedCommand:
        status = row["status"]
        held_by = ""
        if status == "pending":
            first_failed = failed.get(row["ref"])
            if first_failed is not None and first_failed < row["seq"]:
                status, held_by = "held", f"#{first_failed} failed"
            elif _awaits_case_id(row):
                held_by = "waiting for the case id from the submit"
        return QueuedCommand(
            seq=int(row["seq"]),
            ref=row["ref"],
            action=row["action"],
            idempotency_key=row["idempotency_key"],
            operator=row["operator"],
            status=status,
            attempts=int(row["attempts"]),
            case_id=row["case_id"] or row["lane_case_id"] or "",
            version=row["version"],
            replayed=bool(row["replayed"]),
            error_code=row["error_code"] or "",
            error_message=row["error_message"] or "",
            created_at=row["created_at"],
            sent_at=row["sent_at"] or "",
            signed=row["signed"] is not None,
            held_by=held_by,
        )


# ============================================================================ forwarding


class Transport(Protocol):
    """What the forwarder needs from the SDK client (``HallClient`` satisfies it)."""

    def send_signed(
        self, action: str, signed: case_exchange_pb2.SignedCommand
    ) -> case_exchange_pb2.CommandReply:
        """Send one signed command; raise :class:`~adapters.errors.NodeRefused` on failure."""
        ...

    def upload_material(self, source: Path) -> common_pb2.Material:
        """Upload one material file; raise :class:`~adapters.errors.NodeRefused` on failure."""
        ...


@dataclass
class PassResult:
    """What one forwarding pass did."""

    sent: list[QueuedCommand] = field(default_factory=list)
    failed: list[QueuedCommand] = field(default_factory=list)
    #: Set when the pass stopped at a transient failure (node unreachable, timeout, ...).
    interrupted: NodeRefused | None = None
    #: Pending commands that could be sent but were not (the pass was interrupted).
    remaining: int = 0


#: The forwarder's waits while the node cannot be reached: 0.5 s doubling to 30 s
#: (``--max-backoff``), the SDK's backoff schedule (:meth:`adapters.sdk.RetryPolicy.delays`).
FORWARD_BACKOFF = RetryPolicy(attempts=1, initial_backoff=0.5, max_backoff=30.0)


class Forwarder:
    """Sends an outbox's commands to the node in order (see the module docstring)."""

    def __init__(
        self,
        outbox: Outbox,
        transport: Transport,
        *,
        report: Callable[[str], None] = lambda line: None,
    ) -> None:
        self.outbox = outbox
        self.transport = transport
        self.report = report

    def forward_once(self) -> PassResult:
        """One pass over the pending commands; stops at the first transient failure."""
        result = PassResult()
        failed = self.outbox.failed_lanes()
        blocked: set[str] = set()
        batch = self.outbox.next_batch()
        for index, row in enumerate(batch):
            seq, ref, action = int(row["seq"]), row["ref"], row["action"]
            if ref in blocked or (ref in failed and failed[ref] < seq):
                blocked.add(ref)
                continue
            if _awaits_case_id(row):
                # Its submit is still pending (and was not sent in this pass) or was cancelled.
                blocked.add(ref)
                continue
            interrupted = self._upload_files(row)
            if interrupted is not None:
                # The command waits for its files: its status shows why.
                self.outbox.mark_attempt(seq, interrupted, final=False)
                result.interrupted = interrupted
                result.remaining = sum(1 for later in batch[index:] if later["ref"] not in blocked)
                return result
            try:
                reply = self.transport.send_signed(action, self.outbox.ensure_signed(seq))
            except (NodeRefused, InputError) as error:
                # A command that cannot even be signed (an idempotency key queued before keys
                # were checked) is refused here as the node would refuse it: it fails alone.
                failure = (
                    error
                    if isinstance(error, NodeRefused)
                    else NodeRefused.of(grpc.StatusCode.INVALID_ARGUMENT, f"not signed: {error}")
                )
                self.outbox.mark_attempt(seq, failure, final=not failure.transient)
                if failure.transient:
                    result.interrupted = failure
                    result.remaining = sum(
                        1 for later in batch[index:] if later["ref"] not in blocked
                    )
                    self.report(f"#{seq} {action} ref={ref}: {failure.code.name}, will retry")
                    return result
                blocked.add(ref)
                command = self.outbox.get(seq)
                result.failed.append(command)
                self.report(
                    f"#{seq} {action} ref={ref}: FAILED {failure.code.name}: {failure.message}"
                )
                continue
            self.outbox.mark_sent(seq, reply)
            command = self.outbox.get(seq)
            result.sent.append(command)
            self.report(
                f"#{seq} {action} ref={ref}: sent, case {reply.case_id} v{reply.version}"
                + (" (replayed)" if reply.replayed else "")
            )
        return result

    def _upload_files(self, row: sqlite3.Row) -> NodeRefused | None:
        """Upload the pending scans a command lists, before the command itself. A transient
        failure stops the pass (returned); a file refused for good, or changed on disk since it
        was queued, is marked failed and the command goes anyway (the case then lacks that
        file at the node; the clerk can see it in ``status`` and upload it again)."""
        for file in self.outbox.files_to_upload(row):
            sha256, path = file["sha256"], Path(file["path"])
            try:
                uploaded = self.transport.upload_material(path)
            except NodeRefused as failure:
                if failure.transient:
                    self.report(f"file {path.name}: {failure.code.name}, will retry")
                    return failure
                self.outbox.mark_file(sha256, error=f"{failure.code.name}: {failure.message}")
                self.report(f"file {path.name}: FAILED {failure.code.name}: {failure.message}")
                continue
            except InputError as error:
                self.outbox.mark_file(sha256, error=str(error))
                self.report(f"file {path.name}: FAILED {error}")
                continue
            if uploaded.sha256 != sha256:
                problem = "the file changed on disk since it was queued (another digest now)"
                self.outbox.mark_file(sha256, error=problem)
                self.report(f"file {path.name}: FAILED {problem}")
                continue
            self.outbox.mark_file(sha256)
            self.report(f"file {path.name}: uploaded ({sha256[:12]}…)")
        return None

    def drain(self) -> PassResult:
        """Passes until nothing more can be sent now; returns the totals of all passes."""
        total = PassResult()
        while True:
            result = self.forward_once()
            total.sent += result.sent
            total.failed += result.failed
            total.interrupted = result.interrupted
            total.remaining = result.remaining
            # A submit acknowledged in this pass unblocks followers queued before its reply:
            # go again while progress is made.
            if result.interrupted or not (result.sent or result.failed):
                return total

    def run(
        self,
        stop: threading.Event,
        *,
        idle_interval: float = 1.0,
        backoff: RetryPolicy = FORWARD_BACKOFF,
    ) -> None:
        """Forward until ``stop`` is set: poll every ``idle_interval`` s, back off when offline
        (``backoff.delays()``; its ``attempts`` do not matter here)."""
        delays = backoff.delays()
        while not stop.is_set():
            try:
                result = self.drain()
            except sqlite3.OperationalError as error:
                # The outbox is busy (a long write by another process): try again shortly.
                self.report(f"outbox busy: {error}")
                stop.wait(idle_interval)
                continue
            if result.interrupted is not None:
                stop.wait(next(delays))
            else:
                delays = backoff.delays()
                stop.wait(idle_interval)


# ============================================================================ helpers for clerks


def _split_v1_submit(data: bytes) -> tuple[bytes, bytes]:
    """A v1 queued SubmitCase → (its body without the applicant, the clear applicant).

    In v1 the applicant was ``SubmitCase`` field 2 (reserved now: the current stubs keep it as
    an unknown field).
    """
    message = case_exchange_pb2.SubmitCase.FromString(data)
    applicant = common_pb2.Applicant()
    unknown = unknown_fields.UnknownFieldSet(message)
    for index in range(len(unknown)):
        if unknown[index].field_number == 2 and unknown[index].wire_type == 2:
            applicant.MergeFromString(unknown[index].data)
    message.DiscardUnknownFields()
    message.ClearField("applicant")
    return (
        message.SerializeToString(deterministic=True),
        applicant.SerializeToString(deterministic=True),
    )


def queue_key() -> str:
    """A fresh idempotency key, for a command the room's software queues without a key of its
    own (the command line without ``--idem-key``).

    Safe for every resend: the outbox stores the key with the command before anything is sent,
    and each resend carries it. What it cannot make safe is queuing the same act twice (the
    room's software retrying its own call): for that, pass the room's own key.
    """
    return f"vil-{uuid.uuid4().hex}"


def material_from_file(name: str, path: Path) -> common_pb2.Material:
    """A material reference for a scanned file: its digest, size and media type.

    The file itself stays in the room's document store; only the digest goes to the node.
    """
    path = Path(path)
    digest = hashlib.sha256()
    size = 0
    try:
        with path.open("rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
                size += len(chunk)
    except OSError as error:
        raise InputError("material", f"{name!r}: cannot read {path}: {error.strerror}") from None
    if size == 0:
        raise InputError("material", f"{name!r}: {path} is empty")
    media_type = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return common_pb2.Material(
        name=name, sha256=digest.hexdigest(), media_type=media_type, size=size
    )


def message_from_json(action: str, text: str) -> Message:
    """A wire action message from JSON with the wire's field names (``{"to_hall": ...}``)."""
    message = wire_message(action)
    try:
        json_format.Parse(text or "{}", message)
    except json_format.ParseError as error:
        raise InputError("--json", f"for {action}: {error}") from None
    return message


def describe(commands: Sequence[QueuedCommand]) -> str:
    """A plain table of commands for the ``status`` subcommand."""
    lines = [f"{'seq':>5}  {'status':9}  {'action':22}  {'ref':20}  case / detail"]
    for c in commands:
        detail = c.case_id or "-"
        if c.status in ("failed", "held") or (c.status == "pending" and c.error_code):
            detail += f"  [{c.error_code or c.held_by}] {c.error_message or c.held_by}"
        elif c.status == "pending" and c.held_by:
            detail += f"  ({c.held_by})"
        if c.replayed:
            detail += "  (replayed)"
        lines.append(f"{c.seq:>5}  {c.status:9}  {c.action:22}  {c.ref:20}  {detail}")
    return "\n".join(lines)


def to_json(commands: Sequence[QueuedCommand]) -> str:
    """Commands as a JSON array."""
    return json.dumps([c.to_json() for c in commands], ensure_ascii=False, indent=1)

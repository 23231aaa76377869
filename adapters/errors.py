"""Every error the hall SDK and the adapters raise on purpose, in one tree.

::

    AdapterError                         the root: catch this to catch them all
    ├── ConfigError                      a setting, key, certificate or file cannot be used
    │   └── RegisterError                a legacy register file as a whole cannot be imported
    ├── InputError (field)               one input is wrong; ``field`` names it
    │   └── VendorInputError (errors)    a vendor request breaks its schema: every bad field
    ├── MaterialMismatch (sha256)        a downloaded material is not the bytes of its digest
    └── NodeRefused (code, message, violations, reason, details, transient)
        │                                a call the node refused, or could not answer
        ├── CommandInvalid               INVALID_ARGUMENT, OUT_OF_RANGE
        ├── AccessDenied                 UNAUTHENTICATED, PERMISSION_DENIED
        ├── CaseNotFound                 NOT_FOUND (also another hall's case)
        ├── Conflict                     ALREADY_EXISTS, FAILED_PRECONDITION
        ├── TransientFailure             RETRYABLE_CODES: UNAVAILABLE, DEADLINE_EXCEEDED,
        │                                ABORTED, RESOURCE_EXHAUSTED (``transient`` is True)
        └── NodeFault                    INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED,
                                         CANCELLED (and OK, which a failed call never has)

A failed gRPC call becomes a :class:`NodeRefused` in exactly one place, :func:`from_rpc_error`,
which :class:`adapters.sdk.HallClient` applies to every call it makes; no ``grpc.RpcError``
leaves the SDK's or an adapter's public methods. ``NodeRefused.violations`` are the node's
``google.rpc.BadRequest`` field violations (full wire paths such as
``command.submit.materials[0].sha256`` or ``personal[1].value``), ``reason`` its
``google.rpc.ErrorInfo`` reason (e.g. ``IdempotencyConflict``), and ``details`` every
``google.rpc.Status`` detail as the node sent it, so nothing of the call's status is lost.

Each class's docstring says what the adapters' command line does with it (exit codes in
:mod:`adapters.cli`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from tongban.v1 import case_exchange_pb2

#: The status codes after which the very same signed command may succeed if sent again. Every
#: mutating call carries an idempotency key (``HallClient.send`` requires one), so a resend that
#: reaches a node which already acted returns the first result instead of acting twice; that is
#: what makes each of these safe to retry:
RETRYABLE_CODES: frozenset[grpc.StatusCode] = frozenset(
    {
        # The node could not be reached or the connection broke: the command may not have
        # arrived; if it did, the resend is answered with the first result.
        grpc.StatusCode.UNAVAILABLE,
        # No answer in time: the node may or may not have acted; the resend replays if it did.
        # (A deadline the client set ends the whole call, retries included; this covers a
        # DEADLINE_EXCEEDED the node itself returns.)
        grpc.StatusCode.DEADLINE_EXCEEDED,
        # Another writer changed the case at the same moment (optimistic concurrency): nothing
        # was stored, and the resend is judged against the case as it is now.
        grpc.StatusCode.ABORTED,
        # The node is shedding load: nothing was stored. (A request over gRPC's 4 MiB limit also
        # ends as RESOURCE_EXHAUSTED; retrying it is useless but harmless.)
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
# Not retried: INTERNAL and UNKNOWN (the node failed in a way it did not foresee; sending the
# same bytes again is not known to help, and a person should look), and every refusal of the
# command itself (INVALID_ARGUMENT, FAILED_PRECONDITION, ...), which would only be refused again.


class AdapterError(Exception):
    """The root of every error the SDK and the adapters raise on purpose.

    The command line prints ``str(error)`` on one line, never a traceback.
    """


class ConfigError(AdapterError):
    """A setting, key, certificate or file cannot be used (command line: exit 2)."""


class RegisterError(ConfigError):
    """A legacy register file as a whole cannot be imported: unreadable, no header row, a
    missing or doubled column (command line: exit 2)."""


class InputError(AdapterError):
    """One input is wrong; ``field`` names it as the caller knows it (a parameter, an option,
    a vendor's field). Command line: exit 2."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(f"{field}: {message}" if field else message)


class MaterialMismatch(AdapterError):
    """A downloaded material's bytes do not match the digest asked for (or the size the node
    announced). Nothing was written to a destination path; discard a file object's bytes.
    (Only the SDK's ``download_material`` raises it; no adapter command downloads.)"""

    def __init__(self, sha256: str, problem: str) -> None:
        self.sha256 = sha256
        self.problem = problem
        super().__init__(f"material {sha256}: {problem}")


@dataclass(frozen=True)
class FieldError:
    """One bad field of a vendor request, named as the vendor names it."""

    field: str
    msg: str


class VendorInputError(InputError):
    """A vendor's request does not match its own schema; ``errors`` names every bad field (the
    gateway answers 400 with all of them at once)."""

    def __init__(self, errors: Sequence[FieldError]) -> None:
        self.errors = list(errors)
        self.field = self.errors[0].field if self.errors else ""
        AdapterError.__init__(self, "; ".join(f"{e.field}: {e.msg}" for e in self.errors))


class NodeRefused(AdapterError):
    """A call the node refused, or could not answer: read once from the failed gRPC call.

    Build one with :func:`from_rpc_error` (a failed call) or :meth:`of` (a code and message),
    which pick the subclass of the code (:data:`CLASS_OF_CODE`). The command line exits 3 for a
    transient one (the node could not be reached) and 1 otherwise.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str = "",
        violations: Sequence[tuple[str, str]] = (),
        reason: str = "",
        details: Sequence[any_pb2.Any] = (),
    ) -> None:
        self.code = code
        self.message = message or code.name
        #: ``(field path, description)`` from the ``google.rpc.BadRequest`` detail.
        self.violations: tuple[tuple[str, str], ...] = tuple(violations)
        #: ``google.rpc.ErrorInfo.reason``: the node's error class, e.g. ``IdempotencyConflict``.
        self.reason = reason
        #: Every ``google.rpc.Status`` detail as the node sent it (``Any`` messages).
        self.details: tuple[any_pb2.Any, ...] = tuple(details)
        super().__init__(f"{code.name}: {self.message}")

    @classmethod
    def of(
        cls,
        code: grpc.StatusCode,
        message: str = "",
        violations: Sequence[tuple[str, str]] = (),
        reason: str = "",
        details: Sequence[any_pb2.Any] = (),
    ) -> NodeRefused:
        """The refusal of ``code``, as an instance of the code's subclass."""
        return CLASS_OF_CODE.get(code, NodeFault)(code, message, violations, reason, details)

    @property
    def transient(self) -> bool:
        """Whether sending the very same command again later may succeed
        (:data:`RETRYABLE_CODES`)."""
        return self.code in RETRYABLE_CODES

    def resolve_personal(self, personal: Sequence[case_exchange_pb2.PersonalValue]) -> NodeRefused:
        """The refusal with ``personal[i]...`` violation paths named by the field they carry.

        The node names a refused clear value by its place in ``SignedCommand.personal``
        (``personal[1].value``); with the values that were sent, that becomes the committed
        field's own path (``command.submit.applicant.id_number``), which an adapter can map to
        its vendor's field. Descriptions are kept as they are (the node never echoes a value).
        """
        resolved = []
        for path, description in self.violations:
            match = _PERSONAL_PATH.fullmatch(path)
            if match and int(match.group(1)) < len(personal):
                resolved.append((f"command.{personal[int(match.group(1))].field}", description))
            else:
                resolved.append((path, description))
        return type(self)(self.code, self.message, resolved, self.reason, self.details)

    def field_suffix(self) -> str:
        """:func:`field_suffix` of the first violation ('' when there is none)."""
        return field_suffix(self.violations[0][0]) if self.violations else ""


class CommandInvalid(NodeRefused):
    """INVALID_ARGUMENT, OUT_OF_RANGE: the node refused the command's content; ``violations``
    name the fields."""


class AccessDenied(NodeRefused):
    """UNAUTHENTICATED (signature, identity, a hall the node does not know) or
    PERMISSION_DENIED (a party to the case that may not do this now)."""


class CaseNotFound(NodeRefused):
    """NOT_FOUND: no such case, or one this hall is not a party to (the node does not say
    which)."""


class Conflict(NodeRefused):
    """ALREADY_EXISTS (the idempotency key was used with other content) or FAILED_PRECONDITION
    (the case's state does not allow the action)."""


class TransientFailure(NodeRefused):
    """One of :data:`RETRYABLE_CODES`, after the retry policy's attempts: the node could not be
    reached, did not answer in time, was busy, or the case changed under the command. Sending
    the same command again later (same idempotency key) is safe."""


class NodeFault(NodeRefused):
    """Anything else (INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED, CANCELLED): the node or the
    call failed in a way nobody foresaw. Not retried."""


#: Every gRPC status code → the class of its refusal.
CLASS_OF_CODE: dict[grpc.StatusCode, type[NodeRefused]] = {
    grpc.StatusCode.OK: NodeFault,  # never the code of a failed call; kept for completeness
    grpc.StatusCode.CANCELLED: NodeFault,
    grpc.StatusCode.UNKNOWN: NodeFault,
    grpc.StatusCode.INVALID_ARGUMENT: CommandInvalid,
    grpc.StatusCode.DEADLINE_EXCEEDED: TransientFailure,
    grpc.StatusCode.NOT_FOUND: CaseNotFound,
    grpc.StatusCode.ALREADY_EXISTS: Conflict,
    grpc.StatusCode.PERMISSION_DENIED: AccessDenied,
    grpc.StatusCode.RESOURCE_EXHAUSTED: TransientFailure,
    grpc.StatusCode.FAILED_PRECONDITION: Conflict,
    grpc.StatusCode.ABORTED: TransientFailure,
    grpc.StatusCode.OUT_OF_RANGE: CommandInvalid,
    grpc.StatusCode.UNIMPLEMENTED: NodeFault,
    grpc.StatusCode.INTERNAL: NodeFault,
    grpc.StatusCode.UNAVAILABLE: TransientFailure,
    grpc.StatusCode.DATA_LOSS: NodeFault,
    grpc.StatusCode.UNAUTHENTICATED: AccessDenied,
}


def from_rpc_error(error: grpc.RpcError) -> NodeRefused:
    """The one mapping of a failed gRPC call to the tree: code, message and the node's
    ``google.rpc.Status`` details. Anything that is not a proper ``grpc.Call`` counts as
    UNKNOWN; a detail that contradicts the call's own code is ignored."""
    code_of = getattr(error, "code", None)
    details_of = getattr(error, "details", None)
    code = code_of() if callable(code_of) else grpc.StatusCode.UNKNOWN
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    message = (details_of() if callable(details_of) else "") or code.name
    violations: list[tuple[str, str]] = []
    reason = ""
    status = None
    if isinstance(error, grpc.Call):
        try:
            status = rpc_status.from_call(error)
        except ValueError:
            status = None
    details: list[Any] = list(status.details) if status is not None else []
    for detail in details:
        bad_request = error_details_pb2.BadRequest()
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(bad_request):
            violations.extend((v.field, v.description) for v in bad_request.field_violations)
        elif detail.Unpack(info):
            reason = info.reason
    return NodeRefused.of(code, str(message), violations, reason, details)


def field_suffix(path: str) -> str:
    """A wire path after its action name: ``command.submit.applicant.id_number`` →
    ``applicant.id_number``, ``command.header.issued_at`` → ``issued_at``; a path the
    application named directly (``item_code``) is returned as it is."""
    parts = path.split(".")
    if parts[0] == "command" and len(parts) > 2:
        parts = parts[2:]
    return ".".join(parts)


_PERSONAL_PATH = re.compile(r"personal\[(\d+)\](?:\.\w+)?")

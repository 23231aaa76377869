"""One table from the hub's errors to gRPC status codes, with machine-readable details.

Every servicer method funnels refusals through :func:`abort`, so a client in any language gets
the same code for the same problem, a message that names the input at fault, and a
``google.rpc.Status`` with details: ``BadRequest`` field violations for invalid input and
``ErrorInfo`` (reason = the error class, domain ``tongban``) for everything else.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc
from eventsourcing.persistence import InterfaceError, OperationalError
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from hub.application.cipher import DecryptionError
from hub.errors import (
    AlreadyExists,
    CalendarUnknown,
    CheckMissing,
    ConcurrencyConflict,
    ConfigurationError,
    IntegrityViolation,
    InvalidInput,
    MaterialDamaged,
    NotFound,
    PeerUnavailable,
    PermissionRefused,
    ProjectionFailed,
    SignatureRefused,
    StorageUnavailable,
    StoreMismatch,
    TongbanError,
    TransitionRefused,
)
from hub.pki import CertificateRejected
from ledger import LedgerError, ProofError
from ledger.storage import StorageError

R = TypeVar("R")

log = logging.getLogger("tongban.api")

#: The single mapping; the first matching class wins (subclasses before their bases).
STATUS_BY_ERROR: tuple[tuple[type[TongbanError], grpc.StatusCode], ...] = (
    (CertificateRejected, grpc.StatusCode.UNAUTHENTICATED),  # before its base InvalidInput
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (CheckMissing, grpc.StatusCode.FAILED_PRECONDITION),
    (TransitionRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (PermissionRefused, grpc.StatusCode.PERMISSION_DENIED),
    (SignatureRefused, grpc.StatusCode.UNAUTHENTICATED),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (ConcurrencyConflict, grpc.StatusCode.ABORTED),
    (StorageUnavailable, grpc.StatusCode.UNAVAILABLE),
    (IntegrityViolation, grpc.StatusCode.DATA_LOSS),
    (MaterialDamaged, grpc.StatusCode.DATA_LOSS),
    (PeerUnavailable, grpc.StatusCode.UNAVAILABLE),
    (StoreMismatch, grpc.StatusCode.FAILED_PRECONDITION),
    (CalendarUnknown, grpc.StatusCode.FAILED_PRECONDITION),
    (ProjectionFailed, grpc.StatusCode.UNAVAILABLE),
    (ConfigurationError, grpc.StatusCode.INTERNAL),
)

#: Errors of the layers below the hub's own (ledger, store, decryption), mapped the same way:
#: each becomes the TongbanError a caller can act on, never UNKNOWN or a traceback.
FOREIGN_ERRORS: tuple[tuple[type[Exception], Callable[[Exception], TongbanError]], ...] = (
    (ProofError, lambda e: InvalidInput("request", "", f"no such proof: {e}")),
    (StorageError, lambda e: StorageUnavailable(f"the ledger's tables are unusable: {e}")),
    (LedgerError, lambda e: StoreMismatch(f"the ledger refused: {e}")),
    (DecryptionError, lambda e: IntegrityViolation(0, None, [f"stored data unreadable: {e}"])),
    (OperationalError, lambda e: StorageUnavailable(f"event store unavailable: {e}")),
    (InterfaceError, lambda e: StorageUnavailable(f"event store unavailable: {e}")),
)


def status_code_for(error: TongbanError) -> grpc.StatusCode:
    """The status code of ``error`` (INTERNAL for an unmapped error, which is a bug)."""
    for error_class, code in STATUS_BY_ERROR:
        if isinstance(error, error_class):
            return code
    return grpc.StatusCode.INTERNAL


def to_status(error: TongbanError) -> status_pb2.Status:
    """The ``google.rpc.Status`` for ``error``, with details."""
    code = status_code_for(error)
    detail = any_pb2.Any()
    if isinstance(error, InvalidInput):
        detail.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=error.field, description=f"{error.value!r}: {error.reason}"
                    )
                ]
            )
        )
    else:
        metadata = {
            key: str(value)
            for key, value in vars(error).items()
            if isinstance(value, str | int) and not key.startswith("_")
        }
        detail.Pack(
            error_details_pb2.ErrorInfo(
                reason=type(error).__name__, domain="tongban", metadata=metadata
            )
        )
    return status_pb2.Status(
        code=getattr(code_pb2, code.name), message=str(error), details=[detail]
    )


def as_tongban_error(error: Exception) -> TongbanError | None:
    """``error`` as the hub error it stands for (None when it is a bug)."""
    if isinstance(error, TongbanError):
        return error
    for error_class, convert in FOREIGN_ERRORS:
        if isinstance(error, error_class):
            return convert(error)
    return None


def guard(context: grpc.ServicerContext, run: Callable[[], R]) -> R:
    """Run a servicer's work; every error leaves through the one table.

    A bug (an error no table knows) is logged with a reference and answered INTERNAL with only
    that reference: never a traceback or an internal message to the caller.
    """
    try:
        return run()
    except (grpc.RpcError, grpc.aio.AbortError):
        raise  # abort() already ended the call
    except Exception as error:
        mapped = as_tongban_error(error)
        if mapped is None:
            reference = uuid.uuid4().hex[:12]
            log.exception("internal error (reference %s)", reference)
            context.abort(grpc.StatusCode.INTERNAL, f"internal error (reference {reference})")
            raise AssertionError("unreachable") from None  # pragma: no cover
        abort(context, mapped)


def status_details(error: TongbanError) -> tuple[grpc.StatusCode, str, tuple[Any, ...]]:
    """(code, message, trailing metadata with the ``google.rpc.Status``) for ``error``."""
    status = rpc_status.to_status(to_status(error))
    return status.code, status.details, tuple(status.trailing_metadata)


def abort(context: Any, error: TongbanError) -> NoReturn:
    """End the call with the status for ``error``; denials are logged (without personal data).

    Works on grpcio's servicer contexts and on ``grpc.aio``'s context of a synchronous handler
    (which has no ``abort_with_status``): the status details travel in the trailing metadata,
    as ``abort_with_status`` would send them.
    """
    code, details, trailing = status_details(error)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        log.warning("denied %s: %s (peer %s)", code.name, error, context.peer())
    context.abort(code, details, trailing)
    raise AssertionError("unreachable: abort raises")  # pragma: no cover

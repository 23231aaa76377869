"""One table from the hub's errors to gRPC status codes, with machine-readable details.

Every servicer method funnels refusals through :func:`abort`, so a client in any language gets
the same code for the same problem, a message that names the input at fault, and a
``google.rpc.Status`` with details: ``BadRequest`` field violations for invalid input and
``ErrorInfo`` (reason = the error class, domain ``tongban``) for everything else.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from hub.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    ConfigurationError,
    InvalidInput,
    NotFound,
    PermissionRefused,
    SignatureRefused,
    StorageUnavailable,
    TongbanError,
    TransitionRefused,
)
from hub.pki import CertificateRejected

log = logging.getLogger("tongban.api")

#: The single mapping; the first matching class wins (subclasses before their bases).
STATUS_BY_ERROR: tuple[tuple[type[TongbanError], grpc.StatusCode], ...] = (
    (CertificateRejected, grpc.StatusCode.UNAUTHENTICATED),  # before its base InvalidInput
    (InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (TransitionRefused, grpc.StatusCode.FAILED_PRECONDITION),
    (PermissionRefused, grpc.StatusCode.PERMISSION_DENIED),
    (SignatureRefused, grpc.StatusCode.UNAUTHENTICATED),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (ConcurrencyConflict, grpc.StatusCode.ABORTED),
    (StorageUnavailable, grpc.StatusCode.UNAVAILABLE),
    (ConfigurationError, grpc.StatusCode.INTERNAL),
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


def abort(context: grpc.ServicerContext, error: TongbanError) -> NoReturn:
    """End the call with the status for ``error``; denials are logged (without personal data)."""
    code = status_code_for(error)
    if code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED):
        log.warning("denied %s: %s (peer %s)", code.name, error, context.peer())
    context.abort_with_status(rpc_status.to_status(to_status(error)))
    raise AssertionError("unreachable: abort_with_status raises")  # pragma: no cover

"""Registering a servicer on the node's server: parse failures, request ids, metrics, streams.

grpcio's generated ``add_*Servicer_to_server`` functions deserialise each request before the
servicer runs, and answer bytes that are not the request message with INTERNAL. A caller who
sent garbage should be told so (INVALID_ARGUMENT, with a ``BadRequest`` field violation), like
every other bad input. So the node registers its services through :func:`add_service`, which
builds the method handlers from the service descriptor with a deserialiser that hands a parse
failure to the servicer as :class:`Unparseable` instead of raising; the wrapper then refuses it
through the one error table.

The same wrapper gives every call its request id (the ``x-request-id`` metadata, or a fresh one)
for the logs, and counts it in the metrics by method and status code.

The server is ``grpc.aio``: unary methods are plain functions that the server runs on its thread
pool; server-streaming methods are ``async`` generators, and client-streaming methods (material
uploads) ``async`` functions taking an async iterator of requests (a request that does not parse
is refused the same way when it arrives), both on the event loop, so an open stream never holds
one of the unary workers. :class:`StreamLimit` caps the streams open at once (RESOURCE_EXHAUSTED
beyond).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from hub import telemetry
from hub.api.errors import abort, as_tongban_error, status_details
from hub.application.storage import DEADLINE
from hub.errors import InvalidInput, TongbanError

log = logging.getLogger("tongban.api")


class Unparseable:
    """A request whose bytes are not the RPC's request message."""

    def __init__(self, message: str, size: int) -> None:
        self.message = message
        self.size = size


class StreamLimit:
    """How many server streams may be open at once, across the process."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def enter(self) -> bool:
        """Take a place (False when none is left)."""
        if self.open >= self.limit:
            return False
        self.open += 1
        telemetry.OPEN_STREAMS.inc()
        return True

    def leave(self) -> None:
        """Give a place back."""
        self.open -= 1
        telemetry.OPEN_STREAMS.dec()


def _deserializer(message_class: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except (DecodeError, RuntimeError, ValueError) as error:
            return Unparseable(f"not a {message_class.DESCRIPTOR.name}: {error}", len(data))

    return parse


def _refusal(request: Unparseable) -> InvalidInput:
    return InvalidInput("request", f"{request.size} bytes", request.message)


def _request_id(context: Any) -> str:
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id" and isinstance(value, str) and 0 < len(value) <= 64:
            return value
    return telemetry.new_request_id()


def add_service(
    server: Any, servicer: Any, service: ServiceDescriptor, streams: StreamLimit | None = None
) -> str:
    """Register ``servicer`` for ``service`` on ``server``; returns the service's full name."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    limit = streams or StreamLimit(64)
    for method in service.methods:
        behaviour = getattr(servicer, method.name)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        name = f"{service.name}/{method.name}"
        if method.client_streaming and not method.server_streaming:
            handlers[method.name] = grpc.stream_unary_rpc_method_handler(
                _client_stream(name, behaviour, limit),
                request_deserializer=_deserializer(request_class),
                response_serializer=response_class.SerializeToString,
            )
        elif method.server_streaming:
            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                _stream(name, behaviour, limit),
                request_deserializer=_deserializer(request_class),
                response_serializer=response_class.SerializeToString,
            )
        else:
            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                _unary(name, behaviour),
                request_deserializer=_deserializer(request_class),
                response_serializer=response_class.SerializeToString,
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    return str(service.full_name)


class _CountedCall:
    """The servicer context of one call; it counts the call in the metrics once, as it ends.

    An abort is counted *before* the status is sent: on ``grpc.aio`` the status of a refused
    call leaves from the event loop while the handler is still unwinding, so a client that reads
    the metrics right after its refusal would otherwise race the counter. Everything else is the
    real context's.
    """

    def __init__(self, context: Any, name: str, timed: bool) -> None:
        self._context = context
        self._name = name
        self._timed = timed
        self._began = time.perf_counter()
        self._counted = False

    def count(self, code: str) -> None:
        """Count the call as answered with ``code`` (only the first count of a call counts)."""
        if self._counted:
            return
        self._counted = True
        telemetry.RPCS.labels(self._name, code).inc()
        if self._timed:
            telemetry.RPC_SECONDS.labels(self._name).observe(time.perf_counter() - self._began)

    def abort(self, code: grpc.StatusCode, details: str = "", trailing_metadata: Any = ()) -> Any:
        self.count(code.name)
        return self._context.abort(code, details, trailing_metadata)

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self._context, attribute)


def _unary(name: str, behaviour: Any) -> Callable[[Any, Any], Any]:
    def unary(request: Any, context: Any) -> Any:
        call = _CountedCall(context, name, timed=True)
        remaining = context.time_remaining()
        # Nothing is stored for a caller whose deadline has passed (hub.application.storage).
        # Reset when the call ends: the thread goes on to other work, which is not this call's.
        deadline = DEADLINE.set(time.monotonic() + remaining if remaining is not None else None)
        try:
            with telemetry.request(_request_id(context)):
                try:
                    if isinstance(request, Unparseable):
                        abort(call, _refusal(request))
                    response = behaviour(request, call)
                    call.count("OK")
                    return response
                finally:
                    call.count("UNKNOWN")  # an error that did not end through abort()
        finally:
            DEADLINE.reset(deadline)

    return unary


def _stream(name: str, behaviour: Any, limit: StreamLimit) -> Callable[[Any, Any], Any]:
    async def stream(request: Any, context: Any) -> AsyncIterator[Any]:
        call = _CountedCall(context, name, timed=False)
        with telemetry.request(_request_id(context)):
            if isinstance(request, Unparseable):
                await _abort(call, _refusal(request))
            if not limit.enter():
                await call.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{limit.limit} streams are open on this node process; try again later",
                )
            try:
                async for item in behaviour(request, call):
                    yield item
                call.count("OK")
            except grpc.aio.AbortError:
                raise  # the behaviour ended the call itself
            except Exception as error:
                await _abort_mapped(call, error)
            finally:
                limit.leave()
                call.count("CANCELLED")  # the client went away, or the task was cancelled

    return stream


def _client_stream(name: str, behaviour: Any, limit: StreamLimit) -> Callable[[Any, Any], Any]:
    """A client-streaming method (an upload): an ``async`` function on the event loop that
    takes the requests as an async iterator; it holds a stream place while it runs."""

    async def parsed(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
        async for request in requests:
            if isinstance(request, Unparseable):
                raise _refusal(request)
            yield request

    async def handle(requests: Any, context: Any) -> Any:
        call = _CountedCall(context, name, timed=True)
        with telemetry.request(_request_id(context)):
            if not limit.enter():
                await call.abort(
                    grpc.StatusCode.RESOURCE_EXHAUSTED,
                    f"{limit.limit} streams are open on this node process; try again later",
                )
            try:
                response = await behaviour(parsed(requests), call)
                call.count("OK")
                return response
            except grpc.aio.AbortError:
                raise
            except Exception as error:
                await _abort_mapped(call, error)
            finally:
                limit.leave()
                call.count("CANCELLED")

    return handle


async def _abort_mapped(context: Any, error: Exception) -> None:
    """End a stream through the one error table, as ``errors.guard`` ends a unary call: a
    store that is away is UNAVAILABLE, and a bug is INTERNAL with only a reference to the log."""
    mapped = as_tongban_error(error)
    if mapped is None:
        reference = uuid.uuid4().hex[:12]
        log.exception("internal error (reference %s)", reference)
        await context.abort(grpc.StatusCode.INTERNAL, f"internal error (reference {reference})")
        return
    await _abort(context, mapped)


async def _abort(context: Any, error: TongbanError) -> None:
    """End a stream with the status for ``error`` (the async form of ``errors.abort``)."""
    code, details, trailing = status_details(error)
    await context.abort(code, details, trailing)

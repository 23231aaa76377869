"""Registering a servicer so that a request that does not parse gets INVALID_ARGUMENT.

grpcio's generated ``add_*Servicer_to_server`` functions deserialise each request before the
servicer runs, and answer bytes that are not the request message with INTERNAL. A caller who
sent garbage should be told so (INVALID_ARGUMENT, with a ``BadRequest`` field violation), like
every other bad input. So the node registers its services through :func:`add_service`, which
builds the same method handlers from the service descriptor but with a deserialiser that hands a
parse failure to the servicer as :class:`Unparseable` instead of raising; the wrapped method then
refuses it through the one error table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from hub.api.errors import abort
from hub.errors import InvalidInput


class Unparseable:
    """A request whose bytes are not the RPC's request message."""

    def __init__(self, message: str, size: int) -> None:
        self.message = message
        self.size = size


def _deserializer(message_class: Any) -> Callable[[bytes], Any]:
    def parse(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except (DecodeError, RuntimeError, ValueError) as error:
            return Unparseable(f"not a {message_class.DESCRIPTOR.name}: {error}", len(data))

    return parse


def _refusal(request: Unparseable) -> InvalidInput:
    return InvalidInput("request", f"{request.size} bytes", request.message)


def add_service(server: grpc.Server, servicer: Any, service: ServiceDescriptor) -> str:
    """Register ``servicer`` for ``service`` on ``server``; returns the service's full name."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in service.methods:
        behaviour = getattr(servicer, method.name)
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        if method.server_streaming:

            def stream(request: Any, context: Any, behaviour: Any = behaviour) -> Iterator[Any]:
                if isinstance(request, Unparseable):
                    abort(context, _refusal(request))
                yield from behaviour(request, context)

            handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                stream,
                request_deserializer=_deserializer(request_class),
                response_serializer=response_class.SerializeToString,
            )
        else:

            def unary(request: Any, context: Any, behaviour: Any = behaviour) -> Any:
                if isinstance(request, Unparseable):
                    abort(context, _refusal(request))
                return behaviour(request, context)

            handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                unary,
                request_deserializer=_deserializer(request_class),
                response_serializer=response_class.SerializeToString,
            )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    return str(service.full_name)

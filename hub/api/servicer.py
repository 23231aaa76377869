"""gRPC servicers: CaseExchange for halls, HallAdmin for admins, Audit for auditors.

Thin by design: each method authenticates the caller (mutual TLS identity), turns the request into
plain inputs, calls the application, and maps the outcome. Refusals go through the single error
table in :mod:`hub.api.errors`.

Commands arrive as ``SignedCommand``: the exact ``Command`` bytes the hall signed plus the
signature. The servicer parses those bytes, checks that the action matches the RPC and that the
header's hall is the caller's certificate identity, and hands the bytes and signature to the
application, which verifies the signature against the hall's registered key before saving.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from google.protobuf.message import DecodeError
from tongban.v1 import (
    admin_pb2_grpc,
    case_exchange_pb2,
    case_exchange_pb2_grpc,
    common_pb2,
)

from hub.api.convert import (
    enum_to_proto,
    event_to_proto,
    from_wire,
    parse_uuid,
    timestamp_to_proto,
    value_from_proto,
)
from hub.api.errors import abort
from hub.application.hub import HubApplication
from hub.application.idempotency import CommandResult, HallSignature
from hub.domain.case import Case
from hub.domain.hall import Hall
from hub.domain.items import ServiceItem
from hub.domain.values import Actor
from hub.errors import InvalidInput, PermissionRefused, TongbanError
from hub.pki import Identity, Role

#: Reads the caller's identity from the call; None when the server runs without TLS (demo).
Authenticator = Callable[[grpc.ServicerContext], Identity | None]

#: The largest command a hall may send (materials are digests, so commands are small).
MAX_COMMAND_BYTES = 256 * 1024

R = TypeVar("R")


@dataclass(frozen=True)
class Caller:
    """Who is calling: the certificate identity, or None in insecure demo mode."""

    identity: Identity | None

    def require(self, *roles: Role) -> None:
        """Refuse a caller whose role is not one of ``roles``."""
        if self.identity is not None and self.identity.role not in roles:
            allowed = ", ".join(role.value for role in roles)
            raise PermissionRefused(
                self.identity.name,
                f"a {self.identity.role.value} certificate may not call this (needs {allowed})",
            )

    def require_hall(self, hall_id: str) -> None:
        """Refuse a command whose header names another hall than the certificate."""
        self.require(Role.HALL)
        if self.identity is not None and self.identity.name != hall_id:
            raise PermissionRefused(
                self.identity.name, f"the command is signed as hall {hall_id!r}"
            )


def _guard(context: grpc.ServicerContext, run: Callable[[], R]) -> R:
    try:
        return run()
    except TongbanError as error:
        abort(context, error)


# The application method behind each Command action, with its parameters' type hints.
_METHODS: dict[str, Callable[..., CommandResult]] = {
    field.name: getattr(HubApplication, field.name)
    for field in case_exchange_pb2.Command.DESCRIPTOR.oneofs_by_name["action"].fields
}
_HINTS = {name: typing.get_type_hints(method) for name, method in _METHODS.items()}
_SKIP = {"self", "idempotency_key", "actor", "signature", "return"}


class CaseExchangeServicer(case_exchange_pb2_grpc.CaseExchangeServicer):
    """The whole case lifecycle for hall systems."""

    def __init__(self, app: HubApplication, authenticate: Authenticator) -> None:
        self.app = app
        self.authenticate = authenticate

    # Each lifecycle RPC is the same steps with a different action; see _execute.
    def Submit(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC's method names
        return self._execute("submit", request, context)

    def RequestCorrection(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("request_correction", request, context)

    def Resubmit(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("resubmit", request, context)

    def Accept(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("accept", request, context)

    def RejectAtIntake(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("reject_at_intake", request, context)

    def HandOff(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("hand_off", request, context)

    def AcknowledgeHandoff(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("acknowledge_handoff", request, context)

    def StartHandling(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("start_handling", request, context)

    def Suspend(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("suspend", request, context)

    def Resume(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("resume", request, context)

    def Escalate(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("escalate", request, context)

    def OpenJointTasks(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("open_joint_tasks", request, context)

    def CompleteJointTask(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("complete_joint_task", request, context)

    def Decide(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("decide", request, context)

    def Conclude(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("conclude", request, context)

    def RecordCertificate(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("record_certificate", request, context)

    def Deliver(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("deliver", request, context)

    def Rate(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("rate", request, context)

    def CompleteRectification(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("complete_rectification", request, context)

    def Archive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("archive", request, context)

    def Withdraw(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("withdraw", request, context)

    def _execute(
        self, action: str, request: case_exchange_pb2.SignedCommand, context: grpc.ServicerContext
    ) -> case_exchange_pb2.CommandReply:
        def run() -> case_exchange_pb2.CommandReply:
            caller = Caller(self.authenticate(context))
            command = parse_command(request.command, action)
            header = command.header
            caller.require_hall(header.hall_id)
            actor = value_from_proto(Actor, header, "command.header")
            signature = (
                HallSignature(request.command, request.signature) if request.signature else None
            )
            body = getattr(command, action)
            arguments = {
                name: from_wire(hint, getattr(body, name), f"command.{action}.{name}")
                for name, hint in _HINTS[action].items()
                if name not in _SKIP
            }
            result = _METHODS[action](
                self.app,
                idempotency_key=header.idempotency_key,
                actor=actor,
                signature=signature,
                **arguments,
            )
            return case_exchange_pb2.CommandReply(
                case_id=str(result.case_id), version=result.version, replayed=result.replayed
            )

        return _guard(context, run)

    # ------------------------------------------------------------------ queries

    def GetCase(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> case_exchange_pb2.CaseView:
            case = self.app.get_case(parse_uuid(request.case_id, "case_id"))
            self._may_read(Caller(self.authenticate(context)), case)
            return case_view(case)

        return _guard(context, run)

    def GetCaseHistory(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> case_exchange_pb2.CaseHistory:
            case_id = parse_uuid(request.case_id, "case_id")
            self._may_read(Caller(self.authenticate(context)), self.app.get_case(case_id))
            events = [event_to_proto(e) for e in self.app.case_history(case_id)]
            return case_exchange_pb2.CaseHistory(events=events)

        return _guard(context, run)

    def ListItems(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> case_exchange_pb2.ListItemsResponse:
            Caller(self.authenticate(context))  # any authenticated caller may read the catalogue
            items = [
                item_to_proto(item)
                for item in self.app.catalogue
                if request.kind in (0, enum_to_proto(item.kind))
                and (
                    request.cross_region_mode == 0
                    or request.cross_region_mode
                    in {enum_to_proto(m) for m in item.cross_region_modes}
                )
            ]
            return case_exchange_pb2.ListItemsResponse(
                items=items, edition=self.app.catalogue.edition
            )

        return _guard(context, run)

    def ListQueue(self, request: Any, context: Any) -> Any:  # noqa: N802
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "hall queues are served by the queue projection, which this node does not run yet",
        )

    def WatchQueue(self, request: Any, context: Any) -> Iterator[Any]:  # noqa: N802
        context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "hall queues are served by the queue projection, which this node does not run yet",
        )
        yield  # pragma: no cover - makes this a generator, as a streaming handler must be

    def _may_read(self, caller: Caller, case: Case) -> None:
        """Auditors read everything; a hall reads what it took in, holds or must act on."""
        identity = caller.identity
        if identity is None or identity.role is Role.AUDITOR:
            return
        caller.require(Role.HALL, Role.AUDITOR)
        involved = {case.intake_hall, case.holder, case.pending_receiver or ""}
        involved |= {status.task.hall_id for status in case.joint_tasks.values()}
        if identity.name not in involved:
            raise PermissionRefused(identity.name, f"case {case.id} is not this hall's case")


class HallAdminServicer(admin_pb2_grpc.HallAdminServicer):
    """Hall registry management for the admin role."""

    def __init__(self, app: HubApplication, authenticate: Authenticator) -> None:
        self.app = app
        self.authenticate = authenticate

    def RegisterHall(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> common_pb2.Hall:
            Caller(self.authenticate(context)).require(Role.ADMIN)
            return hall_to_proto(
                self.app.register_hall(
                    hall_id=request.hall_id,
                    name=request.name,
                    region=request.region,
                    windows=list(request.windows),
                    public_key=request.public_key,
                )
            )

        return _guard(context, run)

    def RotateHallKey(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> common_pb2.Hall:
            Caller(self.authenticate(context)).require(Role.ADMIN)
            return hall_to_proto(self.app.rotate_hall_key(request.hall_id, request.public_key))

        return _guard(context, run)

    def RetireHall(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> common_pb2.Hall:
            Caller(self.authenticate(context)).require(Role.ADMIN)
            return hall_to_proto(self.app.retire_hall(request.hall_id, request.reason))

        return _guard(context, run)

    def GetHall(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> common_pb2.Hall:
            Caller(self.authenticate(context)).require(Role.ADMIN, Role.AUDITOR, Role.HALL)
            return hall_to_proto(self.app.get_hall(request.hall_id))

        return _guard(context, run)


def parse_command(data: bytes, action: str) -> case_exchange_pb2.Command:
    """Parse the signed bytes; the action must be the one the RPC stands for."""
    if len(data) > MAX_COMMAND_BYTES:
        raise InvalidInput("command", f"{len(data)} bytes", f"larger than {MAX_COMMAND_BYTES}")
    if not data:
        raise InvalidInput("command", "", "empty: send a serialised Command")
    try:
        command = case_exchange_pb2.Command.FromString(data)
    except DecodeError as error:
        raise InvalidInput("command", f"{len(data)} bytes", f"not a Command: {error}") from None
    which = command.WhichOneof("action")
    if which != action:
        raise InvalidInput("command.action", which or "", f"this RPC takes a {action!r} command")
    if not command.HasField("header"):
        raise InvalidInput("command.header", "", "missing")
    return command


def case_view(case: Case) -> case_exchange_pb2.CaseView:
    """A case's current state on the wire."""
    view = case_exchange_pb2.CaseView(
        case_id=str(case.id),
        version=case.version,
        state=enum_to_proto(case.state),
        item_code=case.item_code,
        item_name=case.item_name,
        kind=enum_to_proto(case.kind),
        mode=enum_to_proto(case.mode),
        intake_region=case.intake_region,
        competent_region=case.competent_region,
        intake_hall=case.intake_hall,
        holder=case.holder,
        pending_receiver=case.pending_receiver or "",
        promised_days=case.promised_days,
        statutory_days=case.statutory_days,
        certificate_id=case.certificate_id,
        clock_running=case.clock_running,
        clock_seconds=case.clock_seconds(case.modified_on),
        paused_seconds=case.paused_seconds,
        allowed_commands=case.allowed_commands(),
        submitted_at=timestamp_to_proto(case.created_on),
        modified_at=timestamp_to_proto(case.modified_on),
    )
    if case.approved is not None:
        view.approved = case.approved
    if case.rating is not None:
        view.rating = enum_to_proto(case.rating)
    for status in case.joint_tasks.values():
        view.joint_tasks.add(
            task=common_pb2.JointTask(
                task_id=status.task.task_id,
                hall_id=status.task.hall_id,
                department=status.task.department,
            ),
            done=status.done,
            approved=bool(status.approved),
            note=status.note,
        )
    return view


def hall_to_proto(hall: Hall) -> common_pb2.Hall:
    """A registered hall on the wire."""
    return common_pb2.Hall(
        hall_id=hall.hall_id,
        name=hall.name,
        region=hall.region,
        level=enum_to_proto(hall.level),
        windows=list(hall.windows),
        public_key=hall.current_key,
        retired=hall.retired,
    )


def item_to_proto(item: ServiceItem) -> common_pb2.ServiceItem:
    """A catalogue item with its guide fields on the wire."""
    message = common_pb2.ServiceItem(
        code=item.code,
        name=item.name,
        kind=enum_to_proto(item.kind),
        department=item.department,
        competent_level=enum_to_proto(item.competent_level),
        legal_basis=item.legal_basis,
        conditions=item.conditions,
        procedure=item.procedure,
        promised_days=item.promised_days,
        statutory_days=item.statutory_days,
        fee_basis=item.fee_basis,
        fee_standard=item.fee_standard,
        cross_region_modes=[enum_to_proto(m) for m in item.cross_region_modes],
        offsite_intake_provinces=item.offsite_intake_provinces,
        joint_departments=item.joint_departments,
    )
    for material in item.materials:
        message.materials.add(name=material.name, required=material.required, form=material.form)
    if item.certificate is not None:
        message.certificate.type_code = item.certificate.type_code
        message.certificate.name = item.certificate.name
    return message

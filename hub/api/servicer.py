"""gRPC servicers: CaseExchange for halls, HallAdmin for admins.

Thin by design: each method authenticates the caller (its mutual-TLS identity), decides what the
caller's role may do, hands the request to the application, and maps the outcome. Refusals go
through the single error table in :mod:`hub.api.errors`.

Commands arrive as ``SignedCommand``: the exact ``Command`` bytes the signer signed, the
signature, and the clear personal values beside them. The application parses and verifies them
(:meth:`~hub.application.hub.HubApplication.execute`); the servicer only checks that the
certificate's role may send such a command and passes the certificate's name, which must be the
signer's.

What a caller may read: a hall reads the cases it is a party to (and only those: any other case
is NOT_FOUND, exactly as a case that does not exist), with the applicant in clear; an auditor
reads every case with personal data as commitments only; peers and admins get no case data here.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from uuid import UUID

import grpc
from tongban.v1 import admin_pb2, case_exchange_pb2, common_pb2

from hub import telemetry
from hub.api.convert import case_view, event_to_proto, hall_to_proto, item_to_proto
from hub.api.errors import guard
from hub.application.hub import HubApplication
from hub.commands.model import PersonalValue, SignedCommand
from hub.commands.wire import enum_to_proto, parse_uuid
from hub.domain.case import Case
from hub.domain.command_record import CommandResult
from hub.errors import PermissionRefused
from hub.pki import Identity, Role

log = logging.getLogger("tongban.commands")

#: Reads the caller's identity from the call; None when the server runs without TLS (demo).
Authenticator = Callable[[grpc.ServicerContext], Identity | None]

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

    @property
    def name(self) -> str | None:
        """The certificate's name (None without TLS)."""
        return self.identity.name if self.identity is not None else None

    @property
    def role(self) -> Role | None:
        """The certificate's role (None without TLS)."""
        return self.identity.role if self.identity is not None else None


def log_command(action: str, caller: Caller, result: CommandResult) -> None:
    """One structured log line per command answered, with no personal data in it."""
    if not result.replayed:
        telemetry.COMMANDS.labels(action).inc()
    log.info(
        "command",
        extra={
            "action": action,
            "signer": caller.name or "",
            "aggregate_id": str(result.aggregate_id),
            "version": result.version,
            "replayed": result.replayed,
        },
    )


def signed_from_proto(request: case_exchange_pb2.SignedCommand) -> SignedCommand:
    """The wire ``SignedCommand`` as the application takes it."""
    return SignedCommand(
        command=request.command,
        signature=request.signature,
        personal=tuple(PersonalValue(p.field, p.value, p.salt) for p in request.personal),
    )


class CaseExchangeServicer:
    """The whole case lifecycle for hall systems."""

    def __init__(self, app: HubApplication, authenticate: Authenticator, queue: Any = None) -> None:
        self.app = app
        self.authenticate = authenticate
        #: ListQueue and WatchQueue (hub.api.supervision.QueueQueries), when the node serves
        #: its projections.
        self.queue = queue

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

    def IssueCertificate(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("issue_certificate", request, context)

    def SuspendCertificate(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("suspend_certificate", request, context)

    def ReinstateCertificate(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("reinstate_certificate", request, context)

    def RevokeCertificate(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("revoke_certificate", request, context)

    def Deliver(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("deliver", request, context)

    def DispatchByPost(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("dispatch_by_post", request, context)

    def DepositInLocker(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("deposit_in_locker", request, context)

    def PickUpFromLocker(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("pick_up_from_locker", request, context)

    def ReturnToWindow(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("return_to_window", request, context)

    def Rate(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("rate", request, context)

    def CompleteRectification(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("complete_rectification", request, context)

    def Archive(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("archive", request, context)

    def Withdraw(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("withdraw", request, context)

    def StaffWindow(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("staff_window", request, context)

    # 预约办 (docs/appointments.md): the reply's case_id is the appointment's id.
    def BookAppointment(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("book_appointment", request, context)

    def CancelAppointment(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("cancel_appointment", request, context)

    def ListAppointments(self, request: Any, context: Any) -> Any:  # noqa: N802
        from hub.api.appointments import list_appointments  # (it imports this module)

        if self.queue is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "this server reads no projections")
        return list_appointments(self.app, self.queue.access, self.authenticate, request, context)

    def RecordIdentityCheck(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("record_identity_check", request, context)

    def AuthoriseAgent(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("authorise_agent", request, context)

    def RegisterAgent(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("register_agent", request, context)

    def RetireAgent(self, request: Any, context: Any) -> Any:  # noqa: N802
        return self._execute("retire_agent", request, context)

    def _execute(
        self, action: str, request: case_exchange_pb2.SignedCommand, context: grpc.ServicerContext
    ) -> case_exchange_pb2.CommandReply:
        def run() -> case_exchange_pb2.CommandReply:
            caller = Caller(self.authenticate(context))
            caller.require(Role.HALL)
            result = self.app.execute(
                signed_from_proto(request), expected=action, caller=caller.name
            )
            log_command(action, caller, result)
            return case_exchange_pb2.CommandReply(
                # A hall's own command (staff_window) acts on no case.
                case_id="" if action == "staff_window" else str(result.aggregate_id),
                version=result.version,
                replayed=result.replayed,
            )

        return guard(context, run)

    # ------------------------------------------------------------------ queries

    def GetCase(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> case_exchange_pb2.CaseView:
            caller = Caller(self.authenticate(context))
            return case_view(self._readable_case(caller, request.case_id))

        return guard(context, run)

    def GetCaseHistory(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> case_exchange_pb2.CaseHistory:
            caller = Caller(self.authenticate(context))
            case = self._readable_case(caller, request.case_id)
            # Only a hall that is a party sees the applicant in clear (never after erasure).
            opened = self.app.open_applicant(case) if caller.role is not Role.AUDITOR else None
            applicant = opened.applicant if opened is not None else None
            events = [
                event_to_proto(event, applicant=applicant, erased=case.personal_data_erased)
                for event in self.app.case_history(case.id)
            ]
            return case_exchange_pb2.CaseHistory(events=events)

        return guard(context, run)

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

        return guard(context, run)

    def ListQueue(self, request: Any, context: Any) -> Any:  # noqa: N802
        if self.queue is None:
            context.abort(grpc.StatusCode.UNAVAILABLE, "this server reads no projections")
        return self.queue.list_queue(request, context)

    async def WatchQueue(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        if self.queue is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "this server reads no projections")
        async for update in self.queue.watch_queue(request, context):
            yield update

    def _readable_case(self, caller: Caller, case_id: str) -> Case:
        """Auditors read every case; a hall only the cases it is a party to (others: NOT_FOUND,
        the same answer as for no case); no other role reads cases here."""
        caller.require(Role.HALL, Role.AUDITOR)
        uuid = parse_uuid(case_id, "case_id")
        if caller.role is Role.HALL and caller.name is not None:
            return self.app.case_for_hall(uuid, caller.name)
        return self.app.get_case(uuid)


#: The leaf index of an aggregate's event, once integrated (None before, or without a ledger).
LeafIndex = Callable[[UUID, int], int | None]


class HallAdminServicer:
    """Hall registry management and erasure, by admins' signed commands."""

    def __init__(
        self,
        app: HubApplication,
        authenticate: Authenticator,
        leaf_index: LeafIndex = lambda aggregate_id, version: None,
        on_erased: Callable[[UUID], object] = lambda case_id: None,
    ) -> None:
        self.app = app
        self.authenticate = authenticate
        self.leaf_index = leaf_index
        #: Runs after an erasure is recorded (and on its replay): erases the case's materials.
        self.on_erased = on_erased

    def _admin(self, action: str, request: Any, context: Any) -> Any:
        caller = Caller(self.authenticate(context))
        caller.require(Role.ADMIN)
        result = self.app.execute(signed_from_proto(request), expected=action, caller=caller.name)
        log_command(action, caller, result)
        return result

    def RegisterHall(self, request: Any, context: Any) -> Any:  # noqa: N802
        return guard(context, lambda: self._hall(self._admin("register_hall", request, context)))

    def RotateHallKey(self, request: Any, context: Any) -> Any:  # noqa: N802
        return guard(context, lambda: self._hall(self._admin("rotate_hall_key", request, context)))

    def RetireHall(self, request: Any, context: Any) -> Any:  # noqa: N802
        return guard(context, lambda: self._hall(self._admin("retire_hall", request, context)))

    def ErasePersonalData(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> case_exchange_pb2.CommandReply:
            result = self._admin("erase_personal_data", request, context)
            self.on_erased(result.aggregate_id)
            return case_exchange_pb2.CommandReply(
                case_id=str(result.aggregate_id), version=result.version, replayed=result.replayed
            )

        return guard(context, run)

    def _hall(self, result: Any) -> common_pb2.Hall:
        return self._with_keys(self.app.hall_by_id(result.aggregate_id))

    def _with_keys(self, hall: Any) -> common_pb2.Hall:
        """The hall with each key's period in the log (leaf indices; 0 while not integrated)."""
        versions = self.app.hall_key_versions(hall.hall_id)
        indices = [self.leaf_index(hall.id, version) or 0 for _, version in versions]
        periods = [
            (key, since, indices[n + 1] if n + 1 < len(indices) else 0)
            for n, ((key, _), since) in enumerate(zip(versions, indices, strict=True))
        ]
        return hall_to_proto(hall, periods)

    def GetHall(self, request: admin_pb2.GetHallRequest, context: Any) -> Any:  # noqa: N802
        def run() -> common_pb2.Hall:
            Caller(self.authenticate(context)).require(Role.ADMIN, Role.AUDITOR, Role.HALL)
            return self._with_keys(self.app.get_hall(request.hall_id))

        return guard(context, run)


__all__ = ["Authenticator", "Caller", "CaseExchangeServicer", "HallAdminServicer", "LeafIndex"]

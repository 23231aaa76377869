"""The node's application: every command of the case lifecycle and the hall registry.

One ``eventsourcing`` Application holds all of a node's aggregates (cases, halls, idempotency
records), so its notification log is the node's single ordered feed that the ledger, projections
and relay follow.

Commands take plain inputs, check them against the registries (regions, catalogue, halls), let the
aggregate decide, and save the aggregate together with the command's idempotency record in one
transaction. Every refusal raises a :class:`~hub.errors.TongbanError` before anything is saved.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.application import AggregateNotFoundError, Application
from eventsourcing.domain import CanMutateAggregate
from eventsourcing.persistence import (
    IntegrityError,
    InterfaceError,
    JSONTranscoder,
    OperationalError,
    Transcoder,
)
from eventsourcing.utils import Environment, EnvType

from hub.application.group_commit import GroupCommit
from hub.application.idempotency import (
    CommandRecord,
    CommandResult,
    HallSignature,
    VerifiedSignature,
    check_key,
    payload_digest,
    record_id,
)
from hub.application.transcodings import FrozenJSONTranscoder, register_domain_transcodings
from hub.domain.case import Case
from hub.domain.hall import Hall, hall_aggregate_id
from hub.domain.items import Catalogue
from hub.domain.regions import RegionCode, RegionRegistry
from hub.domain.values import (
    Actor,
    Applicant,
    DeliveryMethod,
    JointTask,
    Material,
    Rating,
    SuspensionReason,
)
from hub.errors import (
    AlreadyExists,
    ConcurrencyConflict,
    IdempotencyConflict,
    InvalidInput,
    NotFound,
    PermissionRefused,
    SignatureRefused,
    StorageUnavailable,
)

CaseAction = Callable[[Case], None]


def case_id_for(hall_id: str, idempotency_key: str) -> UUID:
    """A submitted case's id follows from the intake hall and its key, so retries collide."""
    return uuid5(NAMESPACE_URL, f"tongban:case:{hall_id}:{idempotency_key}")


class HubApplication(Application[UUID]):
    """A node's event-sourced application."""

    name = "Tongban"

    def __init__(
        self,
        env: EnvType | None = None,
        *,
        regions: RegionRegistry | None = None,
        catalogue: Catalogue | None = None,
        require_signatures: bool = False,
        group_commit: bool = False,
    ) -> None:
        #: Refuse unsigned commands (a serving node); the demo and tests may run without.
        self.require_signatures = require_signatures
        self.regions = regions or RegionRegistry.load_default()
        self.catalogue = catalogue or Catalogue.load_default()
        super().__init__(env)
        #: Concurrent commands share event-store transactions (see hub.application.group_commit).
        self.group_commit = GroupCommit(self) if group_commit else None

    def construct_env(self, name: str, env: EnvType | None = None) -> Environment:
        """Configuration comes only from ``env`` (built from Settings), never the process env."""
        values = dict(type(self).env)
        values.update(env or {})
        return Environment(name, values)

    def construct_transcoder(self) -> Transcoder:
        """The library's JSON transcoder with arrays read back as tuples, plus domain types."""
        transcoder = FrozenJSONTranscoder()
        self.register_transcodings(transcoder)
        return transcoder

    def register_transcodings(self, transcoder: JSONTranscoder) -> None:
        """Add the domain's value types to the library's JSON transcoder."""
        super().register_transcodings(transcoder)
        register_domain_transcodings(transcoder)

    # ================================================================ hall registry

    def register_hall(
        self,
        *,
        hall_id: str,
        name: str,
        region: str,
        windows: Sequence[str],
        public_key: str,
    ) -> Hall:
        """Register a hall at a known region with its windows and Ed25519 public key."""
        code = self.regions.validate(region, "region")
        hall = Hall.register(
            hall_id=hall_id, name=name, region=code, windows=tuple(windows), public_key=public_key
        )
        self._save(hall, conflict=AlreadyExists(f"hall {hall_id} is already registered"))
        return hall

    def rotate_hall_key(self, hall_id: str, public_key: str) -> Hall:
        """Replace a hall's signing key."""
        hall = self.get_hall(hall_id)
        hall.rotate_key(public_key)
        self._save(hall)
        return hall

    def retire_hall(self, hall_id: str, reason: str) -> Hall:
        """Retire a hall; it can no longer act."""
        hall = self.get_hall(hall_id)
        hall.retire(reason)
        self._save(hall)
        return hall

    def get_hall(self, hall_id: str) -> Hall:
        """The hall with ``hall_id``; NotFound otherwise."""
        try:
            hall = self._get(hall_aggregate_id(hall_id))
        except AggregateNotFoundError:
            raise NotFound("hall", hall_id) from None
        assert isinstance(hall, Hall)
        return hall

    # ================================================================ intake

    def submit(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        item_code: str,
        applicant: Applicant,
        materials: Sequence[Material],
        competent_region: str = "",
    ) -> CommandResult:
        """收件: take in an application at the actor's hall.

        The competent region defaults to the region at the item's competent level that contains
        the intake hall; give it explicitly for a hall above that level or for 跨省通办.
        """
        check_key(idempotency_key)
        payload = {
            "item_code": item_code,
            "applicant": asdict(applicant),
            "materials": [asdict(m) for m in materials],
            "competent_region": competent_region,
        }
        hall = self._acting_hall(actor)
        proof = self._check_signature(hall, signature)
        replay = self._replay(actor, idempotency_key, "submit", payload)
        if replay is not None:
            return replay
        item = self.catalogue.get(item_code)
        intake = RegionCode(hall.region)
        if competent_region:
            competent = self.regions.validate(competent_region, "competent_region")
            if competent.level != item.competent_level:
                raise InvalidInput(
                    "competent_region",
                    competent_region,
                    f"item {item.code} is decided at {item.competent_level.name} level, "
                    f"this region is {competent.level.name}",
                )
        elif intake.level >= item.competent_level:
            competent = intake.ancestor_at(item.competent_level)
        else:
            raise PermissionRefused(
                actor.hall_id,
                f"a {intake.level.name} hall cannot take in item {item.code} without naming its "
                f"competent region ({item.competent_level.name} level)",
            )
        mode = item.allows_intake_in(intake, competent)
        case = Case.submit(
            case_id=case_id_for(actor.hall_id, idempotency_key),
            actor=actor,
            item_code=item.code,
            item_name=item.name,
            kind=item.kind,
            mode=mode,
            intake_region=intake,
            competent_region=competent,
            applicant=applicant,
            materials=tuple(materials),
            promised_days=item.promised_days,
            statutory_days=item.statutory_days,
            produces_certificate=item.certificate is not None,
        )
        return self._commit(proof, case, actor, idempotency_key, "submit", payload)

    def request_correction(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        missing: Sequence[str],
        notice: str,
    ) -> CommandResult:
        """一次性告知: everything missing at once; the clock pauses until resubmission."""
        return self._act(
            signature,
            "request_correction",
            actor,
            idempotency_key,
            case_id,
            {"missing": list(missing), "notice": notice},
            lambda case: case.request_correction(actor, tuple(missing), notice),
        )

    def resubmit(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        materials: Sequence[Material],
    ) -> CommandResult:
        """补正: the missing materials arrive; the case is accepted."""
        return self._act(
            signature,
            "resubmit",
            actor,
            idempotency_key,
            case_id,
            {"materials": [asdict(m) for m in materials]},
            lambda case: case.resubmit(actor, tuple(materials)),
        )

    def accept(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
    ) -> CommandResult:
        """受理."""
        return self._act(
            signature, "accept", actor, idempotency_key, case_id, {}, lambda c: c.accept(actor)
        )

    def reject_at_intake(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        reason: str,
    ) -> CommandResult:
        """不予受理 (final)."""
        return self._act(
            signature,
            "reject_at_intake",
            actor,
            idempotency_key,
            case_id,
            {"reason": reason},
            lambda case: case.reject_at_intake(actor, reason),
        )

    # ================================================================ transfer

    def hand_off(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        to_hall: str,
        reason: str,
    ) -> CommandResult:
        """转办 to another hall of this node."""

        def action(case: Case) -> None:
            receiver = self._receiving_hall(to_hall)
            case.hand_off(actor, to_hall, RegionCode(receiver.region), reason)

        return self._act(
            signature,
            "hand_off",
            actor,
            idempotency_key,
            case_id,
            {"to_hall": to_hall, "reason": reason},
            action,
        )

    def escalate(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        to_hall: str,
        reason: str,
    ) -> CommandResult:
        """上报 to a hall of a higher level whose region contains the actor's."""

        def action(case: Case) -> None:
            receiver = self._receiving_hall(to_hall)
            case.escalate(actor, to_hall, RegionCode(receiver.region), reason)

        return self._act(
            signature,
            "escalate",
            actor,
            idempotency_key,
            case_id,
            {"to_hall": to_hall, "reason": reason},
            action,
        )

    def acknowledge_handoff(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
    ) -> CommandResult:
        """The receiver of a handoff or escalation takes the case."""
        return self._act(
            signature,
            "acknowledge_handoff",
            actor,
            idempotency_key,
            case_id,
            {},
            lambda case: case.acknowledge_handoff(actor),
        )

    # ================================================================ handling

    def start_handling(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
    ) -> CommandResult:
        """承办."""
        return self._act(
            signature,
            "start_handling",
            actor,
            idempotency_key,
            case_id,
            {},
            lambda c: c.start_handling(actor),
        )

    def suspend(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        reason: SuspensionReason,
        note: str,
    ) -> CommandResult:
        """特别程序: the clock pauses."""
        return self._act(
            signature,
            "suspend",
            actor,
            idempotency_key,
            case_id,
            {"reason": reason.name, "note": note},
            lambda case: case.suspend(actor, reason, note),
        )

    def resume(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
    ) -> CommandResult:
        """特别程序 ends; the clock resumes."""
        return self._act(
            signature, "resume", actor, idempotency_key, case_id, {}, lambda c: c.resume(actor)
        )

    def open_joint_tasks(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        tasks: Sequence[JointTask],
    ) -> CommandResult:
        """联办: one task per department or region, each at a registered hall."""

        def action(case: Case) -> None:
            for task in tasks:
                self._receiving_hall(task.hall_id, field="tasks.hall_id")
            case.open_joint_tasks(actor, tuple(tasks))

        return self._act(
            signature,
            "open_joint_tasks",
            actor,
            idempotency_key,
            case_id,
            {"tasks": [asdict(t) for t in tasks]},
            action,
        )

    def complete_joint_task(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        task_id: str,
        approved: bool,
        note: str,
    ) -> CommandResult:
        """A task's hall reports its part; the last one joins the case."""
        return self._act(
            signature,
            "complete_joint_task",
            actor,
            idempotency_key,
            case_id,
            {"task_id": task_id, "approved": approved, "note": note},
            lambda case: case.complete_joint_task(actor, task_id, approved, note),
        )

    def decide(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        approved: bool,
        reason: str,
    ) -> CommandResult:
        """决定 at the competent region."""
        return self._act(
            signature,
            "decide",
            actor,
            idempotency_key,
            case_id,
            {"approved": approved, "reason": reason},
            lambda case: case.decide(actor, approved, reason),
        )

    def conclude(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
    ) -> CommandResult:
        """办结."""
        return self._act(
            signature, "conclude", actor, idempotency_key, case_id, {}, lambda c: c.conclude(actor)
        )

    def record_certificate(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        certificate_id: str,
    ) -> CommandResult:
        """制证: record the certificate issued for an approved case."""
        return self._act(
            signature,
            "record_certificate",
            actor,
            idempotency_key,
            case_id,
            {"certificate_id": certificate_id},
            lambda case: case.record_certificate(actor, certificate_id),
        )

    # ================================================================ after the decision

    def deliver(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        method: DeliveryMethod,
        note: str = "",
    ) -> CommandResult:
        """送达."""
        return self._act(
            signature,
            "deliver",
            actor,
            idempotency_key,
            case_id,
            {"method": method.name, "note": note},
            lambda case: case.deliver(actor, method, note),
        )

    def rate(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        rating: Rating,
        comment: str,
    ) -> CommandResult:
        """好差评; a 差评 opens a rectification."""
        return self._act(
            signature,
            "rate",
            actor,
            idempotency_key,
            case_id,
            {"rating": rating.name, "comment": comment},
            lambda case: case.rate(actor, rating, comment),
        )

    def complete_rectification(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        report: str,
        follow_up: str,
    ) -> CommandResult:
        """整改 done, with the follow-up result."""
        return self._act(
            signature,
            "complete_rectification",
            actor,
            idempotency_key,
            case_id,
            {"report": report, "follow_up": follow_up},
            lambda case: case.complete_rectification(actor, report, follow_up),
        )

    def archive(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
    ) -> CommandResult:
        """归档."""
        return self._act(
            signature, "archive", actor, idempotency_key, case_id, {}, lambda c: c.archive(actor)
        )

    def withdraw(
        self,
        *,
        idempotency_key: str,
        actor: Actor,
        signature: HallSignature | None = None,
        case_id: UUID,
        reason: str,
    ) -> CommandResult:
        """撤回."""
        return self._act(
            signature,
            "withdraw",
            actor,
            idempotency_key,
            case_id,
            {"reason": reason},
            lambda case: case.withdraw(actor, reason),
        )

    # ================================================================ queries

    def get_case(self, case_id: UUID, version: int | None = None) -> Case:
        """The case rebuilt from its stored events (optionally as of ``version``)."""
        try:
            case = self._get(case_id, version)
        except AggregateNotFoundError:
            raise NotFound("case", case_id) from None
        if not isinstance(case, Case):
            raise NotFound("case", case_id)
        return case

    def case_history(self, case_id: UUID) -> list[CanMutateAggregate[UUID]]:
        """The case's stored events, oldest first."""
        events = list(self._read(lambda: list(self.events.get(case_id))))
        if not events or not isinstance(events[0], Case.Submitted):
            raise NotFound("case", case_id)
        return events

    # ================================================================ internals

    def _act(
        self,
        signature: HallSignature | None,
        command: str,
        actor: Actor,
        key: str,
        case_id: UUID,
        payload: dict[str, Any],
        action: CaseAction,
    ) -> CommandResult:
        check_key(key)
        payload = {"case_id": str(case_id), **payload}
        proof = self._check_signature(self._acting_hall(actor), signature)
        replay = self._replay(actor, key, command, payload)
        if replay is not None:
            return replay
        case = self.get_case(case_id)
        action(case)
        return self._commit(proof, case, actor, key, command, payload)

    def _replay(
        self, actor: Actor, key: str, command: str, payload: dict[str, Any]
    ) -> CommandResult | None:
        """The first result when this (hall, key) already ran the same command; else None."""
        try:
            record = self._get(record_id(actor.hall_id, key))
        except AggregateNotFoundError:
            return None
        assert isinstance(record, CommandRecord)
        if record.command != command:
            raise IdempotencyConflict(key, f"for {record.command!r}, not {command!r}")
        if record.digest != payload_digest(command, payload):
            raise IdempotencyConflict(key, f"for {command!r} with a different payload")
        return record.result

    def _commit(
        self,
        proof: VerifiedSignature | None,
        case: Case,
        actor: Actor,
        key: str,
        command: str,
        payload: dict[str, Any],
    ) -> CommandResult:
        result = CommandResult(case.id, case.version)
        record = CommandRecord.record(
            hall_id=actor.hall_id,
            key=key,
            command=command,
            digest=payload_digest(command, payload),
            result=result,
            signed_bytes=proof.command_bytes if proof else b"",
            signature=proof.signature if proof else b"",
            key_id=proof.key_id if proof else "",
        )
        try:
            self._save(case, record)
        except ConcurrencyConflict:
            # Either a concurrent duplicate of this very command won (return its result), or
            # another command changed the case first (the caller may retry).
            replay = self._replay(actor, key, command, payload)
            if replay is not None:
                return replay
            raise
        return result

    def _check_signature(
        self, hall: Hall, signature: HallSignature | None
    ) -> VerifiedSignature | None:
        """Verify the hall's signature before anything else happens; required when serving."""
        if signature is not None:
            return signature.verify(hall)
        if self.require_signatures:
            raise SignatureRefused(hall.hall_id, "the command is not signed")
        return None

    def _acting_hall(self, actor: Actor) -> Hall:
        """The registered, active hall of ``actor``."""
        try:
            hall = self.get_hall(actor.hall_id)
        except NotFound:
            raise InvalidInput(
                "actor.hall_id", actor.hall_id, "no such hall at this node"
            ) from None
        if hall.retired:
            raise PermissionRefused(actor.hall_id, "the hall is retired")
        if actor.region != hall.region:
            raise PermissionRefused(
                actor.hall_id,
                f"the hall is registered at {hall.region}, not {actor.region}",
            )
        return hall

    def _receiving_hall(self, hall_id: str, field: str = "to_hall") -> Hall:
        try:
            hall = self.get_hall(hall_id)
        except NotFound:
            raise InvalidInput(field, hall_id, "no such hall at this node") from None
        if hall.retired:
            raise InvalidInput(field, hall_id, "the hall is retired")
        return hall

    def _get(self, aggregate_id: UUID, version: int | None = None) -> Any:
        return self._read(lambda: self.repository.get(aggregate_id, version=version))

    def _read(self, read: Callable[[], Any]) -> Any:
        try:
            return read()
        except (OperationalError, InterfaceError) as error:
            raise StorageUnavailable(f"event store unavailable: {error}") from error

    def _save(self, *aggregates: Any, conflict: Exception | None = None) -> None:
        try:
            if self.group_commit is not None:
                self.group_commit.save(*aggregates)  # raises what save() would, for these alone
            else:
                self.save(*aggregates)
        except IntegrityError as error:
            if conflict is not None:
                raise conflict from error
            raise ConcurrencyConflict(
                "another command changed the same aggregate first; read it again and retry"
            ) from error
        except (OperationalError, InterfaceError) as error:
            raise StorageUnavailable(f"event store unavailable: {error}") from error

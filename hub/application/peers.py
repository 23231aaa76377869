"""Steps other nodes took on shared cases, applied here; acknowledgements of our envelopes.

The relay (:mod:`hub.relay`) verifies an envelope's proofs and signatures with public keys and
hands the step to :func:`apply_peer_step`. Here the step meets the same domain rules as a local
command: the hall's signed command is parsed, its hall names are rewritten into this node's
naming (:func:`hub.domain.federation.local_name`), and the case runs the same method with the
same checks (state machine, holder rules, competent region). The step's record and the events it
produced are saved in one transaction; the record's id follows from (origin, index), so a step
that arrives twice (a resent envelope, a broker that replays) is stored once.

Outcomes: :class:`Applied` (stored now), :class:`AlreadyApplied` (stored before: acknowledge
again), :class:`NotYet` (an earlier step of the case has not arrived: wait for the resend, store
nothing), or :class:`StepRefused` raised (the domain refused it: answer with a signed refusal).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from hub.application.hub import CASE_STEPS, HubApplication
from hub.application.recorders import PersonalKey
from hub.commands import model as cmd
from hub.commands.model import CaseAction, PersonalValue
from hub.commands.wire import parse_command
from hub.domain.case import Case, business_time, case_id_for, step_time
from hub.domain.command_record import HALL
from hub.domain.federation import (
    PeerAcknowledgement,
    PeerStep,
    acknowledgement_id,
    local_name,
    peer_step_id,
    within,
)
from hub.domain.hall import key_id
from hub.domain.regions import RegionCode
from hub.domain.values import Actor, CaseState
from hub.errors import ConcurrencyConflict, InvalidInput, TongbanError
from ledger import Leaf


@dataclass(frozen=True)
class IncomingStep:
    """A step whose envelope, proofs and signatures the relay has verified."""

    envelope_id: UUID
    sender: str
    envelope: bytes
    envelope_signature: bytes
    origin: str
    origin_index: int
    origin_leaf: bytes
    inclusion_proof: tuple[bytes, ...]
    checkpoint: bytes
    hall_key: str
    signed_bytes: bytes
    signature: bytes
    hall_regions: dict[str, str]
    #: The applicant's values (a submission only), opened from the sealed envelope.
    personal: tuple[PersonalValue, ...] = ()
    #: (origin, index) of the steps the sender had applied before this one.
    after: tuple[tuple[str, int], ...] = ()

    def __repr__(self) -> str:
        return f"IncomingStep({self.origin}#{self.origin_index}, envelope {self.envelope_id})"


class StepRefused(TongbanError):
    """The step breaks this node's rules; the sender gets a signed refusal with the reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Applied:
    """The step is stored now: its record and the events it produced."""

    record_id: UUID
    case_id: UUID
    version: int


@dataclass(frozen=True)
class AlreadyApplied:
    """The step was stored before (a resent or replayed envelope)."""

    record_id: UUID


@dataclass(frozen=True)
class NotYet:
    """An earlier step of the case has not arrived; nothing was stored."""

    reason: str


Outcome = Applied | AlreadyApplied | NotYet


def apply_peer_step(app: HubApplication, step: IncomingStep) -> Outcome:
    """Apply one verified step of another node to this node's copy of the case."""
    record = peer_step_id(step.origin, step.origin_index)
    if app.has_aggregate(record):
        return AlreadyApplied(record)
    for origin, index in step.after:
        if origin != app.policy.origin and not app.has_aggregate(peer_step_id(origin, index)):
            return NotYet(f"step {origin}#{index}, which came before it, has not arrived yet")
    try:
        parsed = parse_command(step.signed_bytes)
    except InvalidInput as error:
        raise StepRefused(f"the hall's command does not parse: {error}") from None
    header, action = parsed.header, parsed.action
    if header.node != step.origin:
        raise StepRefused(f"the command was signed for {header.node!r}, not {step.origin!r}")
    if action.signer != HALL:
        raise StepRefused(f"{action.action_name!r} is not a hall's command; it is not relayed")
    if key_id(step.hall_key) != _leaf_key_id(step):
        raise StepRefused("the hall key does not match the key id in the origin's leaf")
    own = app.policy.region
    if within(header.region, own):
        raise StepRefused(f"a hall of {step.origin} cannot be in this node's region {own}")
    if not app.policy.origin_keeps(step.origin, header.region):
        # Each node registers halls of its own region only: a step whose hall is of another
        # node's region (or of none) is a node speaking for halls that are not its own.
        raise StepRefused(
            f"the command's hall is of region {header.region}, which {step.origin} does not keep"
        )
    actor = Actor(
        local_name(header.hall_id, header.region, own), header.operator, header.region, header.agent
    )
    key_rows: list[Any] = []
    # The step takes effect here when this node applies it: its record and the events it
    # produces carry this one moment (no earlier than the case's previous step), which the
    # auditor bounds by the envelope's signed sending time and the sender's record of the
    # acknowledgement (docs/federation.md, "The auditor's view").
    applied_at = PeerStep.Recorded.create_timestamp()
    try:
        if isinstance(action, cmd.Submit):
            with step_time(applied_at):
                case, key_row = _copy_submission(app, step, parsed, actor)
            before, key_rows = 0, [key_row]
        else:
            assert isinstance(action, CaseAction)
            try:
                case = app.get_case(action.case_id)
            except TongbanError:
                return NotYet(f"case {action.case_id} has not arrived here yet")
            before = case.version
            localized = _localized(action, step.hall_regions, own)
            with step_time(business_time(applied_at, applied_at, case.last_step_at)):
                CASE_STEPS[type(action)](app, case, actor, localized)
    except TongbanError as error:
        raise StepRefused(str(error)) from None
    evidence = PeerStep._create(
        PeerStep.Recorded,
        timestamp=applied_at,
        id=record,
        envelope_id=step.envelope_id,
        sender=step.sender,
        envelope=step.envelope,
        envelope_signature=step.envelope_signature,
        origin=step.origin,
        origin_index=step.origin_index,
        origin_leaf=step.origin_leaf,
        inclusion_proof=tuple(step.inclusion_proof),
        checkpoint=step.checkpoint,
        signer=actor.hall_id,
        key_id=key_id(step.hall_key),
        hall_key=step.hall_key,
        signed_bytes=step.signed_bytes,
        signature=step.signature,
        hall_regions=dict(step.hall_regions),
        target_id=case.id,
        first_version=before + 1,
        last_version=case.version,
    )
    extra: dict[str, Any] = {"personal_keys": key_rows} if key_rows else {}
    try:
        # The record first: its events follow it in the log, as a local command's do.
        app.save_records(evidence, case, **extra)
    except ConcurrencyConflict:
        if app.has_aggregate(record):
            return AlreadyApplied(record)
        raise
    return Applied(record, case.id, case.version)


def record_acknowledgement(
    app: HubApplication,
    *,
    envelope_id: UUID,
    peer: str,
    peer_key_id: str,
    body: bytes,
    signature: bytes,
    stored: bool,
    peer_index: int,
    reason: str,
    beside: Sequence[Callable[[Any], None]] = (),
) -> bool:
    """Save a peer's verified acknowledgement; False when it was saved before.

    ``beside``: writes to commit in the same transaction (each called with its cursor), only
    if the acknowledgement is saved now."""
    record = acknowledgement_id(envelope_id)
    if app.has_aggregate(record):
        return False
    acknowledgement = PeerAcknowledgement._create(
        PeerAcknowledgement.Recorded,
        id=record,
        envelope_id=envelope_id,
        peer=peer,
        key_id=peer_key_id,
        body=body,
        signature=signature,
        stored=stored,
        peer_index=peer_index,
        reason=reason,
    )
    try:
        app.save_records(acknowledgement, beside=list(beside))
    except ConcurrencyConflict:
        return False
    return True


def take_back_refused_transfer(
    app: HubApplication,
    *,
    case_id: UUID,
    envelope_id: UUID,
    peer: str,
    peer_key_id: str,
    body: bytes,
    signature: bytes,
    reason: str,
    beside: Sequence[Callable[[Any], None]] = (),
) -> bool:
    """A peer refused the hall our case was handed off or escalated to: the case comes back
    (its ``TransferRefused`` event carries the peer's signed refusal). False when the case is
    no longer waiting for another node (the refusal was handled before).

    ``beside``: writes to commit in the same transaction (each called with its cursor), only if
    the case is taken back now."""
    case = app.get_case(case_id)
    if not (case.state_is(CaseState.HANDED_OFF, CaseState.ESCALATED) and case.awaits_another_node):
        return False
    case.transfer_refused(
        envelope_id=envelope_id,
        peer=peer,
        key_id=peer_key_id,
        body=body,
        signature=signature,
        reason=reason,
    )
    try:
        app.save_records(case, beside=list(beside))
    except ConcurrencyConflict:
        return False
    return True


def _copy_submission(
    app: HubApplication, step: IncomingStep, parsed: Any, actor: Actor
) -> tuple[Case, PersonalKey]:
    """This node's copy of a case another node's hall took in (the same id, items, rules),
    with the applicant sealed under a key of this node's, and that key's row."""
    header, action = parsed.header, parsed.action
    case_id = case_id_for(header.hall_id, header.idempotency_key)
    if app.has_aggregate(case_id):
        raise StepRefused(f"case {case_id} exists here already")
    if not step.personal:
        raise StepRefused("a submission arrives with its applicant sealed to this node")
    applicant, salts = app.open_personal(action, step.personal)
    item = app.catalogue.get(action.item_code)
    intake = RegionCode(header.region)
    if action.competent_region:
        competent = app.regions.validate(action.competent_region, "submit.competent_region")
    elif intake.level >= item.competent_level:
        competent = intake.ancestor_at(item.competent_level)
    else:
        raise StepRefused(f"item {item.code} needs a competent region at {item.competent_level}")
    home = RegionCode(action.home_region) if action.home_region else None
    mode = item.mode_for(intake, competent, home)
    sealed, key_row = app.vault.seal(case_id, applicant, salts, action.applicant)
    case = Case.submit(
        case_id=case_id,
        actor=actor,
        item_code=item.code,
        item_name=item.name,
        kind=item.kind,
        mode=mode,
        intake_region=intake,
        competent_region=competent,
        applicant=sealed,
        materials=action.materials,
        promised_days=item.promised_days,
        statutory_days=item.statutory_days,
        produces_certificate=item.certificate is not None,
        home_region=action.home_region,
        # 预约办: the appointment at the intake node (its Received event stays there).
        appointment_id=action.appointment_id,
        # As the intake node recorded them (the binding check compares them with the command).
        window=action.window,
        channel=action.channel,
        required_checks=item.required_checks,
        agent=action.agent,
    )
    return case, key_row


def _localized(action: CaseAction, hall_regions: dict[str, str], own: str) -> CaseAction:
    """The action with every hall it names written in this node's naming."""
    if isinstance(action, cmd.HandOff | cmd.Escalate):
        name = local_name(action.to_hall, hall_regions.get(action.to_hall), own)
        return dataclasses.replace(action, to_hall=name)
    if isinstance(action, cmd.OpenJointTasks):
        tasks = tuple(
            dataclasses.replace(
                task, hall_id=local_name(task.hall_id, hall_regions.get(task.hall_id), own)
            )
            for task in action.tasks
        )
        return dataclasses.replace(action, tasks=tasks)
    return action


def hall_names(action: Any) -> Sequence[str]:
    """The hall names a command's arguments hold (whose regions a sender vouches for)."""
    if isinstance(action, cmd.HandOff | cmd.Escalate):
        return [action.to_hall]
    if isinstance(action, cmd.OpenJointTasks):
        return [task.hall_id for task in action.tasks]
    return []


def _leaf_key_id(step: IncomingStep) -> str:
    return Leaf.decode(step.origin_leaf).key_id


__all__ = [
    "AlreadyApplied",
    "Applied",
    "IncomingStep",
    "NotYet",
    "Outcome",
    "StepRefused",
    "apply_peer_step",
    "hall_names",
    "record_acknowledgement",
    "take_back_refused_transfer",
]

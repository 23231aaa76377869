"""Relay in: what arrives on this node's inbox topic, verified before anything is stored.

An **envelope** is verified with public keys alone (:func:`hub.relay.envelope.verify_envelope`);
its sender's checkpoint is remembered (two different trees of one size from the same node, or
a consistency proof that does not connect a tree seen before to the new one, are a fork: the
message is quarantined, and both signed notes are kept as split-view evidence, as for a witness
request); then the step is applied to this node's copy
of the case (:func:`hub.application.peers.apply_peer_step`), its record and events stored in one
transaction. The acknowledgement (with this node's leaf index of the record and its cosignature
of the sender's checkpoint) is queued by the outbox projection once the record is in the log;
a duplicate is acknowledged again at once; a step the domain refuses gets a signed refusal; a
step whose case has not arrived yet is left for the resend (nothing stored, nothing answered).

An **acknowledgement** must be signed by the peer we sent the envelope to, and its cosignature
must verify over our checkpoint; then it is stored in our log (the peer's signature with it),
and the outbox row is done.

Whatever fails verification goes to the quarantine with the reason, never silently dropped.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import UUID

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from tongban.v1 import federation_pb2

from hub import telemetry
from hub.application.hub import HubApplication
from hub.application.peers import (
    AlreadyApplied,
    IncomingStep,
    NotYet,
    StepRefused,
    apply_peer_step,
    record_acknowledgement,
    take_back_refused_transfer,
)
from hub.application.storage import passing
from hub.commands.federation import EnvelopeBody, parse_envelope
from hub.domain.command_record import CommandRecord
from hub.integrity.integrator import LedgerView
from hub.integrity.witnessed import observe_checkpoint, record_cosignatures
from hub.relay.config import FederationConfig, Peer
from hub.relay.envelope import (
    FAILED,
    FORGED,
    FORK,
    UNVERIFIABLE,
    EnvelopeRefused,
    VerifiedEnvelope,
    parse_message,
    verify_ack,
    verify_envelope,
)
from hub.relay.outbound import Publisher, refusal
from hub.relay.store import ENVELOPE, RelayStore
from ledger import (
    LedgerError,
    SplitViewError,
    Verifier,
    attach_cosignatures,
    open_note,
    verified_cosignatures,
)

log = logging.getLogger(__name__)

#: What became of one message (metrics label, and the return value for tests).
STORED = "stored"
DUPLICATE = "duplicate"
WAITING = "waiting"
REFUSED = "refused"
#: How many checkpoint roots, kept cosignatures and own checkpoints the inbox remembers (each
#: cache is emptied when full: what it saves is a read, never a check).
_REMEMBERED = 4096
QUARANTINED = "quarantined"
ACKNOWLEDGED = "acknowledged"


class Inbox:
    """Handles each message of this node's inbox topic (see the module docstring)."""

    def __init__(
        self,
        app: HubApplication,
        store: RelayStore,
        view: LedgerView,
        config: FederationConfig,
        publisher: Publisher,
        *,
        encryption_key: X25519PrivateKey,
        send: Callable[[str, bytes, bytes], None],
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.app = app
        self.store = store
        self.view = view
        self.config = config
        self.publisher = publisher
        self.encryption_key = encryption_key
        self.send = send
        self.clock = clock
        self.origin = app.policy.origin
        self.app_log_verifier = Verifier.from_key(app.genesis().log_key)
        #: Per sender, the last checkpoint observed and kept (size, root): the envelopes of a
        #: busy sender carry the same one until it signs the next.
        self._last_kept: dict[str, tuple[int, bytes]] = {}
        #: Roots of senders' checkpoints verified and kept, by (origin, size). A kept root never
        #: changes (a second root for a size is a fork, quarantined, never kept), so a root
        #: found once need not be read again for every envelope that carries its checkpoint.
        self._seen_roots: dict[tuple[str, int], bytes] = {}
        #: The relay handles messages of different cases at once (Relay: one lane per case),
        #: and verifies their signatures and proofs at once; keeping a sender's new checkpoint
        #: (the witnessing observer checks it against the ones kept before, the store against
        #: a second root of its size) is done one message at a time, so two new checkpoints of
        #: one sender are never each checked only against an older one.
        self._keeping = threading.Lock()
        #: (peer, size) of our checkpoints whose cosignature by that peer is kept.
        self._cosignatures_kept: set[tuple[str, int]] = set()
        #: Our signed checkpoints by size, as read for checking peers' cosignatures.
        self._checkpoints: dict[int, bytes] = {}

    def handle(self, data: bytes) -> str:
        """Act on one message; returns what became of it."""
        try:
            message = parse_message(data)
        except EnvelopeRefused as refused:
            outcome = self._hold(refused, data)
        else:
            if message.WhichOneof("message") == "envelope":
                outcome = self._envelope(message.envelope, data)
            else:
                outcome = self._ack(message.ack, data)
        telemetry.RELAY_MESSAGES.labels(outcome).inc()
        return outcome

    def handle_or_hold(self, data: bytes) -> str:
        """:meth:`handle`, except that a message whose handling raised anything but the store
        being away (which the caller retries) is quarantined with reason ``failed`` and the
        error. Such a fault is this node's, and reading the message again would only repeat
        it: held, it no longer holds back the messages after it, and once the fault is fixed
        an operator releases it and it is handled again."""
        try:
            return self.handle(data)
        except Exception as error:
            if passing(error):
                raise
            log.exception("handling a message raised: quarantined")
            detail = f"handling it raised {type(error).__name__}: {error}"
            outcome = self._hold(EnvelopeRefused(FAILED, detail[:500]), data)
            telemetry.RELAY_MESSAGES.labels(outcome).inc()
            return outcome

    # ------------------------------------------------------------------ envelopes

    def _envelope(self, signed: federation_pb2.SignedEnvelope, data: bytes) -> str:
        verified = self._verified(signed, data)
        if isinstance(verified, str):
            return verified  # quarantined
        body, sender = verified.body, verified.sender
        step = IncomingStep(
            envelope_id=body.envelope_id,
            sender=sender.origin,
            envelope=verified.raw_body,
            envelope_signature=verified.signature,
            origin=body.step.origin,
            origin_index=body.step.index,
            origin_leaf=body.step.leaf,
            inclusion_proof=body.step.inclusion_proof,
            checkpoint=verified.step_checkpoint,
            hall_key=body.step.hall_key,
            signed_bytes=verified.step_leaf.command,
            signature=verified.step_leaf.signature,
            hall_regions=body.step.hall_regions,
            personal=verified.personal,
            after=body.after,
        )
        try:
            outcome = apply_peer_step(self.app, step)
        except StepRefused as refused:
            log.warning("refused envelope %s from %s: %s", body.envelope_id, sender.origin, refused)
            self.send(
                sender.inbox_topic,
                str(body.case_id).encode(),
                refusal(
                    self.publisher.signer,
                    own_origin=self.origin,
                    envelope_id=body.envelope_id,
                    destination=sender.origin,
                    reason=refused.reason,
                ),
            )
            return REFUSED
        if isinstance(outcome, NotYet):
            log.info("envelope %s waits: %s", body.envelope_id, outcome.reason)
            return WAITING
        if isinstance(outcome, AlreadyApplied):
            message = self.publisher.ack_message(outcome.record_id, body.envelope_id, sender.origin)
            if message is not None:
                self.send(sender.inbox_topic, str(body.case_id).encode(), message)
            return DUPLICATE
        return STORED

    def _verified(
        self, signed: federation_pb2.SignedEnvelope, data: bytes
    ) -> VerifiedEnvelope | str:
        """The envelope verified, its sender's checkpoint kept; or the quarantine's outcome."""
        try:
            verified = verify_envelope(
                signed,
                own_origin=self.origin,
                config=self.config,
                seen_root=self._seen_root,
                encryption_key=self.encryption_key,
                now=self.clock(),
            )
        except EnvelopeRefused as refused:
            if refused.reason == FORK:
                self._keep_evidence(signed)
            return self._hold(refused, data)
        sender = verified.sender
        checkpoint = verified.checkpoint.checkpoint
        if self._last_kept.get(sender.origin) != (checkpoint.size, checkpoint.root):
            with self._keeping:
                # Looked at again once this lane holds the lock: another may have kept it.
                if self._last_kept.get(sender.origin) != (checkpoint.size, checkpoint.root):
                    held = self._keep_checkpoint(verified, data)
                    if held is not None:
                        return held
        # else: the very checkpoint the last envelope from this sender carried, observed and
        # kept then (its signature was verified again above): nothing new to record.
        return verified

    def _keep_checkpoint(self, verified: VerifiedEnvelope, data: bytes) -> str | None:
        """Observe and remember the sender's checkpoint; the quarantine's outcome if it
        contradicts one seen before (None: kept)."""
        body, sender = verified.body, verified.sender
        checkpoint = verified.checkpoint.checkpoint
        try:
            self._observe(body, sender)
        except SplitViewError as split:
            return self._hold(EnvelopeRefused(FORK, str(split), sender.origin), data)
        except LedgerError as error:
            return self._hold(EnvelopeRefused(UNVERIFIABLE, str(error), sender.origin), data)
        kept = self.store.add_seen(sender.origin, checkpoint.size, checkpoint.root, body.checkpoint)
        if kept != checkpoint.root:
            return self._hold(
                EnvelopeRefused(
                    FORK,
                    f"{sender.origin} signed two trees of size {checkpoint.size}",
                    sender.origin,
                ),
                data,
            )
        self._last_kept[sender.origin] = (checkpoint.size, checkpoint.root)
        self._remember_root(sender.origin, checkpoint.size, checkpoint.root)
        return None

    def _keep_evidence(self, signed: federation_pb2.SignedEnvelope) -> None:
        """A sender's checkpoint that contradicts one this node saw from it (refused as a fork
        before it reached :meth:`_keep_checkpoint`): shown to the witnessing observer, which
        keeps both signed notes as evidence (``tongban federation witness``)."""
        body = parse_envelope(bytes(signed.body))  # it parsed: the refusal came later
        sender = self.config.peer_by_origin(body.sender)
        if sender is None:
            return
        try:
            self._observe(body, sender)
        except (SplitViewError, LedgerError):
            return  # a split view's evidence is committed before it is raised

    def _observe(self, body: EnvelopeBody, sender: Peer) -> None:
        """Every checkpoint of a peer seen anywhere goes through the witnessing observer: a
        contradiction with one seen before (in an envelope or a witness request) is kept as
        evidence (``tongban federation witness`` shows it) and raised as SplitViewError."""
        observe_checkpoint(
            self.view,
            {sender.origin: sender.log_verifier()},
            body.checkpoint,
            old_size=body.consistency_from or None,
            proof=body.consistency_proof,
        )

    def _remember_root(self, origin: str, size: int, root: bytes) -> None:
        # Bounded: a long-running node sees checkpoints without end; the envelopes in flight
        # cite recent ones, and an older one is read from the store again if ever cited.
        if len(self._seen_roots) >= _REMEMBERED:
            self._seen_roots.clear()
        self._seen_roots[origin, size] = root

    def _seen_root(self, origin: str, size: int) -> bytes | None:
        known = self._seen_roots.get((origin, size))
        if known is not None:
            return known
        found = self.store.seen_root(origin, size)
        if found is None:
            return None
        self._remember_root(origin, size, found[0])
        return found[0]

    # ------------------------------------------------------------------ acknowledgements

    def _ack(self, signed: federation_pb2.SignedAck, data: bytes) -> str:
        try:
            body, peer = verify_ack(
                signed, own_origin=self.origin, config=self.config, now=self.clock()
            )
        except EnvelopeRefused as refused:
            return self._hold(refused, data)
        row = self.store.row(ENVELOPE, body.envelope_id)
        if row is None or row.destination != peer.origin:
            return self._hold(
                EnvelopeRefused(
                    UNVERIFIABLE, f"acknowledges envelope {body.envelope_id}, never sent there"
                ),
                data,
                sender=peer.origin,
            )
        if body.stored and not self._cosigned(body.cosignature, body.cosigned_size, peer):
            return self._hold(
                EnvelopeRefused(FORGED, "the cosignature does not verify over our checkpoint"),
                data,
                sender=peer.origin,
            )
        key = f"{peer.log_verifier().key_id:08x}"
        outcome = STORED if body.stored else REFUSED
        cosigned_size = body.cosigned_size if body.stored else 0
        # The outbox row is done in the transaction that records the answer: one commit, so
        # the answer and the row are stored together or not at all.
        mark_row = functools.partial(
            self.store.write_acknowledged,
            envelope_id=body.envelope_id,
            outcome=outcome,
            reason=body.reason,
            origin=peer.origin,
            cosigned_size=cosigned_size,
        )
        if not body.stored and self._refuses_a_transfer(row.record_id, row.case_id):
            marked = take_back_refused_transfer(
                self.app,
                case_id=row.case_id,
                envelope_id=body.envelope_id,
                peer=peer.origin,
                peer_key_id=key,
                body=bytes(signed.body),
                signature=bytes(signed.signature),
                reason=body.reason,
                beside=[mark_row],
            )
        else:
            marked = record_acknowledgement(
                self.app,
                envelope_id=body.envelope_id,
                peer=peer.origin,
                peer_key_id=key,
                body=bytes(signed.body),
                signature=bytes(signed.signature),
                stored=body.stored,
                peer_index=body.index,
                reason=body.reason,
                beside=[mark_row],
            )
        if not marked:
            # Recorded before (a duplicate acknowledgement, a refusal taken back before): the
            # row is marked on its own (a no-op when it is done already).
            self.store.mark_acknowledged(
                body.envelope_id, outcome, body.reason, peer.origin, cosigned_size
            )
        if body.stored and (peer.origin, body.cosigned_size) not in self._cosignatures_kept:
            # The acknowledgement's cosignature counts towards our checkpoint's finality: kept
            # once per checkpoint and peer (the acknowledgements of a busy exchange cosign the
            # same checkpoint until we sign the next; a later copy would add nothing).
            record_cosignatures(
                self.view,
                body.cosigned_size,
                body.cosignature.rstrip("\n").encode("utf-8") + b"\n",
                [peer.witness_verifier()],
                self.app_log_verifier,
            )
            if len(self._cosignatures_kept) >= _REMEMBERED:
                self._cosignatures_kept.clear()  # bounded: a repeat is kept again, harmlessly
            self._cosignatures_kept.add((peer.origin, body.cosigned_size))
        return ACKNOWLEDGED

    def _refuses_a_transfer(self, record_id: UUID, case_id: UUID) -> bool:
        """Whether the refused step is the hand-off or escalation the case still waits on."""
        record = self.app.get_record(record_id)
        if not isinstance(record, CommandRecord) or record.action not in ("hand_off", "escalate"):
            return False
        case = self.app.get_case(case_id)
        # Nothing but this node's own supervision warnings may have happened to the case since.
        return case.awaits_another_node and not self.app.steps_since(case_id, record.last_version)

    def _cosigned(self, line: str, size: int, peer: Peer) -> bool:
        if not line:
            return False
        note = self._checkpoints.get(size)
        if note is None:
            found = self.view.read(
                lambda cursor: self.view.tables.checkpoint_at_least(cursor, size)
            )
            if found is None or found.size != size:
                return False
            note = found.note
            if len(self._checkpoints) >= _REMEMBERED:
                self._checkpoints.clear()
            self._checkpoints[size] = note  # what we signed at a size never changes
        try:
            cosigned = attach_cosignatures(note, line.rstrip("\n").encode("utf-8") + b"\n")
            opened = open_note(cosigned, [peer.witness_verifier()])
        except LedgerError:
            return False
        return bool(verified_cosignatures(opened, [peer.witness_verifier()]))

    def _hold(self, refused: EnvelopeRefused, data: bytes, sender: str = "") -> str:
        log.warning("quarantined a message from %s: %s", sender or refused.sender or "?", refused)
        self.store.hold(sender or refused.sender, refused.reason, refused.detail, data)
        telemetry.RELAY_QUARANTINE.set(self.store.held_count())
        return QUARANTINED


__all__ = ["ACKNOWLEDGED", "DUPLICATE", "QUARANTINED", "REFUSED", "STORED", "WAITING", "Inbox"]

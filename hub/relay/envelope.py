"""Building and verifying the federation's signed messages, with public keys alone.

A receiving node acts on an envelope only after :func:`verify_envelope` checked, in this order:
it parses; it is addressed to this node; its sender is a peer; the sender's log key signed it;
its checkpoint is signed by the sender and consistent with the sender's checkpoints this node
saw before (a consistency proof from the last one this node acknowledged); the step's leaf is
in its origin's log under a checkpoint that origin signed (the sender's, or for a step the
sender forwards, the origin's own); that leaf is a hall's command whose signature verifies with
the hall key the sender vouches for; and, for a submission, the applicant sealed beside the
body is the one the sender signed for (its SHA-256 is in the body) and its values open (their
commitments are checked by the application). Each failure is an :class:`EnvelopeRefused` with a
reason code the quarantine shows: ``malformed``, ``misaddressed``, ``unknown sender``,
``forged``, ``stale``, ``fork``, ``unverifiable``.

Personal values travel sealed with HPKE (RFC 9180; DHKEM(X25519, HKDF-SHA256), HKDF-SHA256,
AES-256-GCM, from ``cryptography``) to the destination node's encryption key, with the envelope
id in the ``info``, so a sealed applicant cannot be moved to another envelope, and neither Kafka
nor any log ever holds a clear value. HPKE's base mode does not say who sealed: anyone may seal
values to a node's public key. The digest in the signed body does: a copy whose sealed applicant
was dropped or replaced on the way is held, and the sender's own copy goes in.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hpke
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from google.protobuf.message import DecodeError
from tongban.v1 import federation_pb2

from hub.commands.federation import (
    ACK_CONTEXT,
    ENVELOPE_CONTEXT,
    MAX_CLOCK_SKEW,
    AckBody,
    EnvelopeBody,
    parse_ack,
    parse_envelope,
)
from hub.commands.model import PersonalValue
from hub.domain.hall import decode_public_key, key_id
from hub.errors import InvalidInput
from hub.relay.config import FederationConfig, Peer
from ledger import (
    Authority,
    Leaf,
    LedgerError,
    SignedCheckpoint,
    Signer,
    open_checkpoint,
    verify_consistency,
    verify_inclusion,
)

MALFORMED = "malformed"
MISADDRESSED = "misaddressed"
UNKNOWN_SENDER = "unknown sender"
FORGED = "forged"
STALE = "stale"
FORK = "fork"
UNVERIFIABLE = "unverifiable"
#: Not a check: the node failed handling the message (a fault of its own), see Relay.
FAILED = "failed"


_SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)
_PERSONAL_INFO = b"tongban/personal/v1\n"


class EnvelopeRefused(Exception):
    """A message this node will not act on: ``reason`` (a code) and ``detail`` (a sentence)."""

    def __init__(self, reason: str, detail: str, sender: str = "") -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
        self.sender = sender


@dataclass(frozen=True)
class VerifiedEnvelope:
    """An envelope that passed every check, with what the application needs."""

    body: EnvelopeBody
    raw_body: bytes
    signature: bytes
    sender: Peer
    checkpoint: SignedCheckpoint  # the sender's
    step_leaf: Leaf
    step_checkpoint: bytes  # the checkpoint the step's inclusion proof verifies under
    personal: tuple[PersonalValue, ...]


#: Looks up the root of a checkpoint of ``origin`` of ``size`` this node verified before.
SeenRoot = Callable[[str, int], bytes | None]


def seal_personal(
    values: Sequence[PersonalValue], public_key: X25519PublicKey, envelope_id: UUID
) -> bytes:
    """The applicant's values sealed to the destination (see the module docstring)."""
    plaintext = federation_pb2.SealedPersonal(
        fields=[
            federation_pb2.PersonalField(field=v.field, value=v.value, salt=v.salt) for v in values
        ]
    ).SerializeToString()
    return _SUITE.encrypt(plaintext, public_key, info=_PERSONAL_INFO + envelope_id.bytes)


def open_personal(
    sealed: bytes, private_key: X25519PrivateKey, envelope_id: UUID
) -> tuple[PersonalValue, ...]:
    """The values sealed to this node; EnvelopeRefused when they do not open."""
    try:
        plaintext = _SUITE.decrypt(sealed, private_key, info=_PERSONAL_INFO + envelope_id.bytes)
        message = federation_pb2.SealedPersonal.FromString(plaintext)
    except Exception as error:  # HPKE's InvalidTag, a damaged message: all the same refusal
        raise EnvelopeRefused(
            UNVERIFIABLE, f"the sealed personal values do not open: {type(error).__name__}"
        ) from None
    return tuple(PersonalValue(f.field, f.value, bytes(f.salt)) for f in message.fields)


def sign_envelope(body: bytes, signer: Signer, sealed_personal: bytes = b"") -> bytes:
    """A FederationMessage carrying the envelope ``body`` signed by this node's log key."""
    signed = federation_pb2.SignedEnvelope(
        body=body, signature=signer.sign(ENVELOPE_CONTEXT + body), sealed_personal=sealed_personal
    )
    return federation_pb2.FederationMessage(envelope=signed).SerializeToString()


def sign_ack(body: bytes, signer: Signer) -> bytes:
    """A FederationMessage carrying the acknowledgement ``body`` signed by this node."""
    signed = federation_pb2.SignedAck(body=body, signature=signer.sign(ACK_CONTEXT + body))
    return federation_pb2.FederationMessage(ack=signed).SerializeToString()


def parse_message(data: bytes) -> federation_pb2.FederationMessage:
    """A FederationMessage; EnvelopeRefused(malformed) otherwise."""
    try:
        message = federation_pb2.FederationMessage.FromString(data)
    except DecodeError as error:
        raise EnvelopeRefused(MALFORMED, f"not a FederationMessage: {error}") from None
    if message.WhichOneof("message") is None:
        raise EnvelopeRefused(MALFORMED, "neither an envelope nor an acknowledgement")
    return message


def verify_envelope(
    signed: federation_pb2.SignedEnvelope,
    *,
    own_origin: str,
    config: FederationConfig,
    seen_root: SeenRoot,
    encryption_key: X25519PrivateKey,
    now: datetime,
) -> VerifiedEnvelope:
    """Check an envelope (see the module docstring); EnvelopeRefused names what failed."""
    try:
        body = parse_envelope(bytes(signed.body))
    except InvalidInput as error:
        raise EnvelopeRefused(MALFORMED, str(error)) from None
    if body.destination != own_origin:
        raise EnvelopeRefused(
            MISADDRESSED, f"addressed to {body.destination!r}, this is {own_origin!r}", body.sender
        )
    sender = config.peer_by_origin(body.sender)
    if sender is None:
        raise EnvelopeRefused(UNKNOWN_SENDER, f"{body.sender!r} is not a peer", body.sender)
    if not sender.log_verifier().verify(ENVELOPE_CONTEXT + bytes(signed.body), signed.signature):
        raise EnvelopeRefused(FORGED, f"not signed by {body.sender}'s log key", body.sender)
    if body.sent_at > now + MAX_CLOCK_SKEW:
        raise EnvelopeRefused(
            STALE, f"sent at {body.sent_at.isoformat()}, in the future", body.sender
        )
    checkpoint = _checked_checkpoint(body, sender, seen_root)
    step = body.step
    if step.origin == body.sender:
        origin, step_checkpoint = sender, checkpoint
        step_note = body.checkpoint
    else:
        forwarded = config.peer_by_origin(step.origin)
        if forwarded is None or step.origin == own_origin:
            raise EnvelopeRefused(
                UNVERIFIABLE, f"a step of {step.origin!r}, which is not a peer", body.sender
            )
        origin, step_note = forwarded, step.checkpoint
        try:
            step_checkpoint = open_checkpoint(
                step_note, [forwarded.log_verifier()], origin=forwarded.origin
            )
        except LedgerError as error:
            raise EnvelopeRefused(FORGED, f"the step's checkpoint: {error}", body.sender) from None
    leaf = _checked_leaf(body, step_checkpoint, origin)
    personal: tuple[PersonalValue, ...] = ()
    sealed = bytes(signed.sealed_personal)
    if sealed or body.sealed_personal_sha256:
        # The sealed applicant travels beside the signed body: only its digest in the body
        # says it is the one the sender sealed. A copy without it, or with another, proves
        # nothing about the step, so it is held (the sender's own copy still comes), never
        # refused: a signed refusal would end the handoff at the sender.
        if not sealed:
            raise EnvelopeRefused(
                UNVERIFIABLE, "the sealed applicant its sender signed for is missing", body.sender
            )
        if hashlib.sha256(sealed).digest() != body.sealed_personal_sha256:
            raise EnvelopeRefused(
                UNVERIFIABLE,
                "the sealed applicant is not the one its sender signed for",
                body.sender,
            )
        personal = open_personal(sealed, encryption_key, body.envelope_id)
    return VerifiedEnvelope(
        body=body,
        raw_body=bytes(signed.body),
        signature=bytes(signed.signature),
        sender=sender,
        checkpoint=checkpoint,
        step_leaf=leaf,
        step_checkpoint=step_note,
        personal=personal,
    )


def _checked_checkpoint(body: EnvelopeBody, sender: Peer, seen_root: SeenRoot) -> SignedCheckpoint:
    try:
        checkpoint = open_checkpoint(body.checkpoint, [sender.log_verifier()], origin=sender.origin)
    except LedgerError as error:
        raise EnvelopeRefused(FORGED, f"the checkpoint: {error}", body.sender) from None
    size, root = checkpoint.checkpoint.size, checkpoint.checkpoint.root
    known = seen_root(sender.origin, size)
    if known is not None:
        if known != root:
            raise EnvelopeRefused(
                FORK, f"{sender.origin} signed two trees of size {size}", body.sender
            )
        return checkpoint
    start = body.consistency_from
    if start == 0:
        return checkpoint  # the first checkpoint of this peer we learn of, or a resend
    old = seen_root(sender.origin, start)
    if old is None:
        raise EnvelopeRefused(
            UNVERIFIABLE, f"a proof from size {start}, which this node never saw", body.sender
        )
    if start > size:
        raise EnvelopeRefused(
            STALE, f"checkpoint of size {size} is older than {start}, already seen", body.sender
        )
    try:
        verify_consistency(start, size, list(body.consistency_proof), old, root)
    except LedgerError as error:
        raise EnvelopeRefused(
            FORK, f"not consistent with the checkpoint of size {start}: {error}", body.sender
        ) from None
    return checkpoint


def _checked_leaf(body: EnvelopeBody, checkpoint: SignedCheckpoint, origin: Peer) -> Leaf:
    step = body.step
    try:
        leaf = Leaf.decode(step.leaf)
    except LedgerError as error:
        raise EnvelopeRefused(MALFORMED, f"the step's leaf: {error}", body.sender) from None
    if (leaf.origin, leaf.index, leaf.authority) != (
        step.origin,
        step.index,
        Authority.HALL_COMMAND,
    ):
        raise EnvelopeRefused(
            UNVERIFIABLE, "the leaf is not a hall's command at the step's index", body.sender
        )
    try:
        verify_inclusion(
            leaf.leaf_hash(),
            step.index,
            checkpoint.checkpoint.size,
            list(step.inclusion_proof),
            checkpoint.checkpoint.root,
        )
    except LedgerError as error:
        raise EnvelopeRefused(
            UNVERIFIABLE, f"the step is not in {origin.origin}'s log: {error}", body.sender
        ) from None
    if key_id(step.hall_key) != leaf.key_id:
        raise EnvelopeRefused(FORGED, "the hall key does not match the leaf's key id", body.sender)
    try:
        public = Ed25519PublicKey.from_public_bytes(decode_public_key(step.hall_key))
        public.verify(leaf.signature, leaf.command)
    except (InvalidInput, ValueError, InvalidSignature):
        raise EnvelopeRefused(
            FORGED, f"the hall's signature does not verify with key {leaf.key_id}", body.sender
        ) from None
    return leaf


def verify_ack(
    signed: federation_pb2.SignedAck,
    *,
    own_origin: str,
    config: FederationConfig,
    now: datetime,
) -> tuple[AckBody, Peer]:
    """Check an acknowledgement's signature, address and time; EnvelopeRefused otherwise."""
    try:
        body = parse_ack(bytes(signed.body))
    except InvalidInput as error:
        raise EnvelopeRefused(MALFORMED, str(error)) from None
    if body.destination != own_origin:
        raise EnvelopeRefused(
            MISADDRESSED, f"addressed to {body.destination!r}, this is {own_origin!r}", body.sender
        )
    peer = config.peer_by_origin(body.sender)
    if peer is None:
        raise EnvelopeRefused(UNKNOWN_SENDER, f"{body.sender!r} is not a peer", body.sender)
    if not peer.log_verifier().verify(ACK_CONTEXT + bytes(signed.body), signed.signature):
        raise EnvelopeRefused(FORGED, f"not signed by {body.sender}'s log key", body.sender)
    if body.signed_at > now + MAX_CLOCK_SKEW:
        # Stored, it would let the peer date its receipt of the step as late as this.
        raise EnvelopeRefused(
            STALE, f"signed at {body.signed_at.isoformat()}, in the future", body.sender
        )
    return body, peer


__all__ = [
    "FAILED",
    "FORGED",
    "FORK",
    "MALFORMED",
    "MISADDRESSED",
    "STALE",
    "UNKNOWN_SENDER",
    "UNVERIFIABLE",
    "EnvelopeRefused",
    "VerifiedEnvelope",
    "open_personal",
    "parse_message",
    "seal_personal",
    "sign_ack",
    "sign_envelope",
    "verify_ack",
    "verify_envelope",
]

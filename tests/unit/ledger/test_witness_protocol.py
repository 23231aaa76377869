"""The C2SP tlog-witness bodies: the spec's own examples, every refusal's status, and
cosignatures checked with nothing but ``cryptography``."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.cosignature import Cosigner
from ledger.errors import EvidenceKind
from ledger.merkle import EMPTY_ROOT, MerkleTree
from ledger.note import Signer, sign_note
from ledger.witness import Witness
from ledger.witness_protocol import (
    MAX_REQUEST_SIZE,
    SIZE_CONTENT_TYPE,
    AddCheckpointRequest,
    WitnessProtocolError,
    format_add_checkpoint,
    format_size,
    handle_add_checkpoint,
    parse_add_checkpoint,
    parse_cosignatures,
    parse_size,
)

# c2sp.org/tlog-witness, "add-checkpoint": the example request and response, byte for byte.
SPEC_REQUEST = (
    "old 20852014\n"
    "PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=\n"
    "jrJZDmY8Y7SyJE0MWLpLozkIVMSMZcD5kvuKxPC3swk=\n"
    "5+pKlUdi2LeF/BcMHBn+Ku6yhPGNCswZZD1X/6QgPd8=\n"
    "/6WVhPs2CwSsb5rYBH5cjHV/wSmA79abXAwhXw3Kj/0=\n"
    "\n"
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/"
    "Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— example.com/behind-the-sofa opLqBQsREYCgu6xQkYQwJr9fo45a62DN9EdmHXnZdXNqlcVGlCum2Wks+49/"
    "V6267UEjw6QUXTS5Rovnzv++qbSzm9Q=\n"
).encode()
SPEC_RESPONSE = (
    "— witness.example/w1 CMp+6LWBU0anHGH5aNDTJkH/gj79sG+T6+iP2ThYN5krrDJbR1HDnucjL39QsZTSvVjyQLr"
    "dk3DXDqI5G2HgLatVs0pWh6Up69HVOw==\n"
    "— witness.example/w1 I7rEps0pvK2UqkS2gSpVUDhrhVtQV9lgF6pRrWAvjJHjyWpW7VcE3SiOlVlbQNt64vWhO+D"
    "lkL0+UfzuOBMh9ChdMkP1vi/lCAsmlw==\n"
    "— witness.example/w2 AWui8Sk55XjYLOijihBjhqEH6nS1ndDymE0a+6idX7pLcnoB+dhnz0854aLZgrrKbYKA7nC"
    "3HNJhm/kWl7oJlqU3rXXvpysAdyP3wQ==\n"
).encode()

ORIGIN = "example.org/standard-log"
NOW = 1_750_000_000


def test_the_specs_example_request_parses_and_formats_back_byte_for_byte() -> None:
    request = parse_add_checkpoint(SPEC_REQUEST)
    assert request.old_size == 20852014
    assert len(request.proof) == 4
    assert request.proof[0] == base64.b64decode("PlRNCrwHpqhGrupue0L7gxbjbMiKA9temvuZZDDpkaw=")
    assert request.checkpoint.startswith(b"example.com/behind-the-sofa\n20852163\n")
    assert request.format() == SPEC_REQUEST
    assert format_add_checkpoint(20852014, request.proof, request.checkpoint) == SPEC_REQUEST


def test_the_specs_example_response_parses() -> None:
    signatures = parse_cosignatures(SPEC_RESPONSE)
    assert [s.name for s in signatures] == [
        "witness.example/w1",
        "witness.example/w1",
        "witness.example/w2",
    ]


def test_a_request_with_old_size_zero_has_no_proof_lines() -> None:
    note = b"o\n0\n" + base64.b64encode(EMPTY_ROOT) + b"\n\n\xe2\x80\x94 o AAAA\n"
    body = AddCheckpointRequest(0, (), note).format()
    assert body == b"old 0\n\n" + note
    assert parse_add_checkpoint(body) == AddCheckpointRequest(0, (), note)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "line 1 .* newline"),
        (b"old 5", "line 1 .* newline"),
        (b"new 5\n\nx", "line 1 must be 'old <size>'"),
        (b"old 05\n\nx", "no leading zeros"),
        (b"old -1\n\nx", "line 1 must be"),
        (b"old  5\n\nx", "line 1 must be"),
        (b"old 5 \n\nx", "line 1 must be"),
        (b"old 99999999999999999999\n\nx", "uint64"),
        (b"old 5\n!!!!\n\nx", "line 2: a proof line must be base64"),
        (b"old 5\n" + base64.b64encode(b"\x01" * 31) + b"\n\nx", "line 2: .* 31 bytes"),
        (b"old 5\nAA\n\nx", "line 2: a proof line must be base64|line 2: .* bytes"),
        (b"old 5\n" + base64.b64encode(b"\x01" * 32), "no empty line"),
        (b"old 5\n\n", "checkpoint after the empty line is missing"),
        (b"old 5\n" + (base64.b64encode(b"\x01" * 32) + b"\n") * 64 + b"\nx", "more than 63"),
        (b"old 5\n\n" + b"x" * MAX_REQUEST_SIZE, "more than the 65536 accepted"),
    ],
)
def test_malformed_requests_are_400_and_name_the_line(body: bytes, message: str) -> None:
    with pytest.raises(WitnessProtocolError, match=message) as refused:
        parse_add_checkpoint(body)
    assert refused.value.status == 400


def test_a_non_canonical_base64_proof_line_is_refused() -> None:
    canonical = base64.b64encode(b"\x01" * 32)  # ...AQE= : the last char carries spare bits
    sloppy = canonical[:-2] + b"F="
    assert base64.b64decode(sloppy) == base64.b64decode(canonical)
    with pytest.raises(WitnessProtocolError, match="line 2: proof hash is not canonical"):
        parse_add_checkpoint(b"old 5\n" + sloppy + b"\n\nx")


def test_size_bodies() -> None:
    assert format_size(0) == b"0\n"
    assert format_size(20852014) == b"20852014\n"
    assert parse_size(b"20852014\n") == 20852014
    for bad in (b"20852014", b"020\n", b"-1\n", b"1 \n", b""):
        with pytest.raises(WitnessProtocolError):
            parse_size(bad)


def test_malformed_responses_are_refused() -> None:
    for bad in (b"", b"\xe2\x80\x94 w AAAA", b"not a signature\n", b"\xff\n"):
        with pytest.raises(WitnessProtocolError):
            parse_cosignatures(bad)


# ---------------------------------------------------------------------- a witness behind it


class StandardLog:
    """A log as any C2SP log would run it: its own origin and key."""

    def __init__(self) -> None:
        self.signer = Signer.generate(ORIGIN)
        self.tree = MerkleTree()

    def grow(self, count: int) -> None:
        for _ in range(count):
            self.tree.append(b"entry %d" % self.tree.size)

    def note(self, size: int | None = None, tree: MerkleTree | None = None) -> bytes:
        tree = tree or self.tree
        size = tree.size if size is None else size
        return sign_checkpoint(Checkpoint(ORIGIN, size, tree.root(size)), self.signer)


@pytest.fixture
def log() -> StandardLog:
    log = StandardLog()
    log.grow(10)
    return log


@pytest.fixture
def cosigner() -> Cosigner:
    return Cosigner.generate("witness.example/w1")


@pytest.fixture
def witness(log: StandardLog, cosigner: Cosigner) -> Witness:
    return Witness(cosigner, {ORIGIN: log.signer.verifier()}, clock=lambda: NOW)


def verify_with_cryptography_only(line: bytes, checkpoint_text: bytes, vkey: str) -> int:
    """tlog-cosignature/v1 checked from the spec alone: returns the cosignature's timestamp."""
    name, _key_id, key = vkey.split("+", 2)  # (base64 may hold "+")
    raw_key = base64.b64decode(key)
    assert raw_key[0] == 0x04  # the cosignature/v1 signature type
    dash, signed_name, blob = line.decode().rstrip("\n").split(" ")
    assert (dash, signed_name) == ("—", name)
    data = base64.b64decode(blob)
    timestamp = int.from_bytes(data[4:12], "big")
    message = b"cosignature/v1\ntime %d\n" % timestamp + checkpoint_text
    Ed25519PublicKey.from_public_bytes(raw_key[1:]).verify(data[12:], message)
    return timestamp


def test_a_cosignature_verifies_from_the_spec_alone(
    log: StandardLog, witness: Witness, cosigner: Cosigner
) -> None:
    note = log.note()
    response = handle_add_checkpoint(witness, format_add_checkpoint(0, (), note))
    assert (response.status, response.content_type) == (200, "text/plain; charset=utf-8")
    (line,) = response.body.splitlines(keepends=True)
    text = note[: note.index(b"\n\n") + 1]
    assert verify_with_cryptography_only(line, text, cosigner.verifier_key()) == NOW


def test_every_refusal_has_the_specs_status(log: StandardLog, witness: Witness) -> None:
    first = log.note()
    assert handle_add_checkpoint(witness, format_add_checkpoint(0, (), first)).status == 200
    log.grow(6)
    newer = log.note()
    proof = log.tree.consistency_proof(10)

    # A stale old size: 409 with the witness's size as text/x.tlog.size.
    stale = handle_add_checkpoint(witness, format_add_checkpoint(0, (), newer))
    assert (stale.status, stale.content_type, stale.body) == (409, SIZE_CONTENT_TYPE, b"10\n")
    # Old size above the checkpoint's: 400.
    assert handle_add_checkpoint(witness, format_add_checkpoint(17, (), newer)).status == 400
    # A proof that does not verify: 422.
    bad = [bytes(32)] * len(proof)
    assert handle_add_checkpoint(witness, format_add_checkpoint(10, bad, newer)).status == 422
    # Unknown origin: 404. A signature by a key the witness does not trust for the origin: 403.
    stranger = Signer.generate("example.org/other")
    other = sign_checkpoint(Checkpoint("example.org/other", 1, log.tree.root(1)), stranger)
    assert handle_add_checkpoint(witness, format_add_checkpoint(0, (), other)).status == 404
    forged = sign_checkpoint(Checkpoint(ORIGIN, 16, log.tree.root()), Signer.generate(ORIGIN))
    assert handle_add_checkpoint(witness, format_add_checkpoint(10, proof, forged)).status == 403
    # Malformed: 400.
    assert handle_add_checkpoint(witness, b"old 10\n\nnot a note").status == 400
    # A size-0 checkpoint must have the empty tree's root: 422 (signed, so it gets that far).
    body = f"{ORIGIN}\n0\n{base64.b64encode(log.tree.root(1)).decode()}\n"
    zero = sign_note(body, log.signer)
    assert handle_add_checkpoint(witness, format_add_checkpoint(0, (), zero)).status == 422
    # And the good request still goes through.
    assert handle_add_checkpoint(witness, format_add_checkpoint(10, proof, newer)).status == 200
    assert witness.store.evidence() != []  # the bad proof was kept as evidence


def test_a_fork_is_422_and_kept_and_a_rollback_is_409_with_the_size(
    log: StandardLog, witness: Witness
) -> None:
    note = log.note()
    assert handle_add_checkpoint(witness, format_add_checkpoint(0, (), note)).status == 200
    fork_tree = MerkleTree(b"forged %d" % i for i in range(10))
    fork = handle_add_checkpoint(witness, format_add_checkpoint(10, (), log.note(tree=fork_tree)))
    assert fork.status == 422
    rollback = handle_add_checkpoint(witness, format_add_checkpoint(4, (), log.note(4)))
    assert (rollback.status, rollback.content_type, rollback.body) == (
        409,
        SIZE_CONTENT_TYPE,
        b"10\n",
    )
    kinds = [e.kind for e in witness.store.evidence(ORIGIN)]
    assert kinds == [EvidenceKind.FORK, EvidenceKind.ROLLBACK]


def test_a_proof_from_size_zero_is_422(log: StandardLog, witness: Witness) -> None:
    response = handle_add_checkpoint(
        witness, format_add_checkpoint(0, (log.tree.root(1),), log.note())
    )
    assert response.status == 422

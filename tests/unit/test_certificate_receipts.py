"""Certificates bound to the log: the receipt a certificate file carries, attacks first.

A certificate file (``hub.certificate_log``) carries the token, its issuing event's bytes and the
event's tlog-proof receipt under a checkpoint cosigned by the issuer's witnesses. A receipt that
does not prove *this* certificate's issuing event under a checkpoint signed by the issuer's log
key and cosigned by k trusted witnesses makes the verdict ``forged`` ("not bound to the log"),
never ``valid``; a bare token says "log receipt not checked".
"""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, date, datetime, time, timedelta
from uuid import UUID, uuid4

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from eventsourcing.utils import get_topic

from hub.certificate_log import (
    NOT_BOUND,
    CertificateFile,
    TrustedLog,
    check_receipt,
    logs_to_json,
    read_certificate,
    trusted_logs,
)
from hub.certificates import (
    CHINA,
    CertificateClaims,
    IssuerKey,
    TrustBundle,
    Verdict,
    Verification,
    sign_certificate,
    verify_certificate,
)
from hub.domain.case import Case
from hub.domain.certificates import CertificateIdentifier, serial_for
from hub.errors import ConfigurationError
from ledger import (
    Checkpoint,
    Cosigner,
    Leaf,
    MerkleTree,
    Receipt,
    Signer,
    attach_cosignatures,
    sign_checkpoint,
)

pytestmark = pytest.mark.filterwarnings("ignore:EdDSA is deprecated")

ORIGIN = "tongban/43"
SINCE = datetime(2026, 1, 1, tzinfo=UTC)
ISSUED = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
NOW = datetime(2026, 3, 5, tzinfo=UTC)
KEY = IssuerKey(Ed25519PrivateKey.generate(), ORIGIN, "43", SINCE)
LOG = Signer.generate(ORIGIN)
W1, W2 = Cosigner.generate("tongban/42/witness"), Cosigner.generate("tongban/61/witness")
STRANGER = Cosigner.generate("tongban/99/witness")  # a witness nobody trusts
TRUSTED = TrustedLog(ORIGIN, (LOG.verifier_key(),), (W1.verifier_key(), W2.verifier_key()), 2)
BUNDLE = TrustBundle((KEY.trusted(),))
LOGS = {ORIGIN: TRUSTED}
ISSUED_TOPIC = get_topic(Case.CertificateIssued)
VALID_UNTIL = "2036-03-01"


def _expiry(valid_until: str) -> int:
    last_day = date.fromisoformat(valid_until) + timedelta(days=1)
    return int(datetime.combine(last_day, time(), CHINA).timestamp())


class Issued:
    """One certificate and everything its file needs, in a log of several certificates."""

    def __init__(self, case: UUID, index: int) -> None:
        self.case, self.index = case, index
        self.claims = CertificateClaims(
            iss=ORIGIN, jti=str(CertificateIdentifier("150001", "11430902MB0000001X",
                                                      serial_for(case))),
            iat=int(ISSUED.timestamp()), ct="150001", item="200202001000",
            name="老年人优待证办理", auth="益阳市资阳区民政局", rg="430902104000",
            hld=hashlib.sha256(case.bytes).hexdigest(), case=str(case), li=index,
            exp=_expiry(VALID_UNTIL), status_index=index,
        )  # fmt: skip
        self.token = sign_certificate(self.claims, KEY)
        # The stored event's JSON, as the node's mapper writes it (top-level members).
        self.event = json.dumps(
            {"timestamp": {"_type_": "datetime_iso", "_data_": ISSUED.isoformat()},
             "certificate_id": self.claims.jti, "type_code": "150001",
             "issuer_code": "11430902MB0000001X", "authority": self.claims.auth,
             "valid_until": VALID_UNTIL, "region": self.claims.rg, "holder": self.claims.hld},
            ensure_ascii=False, separators=(",", ":"),
        ).encode()  # fmt: skip
        self.leaf = Leaf(ORIGIN, index, case, 6, ISSUED_TOPIC, hashlib.sha256(self.event).digest())


def _log(certificates: int = 3, log: Signer = LOG) -> tuple[list[Issued], MerkleTree, bytes]:
    """A log: filler leaves around ``certificates`` issuing events, and a signed checkpoint."""
    tree, issued = MerkleTree(), []
    for index in range(10):
        if index % 3 == 1 and len(issued) < certificates:
            issued.append(Issued(uuid4(), index))
            tree.append(issued[-1].leaf.encode())
        else:
            filler = Leaf(ORIGIN, index, uuid4(), 1, "CaseOpened", hashlib.sha256(b"x").digest())
            tree.append(filler.encode())
    note = sign_checkpoint(Checkpoint(ORIGIN, tree.size, tree.root()), log)
    return issued, tree, note


def _cosigned(note: bytes, *witnesses: Cosigner) -> bytes:
    text = note.split(b"\n\n")[0].decode() + "\n"
    lines = "".join(w.signature_line(text, int(NOW.timestamp())) for w in witnesses)
    return attach_cosignatures(note, lines.encode()) if witnesses else note


ISSUED_CERTS, TREE, NOTE = _log()
FINAL = _cosigned(NOTE, W1, W2)
CERT = ISSUED_CERTS[0]


def _file(
    issued: Issued = CERT, *, note: bytes = FINAL, leaf: Issued | None = None,
    event: bytes | None = None, proof: list[bytes] | None = None, token: str | None = None,
) -> CertificateFile:  # fmt: skip
    proven = leaf or issued
    path = TREE.inclusion_proof(proven.index) if proof is None else proof
    receipt = Receipt.for_leaf(proven.leaf, path, note).format()
    return CertificateFile(token or issued.token, issued.event if event is None else event, receipt)


def _check(certificate: CertificateFile | None, logs: dict[str, TrustedLog] = LOGS) -> Verification:
    token = certificate.token if certificate is not None else CERT.token
    return check_receipt(verify_certificate(token, BUNDLE, now=NOW), certificate, logs)


def _not_bound(result: Verification, why: str) -> None:
    assert result.verdict is Verdict.FORGED, result
    assert result.reason.startswith(NOT_BOUND), result.reason
    assert why in result.reason, result.reason


def test_a_genuine_file_is_valid_and_says_where_in_the_log() -> None:
    result = _check(_file())
    assert result.verdict is Verdict.VALID, result.reason
    assert f"in the log: leaf {CERT.index} under its checkpoint of size 10" in result.reason
    assert "tongban/42/witness, tongban/61/witness (2 of 2 needed)" in result.reason
    # The file survives its text form.
    token, parsed, damaged = read_certificate(_file().to_json())
    assert (token, parsed, damaged) == (CERT.token, _file(), None)


def test_a_bare_token_says_the_receipt_was_not_checked() -> None:
    token, certificate, damaged = read_certificate(CERT.token + "\n")
    assert (token, certificate, damaged) == (CERT.token, None, None)
    result = _check(None)
    assert result.verdict is Verdict.VALID
    assert result.reason.endswith("status not checked; log receipt not checked")


def test_a_receipt_for_another_certificates_leaf_is_not_bound() -> None:
    # Both genuine: certificate 0's token with certificate 1's receipt and event.
    other = ISSUED_CERTS[1]
    _not_bound(_check(_file(CERT, leaf=other, event=other.event)), "the receipt is for leaf 4")


def test_a_receipt_for_another_case_at_the_same_index_is_not_bound() -> None:
    # A log whose leaf at the certificate's index is another case's (genuinely signed by a
    # log that shows another history): the leaf is not the certificate's issuing event.
    moved = Issued(uuid4(), CERT.index)
    tree = MerkleTree()
    for index in range(10):
        leaf = moved.leaf if index == CERT.index else TREE_LEAVES[index]
        tree.append(leaf.encode())
    note = _cosigned(sign_checkpoint(Checkpoint(ORIGIN, 10, tree.root()), LOG), W1, W2)
    receipt = Receipt.for_leaf(moved.leaf, tree.inclusion_proof(CERT.index), note).format()
    _not_bound(_check(CertificateFile(CERT.token, CERT.event, receipt)), f"of case {moved.case}")


def test_a_leaf_of_another_kind_or_log_is_not_bound() -> None:
    filler_leaf = replace(CERT.leaf, topic=get_topic(Case.CertificateRevoked))
    receipt = Receipt.for_leaf(filler_leaf, TREE.inclusion_proof(CERT.index), FINAL).format()
    _not_bound(_check(CertificateFile(CERT.token, CERT.event, receipt)), "CertificateRevoked")
    elsewhere = replace(CERT.leaf, origin="tongban/61")
    receipt = Receipt.for_leaf(elsewhere, TREE.inclusion_proof(CERT.index), FINAL).format()
    _not_bound(_check(CertificateFile(CERT.token, CERT.event, receipt)), "is in tongban/61")


def test_event_bytes_that_say_something_else_or_are_not_the_leafs_are_not_bound() -> None:
    body = json.loads(CERT.event)
    for member, value, what in (
        ("certificate_id", ISSUED_CERTS[1].claims.jti, "identifier"),
        ("holder", "00" * 32, "holder"),
        ("valid_until", "2040-01-01", "validity"),
        ("region", "430902104201", "region"),
    ):
        changed = json.dumps({**body, member: value}).encode()
        _not_bound(_check(_file(event=changed)), f"the logged event's {what}")
    # The same content with other bytes: not the bytes the leaf commits to.
    respaced = json.dumps(body, indent=1).encode()
    _not_bound(_check(_file(event=respaced)), "but leaf 1 commits to")
    _not_bound(_check(_file(event=b"\xff not json")), "the issuing event is unreadable")


def test_a_wrong_inclusion_proof_is_not_bound() -> None:
    proof = TREE.inclusion_proof(CERT.index)
    flipped = [bytes([proof[0][0] ^ 1]) + proof[0][1:], *proof[1:]]
    _not_bound(_check(_file(proof=flipped)), "is not proven in the checkpoint")
    _not_bound(_check(_file(proof=proof[:-1])), "is not proven in the checkpoint")


def test_uncosigned_and_under_cosigned_checkpoints_are_not_bound() -> None:
    _not_bound(_check(_file(note=NOTE)), "has 0 of the 2 required witness cosignatures")
    _not_bound(_check(_file(note=_cosigned(NOTE, W1))), "has 1 of the 2 required")


def test_an_unknown_witness_does_not_count_and_is_named() -> None:
    result = _check(_file(note=_cosigned(NOTE, W1, STRANGER)))
    _not_bound(result, "has 1 of the 2 required")
    assert "unknown witnesses do not count: tongban/99/witness" in result.reason


def test_a_forged_cosignature_by_a_trusted_witness_is_not_bound() -> None:
    impostor = Cosigner(W2.name, Ed25519PrivateKey.generate())
    # Same name, another key: another key id, so it is an unknown signer that does not count.
    _not_bound(_check(_file(note=_cosigned(NOTE, W1, impostor))), "has 1 of the 2 required")
    # W2's own key id with a wrong signature: a line from a known key that fails rejects it.
    genuine = _cosigned(NOTE, W1, W2).decode()
    last = genuine.rstrip("\n").rsplit("\n", 1)[1]
    _name, blob = last[2:].split(" ")
    raw = bytearray(base64.b64decode(blob))
    raw[-1] ^= 1
    bad = genuine.replace(blob, base64.b64encode(bytes(raw)).decode())
    _not_bound(_check(_file(note=bad.encode())), "does not verify")


def test_a_checkpoint_signed_by_another_log_key_is_not_bound() -> None:
    impostor = Signer.generate(ORIGIN)  # the issuer's origin, another key
    issued, tree, note = _log(log=impostor)
    receipt = Receipt.for_leaf(
        issued[0].leaf, tree.inclusion_proof(issued[0].index), _cosigned(note, W1, W2)
    ).format()
    certificate = CertificateFile(issued[0].token, issued[0].event, receipt)
    _not_bound(_check(certificate), "does not verify")


def test_without_the_issuers_log_in_the_bundle_nothing_is_bound() -> None:
    _not_bound(_check(_file(), {}), "names no log key for tongban/43")


def test_damaged_receipts_and_files_are_never_valid() -> None:
    genuine = _file()
    for receipt in (
        b"",
        b"garbage",
        genuine.receipt[:40],
        genuine.receipt.replace(b"index", b"ind"),
    ):
        result = _check(CertificateFile(genuine.token, genuine.event, receipt))
        _not_bound(result, "the receipt is unreadable")
    for text in ('{"format": "tongban-certificate/1"}', "{not json", '{"format": "x"}',
                 json.dumps({**json.loads(genuine.to_json()), "event": "!!"})):  # fmt: skip
        _token, certificate, damaged = read_certificate(text)
        assert certificate is None and damaged is not None
        assert damaged.startswith("the certificate file is damaged"), damaged


def test_json_nested_too_deep_is_damaged_without_an_exception() -> None:
    # Deeper than the interpreter's recursion limit: json raises RecursionError, not ValueError.
    deep = "[" * 100_000 + "]" * 100_000
    _token, certificate, damaged = read_certificate('{"format": ' + deep + "}")
    assert certificate is None and damaged is not None
    assert damaged.startswith("the certificate file is damaged"), damaged
    _not_bound(_check(_file(event=deep.encode())), "the issuing event is unreadable")


def test_a_receipt_never_rescues_a_forged_token_nor_changes_another_verdict() -> None:
    forged_token = CERT.token[:-4] + ("AAAA" if not CERT.token.endswith("AAAA") else "BBBB")
    result = check_receipt(verify_certificate(forged_token, BUNDLE, now=NOW), _file(), LOGS)
    assert result.verdict is Verdict.FORGED
    assert not result.reason.startswith(NOT_BOUND)
    later = datetime(2037, 1, 1, tzinfo=UTC)
    expired = check_receipt(verify_certificate(CERT.token, BUNDLE, now=later), _file(), LOGS)
    assert expired.verdict is Verdict.EXPIRED
    assert "in the log: leaf 1" in expired.reason


def test_the_bundles_logs_are_read_strictly() -> None:
    text = logs_to_json(BUNDLE.to_json(), (TRUSTED,))
    assert trusted_logs(text) == LOGS
    assert trusted_logs(BUNDLE.to_json()) == {}  # an older bundle: no logs, no receipts bound
    document = json.loads(text)
    entry = document["logs"][0]
    for change, member in (
        ({"witness_k": 3}, "witness_k"),
        ({"witness_k": True}, "witness_k"),
        ({"log_keys": []}, "log_keys"),
        ({"log_keys": "x"}, "log_keys"),
        ({"origin": ""}, "origin"),
        ({"origin": "tongban/61"}, "is not 'tongban/61'"),
        ({"witness_keys": [LOG.verifier_key(), W1.verifier_key()]}, "cosignature/v1"),
        ({"log_keys": [W1.verifier_key()]}, "key type"),
    ):
        bad = json.dumps({**document, "logs": [{**entry, **change}]})
        with pytest.raises(ConfigurationError, match=f"logs\\[0\\].*{member}"):
            trusted_logs(bad, "trust.json")


TREE_LEAVES: list[Leaf] = []


def _leaves() -> None:
    # The leaves of TREE, rebuilt for the "another case at the same index" log.
    issued = {c.index: c.leaf for c in ISSUED_CERTS}
    for index in range(10):
        TREE_LEAVES.append(
            issued.get(index)
            or Leaf(ORIGIN, index, uuid4(), 1, "CaseOpened", hashlib.sha256(b"x").digest())
        )


_leaves()

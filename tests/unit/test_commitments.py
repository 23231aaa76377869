"""Commitments to personal data: the documented vectors, checked against the node's code and the
SDK's independent one, and the properties the wire contract promises."""

from __future__ import annotations

import base64
import re
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from adapters.sdk import commitment as sdk_commitment
from hub.domain.commitments import commitment, opens
from hub.domain.hall import key_id

DOCS = Path(__file__).resolve().parents[2] / "docs" / "wire-api.md"


def _documented_vectors() -> list[tuple[str, bytes, str, str]]:
    rows = re.findall(
        r"\| `(submit\.applicant\.\w+)` \| `[0-9a-f…]+` \(bytes (\d+)\.\.(\d+)\) \| `([^`]+)` \| `([0-9a-f]{64})` \|",
        DOCS.read_text(),
    )
    assert len(rows) == 2
    return [(f, bytes(range(int(a), int(b) + 1)), value, digest) for f, a, b, value, digest in rows]


@pytest.mark.parametrize("vector", _documented_vectors(), ids=lambda v: v[0])
def test_the_documented_vectors(vector: tuple[str, bytes, str, str]) -> None:
    field, salt, value, digest = vector
    assert commitment(field, salt, value).hex() == digest
    assert sdk_commitment(field, salt, value).hex() == digest
    assert opens(bytes.fromhex(digest), field, salt, value)


def test_a_commitment_binds_field_salt_and_value() -> None:
    salt = bytes(16)
    digest = commitment("submit.applicant.name", salt, "李秀英")
    assert not opens(digest, "submit.applicant.phone", salt, "李秀英")  # moved to another field
    assert not opens(digest, "submit.applicant.name", bytes(range(16)), "李秀英")
    assert not opens(digest, "submit.applicant.name", salt, "李秀")
    assert "李秀英".encode() not in digest


def test_the_documented_key_id() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    public = base64.b64encode(raw).decode()
    text = DOCS.read_text()
    assert f"public key `{public}`" in text
    assert f"key\nid `{key_id(public)}`" in text or f"key id `{key_id(public)}`" in text

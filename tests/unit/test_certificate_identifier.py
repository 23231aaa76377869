"""Certificate identifiers (GB/T 36904) and their ISO 7064 MOD 37,36 check character.

The check characters are compared with two computations that are not ours: python-stdnum's
``stdnum.iso7064.mod_37_36`` and a brute-force search written from the standard's *checking*
rule (a string with its check character is valid when the hybrid recursion ends on 1), plus
the standard's published example.
"""

from __future__ import annotations

from uuid import UUID

import pytest
from hypothesis import given
from hypothesis import strategies as st
from stdnum.iso7064 import mod_37_36

from hub.domain.certificates import (
    OID_PREFIX,
    CertificateIdentifier,
    mod37_36_check,
    serial_for,
)
from hub.errors import InvalidInput

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
ISSUER = "11610929MB0000001X"


def _valid_by_checking_rule(text: str) -> bool:
    """ISO 7064 hybrid MOD 37,36, as the standard states the check: the last s is 1."""
    product = 36
    remainder = 0
    for character in text:
        remainder = (product + ALPHABET.index(character)) % 36
        product = ((remainder or 36) * 2) % 37
    return remainder == 1


def _check_by_search(text: str) -> str:
    (found,) = [c for c in ALPHABET if _valid_by_checking_rule(text + c)]
    return found


def test_the_published_example() -> None:
    # The example of ISO 7064 MOD 37,36 that python-stdnum documents.
    assert mod37_36_check("A12425GABC1234002") == "M"


@given(st.text(alphabet=ALPHABET, min_size=1, max_size=60))
def test_check_character_agrees_with_two_independent_computations(text: str) -> None:
    ours = mod37_36_check(text)
    assert ours == mod_37_36.calc_check_digit(text)
    assert ours == _check_by_search(text)


def test_identifier_layout_and_check() -> None:
    identifier = CertificateIdentifier("230001", ISSUER, "0123456789ABCDEF", "01")
    text = str(identifier)
    body = f"{OID_PREFIX}.230001.{ISSUER}.0123456789ABCDEF.01"
    assert text.startswith(body + ".")
    check = text.rsplit(".", 1)[1]
    assert check == mod_37_36.calc_check_digit(body.replace(".", ""))
    assert mod_37_36.is_valid(text.replace(".", ""))
    assert CertificateIdentifier.parse(text) == identifier


def test_every_wrong_check_character_is_refused() -> None:
    text = str(CertificateIdentifier("230001", ISSUER, "0123456789ABCDEF"))
    good = text[-1]
    for wrong in ALPHABET.replace(good, ""):
        with pytest.raises(InvalidInput, match="check character"):
            CertificateIdentifier.parse(text[:-1] + wrong)


def test_a_single_changed_character_is_caught() -> None:
    text = str(CertificateIdentifier("230001", ISSUER, "0123456789ABCDEF"))
    for position, character in enumerate(text[:-1]):
        if character == "." or position < len(OID_PREFIX):
            continue
        for other in "0123456789ABCDEFGHJKLMNPQRTUWXY":
            if other == character:
                continue
            changed = text[:position] + other + text[position + 1 :]
            with pytest.raises(InvalidInput):
                CertificateIdentifier.parse(changed)


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("1.2.156.3005.1.230001.11610929MB0000001X.0123456789ABCDEF.01.X", "identifier"),
        ("1.2.156.3005.2.230001.11610929MB0000001X.0123456789ABCDEF.01", "identifier"),
        ("1.2.156.3005.2.23001.11610929MB0000001X.0123456789ABCDEF.01.X", "type_code"),
        ("1.2.156.3005.2.230001.11610929MB000001X.0123456789ABCDEF.01.X", "issuer_code"),
        ("1.2.156.3005.2.230001.11610929MB0000001X.0123456789abcdef.01.X", "serial"),
        ("1.2.156.3005.2.230001.11610929MB0000001X.0123456789ABCDEF.1.X", "version"),
    ],
)
def test_malformed_identifiers_name_the_part(text: str, field: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        CertificateIdentifier.parse(text)
    assert caught.value.field == field


def test_serial_is_derived_from_the_case_id() -> None:
    case_id = UUID("0123456789abcdef0123456789abcdef")
    assert serial_for(case_id) == "0123456789ABCDEF"


def test_a_swap_of_two_neighbours_is_caught() -> None:
    text = str(CertificateIdentifier("230001", ISSUER, "0123456789ABCDEF"))
    characters = list(text)
    for position in range(len(OID_PREFIX) + 1, len(characters) - 1):
        first, second = characters[position], characters[position + 1]
        if first == second or "." in (first, second):
            continue
        swapped = [*characters]
        swapped[position], swapped[position + 1] = second, first
        with pytest.raises(InvalidInput):
            CertificateIdentifier.parse("".join(swapped))


def test_the_example_in_the_docs() -> None:
    example = "1.2.156.3005.2.150001.11430902MB0000001X.0DFC356921BB5B52.01.I"
    assert str(CertificateIdentifier.parse(example)) == example

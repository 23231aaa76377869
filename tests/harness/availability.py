"""The one rule for a service the tests need but cannot get (pytest only).

With ``CI`` set to a non-empty value a missing service fails the test: a CI run must never go
green by skipping the integration suite. Without ``CI`` (a developer's machine) the test is
skipped with the same message, which names what is missing and how to provide it.
"""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

from .errors import ServiceUnavailable

CI_ENV = "CI"


def in_ci() -> bool:
    """True when ``$CI`` is set to a non-empty value."""
    return bool(os.environ.get(CI_ENV, "").strip())


def service_unavailable(exc: ServiceUnavailable) -> NoReturn:
    """Fail (under CI) or skip (otherwise) the requesting test, with ``exc``'s message."""
    if in_ci():
        pytest.fail(
            f"{exc}\n  ({CI_ENV} is set, so a missing service fails the run)", pytrace=False
        )
    pytest.skip(f"{exc}\n  (set {CI_ENV}=1 to make this a failure)")

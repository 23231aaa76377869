"""Each gRPC call is counted once, and a refused call is counted before its status leaves.

On ``grpc.aio`` the status of an aborted call is sent from the event loop while the handler is
still unwinding; a client that reads the metrics as soon as it is refused must find the refusal
counted (the operator's dashboards and the e2e test in ``tests/e2e/test_operations.py`` do).
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest

from hub import telemetry
from hub.api.handlers import _unary
from hub.application.storage import DEADLINE
from hub.errors import InvalidInput


def _count(method: str, code: str) -> float:
    value = telemetry.REGISTRY.get_sample_value(
        "tongban_rpcs_total", {"method": method, "code": code}
    )
    return value or 0.0


class _Context:
    """A servicer context that remembers what the metrics said when the status was sent."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.counted_when_sent: float | None = None

    def time_remaining(self) -> float:
        return 30.0

    def invocation_metadata(self) -> tuple[Any, ...]:
        return ()

    def peer(self) -> str:
        return "ipv4:127.0.0.1:1"

    def abort(self, code: grpc.StatusCode, details: str, trailing: Any = ()) -> None:
        self.counted_when_sent = _count(self.method, code.name)
        raise RuntimeError(f"aborted {code.name}")


def test_a_refused_call_is_counted_before_its_status_is_sent() -> None:
    method = "Test/Refused"
    before = _count(method, "INVALID_ARGUMENT")

    def refuse(request: Any, context: Any) -> Any:
        from hub.api.errors import abort

        abort(context, InvalidInput("command", "x", "not a command"))

    context = _Context(method)
    with pytest.raises(RuntimeError, match="aborted INVALID_ARGUMENT"):
        _unary(method, refuse)(object(), context)
    assert context.counted_when_sent == before + 1
    assert _count(method, "INVALID_ARGUMENT") == before + 1  # and once only
    assert _count(method, "UNKNOWN") == 0


def test_an_answered_call_is_counted_ok_once_and_a_crash_unknown() -> None:
    method = "Test/Answered"
    _unary(method, lambda request, context: "answer")(object(), _Context(method))
    assert _count(method, "OK") == 1

    def crash(request: Any, context: Any) -> Any:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        _unary(method, crash)(object(), _Context(method))
    assert _count(method, "UNKNOWN") == 1
    assert _count(method, "OK") == 1


def test_a_calls_deadline_ends_with_the_call() -> None:
    """The thread that served a call goes on to other work (a pool thread, or a test's own
    thread): the call's deadline must not refuse that work's writes once it has passed."""
    seen: list[float | None] = []

    def look(request: Any, context: Any) -> Any:
        seen.append(DEADLINE.get())
        return "answer"

    method = "Test/Deadline"
    _unary(method, look)(object(), _Context(method))
    assert seen[0] is not None  # the call's own deadline, while it ran
    assert DEADLINE.get() is None

    def crash(request: Any, context: Any) -> Any:
        raise KeyError("a bug")

    with pytest.raises(KeyError):
        _unary(method, crash)(object(), _Context(method))
    assert DEADLINE.get() is None


def test_a_denial_is_logged_naming_the_caller_and_its_address(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """docs/pki.md: a refused call gets PERMISSION_DENIED (or UNAUTHENTICATED), and the refusal
    is logged, naming the caller and the peer's address."""
    from hub.api.errors import abort
    from hub.errors import PermissionRefused

    context = _Context("Test/Denied")
    with caplog.at_level("WARNING", logger="tongban.api"), pytest.raises(RuntimeError):
        abort(context, PermissionRefused("hn-shatou-v201", "not the holder of this case"))
    (record,) = [r for r in caplog.records if r.name == "tongban.api"]
    line = record.getMessage()
    assert line.startswith("denied PERMISSION_DENIED: ") and "hn-shatou-v201" in line
    assert "ipv4:127.0.0.1:1" in line

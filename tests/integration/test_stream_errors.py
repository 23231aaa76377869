"""Streaming calls leave through the one error table, as unary calls do (``docs/wire-api.md``,
"Errors"): a store that is away is UNAVAILABLE, and a bug is INTERNAL with only a reference to
the node's log — never the exception's text or a traceback. A real ``grpc.aio`` server on a
local socket, with the Materials service's two streaming methods."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import grpc
import pytest
from eventsourcing.persistence import OperationalError
from tongban.v1 import materials_pb2, materials_pb2_grpc

from hub.api.handlers import add_service

SECRET = "password=hunter2 at db.internal"


class _Failing:
    """Download raises ``self.error`` after one chunk; Upload raises it at once."""

    def __init__(self) -> None:
        self.error: Exception = RuntimeError(SECRET)

    async def Download(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        yield materials_pb2.MaterialChunk(data=b"first")
        raise self.error

    async def Upload(self, requests: AsyncIterator[Any], context: Any) -> Any:  # noqa: N802
        async for _message in requests:
            raise self.error
        raise self.error


@pytest.fixture
def served() -> Iterator[tuple[str, _Failing]]:
    servicer = _Failing()
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stopped: asyncio.Event | None = None
    port = 0

    async def main() -> None:
        nonlocal stopped, port
        server = grpc.aio.server()
        add_service(server, servicer, materials_pb2.DESCRIPTOR.services_by_name["Materials"])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        stopped = asyncio.Event()
        ready.set()
        await stopped.wait()
        await server.stop(None)

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(30)
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        assert stopped is not None
        loop.call_soon_threadsafe(stopped.set)
        thread.join(30)
        loop.close()


def _calls(target: str) -> dict[str, Any]:
    channel = grpc.insecure_channel(target)
    stub = materials_pb2_grpc.MaterialsStub(channel)
    request = materials_pb2.DownloadRequest(case_id="x", sha256="y")
    header = materials_pb2.UploadChunk(header=materials_pb2.MaterialHeader(sha256="y", size=1))
    return {
        "Download": lambda: list(stub.Download(request, timeout=10)),
        "Upload": lambda: stub.Upload(iter([header]), timeout=10),
    }


@pytest.mark.parametrize("method", ["Download", "Upload"])
def test_a_bug_in_a_stream_is_internal_with_only_a_reference(
    served: tuple[str, _Failing], method: str, caplog: pytest.LogCaptureFixture
) -> None:
    target, _servicer = served
    with (
        caplog.at_level(logging.ERROR, logger="tongban.api"),
        pytest.raises(grpc.RpcError) as caught,
    ):
        _calls(target)[method]()
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    details = caught.value.details() or ""
    assert details.startswith("internal error (reference ") and SECRET not in details
    reference = details.rsplit(" ", 1)[-1].rstrip(")")
    assert any(reference in record.getMessage() for record in caplog.records)


@pytest.mark.parametrize("method", ["Download", "Upload"])
def test_a_store_away_in_a_stream_is_unavailable(served: tuple[str, _Failing], method: str) -> None:
    target, servicer = served
    servicer.error = OperationalError("connection refused")
    with pytest.raises(grpc.RpcError) as caught:
        _calls(target)[method]()
    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "event store unavailable" in (caught.value.details() or "")

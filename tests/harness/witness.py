"""A node's witness endpoint served in this process (real uvicorn on a loopback socket).

    with ServedWitness(NodeWitness(view, cosigner, logs)) as served:
        httpx.post(served.url + "/add-checkpoint", content=body)

Plain Python (no pytest). The server runs on its own event loop in a thread and is stopped when
the block ends. ``tls=(certificate, key)`` serves HTTPS, as ``TONGBAN_WITNESS_TLS`` does.
"""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from types import TracebackType

from hub.witnessing.http import listening_socket, witness_server
from hub.witnessing.service import NodeWitness


class ServedWitness:
    """``witness`` on ``http://127.0.0.1:<free port>`` for the duration of a ``with`` block."""

    def __init__(
        self,
        witness: NodeWitness,
        *,
        startup_timeout: float = 10.0,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.witness = witness
        self._socket = listening_socket("127.0.0.1", 0)
        self.port = int(self._socket.getsockname()[1])
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        certificate, key = tls if tls is not None else (None, None)
        self._server = witness_server(witness, certificate=certificate, private_key=key)
        self._thread = threading.Thread(target=self._run, name="served-witness", daemon=True)
        self._startup_timeout = startup_timeout
        self._failure: BaseException | None = None

    def _run(self) -> None:
        try:
            asyncio.run(self._server.serve(sockets=[self._socket]))
        except BaseException as failure:  # reported by __enter__
            self._failure = failure

    def __enter__(self) -> ServedWitness:
        self._thread.start()
        deadline = time.monotonic() + self._startup_timeout
        # uvicorn sets `started` once it listens; it offers nothing to wait on.
        while not self._server.started:
            if self._failure is not None or not self._thread.is_alive():
                raise RuntimeError(f"the witness server did not start: {self._failure!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("the witness server did not start in time")
            time.sleep(0.01)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()

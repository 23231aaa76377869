"""A C2SP tlog-witness written from the spec with nothing of Tongban's: the standard library's
HTTP server, ``tlog-scales`` (an outside implementation of checkpoints, note signatures and
consistency proofs) and ``cryptography`` for the Ed25519 cosignature.

No maintained witness implementation runs on this machine (the reference ones, litewitness and
omniwitness, are Go programs and cannot be installed here), so the interop tests use this one:
it shares no code with ``ledger`` or ``hub``, so a format mistake on either side shows.

    with StandardWitness("witness.example/w9", {origin: log_vkey}) as witness:
        witness.url, witness.vkey           # its submission prefix and cosignature verifier key
"""

from __future__ import annotations

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tlog_scales.signing import NoteSignature, Vkey
from tlog_scales.tlog import Checkpoint, ConsistencyProof, ConsistencyProofInvalid

_COSIGNATURE_V1 = 4


class StandardWitness:
    """One witness key, a set of trusted logs, state in memory, on a loopback port."""

    def __init__(self, name: str, logs: dict[str, str]) -> None:
        self.name = name
        self._key = Ed25519PrivateKey.generate()
        self.vkey = Vkey(name, None, _COSIGNATURE_V1, self._key.public_key().public_bytes_raw())
        self.logs = {origin: Vkey.from_string(key) for origin, key in logs.items()}
        #: origin -> (size, root) last cosigned
        self.state: dict[str, tuple[int, bytes]] = {}
        self.requests: list[tuple[int, bytes]] = []
        self._lock = threading.Lock()
        witness = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                if self.path != "/add-checkpoint":
                    self._answer(404, "text/plain", b"not found\n")
                    return
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                status, content_type, answer = witness.add_checkpoint(body)
                witness.requests.append((status, body))
                self._answer(status, content_type, answer)

            def _answer(self, status: int, content_type: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def verifier_key(self) -> str:
        """The witness's cosignature verifier key string."""
        result: str = self.vkey.serialize()
        return result

    def add_checkpoint(self, body: bytes) -> tuple[int, str, bytes]:
        """The spec's add-checkpoint, step by step."""
        try:
            text = body.decode("utf-8")
            head, checkpoint_text = text.split("\n\n", 1)
            lines = head.split("\n")
            if not lines[0].startswith("old "):
                raise ValueError("no old line")
            old = int(lines[0][4:])
            proof = [base64.b64decode(line, validate=True) for line in lines[1:]]
            checkpoint = Checkpoint.from_text(checkpoint_text)
        except (ValueError, IndexError):
            return 400, "text/plain", b"malformed\n"
        vkey = self.logs.get(checkpoint.origin)
        if vkey is None:
            return 404, "text/plain", b"unknown log\n"
        try:
            checkpoint.verify(vkey)
        except Exception:
            return 403, "text/plain", b"bad signature\n"
        if old > checkpoint.size:
            return 400, "text/plain", b"old size above checkpoint size\n"
        with self._lock:
            size, root = self.state.get(checkpoint.origin, (0, b""))
            if old != size:
                return 409, "text/x.tlog.size", f"{size}\n".encode()
            if old == 0 and proof:
                return 422, "text/plain", b"proof from empty tree\n"
            if old > 0:
                try:
                    ConsistencyProof(old, checkpoint.size, proof).check(root, checkpoint.root_hash)
                except ConsistencyProofInvalid:
                    return 422, "text/plain", b"inconsistent\n"
            self.state[checkpoint.origin] = (checkpoint.size, checkpoint.root_hash)
        timestamp = int(time.time())
        message = (
            f"cosignature/v1\ntime {timestamp}\n".encode() + checkpoint.serialize_body().encode()
        )
        signature = timestamp.to_bytes(8, "big") + self._key.sign(message)
        line = NoteSignature(self.name, self.vkey.key_id, signature).serialize()
        return 200, "text/plain; charset=utf-8", (line + "\n").encode()

    def __enter__(self) -> StandardWitness:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

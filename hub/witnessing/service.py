"""The node's witness: cosigns other logs' checkpoints (C2SP tlog-witness semantics), durably.

A request is handled in one transaction of the node's database: the checkpoint is first checked
against every checkpoint of that log the node has seen anywhere (a fork is refused and kept as
evidence, :func:`hub.integrity.witnessed.observe_checkpoint`'s rules), then
:class:`ledger.witness.Witness` verifies the log's signature and the consistency proof from the
size it last cosigned, and swaps its state atomically (:class:`ledger.witness_storage.
SQLWitnessStore`). The transaction commits before the cosignature is returned, so a witness
that restarts remembers everything it vouched for, and evidence is committed with a refusal.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence

from hub import telemetry
from hub.integrity.integrator import LedgerView
from ledger import (
    ConsistencyError,
    Cosigner,
    LedgerError,
    NoteVerifier,
    SplitViewError,
    Witness,
    WitnessError,
)
from ledger.observer import CheckpointObserver
from ledger.storage import Cursor
from ledger.witness_protocol import (
    COSIGNATURE_CONTENT_TYPE,
    WitnessResponse,
    parse_add_checkpoint,
    response_for,
)
from ledger.witness_storage import SQLWitnessStore

log = logging.getLogger("tongban.witness")


def _now() -> int:
    return int(time.time())


def origin_hash(origin: str) -> str:
    """The tlog-witness monitoring path's name for a log: hex SHA-256 of its origin."""
    return hashlib.sha256(origin.encode("utf-8")).hexdigest()


class NodeWitness:
    """Answers tlog-witness requests for the logs in ``logs`` with ``cosigner``'s key."""

    def __init__(
        self,
        view: LedgerView,
        cosigner: Cosigner,
        logs: Mapping[str, Sequence[NoteVerifier]],
        clock: Callable[[], int] = _now,
    ) -> None:
        """Witness ``logs`` (origin -> log verifiers), keeping state in ``view``'s database."""
        self.view = view
        self.cosigner = cosigner
        self.logs = {origin: list(verifiers) for origin, verifiers in logs.items()}
        self._clock = clock
        self._by_hash = {origin_hash(origin): origin for origin in self.logs}

    def add_checkpoint(self, body: bytes) -> WitnessResponse:
        """Handle one ``POST /add-checkpoint`` body; return the response to send."""

        def work(cursor: Cursor) -> WitnessResponse:
            store = SQLWitnessStore(self.view.tables, cursor)
            try:
                request = parse_add_checkpoint(body)
            except LedgerError as error:
                return response_for(error)
            try:
                # A fork against anything seen of this log (in envelopes too) is refused first.
                CheckpointObserver(self.logs, store, self._clock).observe(request.checkpoint)
            except SplitViewError as split:
                return self._refused(split)
            except WitnessError:
                pass  # not a checkpoint of a known log: the witness below says which status
            witness = Witness(self.cosigner, self.logs, store, self._clock)
            try:
                lines = witness.add_checkpoint(request.checkpoint, request.old_size, request.proof)
            except ConsistencyError as refusal:
                return self._refused(refusal)
            except LedgerError as error:
                return response_for(error)
            return WitnessResponse(200, COSIGNATURE_CONTENT_TYPE, lines)

        # Returned, never raised: the transaction commits the state, or the evidence of a
        # refusal, before the response leaves.
        response: WitnessResponse = self.view.write(work)
        telemetry.WITNESS_REQUESTS.labels(str(response.status)).inc()
        return response

    def _refused(self, refusal: ConsistencyError) -> WitnessResponse:
        log.error("refused a checkpoint of %s: %s", refusal.evidence.origin, refusal)
        return response_for(refusal)

    def checkpoint(self, hashed_origin: str) -> bytes | None:
        """The latest checkpoint cosigned for the log whose origin hashes to ``hashed_origin``
        (with this witness's cosignature), or None (tlog-witness monitoring: 404)."""
        origin = self._by_hash.get(hashed_origin)
        if origin is None:
            return None

        def work(cursor: Cursor) -> bytes | None:
            state = SQLWitnessStore(self.view.tables, cursor).latest(origin)
            return None if state is None else state.note

        note: bytes | None = self.view.read(work)
        return note


__all__ = ["NodeWitness", "origin_hash"]

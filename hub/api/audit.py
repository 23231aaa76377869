"""The Audit gRPC service: checkpoints, proofs, case histories with receipts, log entries.

Read-only, for auditors and peer nodes. Everything it returns can be verified offline with the
node's log key and the signers' public keys (see docs/ledger.md), so callers need not trust the
server. No personal data leaves through it: a case's applicant is given as commitments only.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from uuid import UUID

import grpc
from tongban.v1 import audit_pb2

from hub.api.convert import event_to_proto, parse_uuid
from hub.api.errors import guard
from hub.api.handlers import StreamLimit, add_service
from hub.api.servicer import Authenticator, Caller
from hub.application.hub import HubApplication
from hub.errors import InvalidInput, NotFound
from hub.integrity.integrator import LedgerView
from hub.integrity.witnessed import FinalCheckpoint
from hub.pki import Role
from ledger import Leaf, Receipt, peek_checkpoint

#: How many entries one read of the stream fetches.
STREAM_BATCH = 500
#: How often an open stream that reached the end of the log looks for more.
STREAM_POLL_SECONDS = 0.2


class AuditServicer:
    """Serves the node's verifiable log."""

    def __init__(
        self,
        app: HubApplication,
        view: LedgerView,
        authenticate: Authenticator,
        final: Callable[[int], FinalCheckpoint | None] | None = None,
    ) -> None:
        self.app = app
        self.view = view
        self.authenticate = authenticate
        #: The latest final checkpoint covering a leaf (hub.integrity.witnessed).
        self.final = final
        #: Reads for open streams, apart from the unary workers.
        self._reads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="stream-read")

    def _caller(self, context: grpc.ServicerContext) -> None:
        Caller(self.authenticate(context)).require(Role.AUDITOR, Role.PEER, Role.ADMIN)

    def _latest(self) -> Any:
        latest = self.view.read(self.view.tables.latest_checkpoint)
        if latest is None:
            raise NotFound("checkpoint", "latest (the log is empty)")
        return latest

    def GetCheckpoint(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> Any:
            self._caller(context)
            latest = self._latest()
            body = peek_checkpoint(latest.note)
            return audit_pb2.Checkpoint(
                note=latest.note, size=latest.size, root=latest.root, origin=body.origin
            )

        return guard(context, run)

    def GetInclusionProof(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> Any:
            self._caller(context)
            size = request.tree_size or self._latest().size
            if request.index >= size:
                raise InvalidInput("index", request.index, f"must be below the tree size {size}")
            self._check_size(size, "tree_size")

            def work(cursor: Any) -> Any:
                proof = self.view.tables.inclusion_proof(cursor, request.index, size)
                (leaf,) = self.view.tables.leaves(cursor, request.index, request.index + 1)
                return audit_pb2.InclusionProof(
                    index=request.index, tree_size=size, hashes=proof, leaf=leaf.encode()
                )

            return self.view.read(work)

        return guard(context, run)

    def GetConsistencyProof(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> Any:
            self._caller(context)
            to_size = request.to_size or self._latest().size
            if not 0 < request.from_size <= to_size:
                raise InvalidInput(
                    "from_size", request.from_size, f"must be in 1..{to_size} (the to_size)"
                )
            self._check_size(to_size, "to_size")
            proof = self.view.read(
                lambda cursor: self.view.tables.consistency_proof(
                    cursor, request.from_size, to_size
                )
            )
            return audit_pb2.ConsistencyProof(
                from_size=request.from_size, to_size=to_size, hashes=proof
            )

        return guard(context, run)

    def _check_size(self, size: int, field: str) -> None:
        current = self.view.read(lambda cursor: self.view.tables.state(cursor)[0])
        if size > current:
            raise InvalidInput(field, size, f"the log has {current} leaves")

    def GetCaseHistory(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> audit_pb2.AuditedCaseHistory:
            self._caller(context)
            case_id = parse_uuid(request.case_id, "case_id")
            history = audit_pb2.AuditedCaseHistory()
            commands: list[int] = []
            # Receipts cite the latest final checkpoint (witnessed: its cosignatures in the
            # note) where it covers the leaf; a leaf after it, the first checkpoint over it.
            final = self.final(0) if self.final is not None else None
            for event in self.app.case_history(case_id):
                version = event.originator_version
                receipt = receipt_for(self.view, case_id, version, final)
                # A receipt carries its leaf; only a leaf not yet checkpointed is read alone.
                leaf = receipt.leaf() if receipt else self._leaf_for(case_id, version)
                cause = leaf.cause if leaf is not None and leaf.cause is not None else 0
                history.events.add(
                    # Commitments only: no personal data leaves through the Audit service.
                    event=event_to_proto(event),
                    index=leaf.index if leaf else 0,
                    leaf=leaf.encode() if leaf else b"",
                    receipt=receipt.format().decode() if receipt else "",
                    command_index=cause,
                )
                if leaf is not None and leaf.cause is not None and cause not in commands:
                    commands.append(cause)
            for index in commands:
                (command,) = self._leaves(index, index + 1)
                receipt = receipt_for_leaf(self.view, command, final)
                history.commands.add(
                    index=index,
                    leaf=command.encode(),
                    receipt=receipt.format().decode() if receipt else "",
                    command=command.command,
                    signature=command.signature,
                    signer=command.signer,
                    key_id=command.key_id,
                )
            return history

        return guard(context, run)

    def _leaf_for(self, case_id: UUID, version: int) -> Leaf | None:
        leaf: Leaf | None = self.view.read(
            lambda cursor: self.view.tables.leaf_for(cursor, case_id, version)
        )
        return leaf

    def _leaves(self, start: int, end: int) -> list[Leaf]:
        leaves: list[Leaf] = self.view.read(
            lambda cursor: self.view.tables.leaves(cursor, start, end)
        )
        return leaves

    async def StreamEntries(self, request: Any, context: Any) -> AsyncIterator[Any]:  # noqa: N802
        """Log entries from ``start`` on, following the log until the caller goes away.

        It runs on the server's event loop (reading through a small executor of its own), so an
        open stream holds none of the workers that answer unary calls.
        """
        self._caller(context)
        loop = asyncio.get_running_loop()
        position = request.start
        while True:
            size = await loop.run_in_executor(self._reads, self._size)
            if position >= size:
                await asyncio.sleep(STREAM_POLL_SECONDS)
                continue
            end = min(size, position + STREAM_BATCH)
            for leaf in await loop.run_in_executor(self._reads, self._leaves, position, end):
                yield audit_pb2.LogEntry(index=leaf.index, leaf=leaf.encode())
            position = end

    def _size(self) -> int:
        size: int = self.view.read(lambda cursor: self.view.tables.state(cursor)[0])
        return size

    def GetFinalCheckpoint(self, request: Any, context: Any) -> Any:  # noqa: N802
        def run() -> Any:
            self._caller(context)
            found = self.final(request.index) if self.final is not None else None
            if found is None:
                raise NotFound("final checkpoint covering leaf", request.index)
            return audit_pb2.FinalCheckpoint(
                note=found.note,
                size=found.size,
                root=found.root,
                witnesses=list(found.witnesses),
                required=found.required,
            )

        return guard(context, run)


def add_audit_service(
    app: HubApplication,
    view: LedgerView,
    final: Callable[[int], FinalCheckpoint | None] | None = None,
) -> Any:
    """A hook for :class:`hub.api.server.NodeServer`'s ``extra_services``; ``final`` gives the
    latest final checkpoint covering a leaf (none: GetFinalCheckpoint answers NOT_FOUND)."""

    def add(server: Any, authenticate: Authenticator, streams: StreamLimit) -> str:
        return add_service(
            server,
            AuditServicer(app, view, authenticate, final),
            audit_pb2.DESCRIPTOR.services_by_name["Audit"],
            streams,
        )

    return add


def receipt_for(
    view: LedgerView, case_id: UUID, version: int, final: FinalCheckpoint | None = None
) -> Receipt | None:
    """An offline receipt for one event, once a checkpoint covers its leaf; else None (see
    :func:`receipt_for_leaf`)."""
    leaf: Leaf | None = view.read(lambda cursor: view.tables.leaf_for(cursor, case_id, version))
    return receipt_for_leaf(view, leaf, final) if leaf is not None else None


def receipt_for_leaf(
    view: LedgerView, leaf: Leaf, final: FinalCheckpoint | None = None
) -> Receipt | None:
    """An offline receipt for ``leaf`` (C2SP tlog-proof): under ``final`` (a final checkpoint,
    its note carrying the witnesses' cosignatures) when that covers the leaf, which verifies
    under the witness policy too; else under the first checkpoint that covers it (the log's
    signature alone); None before any does."""

    def work(cursor: Any) -> Receipt | None:
        if final is not None and final.size > leaf.index:
            proof = view.tables.inclusion_proof(cursor, leaf.index, final.size)
            return Receipt.for_leaf(leaf, proof, final.note)
        checkpoint = view.tables.checkpoint_at_least(cursor, leaf.index + 1)
        if checkpoint is None:
            return None
        proof = view.tables.inclusion_proof(cursor, leaf.index, checkpoint.size)
        return Receipt.for_leaf(leaf, proof, checkpoint.note)

    result: Receipt | None = view.read(work)
    return result

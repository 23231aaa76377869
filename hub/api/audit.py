"""The Audit gRPC service: checkpoints, proofs, case histories with receipts, log entries.

Read-only, for auditors and peer nodes. Everything it returns can be verified offline with the
node's log key (see docs/ledger.md), so callers need not trust the server.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import grpc
from tongban.v1 import audit_pb2, audit_pb2_grpc

from hub.api.convert import event_to_proto, parse_uuid
from hub.api.errors import abort
from hub.api.servicer import Authenticator, Caller
from hub.application.hub import HubApplication
from hub.audit import receipt_for
from hub.errors import InvalidInput, NotFound, TongbanError
from hub.integrator import LedgerView
from hub.pki import Role
from ledger import Leaf, peek_checkpoint

#: How many entries one read of the stream fetches.
STREAM_BATCH = 500


class AuditServicer(audit_pb2_grpc.AuditServicer):
    """Serves the node's verifiable log."""

    def __init__(self, app: HubApplication, view: LedgerView, authenticate: Authenticator) -> None:
        self.app = app
        self.view = view
        self.authenticate = authenticate

    def _caller(self, context: grpc.ServicerContext) -> None:
        Caller(self.authenticate(context)).require(Role.AUDITOR, Role.PEER, Role.ADMIN)

    def _latest(self) -> Any:
        latest = self.view.read(self.view.tables.latest_checkpoint)
        if latest is None:
            raise NotFound("checkpoint", "latest (the log is empty)")
        return latest

    def GetCheckpoint(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            self._caller(context)
            latest = self._latest()
            body = peek_checkpoint(latest.note)
            return audit_pb2.Checkpoint(
                note=latest.note, size=latest.size, root=latest.root, origin=body.origin
            )
        except TongbanError as error:
            abort(context, error)

    def GetInclusionProof(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
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
        except TongbanError as error:
            abort(context, error)

    def GetConsistencyProof(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
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
        except TongbanError as error:
            abort(context, error)

    def _check_size(self, size: int, field: str) -> None:
        current = self.view.read(lambda cursor: self.view.tables.state(cursor)[0])
        if size > current:
            raise InvalidInput(field, size, f"the log has {current} leaves")

    def GetCaseHistory(self, request: Any, context: Any) -> Any:  # noqa: N802
        try:
            self._caller(context)
            case_id = parse_uuid(request.case_id, "case_id")
            history = audit_pb2.AuditedCaseHistory()
            for event in self.app.case_history(case_id):
                version = event.originator_version
                receipt = receipt_for(self.view, case_id, version)
                # A receipt carries its leaf; only a leaf not yet checkpointed is read alone.
                leaf = receipt.leaf() if receipt else self._leaf_for(case_id, version)
                history.events.add(
                    event=event_to_proto(event),
                    index=leaf.index if leaf else 0,
                    leaf=leaf.encode() if leaf else b"",
                    receipt=receipt.format().decode() if receipt else "",
                )
            return history
        except TongbanError as error:
            abort(context, error)

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

    def StreamEntries(self, request: Any, context: Any) -> Iterator[Any]:  # noqa: N802
        try:
            self._caller(context)
        except TongbanError as error:
            abort(context, error)
        position = request.start
        # Follow the log until the client goes away or its deadline passes.
        while context.is_active():
            size = self.view.read(lambda cursor: self.view.tables.state(cursor)[0])
            if position >= size:
                time.sleep(0.1)
                continue
            end = min(size, position + STREAM_BATCH)
            leaves = self._leaves(position, end)
            for leaf in leaves:
                yield audit_pb2.LogEntry(index=leaf.index, leaf=leaf.encode())
            position = end


def add_audit_service(app: HubApplication, view: LedgerView) -> Any:
    """A hook for :class:`hub.api.server.NodeServer`'s ``extra_services``."""

    def add(server: grpc.Server, authenticate: Authenticator) -> str:
        audit_pb2_grpc.add_AuditServicer_to_server(AuditServicer(app, view, authenticate), server)
        return str(audit_pb2.DESCRIPTOR.services_by_name["Audit"].full_name)

    return add

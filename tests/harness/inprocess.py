"""A node in this process: initialised keys, halls with their own signing keys, signed commands.

    node = InProcessNode.start(settings)            # tongban init + build_application
    village = node.add_hall("v-room", "430902104201")
    result = node.run(village, "submit", item_code=..., applicant=Applicant(...), materials=[...])
    node.run(village, "accept", case_id=str(result.case_id))
    node.integrator().catch_up()

Every command is signed by the acting hall's (or the admin's) Ed25519 key and executed through
``HubApplication.execute``, exactly as one arriving over gRPC. Plain Python (no pytest), so
benchmarks can use it too.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tongban.v1 import common_pb2

from hub.application.hub import HubApplication
from hub.bootstrap import (
    admin_signer,
    build_application,
    build_integrator,
    initialise,
    public_key_b64,
)
from hub.commands.model import SignedCommand
from hub.commands.signing import CommandSigner
from hub.domain.command_record import CommandResult
from hub.domain.values import Applicant, id_number_with_check
from hub.integrity.audit import AuditReport, audit_store
from hub.integrity.integrator import LedgerIntegrator
from hub.integrity.store import ReadOnlyStore
from hub.settings import Settings
from ledger import Verifier

ELDER_CARD = "200202001000"  # 老年人优待证办理: township level, issues a certificate
APPLICANT = Applicant("李秀英", id_number_with_check("43090219560312002"), "13807370001")


def read_only_store(settings: Settings) -> ReadOnlyStore:
    """The node's store (PostgreSQL or SQLite), opened read-only as the auditor opens it."""
    if settings.database_url:
        return ReadOnlyStore(database_url=settings.database_url)
    return ReadOnlyStore(sqlite_path=settings.sqlite_path)


def audit_node(settings: Settings) -> AuditReport:
    """The auditor's whole check of the node's store, with the node's log key alone."""
    verifier = Verifier.from_key((settings.data_dir / "log.vkey").read_text().strip())
    with read_only_store(settings) as store:
        return audit_store(store, [verifier], origin=settings.origin)


def material(name: str = "居民身份证") -> common_pb2.Material:
    """A wire material referenced by a digest of its name."""
    return common_pb2.Material(
        name=name,
        sha256=hashlib.sha256(name.encode()).hexdigest(),
        media_type="application/pdf",
        size=2048,
    )


@dataclass
class InProcessNode:
    """An initialised node's application with an admin and halls that sign their commands."""

    settings: Settings
    app: HubApplication
    admin: CommandSigner
    halls: dict[str, CommandSigner] = field(default_factory=dict)

    @classmethod
    def start(cls, settings: Settings) -> InProcessNode:
        """``tongban init`` then the application, as every node entry point does."""
        initialise(settings)
        app = build_application(settings)
        return cls(settings, app, admin_signer(settings, app))

    def reopen(self) -> InProcessNode:
        """A second application on the same store (a restarted node), the same signers."""
        return InProcessNode(
            self.settings, build_application(self.settings), self.admin, dict(self.halls)
        )

    def add_hall(
        self,
        hall_id: str,
        region: str,
        name: str = "",
        *,
        windows: tuple[str, ...] = ("综合窗口",),
        issued_at: datetime | None = None,
        kind: int = 0,
    ) -> CommandSigner:
        """Register a hall (an admin command) with a fresh key; its signer."""
        key = Ed25519PrivateKey.generate()
        self.app.execute(
            self.admin.sign(
                "register_hall",
                hall_id=hall_id,
                name=name or hall_id,
                region=region,
                windows=list(windows),
                public_key=public_key_b64(key),
                issued_at=issued_at,
                kind=kind,
            )
        )
        signer = CommandSigner(
            key,
            node=self.settings.origin,
            operator=f"op-{hall_id}",
            hall_id=hall_id,
            region=self.app.get_hall(hall_id).region,
        )
        self.halls[hall_id] = signer
        return signer

    def sign(self, signer: CommandSigner, action: str, **fields: Any) -> SignedCommand:
        """A signed command (``applicant`` in clear is committed to)."""
        return signer.sign(action, **fields)

    def run(self, signer: CommandSigner, action: str, **fields: Any) -> CommandResult:
        """Sign and execute one command."""
        return self.app.execute(signer.sign(action, **fields), expected=action)

    def submit(self, signer: CommandSigner, key: str = "key-submit-0001", **changes: Any) -> Any:
        """A 收件 of the elder card with sensible defaults."""
        arguments: dict[str, Any] = {
            "idempotency_key": key,
            "item_code": ELDER_CARD,
            "applicant": APPLICANT,
            "materials": [material()],
        }
        arguments.update(changes)
        return self.run(signer, "submit", **arguments)

    def integrator(self) -> LedgerIntegrator:
        """The node's ledger integrator."""
        return build_integrator(self.settings, self.app)

    def log_size(self) -> int:
        """How many events the store holds."""
        return self.app.recorder.max_notification_id() or 0

    def close(self) -> None:
        """Close the application."""
        self.app.close()

"""The checkpoint publisher: asks every peer's witness to cosign this node's latest checkpoint.

For each witness with a submission URL it sends ``POST <url>/add-checkpoint`` (C2SP
tlog-witness) with the latest signed checkpoint and a consistency proof from the size that
witness last cosigned — as soon as a new checkpoint is signed, and again every ``interval``
seconds (a fresh cosignature timestamp tells a verifier the witness still agrees). A ``409``
answer names the size the witness has; the publisher re-sends with a proof from that size. The
cosignatures that come back are verified against the witness's key and kept
(:func:`hub.integrity.witnessed.record_cosignatures`); the outcome of every request is kept too,
for ``tongban federation witness``, and counted in the metrics.

A witness that is down or refuses costs nothing but a logged line: the node keeps serving, its
checkpoints simply do not become final until k witnesses have cosigned one.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from hub import telemetry
from hub.integrity.integrator import LedgerView
from hub.integrity.witnessed import evidence_count, final_checkpoint, record_cosignatures
from hub.witnessing.config import WitnessingConfig, WitnessTarget
from ledger import LedgerError
from ledger.storage import StoredCheckpoint
from ledger.witness_protocol import (
    ADD_CHECKPOINT_PATH,
    MAX_REQUEST_SIZE,
    format_add_checkpoint,
    parse_size,
)
from ledger.witness_storage import Submission

log = logging.getLogger("tongban.witness.publisher")

#: How many times one publication follows a 409 (the witness moved on between two requests).
MAX_CONFLICTS = 3
#: Seconds an add-checkpoint request may take.
REQUEST_TIMEOUT = 10.0
#: Seconds between refreshes of the finality and evidence metrics when nothing was published.
REPORT_EVERY = 5.0
#: Seconds before a witness that failed is asked again (at most ``interval``).
RETRY_AFTER = 5.0


@dataclass(frozen=True)
class Outcome:
    """What one witness answered to one publication."""

    witness: str
    status: int  # HTTP status; 0 when no answer came
    message: str
    cosigned_size: int | None = None


class CheckpointPublisher:
    """Publishes this node's checkpoints to the witnesses of ``config`` (see the module doc)."""

    def __init__(
        self,
        view: LedgerView,
        config: WitnessingConfig,
        *,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """Publish from ``view``'s log; ``transport`` replaces the network (tests)."""
        self.view = view
        self.config = config
        self.interval = interval
        self._clock = clock
        self._policy = config.policy()
        self._log_verifier = config.log_verifier()
        self._targets = [t for t in config.targets if t.url]
        self._clients = {t.name: self._client(t, transport) for t in self._targets}
        #: The size each witness last cosigned, as far as this publisher knows.
        self._known: dict[str, int] = {}
        #: When each witness last cosigned (clock()), to re-submit every ``interval``.
        self._cosigned_at: dict[str, float] = {}
        self._reported_at: float | None = None
        #: When a witness that failed may be asked again.
        self._retry_at: dict[str, float] = {}

    @staticmethod
    def _client(target: WitnessTarget, transport: httpx.BaseTransport | None) -> httpx.Client:
        verify: ssl.SSLContext | bool = True
        if target.ca_certificate is not None:
            verify = ssl.create_default_context(cafile=str(target.ca_certificate))
        return httpx.Client(
            base_url=target.url,
            verify=verify,
            timeout=REQUEST_TIMEOUT,
            transport=transport,
            headers={"content-type": "text/plain; charset=utf-8"},
        )

    def close(self) -> None:
        """Close the HTTP connections."""
        for client in self._clients.values():
            client.close()

    # ------------------------------------------------------------------ one round

    def latest(self) -> StoredCheckpoint | None:
        """This node's latest signed checkpoint."""
        latest: StoredCheckpoint | None = self.view.read(self.view.tables.latest_checkpoint)
        return latest

    def publish(self, *, force: bool = False) -> list[Outcome]:
        """Submit the latest checkpoint to every witness that has not cosigned it, or whose
        cosignature is older than ``interval`` (every witness with ``force``)."""
        latest = self.latest()
        outcomes: list[Outcome] = []
        if latest is not None and latest.size > 0:
            now = self._clock()
            for target in self._targets:
                known = self._known_size(target)
                fresh = now - self._cosigned_at.get(target.name, -self.interval) < self.interval
                if not force and known >= latest.size and fresh:
                    continue
                if not force and now < self._retry_at.get(target.name, now):
                    continue
                outcome = self._submit(target, latest)
                if outcome.cosigned_size is None:
                    self._retry_at[target.name] = now + min(RETRY_AFTER, self.interval)
                outcomes.append(outcome)
        now = self._clock()
        if outcomes or self._reported_at is None or now - self._reported_at >= REPORT_EVERY:
            self._report()
            self._reported_at = now
        return outcomes

    def _known_size(self, target: WitnessTarget) -> int:
        if target.name not in self._known:
            size: int = self.view.read(
                lambda cursor: self.view.tables.witness.last_cosigned_size(cursor, target.name)
            )
            self._known[target.name] = size
        return self._known[target.name]

    def _submit(self, target: WitnessTarget, latest: StoredCheckpoint) -> Outcome:
        client = self._clients[target.name]
        old = min(self._known_size(target), latest.size)
        outcome = Outcome(target.name, 0, "not sent")
        for _attempt in range(MAX_CONFLICTS + 1):
            try:
                proof = self._proof(old, latest.size)
                body = format_add_checkpoint(old, proof, latest.note)
                response = client.post(ADD_CHECKPOINT_PATH, content=body)
            except httpx.HTTPError as error:
                outcome = Outcome(target.name, 0, f"no answer: {error}")
                break
            if response.status_code == 409:
                try:
                    reported = parse_size(response.content)
                except LedgerError as error:
                    outcome = Outcome(target.name, 409, f"409 with a malformed size: {error}")
                    break
                if reported > latest.size:
                    outcome = Outcome(
                        target.name,
                        409,
                        f"the witness has cosigned size {reported} of this log, more than its "
                        f"latest checkpoint ({latest.size}): this log lost leaves it signed",
                    )
                    break
                old = reported  # retry with a proof from the size the witness has
                outcome = Outcome(target.name, 409, f"witness is at size {reported}")
                continue
            if response.status_code != 200:
                text = response.content[:500].decode("utf-8", "replace").strip()
                outcome = Outcome(target.name, response.status_code, text)
                break
            outcome = self._cosigned(target, latest, response.content[:MAX_REQUEST_SIZE])
            break
        self._remember(target, outcome)
        return outcome

    def _proof(self, old: int, size: int) -> list[bytes]:
        if old == 0 or old >= size:
            return []
        proof: list[bytes] = self.view.read(
            lambda cursor: self.view.tables.consistency_proof(cursor, old, size)
        )
        return proof

    def _cosigned(self, target: WitnessTarget, latest: StoredCheckpoint, body: bytes) -> Outcome:
        try:
            kept = record_cosignatures(
                self.view, latest.size, body, [target.verifier()], self._log_verifier
            )
        except (LedgerError, LookupError) as error:
            return Outcome(target.name, 200, f"answer refused: {error}")
        if target.name not in kept:
            return Outcome(target.name, 200, "answer holds no cosignature by this witness's key")
        telemetry.WITNESS_COSIGNATURES.labels(target.name).inc()
        self._known[target.name] = latest.size
        self._cosigned_at[target.name] = self._clock()
        return Outcome(target.name, 200, f"cosigned size {latest.size}", latest.size)

    def _remember(self, target: WitnessTarget, outcome: Outcome) -> None:
        telemetry.WITNESS_SUBMISSIONS.labels(target.name, str(outcome.status)).inc()
        if outcome.cosigned_size is None:
            log.warning("witness %s: %s %s", target.name, outcome.status, outcome.message)
        submission = Submission(
            target.name, target.url, time.time(), outcome.status, outcome.message
        )
        self.view.write(
            lambda cursor: self.view.tables.witness.record_submission(cursor, submission)
        )

    def _report(self) -> None:
        final = final_checkpoint(self.view, 0, self._policy, self._log_verifier)
        telemetry.WITNESS_FINAL_SIZE.set(final.size if final is not None else 0)
        telemetry.WITNESS_EVIDENCE.set(evidence_count(self.view))

    # ------------------------------------------------------------------ the loop

    def run(self, stop: threading.Event, poll: float = 0.5) -> None:
        """Publish until ``stop`` is set: at once when a new checkpoint is signed (the latest
        is looked up every ``poll`` seconds), and every ``interval`` seconds anyway."""
        while not stop.is_set():
            try:
                self.publish()
            except Exception:  # the store is down: try again at the next poll
                log.exception("publishing checkpoints failed; retrying")
            stop.wait(poll)


__all__ = ["CheckpointPublisher", "Outcome"]

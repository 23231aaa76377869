"""What witnessing needs to know, independent of where it was configured.

The composition root builds a :class:`WitnessingConfig` from the federation file
(:func:`hub.bootstrap.witnessing_config`); this package never reads that file itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ledger import CosignatureVerifier, Verifier, WitnessPolicy


@dataclass(frozen=True)
class WitnessTarget:
    """A witness this node asks to cosign its checkpoints (a peer's witness key)."""

    #: The witness key's name (``<peer origin>/witness``) and its cosignature verifier key.
    name: str
    verifier_key: str
    #: Its tlog-witness submission prefix; "" when it is not asked over HTTP (its cosignatures
    #: may still arrive another way, in the relay's acknowledgements).
    url: str = ""
    #: The CA that certifies its HTTPS endpoint (the peer's CA), for an ``https://`` url.
    ca_certificate: Path | None = None

    def verifier(self) -> CosignatureVerifier:
        """Verifies this witness's cosignatures."""
        verifier = CosignatureVerifier.from_key(self.verifier_key)
        assert isinstance(verifier, CosignatureVerifier)  # from_key builds its own class
        return verifier


@dataclass(frozen=True)
class WitnessingConfig:
    """This node's log, the witnesses of it, and the logs it witnesses."""

    #: This node's log origin and its note verifier key.
    origin: str
    log_key: str
    #: How many of ``targets`` must cosign a checkpoint before it is final.
    witness_k: int
    targets: tuple[WitnessTarget, ...]
    #: The logs this node cosigns: origin -> note verifier keys (peers' logs and any
    #: ``[[witnessed_logs]]``).
    logs: tuple[tuple[str, tuple[str, ...]], ...]

    def policy(self) -> WitnessPolicy:
        """The witness policy of this node's checkpoints: k of its targets."""
        return WitnessPolicy(self.witness_k, [t.verifier() for t in self.targets])

    def log_verifier(self) -> Verifier:
        """Verifies this node's own checkpoints."""
        return Verifier.from_key(self.log_key)

    def witnessed_logs(self) -> dict[str, list[Verifier]]:
        """The verifiers of every log this node witnesses, by origin."""
        return {origin: [Verifier.from_key(k) for k in keys] for origin, keys in self.logs}


__all__ = ["WitnessTarget", "WitnessingConfig"]

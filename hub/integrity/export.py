"""``tongban ledger export``: the log in the C2SP tlog-tiles layout, with its stored events.

The tiles and entry bundles hold every leaf (with each signed command in it), so every signature
can be checked offline; the ``events/`` bundles beside them hold each leaf's stored event (plain
JSON, personal data sealed), so an auditor can also re-hash every event and check that it says
what its command asked — with nothing but this directory and the log's public key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hub.errors import ConfigurationError
from hub.integrity.audit import encode_event_bundle
from hub.integrity.integrator import LedgerView
from ledger import Leaf
from ledger.tiles import TileExport, entries_path, write_tiles


def export_log(view: LedgerView, directory: Path, origin: str) -> TileExport:
    """Write the log up to its latest checkpoint, and its events, under ``directory``."""

    def work(cursor: Any) -> TileExport:
        latest = view.tables.latest_checkpoint(cursor)
        if latest is None:
            raise ConfigurationError("the log has no checkpoint yet: nothing to export")
        leaves = list(view.tables.iter_leaves(cursor, 0, latest.size))
        # The events first: write_tiles writes the checkpoint last, when everything is there.
        states = [_stored_state(cursor, view, leaf) for leaf in leaves]
        for start in range(0, len(leaves), 256):
            bundle = states[start : start + 256]
            relative = entries_path(start // 256, len(bundle)).removeprefix("tile/entries/")
            path = directory / "events" / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_event_bundle(bundle))
        result = write_tiles(directory, origin, (leaf.encode() for leaf in leaves), latest.note)
        bundles = (len(leaves) + 255) // 256
        return TileExport(result.directory, result.size, result.root, result.files + bundles)

    result: TileExport = view.read(work)
    return result


def _stored_state(cursor: Any, view: LedgerView, leaf: Leaf) -> bytes:
    """The stored bytes of ``leaf``'s event (empty when the event is gone)."""
    if view.tables.dialect == "sqlite":
        cursor.execute(
            "SELECT state FROM stored_events WHERE originator_id = ? AND originator_version = ?",
            (leaf.aggregate_id.hex, leaf.version),
        )
    else:
        cursor.execute(
            "SELECT state FROM tongban_events WHERE originator_id = %s AND originator_version = %s",
            (leaf.aggregate_id, leaf.version),
        )
    row = cursor.fetchone()
    return b"" if row is None else bytes(row[0])

"""Export and audit of the log in the C2SP tiled transparency log layout (c2sp.org/tlog-tiles).

Layout under an export directory::

    checkpoint                     the signed (cosigned) checkpoint note
    tile/<L>/<N>                   full tile: 256 hashes (8192 bytes) at level L
    tile/<L>/<N>.p/<W>             partial tile: the W (1..255) rightmost hashes
    tile/entries/<N>               entry bundle: 256 entries, each uint16 length || bytes
    tile/entries/<N>.p/<W>         partial entry bundle of W entries

``<N>`` is written in zero-padded 3-digit groups, all but the last prefixed with ``x``
(1234067 -> ``x001/x234/067``). Level-0 tiles hold leaf hashes; the hash at position ``i`` of tile
``N`` at level ``L >= 1`` is the root of the full tile ``N * 256 + i`` at level ``L - 1``.

:func:`write_tiles` streams leaves into that layout (O(levels * 256) memory) and writes the
checkpoint last, only after the tree it built matches it. :func:`verify_tiles` re-derives every
hash and root from an export and reports each missing or altered file precisely. Written by hand:
no maintained Python library implements tlog-tiles.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ledger.checkpoint import Checkpoint, SignedCheckpoint, open_checkpoint, peek_checkpoint
from ledger.errors import CheckpointError, LedgerError, TileError, TileProblem
from ledger.merkle import HASH_SIZE, CompactRange, leaf_hash, root_from_leaf_hashes
from ledger.note import NoteVerifier

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
"""Hashes in a full tile (and entries in a full bundle)."""
MAX_LEVEL = 63
MAX_ENTRY_SIZE = 0xFFFF
"""Entries are uint16 length-prefixed in bundles."""
CHECKPOINT_PATH = "checkpoint"


def encode_tile_index(index: int) -> str:
    """Encode a tile index as zero-padded 3-digit path groups (1234067 -> x001/x234/067)."""
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise TileError(f"tile index must be a non-negative integer, got {index!r}")
    groups = [f"{index % 1000:03d}"]
    index //= 1000
    while index:
        groups.append(f"x{index % 1000:03d}")
        index //= 1000
    return "/".join(reversed(groups))


def _check_width(width: int) -> int:
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= TILE_WIDTH:
        raise TileError(f"tile width must be between 1 and {TILE_WIDTH}, got {width!r}")
    return width


def tile_path(level: int, index: int, width: int = TILE_WIDTH) -> str:
    """Return ``tile/<L>/<N>`` (full) or ``tile/<L>/<N>.p/<W>`` (partial, width < 256)."""
    if isinstance(level, bool) or not isinstance(level, int) or not 0 <= level <= MAX_LEVEL:
        raise TileError(f"tile level must be between 0 and {MAX_LEVEL}, got {level!r}")
    suffix = "" if _check_width(width) == TILE_WIDTH else f".p/{width}"
    return f"tile/{level}/{encode_tile_index(index)}{suffix}"


def entries_path(index: int, width: int = TILE_WIDTH) -> str:
    """Return ``tile/entries/<N>`` (full) or ``tile/entries/<N>.p/<W>`` (partial)."""
    suffix = "" if _check_width(width) == TILE_WIDTH else f".p/{width}"
    return f"tile/entries/{encode_tile_index(index)}{suffix}"


@dataclass(frozen=True)
class TileRef:
    """One tile or entry bundle: level (0 for bundles), index within the level, width."""

    level: int
    index: int
    width: int = TILE_WIDTH
    entries: bool = False

    @property
    def path(self) -> str:
        """The path relative to the export root."""
        if self.entries:
            return entries_path(self.index, self.width)
        return tile_path(self.level, self.index, self.width)

    @property
    def is_partial(self) -> bool:
        """Whether the tile holds fewer than 256 hashes."""
        return self.width < TILE_WIDTH

    @property
    def leaf_range(self) -> tuple[int, int]:
        """The leaf indices ``[start, end)`` the hashes (or entries) of this tile cover."""
        span = 1 << (TILE_HEIGHT * self.level)
        start = self.index * TILE_WIDTH * span
        return start, start + self.width * span


def parse_tile_path(path: str) -> TileRef:
    """Parse a tile or entry-bundle path; only the canonical encoding is accepted."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TileError(f"{path!r} is not a tile path (expected tile/<L>/<N>[.p/<W>])")
    width = TILE_WIDTH
    if len(parts) >= 4 and parts[-2].endswith(".p"):
        width_text = parts[-1]
        if not width_text.isascii() or not width_text.isdigit() or width_text.startswith("0"):
            raise TileError(f"{path!r}: partial width {width_text!r} is not a decimal 1..255")
        width = int(width_text)
        if not 1 <= width < TILE_WIDTH:
            raise TileError(f"{path!r}: partial width {width} is not between 1 and 255")
        parts = [*parts[:-2], parts[-2][:-2]]
    level_text, groups = parts[1], parts[2:]
    index = 0
    for i, group in enumerate(groups):
        digits = group[1:] if i < len(groups) - 1 else group
        if (i < len(groups) - 1 and not group.startswith("x")) or len(digits) != 3:
            raise TileError(f"{path!r}: index element {group!r} is malformed")
        if not digits.isascii() or not digits.isdigit():
            raise TileError(f"{path!r}: index element {group!r} is not decimal")
        index = index * 1000 + int(digits)
    entries = level_text == "entries"
    if entries:
        level = 0
    elif level_text.isascii() and level_text.isdigit() and str(int(level_text)) == level_text:
        level = int(level_text)
    else:
        raise TileError(f"{path!r}: level {level_text!r} is not 'entries' or a decimal 0..63")
    ref = TileRef(level, index, width, entries)
    if ref.path != path:  # rejects x000 leading groups, levels > 63 and similar non-canonical forms
        raise TileError(f"{path!r} is not the canonical path of tile {ref.path!r}")
    return ref


def tiles_for_size(size: int) -> list[TileRef]:
    """Every hash tile a tree of ``size`` leaves is served as (full and partial, all levels)."""
    return _refs(size, entries=False)


def bundles_for_size(size: int) -> list[TileRef]:
    """Every entry bundle a tree of ``size`` leaves is served as."""
    return _refs(size, entries=True)


def _refs(size: int, *, entries: bool) -> list[TileRef]:
    refs: list[TileRef] = []
    level = 0
    while True:
        count = size >> (TILE_HEIGHT * level)  # hashes at this level: floor(size / 256**level)
        if count == 0:
            return refs
        full, partial = divmod(count, TILE_WIDTH)
        refs.extend(TileRef(level, n, TILE_WIDTH, entries) for n in range(full))
        if partial:
            refs.append(TileRef(level, full, partial, entries))
        if entries:
            return refs
        level += 1


def encode_entry_bundle(entries: Iterable[bytes]) -> bytes:
    """Encode entries as a bundle: each entry is a big-endian uint16 length then its bytes."""
    out = bytearray()
    for i, entry in enumerate(entries):
        if len(entry) > MAX_ENTRY_SIZE:
            raise TileError(f"entry {i} is {len(entry)} bytes; bundles hold at most 65535")
        out += len(entry).to_bytes(2, "big") + entry
    return bytes(out)


def _bundle_error(path: str, message: str, indices: Sequence[int] = ()) -> TileError:
    return TileError(
        f"malformed entry bundle {path}", (TileProblem(path, message, tuple(indices)),)
    )


def decode_entry_bundle(
    data: bytes, count: int, path: str = "bundle", first: int = 0
) -> list[bytes]:
    """Decode a bundle that must hold exactly ``count`` entries (leaf ``first`` onwards).

    Raises :class:`TileError` whose problem names the entry, its leaf index and the byte offset.
    """
    entries: list[bytes] = []
    offset = 0
    while offset < len(data):
        leaf = first + len(entries)
        if len(entries) == count:
            raise _bundle_error(
                path,
                f"{len(data) - offset} trailing bytes at offset {offset} after the {count} "
                "expected entries",
            )
        if offset + 2 > len(data):
            raise _bundle_error(
                path, f"truncated length prefix of entry {len(entries)} (leaf {leaf})", (leaf,)
            )
        size = int.from_bytes(data[offset : offset + 2], "big")
        if offset + 2 + size > len(data):
            raise _bundle_error(
                path,
                f"entry {len(entries)} (leaf {leaf}) at offset {offset} declares {size} bytes "
                f"but only {len(data) - offset - 2} remain",
                (leaf,),
            )
        entries.append(data[offset + 2 : offset + 2 + size])
        offset += 2 + size
    if len(entries) != count:
        raise _bundle_error(
            path,
            f"holds {len(entries)} entries, expected {count}",
            range(first + len(entries), first + count),
        )
    return entries


@dataclass(frozen=True)
class TileExport:
    """What :func:`write_tiles` wrote."""

    directory: Path
    size: int
    root: bytes
    files: int


def _write_file(base: Path, relative: str, data: bytes) -> None:
    target = base / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    # Write-then-rename so a reader never sees a half-written tile.
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_tiles(
    directory: str | os.PathLike[str],
    origin: str,
    leaves: Iterable[bytes],
    signed_checkpoint: bytes,
) -> TileExport:
    """Write leaves and the signed checkpoint in the tlog-tiles layout under ``directory``.

    ``leaves`` are the entries (leaf data, at most 65535 bytes each) in index order; there must be
    exactly ``checkpoint.size`` of them and their tree must have the checkpoint's root. The
    checkpoint file is written last and only if everything matches, so a directory without a
    ``checkpoint`` file is an incomplete export. The checkpoint's signature is not verified here.
    """
    base = Path(directory)
    try:
        checkpoint = peek_checkpoint(signed_checkpoint)
    except CheckpointError as exc:
        raise TileError(
            f"cannot export: {exc}", (TileProblem(CHECKPOINT_PATH, str(exc)),)
        ) from None
    if checkpoint.origin != origin:
        raise TileError(
            f"checkpoint origin {checkpoint.origin!r} is not the export origin {origin!r}"
        )
    compact = CompactRange()
    bundle: list[bytes] = []
    pending: list[list[bytes]] = [[]]  # per level, hashes of the tile being filled
    full_tiles: list[int] = [0]  # per level, full tiles written so far
    files = 0

    def push(level: int, h: bytes) -> None:
        nonlocal files
        if level == len(pending):
            pending.append([])
            full_tiles.append(0)
        pending[level].append(h)
        if len(pending[level]) == TILE_WIDTH:
            _write_file(base, tile_path(level, full_tiles[level]), b"".join(pending[level]))
            files += 1
            up = root_from_leaf_hashes(pending[level])
            pending[level] = []
            full_tiles[level] += 1
            push(level + 1, up)

    for i, entry in enumerate(leaves):
        if not isinstance(entry, bytes):
            raise TileError(f"leaf {i} must be bytes, got {type(entry).__name__}")
        if len(entry) > MAX_ENTRY_SIZE:
            raise TileError(f"leaf {i} is {len(entry)} bytes; entry bundles hold at most 65535")
        if i >= checkpoint.size:
            raise TileError(
                f"more leaves than the checkpoint's tree size {checkpoint.size} "
                f"(leaf {i} would be extra)"
            )
        h = leaf_hash(entry)
        compact.append(h)
        bundle.append(entry)
        if len(bundle) == TILE_WIDTH:
            _write_file(base, entries_path(full_tiles[0]), encode_entry_bundle(bundle))
            files += 1
            bundle = []
        push(0, h)

    if compact.size != checkpoint.size:
        raise TileError(
            f"checkpoint is for tree size {checkpoint.size} but {compact.size} leaves were given"
        )
    if compact.root() != checkpoint.root:
        raise TileError(
            f"the leaves' root {compact.root().hex()} is not the checkpoint root "
            f"{checkpoint.root.hex()}"
        )
    if bundle:
        _write_file(base, entries_path(full_tiles[0], len(bundle)), encode_entry_bundle(bundle))
        files += 1
    for level, hashes in enumerate(pending):
        if hashes:
            _write_file(base, tile_path(level, full_tiles[level], len(hashes)), b"".join(hashes))
            files += 1
    _write_file(base, CHECKPOINT_PATH, bytes(signed_checkpoint))
    return TileExport(base, checkpoint.size, checkpoint.root, files + 1)


@dataclass(frozen=True)
class TileAudit:
    """The result of :func:`verify_tiles`: the verified checkpoint and every problem found."""

    checkpoint: SignedCheckpoint
    problems: tuple[TileProblem, ...] = field(default=())

    @property
    def ok(self) -> bool:
        """Whether the export matches the signed checkpoint completely."""
        return not self.problems

    def raise_for_problems(self) -> None:
        """Raise :class:`TileError` listing every problem, if there is any."""
        if self.problems:
            cp = self.checkpoint.checkpoint
            raise TileError(
                f"export of {cp.origin!r} at size {cp.size} has {len(self.problems)} problem(s)",
                self.problems,
            )


def _read(
    base: Path,
    relative: str,
    problems: list[TileProblem],
    what: str,
    indices: tuple[int, ...] = (),
) -> bytes | None:
    try:
        return (base / relative).read_bytes()
    except FileNotFoundError:
        problems.append(TileProblem(relative, f"missing ({what})", indices))
    except OSError as exc:
        problems.append(TileProblem(relative, f"cannot be read ({what}): {exc.strerror}", indices))
    return None


def _split_hashes(data: bytes) -> list[bytes]:
    return [data[i : i + HASH_SIZE] for i in range(0, len(data), HASH_SIZE)]


def _ranges(indices: Sequence[int]) -> str:
    """Compact ``[1, 2, 3, 7]`` as ``1-3, 7`` for messages."""
    parts: list[str] = []
    run_start = prev = indices[0]
    for i in [*indices[1:], None]:
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(run_start) if run_start == prev else f"{run_start}-{prev}")
        if i is not None:
            run_start = prev = i
    return ", ".join(parts)


class _Audit:
    """State of one :func:`verify_tiles` run.

    Authentication runs top-down from the signed root. The partial tiles (one per level at most)
    always reproduce the root on their own; once they do, each full tile is authentic iff the
    root of its 256 hashes equals the authentic hash one level up, and each entry is authentic iff
    its leaf hash equals the authentic level-0 hash. Any mismatch is therefore blamed on exactly
    the file that was altered, however many files were altered.

    If the partial tiles themselves do not reproduce the root, the run falls back to deriving
    every hash from the entries: when the entries reproduce the signed root, every tile that
    differs from them is named as altered.
    """

    def __init__(self, base: Path, checkpoint: Checkpoint) -> None:
        self.base = base
        self.checkpoint = checkpoint
        self.problems: list[TileProblem] = []
        counts = []
        count = checkpoint.size
        while count:
            counts.append(count)
            count >>= TILE_HEIGHT
        self.full = [c // TILE_WIDTH for c in counts]
        self.partial_width = [c % TILE_WIDTH for c in counts]
        self.partials: dict[int, list[bytes]] = {}
        self.partial_ok = False
        self.cache: dict[int, tuple[int, list[bytes] | None]] = {}

    def problem(self, path: str, message: str, indices: Sequence[int] = ()) -> None:
        self.problems.append(TileProblem(path, message, tuple(indices)))

    def read_hash_tile(self, ref: TileRef) -> list[bytes] | None:
        start, end = ref.leaf_range
        covered = tuple(range(start, end)) if ref.level == 0 else ()
        what = f"level {ref.level} hashes for leaves {start}..{end - 1}"
        data = _read(self.base, ref.path, self.problems, what, covered)
        if data is None:
            return None
        if len(data) != ref.width * HASH_SIZE:
            self.problem(
                ref.path,
                f"is {len(data)} bytes, expected {ref.width * HASH_SIZE} ({ref.width} hashes)",
                covered,
            )
            return None
        return _split_hashes(data)

    def load_partials(self) -> None:
        """Read every partial tile and check that together they reproduce the signed root."""
        if self.checkpoint.size == 0:
            self.partial_ok = True
            return
        complete = True
        for level, width in enumerate(self.partial_width):
            if width:
                hashes = self.read_hash_tile(TileRef(level, self.full[level], width))
                if hashes is None:
                    complete = False
                else:
                    self.partials[level] = hashes
        if complete:
            compact = CompactRange()
            for level in reversed(range(len(self.full))):
                for h in self.partials.get(level, ()):
                    compact.append_subtree(TILE_HEIGHT * level, h)
            self.partial_ok = compact.root() == self.checkpoint.root

    def expected(self, level: int, i: int) -> bytes | None:
        """The authentic ``i``-th hash at tile level ``level``, or None if it can't be known."""
        n, position = divmod(i, TILE_WIDTH)
        if n == self.full[level]:
            return self.partials[level][position] if self.partial_ok else None
        tile = self.authentic_tile(level, n)
        return None if tile is None else tile[position]

    def authentic_tile(self, level: int, n: int) -> list[bytes] | None:
        """Full tile ``n`` at ``level`` if present and authentic (cached per level)."""
        cached = self.cache.get(level)
        if cached is not None and cached[0] == n:
            return cached[1]
        ref = TileRef(level, n)
        hashes = self.read_hash_tile(ref)
        result = None
        if hashes is not None:
            parent = self.expected(level + 1, n)
            if parent is not None and root_from_leaf_hashes(hashes) == parent:
                result = hashes
            elif parent is not None:
                above = self.tile_holding(level + 1, n)
                start, end = ref.leaf_range
                self.problem(
                    ref.path,
                    f"was altered: its hashes do not reproduce the signed hash at position "
                    f"{n % TILE_WIDTH} of {above} (leaves {start}..{end - 1})",
                    tuple(range(start, end)) if level == 0 else (),
                )
        self.cache[level] = (n, result)
        return result

    def tile_holding(self, level: int, i: int) -> str:
        n = i // TILE_WIDTH
        width = self.partial_width[level] if n == self.full[level] else TILE_WIDTH
        return tile_path(level, n, width)

    def read_bundle(self, ref: TileRef) -> list[bytes] | None:
        start, end = ref.leaf_range
        covered = tuple(range(start, end))
        what = f"entries for leaves {start}..{end - 1}"
        data = _read(self.base, ref.path, self.problems, what, covered)
        if data is None:
            return None
        try:
            return decode_entry_bundle(data, ref.width, ref.path, start)
        except TileError as exc:
            self.problems.extend(exc.problems)
            return None

    def check_entries(self, ref: TileRef, hashes: list[bytes]) -> bool:
        """Check one bundle's leaf hashes top-down; return False if it can't be authenticated."""
        start, end = ref.leaf_range
        if ref.width == TILE_WIDTH:
            authentic = self.authentic_tile(0, ref.index)
        else:
            authentic = self.partials[0] if self.partial_ok else None
        if authentic is not None:
            bad = [
                start + i for i, (a, b) in enumerate(zip(hashes, authentic, strict=True)) if a != b
            ]
            if bad:
                self.problem(
                    ref.path,
                    f"entries for leaves {_ranges(bad)} were altered: they do not hash to the "
                    f"signed leaf hashes",
                    bad,
                )
            return True
        parent = self.expected(1, ref.index) if ref.width == TILE_WIDTH else None
        if parent is None:
            return False
        if root_from_leaf_hashes(hashes) != parent:
            self.problem(
                ref.path,
                f"entries for leaves {start}..{end - 1} were altered: they do not reproduce the "
                f"signed hash of their range, and {tile_path(0, ref.index)} cannot tell which",
                tuple(range(start, end)),
            )
        return True


class _Derivation:
    """Fallback: derive every tile from the entries and compare with the files."""

    def __init__(self, audit: _Audit) -> None:
        self.audit = audit
        self.pending: list[list[bytes]] = [[]]
        self.full: list[int] = [0]
        self.mismatches: list[tuple[str, list[int], tuple[int, ...]]] = []
        self.broken = False

    def compare(self, ref: TileRef, derived: list[bytes], actual: list[bytes] | None) -> None:
        if actual is None:
            return  # missing or wrong size: already reported
        bad = [i for i, (a, b) in enumerate(zip(derived, actual, strict=True)) if a != b]
        if bad:
            start = ref.leaf_range[0]
            span = 1 << (TILE_HEIGHT * ref.level)
            leaves = tuple(start + i for i in bad) if ref.level == 0 else ()
            self.mismatches.append((ref.path, [i * span + start for i in bad], leaves))

    def push(self, level: int, h: bytes) -> None:
        if level == len(self.pending):
            self.pending.append([])
            self.full.append(0)
        self.pending[level].append(h)
        if len(self.pending[level]) == TILE_WIDTH:
            ref = TileRef(level, self.full[level])
            if level > 0:  # level-0 tiles are compared as their bundles are read
                self.compare(ref, self.pending[level], self.audit.read_hash_tile(ref))
            up = root_from_leaf_hashes(self.pending[level])
            self.pending[level] = []
            self.full[level] += 1
            self.push(level + 1, up)

    def finish(self) -> None:
        # Level 0 (full and partial) was compared bundle by bundle; check the upper partials.
        for level, derived in enumerate(self.pending):
            if level > 0 and derived and level in self.audit.partials:
                ref = TileRef(level, self.full[level], len(derived))
                self.compare(ref, derived, self.audit.partials[level])

    def report(self, entries_authentic: bool) -> None:
        for path, first_leaves, leaves in self.mismatches:
            kind = "leaves" if leaves else "the subtrees starting at leaves"
            where = f"{kind} {_ranges(first_leaves)}"
            if entries_authentic:
                message = (
                    f"was altered: hashes for {where} differ from those recomputed from the "
                    "entries, which reproduce the signed root"
                )
            else:
                message = f"disagrees with the entries for {where}; one of them was altered"
            self.audit.problem(path, message, leaves)


def verify_tiles(
    directory: str | os.PathLike[str],
    log_verifiers: NoteVerifier | Iterable[NoteVerifier],
    *,
    origin: str | None = None,
    witnesses: Iterable[NoteVerifier] = (),
    on_entry: Callable[[int, bytes], None] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> TileAudit:
    """Re-derive every hash of an export and report each missing or altered file.

    The checkpoint signature must verify (else :class:`TileError` at once: nothing can be trusted
    without it). Then every tile and entry bundle is authenticated top-down from the signed root
    (see ``_Audit``), so each missing, truncated or altered file is named with the leaf indices it
    affects, even when several files were altered. Problems are returned in the
    :class:`TileAudit`; call :meth:`TileAudit.raise_for_problems` to fail on them.

    ``on_entry(index, entry)`` is called for every entry read, in order, before it is known to be
    authentic; check the audit's problems before trusting it. ``progress(done, total)`` is called
    after each bundle (a few thousand calls for a million leaves).
    """
    base = Path(directory)
    problems: list[TileProblem] = []
    raw = _read(base, CHECKPOINT_PATH, problems, "signed checkpoint")
    if raw is None:
        raise TileError(f"export {str(base)!r} cannot be verified", tuple(problems))
    try:
        signed = open_checkpoint(raw, log_verifiers, origin=origin, witnesses=witnesses)
    except LedgerError as exc:
        problem = TileProblem(CHECKPOINT_PATH, f"does not verify: {exc}")
        raise TileError(f"export {str(base)!r} cannot be verified", (problem,)) from None
    checkpoint = signed.checkpoint
    audit = _Audit(base, checkpoint)
    audit.load_partials()
    derivation = None if audit.partial_ok else _Derivation(audit)
    from_entries = CompactRange()
    entries_complete = True
    unchecked: list[TileRef] = []

    for ref in bundles_for_size(checkpoint.size):
        entries = audit.read_bundle(ref)
        hashes = None if entries is None else [leaf_hash(e) for e in entries]
        if entries is not None and on_entry is not None:
            for i, entry in enumerate(entries):
                on_entry(ref.leaf_range[0] + i, entry)
        if hashes is None:
            entries_complete = False
        elif entries_complete:
            from_entries.extend(hashes)
        if derivation is None:
            if hashes is not None and not audit.check_entries(ref, hashes):
                unchecked.append(ref)
        elif hashes is None:
            derivation.broken = True
        elif not derivation.broken:
            tile_ref = TileRef(0, ref.index, ref.width)
            actual = audit.partials.get(0) if ref.is_partial else audit.read_hash_tile(tile_ref)
            derivation.compare(tile_ref, hashes, actual)
            for h in hashes:
                derivation.push(0, h)
        if progress is not None:
            progress(ref.leaf_range[1], checkpoint.size)

    entries_authentic = entries_complete and from_entries.root() == checkpoint.root
    if derivation is not None:
        if not derivation.broken:
            derivation.finish()
        derivation.report(entries_authentic)
        if not entries_authentic:
            audit.problem(
                CHECKPOINT_PATH,
                "the signed root is reproduced neither by the partial tiles "
                f"({', '.join(sorted(_partial_paths(audit)))}) nor by the entries",
            )
    elif not entries_authentic:
        for ref in unchecked:
            start, end = ref.leaf_range
            audit.problem(
                ref.path,
                f"entries for leaves {start}..{end - 1} cannot be authenticated: the tiles above "
                "them are missing or altered and the entries do not reproduce the signed root",
                tuple(range(start, end)),
            )
    return TileAudit(signed, tuple([*problems, *audit.problems]))


def _partial_paths(audit: _Audit) -> list[str]:
    return [
        tile_path(level, audit.full[level], width)
        for level, width in enumerate(audit.partial_width)
        if width
    ]


@dataclass(frozen=True)
class TileLog:
    """A fully verified export: its checkpoint and all its entries in index order."""

    checkpoint: SignedCheckpoint
    entries: tuple[bytes, ...]


def read_tiles(
    directory: str | os.PathLike[str],
    log_verifiers: NoteVerifier | Iterable[NoteVerifier],
    *,
    origin: str | None = None,
    witnesses: Iterable[NoteVerifier] = (),
) -> TileLog:
    """Read and verify a whole export into memory; raise :class:`TileError` on any problem."""
    entries: list[bytes] = []
    audit = verify_tiles(
        directory,
        log_verifiers,
        origin=origin,
        witnesses=witnesses,
        on_entry=lambda _index, entry: entries.append(entry),
    )
    audit.raise_for_problems()
    return TileLog(audit.checkpoint, tuple(entries))

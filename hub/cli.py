"""The ``tongban`` command line: one entry point with subcommands.

A thin entry point: parse arguments, build settings and the application through the composition
root, run, and map :class:`~hub.errors.TongbanError` to a message and an exit code in one place.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

from hub.bootstrap import build_application
from hub.errors import ConfigurationError, TongbanError
from hub.settings import Settings

EXIT_ERROR = 1
EXIT_CONFIG = 2


def _demo(args: argparse.Namespace) -> int:
    from hub.demo import run_demo

    settings = Settings.from_env()
    if args.data_dir:
        settings = settings.with_changes(data_dir=Path(args.data_dir))
    elif settings.database_url is None and not args.keep:
        # A fresh store per run, so the demo always tells the same story from the start.
        settings = settings.with_changes(data_dir=Path(tempfile.mkdtemp(prefix="tongban-demo-")))
    where = (settings.database_url and "PostgreSQL") or f"SQLite at {settings.sqlite_path}"
    print(f"event store: {where}")
    app = build_application(settings)
    try:
        run_demo(app, pause_seconds=args.pause)
    finally:
        app.close()
    return 0


def _catalogue(args: argparse.Namespace) -> int:
    from hub.domain.items import Catalogue

    catalogue = Catalogue.load(Path(args.file)) if args.file else Catalogue.load_default()
    for item in catalogue:
        modes = ",".join(m.name for m in item.cross_region_modes) or "-"
        print(
            f"{item.code:<20} {item.kind.name:<9} {item.competent_level.name:<8} "
            f"{item.promised_days:>3}/{item.statutory_days:<3} {modes:<35} {item.name}"
        )
    print(f"{len(catalogue)} items, edition {catalogue.edition}")
    return 0


def _regions(args: argparse.Namespace) -> int:
    from hub.domain.regions import RegionCode, RegionRegistry

    registry = RegionRegistry.load_default()
    code = RegionCode.parse(args.code)
    region = registry.get(code)
    name = registry.full_name(code)
    print(f"{region.code} {name} ({region.level.name}, edition {registry.edition})")
    for child in registry.children(code):
        print(f"  {child.code.short:<12} {child.name}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tongban``."""
    parser = argparse.ArgumentParser(
        prog="tongban", description="Tongban (通办): a case exchange hub for service halls."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="run the seed story on the embedded store")
    demo.add_argument("--data-dir", help="keep the demo's store here (default: a fresh temp dir)")
    demo.add_argument("--keep", action="store_true", help="use TONGBAN_DATA_DIR as it is")
    demo.add_argument("--pause", type=float, default=1.0, help="seconds a paused clock waits")
    demo.set_defaults(run=_demo)

    catalogue = commands.add_parser("catalogue", help="list (and check) a service-item catalogue")
    catalogue.add_argument("--file", help="an operator's catalogue JSON (default: shipped one)")
    catalogue.set_defaults(run=_catalogue)

    regions = commands.add_parser("regions", help="show a region and its children")
    regions.add_argument("code", help="a 2, 4, 6, 9 or 12 digit region code")
    regions.set_defaults(run=_regions)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tongban``; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except ConfigurationError as error:
        print(f"tongban: configuration error: {error}", file=sys.stderr)
        return EXIT_CONFIG
    except TongbanError as error:
        print(f"tongban: {error}", file=sys.stderr)
        return EXIT_ERROR
    return code


if __name__ == "__main__":
    sys.exit(main())

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
from typing import Any

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
        from hub.bootstrap import build_integrator

        integrator = build_integrator(settings, app)
        size = integrator.catch_up()
        print(f"\nLedger: {size} stored events integrated as leaves of {settings.origin}; "
              "the signed checkpoint covers them all.")  # fmt: skip
        print("An auditor verifies it with only the log's public key:")
        print(f"  TONGBAN_DATA_DIR={settings.data_dir} {sys.argv[0]} audit verify "
              f"--log-key '{integrator.signer.verifier_key()}'")  # fmt: skip
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


def _serve(args: argparse.Namespace) -> int:
    import logging
    import signal
    import threading

    from hub.api.audit import add_audit_service
    from hub.api.server import NodeServer, TLSFiles
    from hub.bootstrap import build_integrator

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    settings = Settings.from_env()
    listen = args.listen or settings.listen
    tls = None if args.insecure else TLSFiles.in_directory(settings.pki_dir)
    app = build_application(settings, require_signatures=not args.insecure)
    integrator = build_integrator(settings, app)
    stop = threading.Event()
    # The integrator follows the log in the background; its tracking makes restarts safe.
    follower = threading.Thread(target=integrator.run, args=(stop,), name="integrator")
    follower.start()
    node = NodeServer(
        app,
        listen=listen,
        tls=tls,
        max_workers=args.workers,
        extra_services=[add_audit_service(app, integrator.view)],
    ).start()
    # The port line is machine-readable: scripts and tests wait for it.
    print(f"tongban: serving on {listen.rsplit(':', 1)[0]}:{node.port}", flush=True)

    def shut_down(signum: int, _frame: object) -> None:
        node.stop(grace=args.grace)

    signal.signal(signal.SIGTERM, shut_down)
    signal.signal(signal.SIGINT, shut_down)
    try:
        node.wait()
    finally:
        stop.set()
        follower.join(timeout=10)
        app.close()
    return 0


def _pki_init(args: argparse.Namespace) -> int:
    from hub.pki import Role, init_ca

    directory = Path(args.dir) if args.dir else Settings.from_env().pki_dir
    ca = init_ca(directory, args.node)
    node = ca.issue(Role.NODE, "node", dns_names=tuple(args.dns), ip_addresses=tuple(args.ip))
    certificate, key = node.write(directory)
    print(f"CA: {directory / 'ca.pem'} (key {directory / 'ca.key'}, mode 0600)")
    print(f"node certificate: {certificate} (key {key})")
    return 0


def _pki_issue(args: argparse.Namespace) -> int:
    from hub.pki import Role, load_ca

    directory = Path(args.dir) if args.dir else Settings.from_env().pki_dir
    issued = load_ca(directory).issue(Role(args.role), args.name, valid_days=args.valid_days)
    certificate, key = issued.write(Path(args.out))
    print(f"{issued.identity}: {certificate} (key {key})")
    return 0


def _pki_signing_key(args: argparse.Namespace) -> int:
    import base64
    import os

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    print(f"signing key: {out} (mode 0600)")
    print(f"public key (register it with the hall): {base64.b64encode(raw).decode()}")
    return 0


def _hall_register(args: argparse.Namespace) -> int:
    app = build_application(Settings.from_env())
    try:
        hall = app.register_hall(
            hall_id=args.hall_id,
            name=args.name,
            region=args.region,
            windows=args.window,
            public_key=args.public_key,
        )
    finally:
        app.close()
    print(f"registered {hall.hall_id} ({hall.name}) at {hall.region}, level {hall.level.name}")
    return 0


def _progress_bar() -> Any:
    """A progress callback drawing tqdm bars on stderr (silent when stderr is not a terminal)."""
    from tqdm import tqdm

    bars: dict[str, Any] = {}

    def report(stage: str, done: int, total: int) -> None:
        bar = bars.get(stage)
        if bar is None:
            bar = bars[stage] = tqdm(total=total, desc=stage, unit=" items", disable=None)
        bar.total = max(total, done)
        bar.n = done
        bar.refresh()

    return report


def _log_verifiers(args: argparse.Namespace) -> list[Any]:
    from ledger import Verifier

    keys = list(args.log_key or [])
    for path in args.log_key_file or []:
        keys.extend(Path(path).read_text("ascii").split())
    if not keys:
        raise ConfigurationError("give the log's public key: --log-key VKEY or --log-key-file")
    verifiers = []
    for key in keys:
        try:
            verifiers.append(Verifier.from_key(key))
        except Exception as error:
            raise ConfigurationError(f"--log-key {key!r}: {error}") from None
    return verifiers


def _ledger(args: argparse.Namespace) -> int:
    from hub.bootstrap import build_integrator, load_or_create_log_signer

    settings = Settings.from_env()
    if args.ledger_command == "key":
        print(load_or_create_log_signer(settings).verifier_key())
        return 0
    app = build_application(settings)
    try:
        integrator = build_integrator(settings, app)
        size = integrator.catch_up()
        if args.ledger_command == "integrate":
            print(f"log size {size}")
            return 0
        from ledger.tiles import write_tiles

        view = integrator.view

        def export(cursor: Any) -> Any:
            latest = view.tables.latest_checkpoint(cursor)
            if latest is None:
                raise ConfigurationError("the log has no checkpoint yet: nothing to export")
            leaves = (leaf.encode() for leaf in view.tables.iter_leaves(cursor, 0, latest.size))
            return write_tiles(Path(args.directory), settings.origin, leaves, latest.note)

        result = view.read(export)
        print(f"exported {result.size} leaves ({result.files} files) to {result.directory}")
    finally:
        app.close()
    return 0


def _audit(args: argparse.Namespace) -> int:
    from hub.audit import audit_export, audit_store, case_proof_status
    from hub.bootstrap import build_integrator

    settings = Settings.from_env()
    verifiers = _log_verifiers(args)
    origin = args.origin or settings.origin
    if args.audit_command == "verify" and args.export:
        report = audit_export(Path(args.export), verifiers, origin=origin, progress=_progress_bar())
        print(report.summary())
        return 0 if report.ok else EXIT_ERROR
    app = build_application(settings, create_tables=False)
    try:
        view = build_integrator(settings, app).view
        if args.audit_command == "verify":
            report = audit_store(app, view, verifiers, origin=origin, progress=_progress_bar())
            print(report.summary())
            return 0 if report.ok else EXIT_ERROR
        from uuid import UUID

        failed = False
        for event, leaf, status in case_proof_status(app, view, UUID(args.case_id), verifiers):
            actor = getattr(event, "actor", None)
            who = f"{actor.hall_id}/{actor.operator}" if actor else ""
            index = f"leaf {leaf.index}" if leaf else "no leaf"
            print(f"v{event.originator_version:<3} {type(event).__name__:<22} {who:<24} "
                  f"{index:<10} {status}")  # fmt: skip
            failed = failed or status.startswith("FAILED")
        return EXIT_ERROR if failed else 0
    finally:
        app.close()


def _adapter(args: argparse.Namespace) -> int:
    # The adapters are hall-side programs with their own CLI; they never import the hub.
    from adapters.cli import main as adapter_main

    code: int = adapter_main(args.adapter_args)
    return code


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

    serve = commands.add_parser("serve", help="run a node's gRPC server (mutual TLS)")
    serve.add_argument("--listen", help="host:port (default TONGBAN_LISTEN or 127.0.0.1:7443)")
    serve.add_argument("--insecure", action="store_true", help="no TLS, unsigned commands (demo)")
    serve.add_argument("--workers", type=int, default=16, help="server threads")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds to finish on shutdown")
    serve.set_defaults(run=_serve)

    pki = commands.add_parser("pki", help="the node's certificate authority")
    pki_commands = pki.add_subparsers(dest="pki_command", required=True)
    init = pki_commands.add_parser("init", help="create the node CA and its server certificate")
    init.add_argument("--dir", help="where to write (default TONGBAN_TLS_DIR or DATA_DIR/pki)")
    init.add_argument("--node", required=True, help="the node's name, e.g. hunan")
    init.add_argument("--dns", nargs="*", default=["localhost"], help="server DNS names")
    init.add_argument("--ip", nargs="*", default=["127.0.0.1"], help="server IP addresses")
    init.set_defaults(run=_pki_init)
    issue = pki_commands.add_parser("issue", help="issue a hall/auditor/peer/admin certificate")
    issue.add_argument("--dir", help="the CA directory (default as for init)")
    issue.add_argument("--role", required=True, choices=["hall", "auditor", "peer", "admin"])
    issue.add_argument("--name", required=True, help="hall id, auditor or peer name")
    issue.add_argument("--out", required=True, help="directory for NAME.pem and NAME.key")
    issue.add_argument("--valid-days", type=int, default=365)
    issue.set_defaults(run=_pki_issue)
    signing = pki_commands.add_parser("signing-key", help="a hall's Ed25519 command-signing key")
    signing.add_argument("--out", required=True, help="file for the private key (PEM, 0600)")
    signing.set_defaults(run=_pki_signing_key)

    hall = commands.add_parser("hall", help="manage the hall registry on this node's store")
    hall_commands = hall.add_subparsers(dest="hall_command", required=True)
    register = hall_commands.add_parser("register", help="register a hall")
    register.add_argument("--hall-id", required=True)
    register.add_argument("--name", required=True)
    register.add_argument("--region", required=True, help="the hall's region code")
    register.add_argument("--window", action="append", required=True, help="a window (repeat)")
    register.add_argument("--public-key", required=True, help="base64 Ed25519 public key")
    register.set_defaults(run=_hall_register)

    ledger = commands.add_parser("ledger", help="the node's signed log")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True)
    ledger_commands.add_parser("key", help="print the log's public (verifier) key")
    ledger_commands.add_parser("integrate", help="integrate stored events and sign a checkpoint")
    export = ledger_commands.add_parser("export", help="write the log as C2SP tlog-tiles")
    export.add_argument("directory")
    ledger.set_defaults(run=_ledger)

    audit = commands.add_parser("audit", help="verify the log with trusted keys only")
    audit_commands = audit.add_subparsers(dest="audit_command", required=True)
    verify = audit_commands.add_parser("verify", help="verify the whole log (database or export)")
    verify.add_argument("--export", help="verify this tlog-tiles export instead of the database")
    case = audit_commands.add_parser("case", help="a case's history with each event's proof")
    case.add_argument("case_id")
    for sub in (verify, case):
        sub.add_argument("--log-key", action="append", help="trusted log verifier key (repeat)")
        sub.add_argument("--log-key-file", action="append", help="file with verifier keys")
        sub.add_argument("--origin", help="expected log origin (default: this node's)")
    audit.set_defaults(run=_audit)

    adapter = commands.add_parser(
        "adapter", help="run a hall adapter: gateway, village or import (see docs/adapters.md)"
    )
    adapter.add_argument("adapter_args", nargs=argparse.REMAINDER, help="the adapter's arguments")
    adapter.set_defaults(run=_adapter)
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

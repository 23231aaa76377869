"""The ``tongban`` command line: one entry point with subcommands.

A thin entry point: parse arguments, build settings and the application through the composition
root, run, and map :class:`~hub.errors.TongbanError` to a message and an exit code in one place.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hub.errors import ConfigurationError, TongbanError
from hub.settings import Settings

if TYPE_CHECKING:
    from hub.application.hub import HubApplication

EXIT_ERROR = 1
EXIT_CONFIG = 2


def _application(settings: Settings) -> HubApplication:
    """The node's application (imported here: the auditor's commands must not load it)."""
    from hub.bootstrap import build_application

    return build_application(settings)


def _init(args: argparse.Namespace) -> int:
    from hub.bootstrap import NodePaths, initialise

    settings = Settings.from_env()
    genesis, created = initialise(settings, admin=args.admin)
    paths = NodePaths(settings.data_dir)
    if not created:
        print(f"already initialised: {genesis.origin} (log key in {paths.log_vkey})")
        return 0
    print(f"node {genesis.origin} initialised in {settings.data_dir}")
    print(f"  log key (give it to auditors): {genesis.log_key}")
    print(f"  admin {', '.join(genesis.admins)}: signing key {paths.admin_key} (mode 0600)")
    print(f"  secrets: {paths.secrets} (log key, at-rest key ring, pseudonym key)")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from hub.bootstrap import admin_signer, build_integrator, initialise
    from hub.demo import run_demo

    settings = Settings.from_env()
    if args.data_dir:
        settings = settings.with_changes(data_dir=Path(args.data_dir))
    elif settings.database_url is None and not args.keep:
        # A fresh store per run, so the demo always tells the same story from the start.
        settings = settings.with_changes(data_dir=Path(tempfile.mkdtemp(prefix="tongban-demo-")))
    where = (settings.database_url and "PostgreSQL") or f"SQLite at {settings.sqlite_path}"
    print(f"event store: {where}")
    initialise(settings)  # the demo makes its node's keys on purpose, like an operator would
    app = _application(settings)
    try:
        run_demo(app, admin_signer(settings, app), pause_seconds=args.pause)
        integrator = build_integrator(settings, app)
        size = integrator.catch_up()
        print(f"\nLedger: {size} stored events integrated as leaves of {settings.origin}, each "
              "checked against the signed command that caused it; the signed checkpoint "
              "covers them all.")  # fmt: skip
        print("An auditor verifies it with only the log's public key (read-only):")
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
    from hub.serving import serve

    return serve(
        Settings.from_env(),
        listen=args.listen,
        insecure=args.insecure,
        workers=args.workers,
        grace=args.grace,
    )


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


def _hall(args: argparse.Namespace) -> int:
    from hub.bootstrap import admin_signer

    settings = Settings.from_env()
    app = _application(settings)
    try:
        if args.hall_command == "show":
            hall = app.get_hall(args.hall_id)
        else:
            admin = admin_signer(settings, app, Path(args.admin_key) if args.admin_key else None)
            if args.hall_command == "register":
                signed = admin.sign(
                    "register_hall",
                    hall_id=args.hall_id,
                    name=args.name,
                    region=args.region,
                    windows=args.window,
                    public_key=args.public_key,
                )
            elif args.hall_command == "rotate-key":
                signed = admin.sign(
                    "rotate_hall_key", hall_id=args.hall_id, public_key=args.public_key
                )
            else:
                signed = admin.sign("retire_hall", hall_id=args.hall_id, reason=args.reason)
            hall = app.hall_by_id(app.execute(signed).aggregate_id)
    finally:
        app.close()
    state = "retired" if hall.retired else "active"
    print(f"{hall.hall_id} ({hall.name}) at {hall.region}, level {hall.level.name}, {state}")
    from hub.domain.hall import key_id

    for number, key in enumerate(hall.public_keys):
        current = " (current)" if number == len(hall.public_keys) - 1 else ""
        print(f"  key {key_id(key)}: {key}{current}")
    return 0


def _erase(args: argparse.Namespace) -> int:
    from hub.bootstrap import admin_signer

    settings = Settings.from_env()
    app = _application(settings)
    try:
        admin = admin_signer(settings, app, Path(args.admin_key) if args.admin_key else None)
        if args.case:
            cases = [_case_id(args.case)]
        else:
            cases = app.cases_of_person(args.id_number)
            if not cases:
                print("no case with personal data of that person (or it was erased already)")
                return 0
        for case_id in cases:
            result = app.execute(
                admin.sign("erase_personal_data", case_id=str(case_id), reason=args.reason)
            )
            print(f"erased the personal data of case {result.case_id} (v{result.version})")
    finally:
        app.close()
    return 0


def _case_id(text: str) -> Any:
    from uuid import UUID

    try:
        return UUID(text)
    except ValueError:
        raise ConfigurationError(f"{text!r} is not a case id (a UUID)") from None


def _keys(args: argparse.Namespace) -> int:
    from hub.application.cipher import KeyRingCipher, new_key, new_key_id
    from hub.application.vault import PersonalDataVault
    from hub.bootstrap import load_node_keys, write_key_ring

    settings = Settings.from_env()
    keys = load_node_keys(settings)
    app = _application(settings)
    try:
        ring = dict(keys.cipher.keys)
        if args.keys_command == "rotate":
            if keys.cipher_file is None:
                raise ConfigurationError(
                    "the key ring comes from TONGBAN_CIPHER_KEYS: add a key there, make it "
                    "TONGBAN_CIPHER_ACTIVE_KEY, then run `tongban keys rewrap`"
                )
            key_id = new_key_id()
            ring[key_id] = base64.b64decode(new_key())
            # First the ring with both keys (nothing unreadable if we stop here), ...
            write_key_ring(keys.cipher_file, ring, key_id)
            active = key_id
        else:
            active = keys.cipher.active_id
        cipher = KeyRingCipher(ring, active)
        app.keys.record_keys(cipher.fingerprints())
        # ... then every per-case key re-wrapped under the new key, in one transaction, ...
        count = app.keys.rewrap(PersonalDataVault(cipher, keys.pseudonym_key).rewrap)
        in_use = app.keys.key_ids_in_use()
        if args.keys_command == "rotate" and keys.cipher_file is not None:
            # ... then the ring without the keys that no longer wrap anything.
            kept = {k: v for k, v in ring.items() if k == active or k in in_use}
            write_key_ring(keys.cipher_file, kept, active)
        print(f"active at-rest key: {active}; {count} personal-data keys re-wrapped under it")
    finally:
        app.close()
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
    from hub.bootstrap import build_integrator, load_node_keys

    settings = Settings.from_env()
    if args.ledger_command == "key":
        print(load_node_keys(settings).signer.verifier_key())
        return 0
    app = _application(settings)
    try:
        integrator = build_integrator(settings, app)
        size = integrator.catch_up()
        if args.ledger_command == "integrate":
            print(f"log size {size}")
            return 0
        from hub.integrity.export import export_log

        result = export_log(integrator.view, Path(args.directory), settings.origin)
        print(f"exported {result.size} leaves and their events ({result.files} files) to "
              f"{result.directory}")  # fmt: skip
    finally:
        app.close()
    return 0


def _audit(args: argparse.Namespace) -> int:
    # The auditor's path imports nothing that writes: no application, no bootstrap.
    from hub.integrity.audit import audit_case, audit_export, audit_store
    from hub.integrity.store import ReadOnlyStore

    settings = Settings.from_env()
    verifiers = _log_verifiers(args)
    origin = args.origin or settings.origin
    trusted = _trusted_checkpoint(args)
    if args.audit_command == "verify" and args.export:
        report = audit_export(
            Path(args.export), verifiers, origin=origin, trusted=trusted, progress=_progress_bar()
        )
        return _finish_audit(args, report)
    store = (
        ReadOnlyStore(database_url=settings.database_url)
        if settings.database_url
        else ReadOnlyStore(sqlite_path=settings.sqlite_path)
    )
    with store:
        if args.audit_command == "verify":
            report = audit_store(
                store, verifiers, origin=origin, trusted=trusted, progress=_progress_bar()
            )
            return _finish_audit(args, report)
        failed = False
        for entry in audit_case(store, _case_id(args.case_id), verifiers, origin=origin):
            index = f"leaf {entry.index}" if entry.index is not None else "no leaf"
            print(f"v{entry.version:<3} {entry.topic:<22} {entry.signer:<30} "
                  f"{index:<10} {entry.status}")  # fmt: skip
            failed = failed or not entry.ok
        return EXIT_ERROR if failed else 0


def _trusted_checkpoint(args: argparse.Namespace) -> bytes | None:
    """The checkpoint this auditor verified last (``--trusted-checkpoint`` or ``--state``)."""
    path = args.trusted_checkpoint or (args.state if args.state else None)
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        if args.trusted_checkpoint:
            raise ConfigurationError(f"--trusted-checkpoint {path}: no such file") from None
        return None  # a state file that does not exist yet: the first audit


def _finish_audit(args: argparse.Namespace, report: Any) -> int:
    print(report.summary())
    if report.ok and args.state and report.latest is not None:
        # Remember what was verified, so a later rollback or fork is detected.
        state = Path(args.state)
        temporary = state.with_suffix(".tmp")
        temporary.write_bytes(report.latest)
        temporary.replace(state)
        print(f"remembered the verified checkpoint in {state}")
    return 0 if report.ok else EXIT_ERROR


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

    init = commands.add_parser("init", help="create this node's keys and record its genesis")
    init.add_argument("--admin", default="operator", help="the first admin's name")
    init.set_defaults(run=_init)

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
    serve.add_argument(
        "--insecure", action="store_true", help="no TLS (local demos only; commands still signed)"
    )
    serve.add_argument("--workers", type=int, default=16, help="server threads")
    serve.add_argument("--grace", type=float, default=5.0, help="seconds to finish on shutdown")
    serve.set_defaults(run=_serve)

    pki = commands.add_parser("pki", help="the node's certificate authority")
    pki_commands = pki.add_subparsers(dest="pki_command", required=True)
    pki_init = pki_commands.add_parser("init", help="create the node CA and its server certificate")
    pki_init.add_argument("--dir", help="where to write (default TONGBAN_TLS_DIR or DATA_DIR/pki)")
    pki_init.add_argument("--node", required=True, help="the node's name, e.g. hunan")
    pki_init.add_argument("--dns", nargs="*", default=["localhost"], help="server DNS names")
    pki_init.add_argument("--ip", nargs="*", default=["127.0.0.1"], help="server IP addresses")
    pki_init.set_defaults(run=_pki_init)
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

    hall = commands.add_parser(
        "hall", help="the hall registry: register, rotate-key, retire (signed by an admin), show"
    )
    hall_commands = hall.add_subparsers(dest="hall_command", required=True)
    register = hall_commands.add_parser("register", help="register a hall")
    register.add_argument("--hall-id", required=True)
    register.add_argument("--name", required=True)
    register.add_argument("--region", required=True, help="the hall's region code")
    register.add_argument("--window", action="append", required=True, help="a window (repeat)")
    register.add_argument("--public-key", required=True, help="base64 Ed25519 public key")
    rotate = hall_commands.add_parser("rotate-key", help="replace a hall's signing key")
    rotate.add_argument("--hall-id", required=True)
    rotate.add_argument("--public-key", required=True, help="the new base64 Ed25519 public key")
    retire = hall_commands.add_parser("retire", help="retire a hall")
    retire.add_argument("--hall-id", required=True)
    retire.add_argument("--reason", required=True)
    show = hall_commands.add_parser("show", help="a hall and its keys")
    show.add_argument("hall_id")
    for sub in (register, rotate, retire):
        sub.add_argument("--admin-key", help="the admin's signing key (default: DATA_DIR's)")
    hall.set_defaults(run=_hall)

    erase = commands.add_parser(
        "erase", help="crypto-shred one case's or one person's personal data (recorded)"
    )
    whose = erase.add_mutually_exclusive_group(required=True)
    whose.add_argument("--case", help="the case id")
    whose.add_argument("--id-number", help="every case of the person with this ID number")
    erase.add_argument("--reason", required=True, help="why (recorded in the log)")
    erase.add_argument("--admin-key", help="the admin's signing key (default: DATA_DIR's)")
    erase.set_defaults(run=_erase)

    keys = commands.add_parser("keys", help="the node's at-rest key ring")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    keys_commands.add_parser(
        "rotate", help="add a key, re-wrap every personal-data key under it, drop unused keys"
    )
    keys_commands.add_parser(
        "rewrap", help="re-wrap every personal-data key under the active key (ring from settings)"
    )
    keys.set_defaults(run=_keys)

    ledger = commands.add_parser("ledger", help="the node's signed log")
    ledger_commands = ledger.add_subparsers(dest="ledger_command", required=True)
    ledger_commands.add_parser("key", help="print the log's public (verifier) key")
    ledger_commands.add_parser("integrate", help="integrate stored events and sign a checkpoint")
    export = ledger_commands.add_parser(
        "export", help="write the log as C2SP tlog-tiles, with its events, for offline audit"
    )
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
    verify.add_argument(
        "--state",
        help="the auditor's state file: the log must extend the checkpoint it holds (rollback "
        "and fork detection); updated after a clean audit",
    )
    verify.add_argument(
        "--trusted-checkpoint", help="a checkpoint verified before, which the log must extend"
    )
    case.set_defaults(state=None, trusted_checkpoint=None)
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

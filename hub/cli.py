"""The ``tongban`` command line: one entry point with subcommands.

A thin entry point: parse arguments, build settings and the application through the composition
root, run, and map every ordinary mistake to one line ``tongban: ...`` and an exit code in one
place (:func:`main`): :class:`~hub.errors.TongbanError`, bad arguments, missing or unreadable
files, a closed pipe (``| head``: quiet) and Ctrl-C. Anything else is a bug and keeps its
traceback. Tables and JSON are printed by :mod:`hub.output`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from hub.errors import ConfigurationError, NotFound, TongbanError
from hub.output import print_csv, print_json, print_table
from hub.settings import Settings

if TYPE_CHECKING:
    from hub.application.hub import HubApplication
    from hub.certificates_render import HolderDisplay
    from hub.domain.hall import Hall
    from hub.projections.store import ProjectionStore

EXIT_ERROR = 1
EXIT_CONFIG = 2
#: Bad arguments, or a file given on the command line that cannot be used (as argparse's 2).
EXIT_USAGE = 2
#: Ctrl-C: 128 + SIGINT, as a shell reports a process the signal ended.
EXIT_INTERRUPTED = 130
#: The reader of stdout went away (``tongban regions 43 | head``): 128 + SIGPIPE, as a shell
#: reports a program the signal ended; nothing is printed.
EXIT_BROKEN_PIPE = 141


class UsageError(Exception):
    """A mistake on the command line the user fixes by changing the command (exit 2)."""


class _Parser(argparse.ArgumentParser):
    """argparse, with every error as one line naming the help to read."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("tongban").strip()
        where = f"{command}: " if command else ""
        self.exit(EXIT_USAGE, f"tongban: {where}{message} (see `{self.prog} --help`)\n")


def _application(settings: Settings) -> HubApplication:
    """The node's application (imported here: the auditor's commands must not load it)."""
    from hub.bootstrap import build_application

    return build_application(settings)


@contextlib.contextmanager
def _caught_up_views() -> Iterator[tuple[HubApplication, ProjectionStore]]:
    """The node's application and its projections' store, brought up to date with the log
    first (``tongban queue|cases|…``, ``appointments``, ``agents``); both closed afterwards."""
    from hub.bootstrap import open_node_projections

    settings = Settings.from_env()
    app = _application(settings)
    projections = open_node_projections(settings, app)
    try:
        projections.create_tables()
        projections.catch_up()
        yield app, projections.store
    finally:
        projections.close()
        app.close()


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

    if not args.province:
        from hub.federation_demo import run_federation_demo

        directory = Path(args.data_dir) if args.data_dir else None
        ok = run_federation_demo(directory, pause_seconds=min(args.pause, 0.5))
        return 0 if ok else EXIT_ERROR
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

    try:
        catalogue = Catalogue.load(Path(args.file)) if args.file else Catalogue.load_default()
    except UnicodeDecodeError:
        raise UsageError(
            f"--file {args.file}: not UTF-8 text (a catalogue is a JSON file)"
        ) from None
    if args.json:
        print_json({"edition": catalogue.edition, "items": list(catalogue)})
        return 0
    print_table(
        ["code", "name", "kind", "level", "promised days", "statutory days", "cross-region modes"],
        [
            [
                item.code,
                item.name,
                item.kind.name,
                item.competent_level.name,
                item.promised_days,
                item.statutory_days,
                ",".join(m.name for m in item.cross_region_modes) or "-",
            ]
            for item in catalogue
        ],
    )
    print(f"{len(catalogue)} items, edition {catalogue.edition}")
    return 0


def _regions(args: argparse.Namespace) -> int:
    from hub.domain.regions import RegionCode, RegionRegistry

    registry = RegionRegistry.load_default()
    code = RegionCode.parse(args.code)
    region = registry.get(code)
    name = registry.full_name(code)
    children = registry.children(code)
    if args.json:
        print_json(
            {
                "code": region.code.value,
                "short": region.code.short,
                "name": region.name,
                "full_name": name,
                "level": region.level,
                "edition": registry.edition,
                "children": [
                    {
                        "code": child.code.value,
                        "short": child.code.short,
                        "name": child.name,
                        "level": child.level,
                    }
                    for child in children
                ],
            }
        )
        return 0
    print(f"{region.code} {name} ({region.level.name}, edition {registry.edition})")
    if children:
        print_table(
            ["code", "name", "level"],
            [[child.code.short, child.name, child.level.name] for child in children],
        )
    else:
        print("no child regions in the registry (villages are not listed)")
    return 0


def _serve(args: argparse.Namespace) -> int:
    import os

    from hub.serving import ServeOptions, serve

    settings = Settings.from_env()
    return serve(
        settings,
        ServeOptions(
            listen=args.listen or settings.listen,
            insecure=args.insecure,
            workers=args.workers or settings.workers,
            max_streams=settings.max_streams,
            processes=args.processes or settings.processes or os.cpu_count() or 1,
            grace=args.grace,
            metrics_listen=args.metrics or settings.metrics_listen,
            web_listen=args.web or settings.web_listen,
        ),
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
    name = args.name
    if args.role == "supervisor":
        from hub.domain.regions import RegionCode

        if not args.region:
            raise UsageError("--role supervisor needs --region CODE (the region it supervises)")
        name = f"{name}.{RegionCode.parse(args.region, '--region').short}"
    elif args.region:
        raise UsageError("--region is for --role supervisor only")
    issued = load_ca(directory).issue(Role(args.role), name, valid_days=args.valid_days)
    certificate, key = issued.write(Path(args.out))
    print(f"{issued.identity}: {certificate} (key {key})")
    return 0


def _pki_peer_cert(args: argparse.Namespace) -> int:
    from hub.materials.fetch import PEER_CERTIFICATE_FILE
    from hub.pki import Role, load_ca

    directory = Path(args.dir) if args.dir else Settings.from_env().pki_dir
    ca = load_ca(directory)
    issued = ca.issue(Role.PEER, args.name or ca.node_name, valid_days=args.valid_days)
    certificate, key = issued.write(directory, PEER_CERTIFICATE_FILE.removesuffix(".pem"))
    print(f"{issued.identity}: {certificate} (key {key})")
    print(
        f"give peers this node's CA certificate for their federation files: {directory / 'ca.pem'}"
    )
    return 0


def _pki_signing_key(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hub.domain.hall import key_id

    key = Ed25519PrivateKey.generate()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(
            f"--out {out} exists already: a signing key is never overwritten; give another "
            f"--out (`tongban pki show-key {out}` prints the public key of the one there)"
        ) from None
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)
    public = _public_key_b64(key)
    print(f"signing key: {out} (mode 0600)")
    print(f"public key (register it with the hall): {public}")
    print(f"key id: {key_id(public)}")
    return 0


def _public_key_b64(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def _pki_show_key(args: argparse.Namespace) -> int:
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from hub.domain.hall import key_id

    path = Path(args.file)
    data = path.read_bytes()
    expected = "a PKCS#8 PEM Ed25519 signing key, as `tongban pki signing-key` writes it"
    if b"-----BEGIN PRIVATE KEY-----" not in data:
        what = "an encrypted key" if b"ENCRYPTED PRIVATE KEY" in data else "not a PKCS#8 PEM key"
        raise UsageError(f"{path}: {what}; expected {expected}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise UsageError(f"{path}: not a readable private key; expected {expected}") from None
    if not isinstance(key, Ed25519PrivateKey):
        kind = type(key).__name__.lstrip("_").removesuffix("PrivateKey") or "another kind"
        raise UsageError(f"{path}: not an Ed25519 key ({kind}); expected {expected}")
    public = _public_key_b64(key)
    if args.json:
        print_json({"file": str(path), "public_key": public, "key_id": key_id(public)})
        return 0
    print(f"public key: {public}")
    print(f"key id: {key_id(public)}")
    return 0


def _federation(args: argparse.Namespace) -> int:
    from hub.bootstrap import build_relay, federation_identity, load_federation_file

    settings = Settings.from_env()
    command = args.federation_command or "status"
    if command == "witness":
        return _federation_witness(args)
    if command == "identity":
        entry = federation_identity(settings)
        if args.json:
            print_json(entry)
        else:
            print("[[peers]]")
            for key, value in entry.items():
                print(f'{key} = "{value}"')
        return 0
    config = load_federation_file(settings)
    if config is None:
        raise ConfigurationError(
            "this node has no federation file: set TONGBAN_FEDERATION (docs/federation.md)"
        )
    app = _application(settings)
    try:
        relay = build_relay(settings, app)
        assert relay is not None
        store = relay.store
        if command == "status":
            return _federation_status(args, relay, config)
        if command == "quarantine":
            held = store.quarantined("" if args.all else "held")
            rows: list[list[str | int]] = [
                [q.number, _when(q.received_at), q.sender or "?", q.reason, q.detail, q.status]
                for q in held
            ]
            if args.json:
                print_json({"quarantine": [dict(zip(_QUARANTINE_HEADERS, r, strict=True))
                                           for r in rows]})  # fmt: skip
            else:
                print_table(list(_QUARANTINE_HEADERS), rows)
            return 0
        held_now = {q.number: q for q in store.quarantined("held")}
        if args.number not in held_now:
            raise UsageError(f"no held message number {args.number} (see `federation quarantine`)")
        if command == "reject":
            store.resolve(args.number, "rejected")
            print(f"message {args.number} rejected")
            return 0
        store.resolve(args.number, "released")
        outcome = relay.inbox.handle_or_hold(held_now[args.number].message)
        print(f"message {args.number} released: {outcome}")
        return 0 if outcome != "quarantined" else EXIT_ERROR
    finally:
        app.close()


_QUARANTINE_HEADERS = ("number", "received", "sender", "reason", "detail", "status")


def _when(timestamp: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


def _federation_status(args: argparse.Namespace, relay: Any, config: Any) -> int:
    store = relay.store
    outgoing = store.backlog()
    incoming = relay.inbound_backlog()
    rows: list[list[str | int]] = []
    for peer in config.peers:
        seen = store.peer(peer.origin)
        rows.append(
            [
                peer.origin,
                peer.region,
                peer.name,
                seen.seen_size,
                seen.seen_root.hex()[:16] or "-",
                seen.acked_size,
                outgoing.get(peer.origin, 0),
            ]
        )
    headers = ["peer", "region", "name", "seen size", "seen root", "acked (ours)", "waiting out"]
    held = store.held_count()
    if args.json:
        print_json(
            {
                "peers": [dict(zip(headers, row, strict=True)) for row in rows],
                "waiting_in": incoming,
                "quarantined": held,
            }
        )
        return 0
    print_table(headers, rows)
    waiting_in = "unknown (broker unreachable)" if incoming is None else str(incoming)
    print(f"waiting in (inbox {relay.topic}): {waiting_in}; quarantined: {held}")
    return 0


def _hall(args: argparse.Namespace) -> int:
    from hub.bootstrap import admin_signer

    settings = Settings.from_env()
    app = _application(settings)
    try:
        if args.hall_command == "list":
            halls = app.halls()
            if args.json:
                print_json({"halls": [_hall_document(hall) for hall in halls]})
            else:
                print_table(_HALL_HEADERS, [_hall_row(hall) for hall in halls])
                active = sum(not hall.retired for hall in halls)
                print(f"{len(halls)} halls ({active} active, {len(halls) - active} retired)")
            return 0
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
                    kind=2 if args.kind == "kiosk" else 0,  # common.proto HallKind
                )
            elif args.hall_command == "rotate-key":
                signed = admin.sign(
                    "rotate_hall_key", hall_id=args.hall_id, public_key=args.public_key
                )
            else:
                signed = admin.sign("retire_hall", hall_id=args.hall_id, reason=args.reason)
            hall = app.hall_by_id(app.execute(signed).aggregate_id)
        versions = dict(app.hall_key_versions(hall.hall_id))
    finally:
        app.close()
    document = _hall_document(hall, versions)
    if getattr(args, "json", False):
        print_json(document)
        return 0
    print_table(_HALL_HEADERS, [_hall_row(hall)])
    print()
    print_table(
        ["key id", "public key (base64)", "since version", "state"],
        [
            [key["key_id"], key["public_key"], key["since_version"], key["state"]]
            for key in document["keys"]
        ],
    )
    return 0


_HALL_HEADERS = ["hall id", "name", "region", "level", "windows", "state", "current key id"]


def _hall_row(hall: Hall) -> list[str | int | float | None]:
    from hub.domain.hall import key_id

    return [
        hall.hall_id,
        hall.name,
        hall.region,
        hall.level.name,
        "、".join(hall.windows),
        "retired" if hall.retired else "active",
        key_id(hall.current_key),
    ]


def _hall_document(hall: Hall, versions: dict[str, int] | None = None) -> dict[str, Any]:
    """A hall as JSON; with ``versions`` (key → version of the event that set it) per key."""
    from hub.domain.hall import key_id

    keys = []
    for public_key in hall.public_keys:
        key: dict[str, Any] = {"key_id": key_id(public_key), "public_key": public_key}
        if versions is not None:
            key["since_version"] = versions.get(public_key)
        key["current"] = public_key == hall.current_key
        key["state"] = "current" if key["current"] else "rotated out"
        keys.append(key)
    return {
        "hall_id": hall.hall_id,
        "name": hall.name,
        "region": hall.region,
        "level": hall.level,
        "windows": list(hall.windows),
        "state": "retired" if hall.retired else "active",
        "current_key_id": key_id(hall.current_key),
        "keys": keys,
        "kind": "kiosk" if hall.kind.name == "KIOSK" else "hall",
    }


def _erase(args: argparse.Namespace) -> int:
    from hub.bootstrap import admin_signer, build_material_store
    from hub.materials.erasure import erase_case_materials

    settings = Settings.from_env()
    app = _application(settings)
    try:
        admin = admin_signer(settings, app, Path(args.admin_key) if args.admin_key else None)
        appointments = []
        if args.case:
            cases = [_case_id(args.case)]
        else:
            cases = app.cases_of_person(args.id_number)
            # 预约办: the person's appointments hold a sealed applicant too.
            appointments = app.appointments_of_person(args.id_number)
            if not cases and not appointments:
                print("no case with personal data of that person (or it was erased already)")
                return 0
            for appointment_id in appointments:
                result = app.execute(
                    admin.sign(
                        "erase_personal_data", case_id=str(appointment_id), reason=args.reason
                    )
                )
                print(f"erased the personal data of appointment {result.case_id}")
        store = build_material_store(settings, app)
        for case_id in cases:
            if app.get_case(case_id).personal_data_erased:
                # Erased before: finish what that run may have left (its material files).
                print(f"the personal data of case {case_id} was erased before")
            else:
                result = app.execute(
                    admin.sign("erase_personal_data", case_id=str(case_id), reason=args.reason)
                )
                print(f"erased the personal data of case {result.case_id} (v{result.version})")
            shredded = erase_case_materials(app, store, case_id)
            if shredded:
                print(f"  and {len(shredded)} material files only it listed")
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
    from hub.materials.store import MaterialStore

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
        # ... then every per-case key re-wrapped under the new key, in one transaction, and
        # every material file's key (the files' chunks are not touched), ...
        count = app.keys.rewrap(PersonalDataVault(cipher, keys.pseudonym_key).rewrap)
        materials = MaterialStore.of(app)
        files = materials.rewrap(cipher)
        in_use = {**app.keys.key_ids_in_use(), **materials.key_ids_in_use()}
        if args.keys_command == "rotate" and keys.cipher_file is not None:
            # ... then the ring without the keys that no longer wrap anything.
            kept = {k: v for k, v in ring.items() if k == active or k in in_use}
            write_key_ring(keys.cipher_file, kept, active)
        print(
            f"active at-rest key: {active}; {count} personal-data keys and {files} material "
            "file keys re-wrapped under it"
        )
    finally:
        app.close()
    return 0


def _rotate_issuer(args: argparse.Namespace) -> int:
    from hub.bootstrap import rotate_certificate_issuer

    retired, new = rotate_certificate_issuer(Settings.from_env())
    assert retired.not_after is not None  # rotation ends the old key's period
    print(f"certificate-issuer key {new.kid} signs from now on; {retired.kid} retired at "
          f"{retired.not_after.isoformat()} (still in `tongban trust export`, so what it signed "
          "still verifies): give verifiers the new trust bundle")  # fmt: skip
    return 0


def _materials(args: argparse.Namespace) -> int:
    from hub.bootstrap import build_material_fetcher, load_peers
    from hub.materials.fetch import WantedMaterial

    settings = Settings.from_env()
    federation = load_peers(settings)
    if federation is None:
        raise ConfigurationError("no federation file: set TONGBAN_FEDERATION to fetch from peers")
    peer = next((p for p in federation.peers if p.region == args.peer), None)
    if peer is None:
        known = ", ".join(p.region for p in federation.peers) or "none"
        raise UsageError(f"--peer {args.peer}: not a peer region of the federation file ({known})")
    case_id = _case_id(args.case)
    app = _application(settings)
    try:
        if args.material:
            wanted = [_wanted_material(spec) for spec in args.material]
        else:
            wanted = [WantedMaterial.of(m) for m in app.get_case(case_id).materials]
        report = build_material_fetcher(settings, app).fetch_case_materials(peer, case_id, wanted)
    finally:
        app.close()
    if args.json:
        print_json(
            {
                "case_id": str(report.case_id),
                "peer": report.peer,
                "fetched": list(report.fetched),
                "present": list(report.present),
                "missing": [vars(problem) for problem in report.missing],
                "altered": [vars(problem) for problem in report.altered],
            }
        )
    else:
        print(
            f"case {report.case_id} from peer {report.peer}: {len(report.fetched)} fetched, "
            f"{len(report.present)} held already"
        )
        if report.describe():
            print(report.describe())
    return 0 if report.complete else EXIT_ERROR


def _wanted_material(spec: str) -> Any:
    from hub.materials.fetch import WantedMaterial

    name, _, rest = spec.rpartition("=")
    sha256, _, size = rest.partition(":")
    if not name or not sha256 or not size.isdigit():
        raise UsageError(f"--material {spec!r}: use NAME=SHA256:SIZE")
    return WantedMaterial(name, sha256, int(size))


# ---------------------------------------------------------------------------- projections


def _as_of(text: str | None, app: Any) -> Any:
    """``--as-of`` (ISO 8601; a time without an offset is China Standard Time), else now."""
    from datetime import datetime

    from hub.domain.workdays import CHINA_TIME

    if not text:
        return app.clock()
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--as-of {text!r}: use ISO 8601, e.g. 2026-03-16T09:00") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=CHINA_TIME)


def _print_report(args: argparse.Namespace, report: Any, position: int) -> None:
    if args.json:
        print_json({"entries": report.documents, "position": position})
    elif args.csv:
        print_csv(report.headers, report.rows)
    else:
        print_table(report.headers, report.rows)
        footer = report.footer or f"{len(report.rows)} shown"
        print(f"{footer} (projections at notification {position})")


def _all_pages(read: Callable[[str], Any], limit: int) -> tuple[list[Any], int]:
    """Entries of every page up to ``limit``, and the projection position."""
    entries: list[Any] = []
    token, position = "", 0
    while len(entries) < limit:
        page = read(token)
        entries += page.entries
        position = page.position
        token = page.next_token
        if not token:
            break
    return entries[:limit], position


def _views(args: argparse.Namespace) -> int:
    """``tongban queue|cases|warnings|ratings|stats``: the projections, brought up to date."""
    from hub.domain.values import CaseState, IntakeChannel, WarningKind
    from hub.projections import queries, report
    from hub.projections.queries import CaseFilter, Names

    with _caught_up_views() as (app, store):
        as_of = _as_of(getattr(args, "as_of", None), app)
        region = app.regions.validate(
            getattr(args, "region", None) or app.policy.region, "--region"
        ).short
        wanted = CaseFilter(
            states=tuple(CaseState[s] for s in getattr(args, "state", None) or ()),
            overdue=getattr(args, "overdue", False),
            near_deadline=getattr(args, "near_deadline", False),
            item_code=getattr(args, "item", None) or "",
            channels=tuple(IntakeChannel[c] for c in getattr(args, "channel", None) or ()),
        )
        size = min(args.limit, queries.MAX_PAGE) if hasattr(args, "limit") else 0
        if args.command == "queue":
            rows, position = _all_pages(
                lambda token: queries.queue(
                    store, args.hall_id, as_of=as_of, window=args.window or "",
                    operator=args.operator or "", wanted=wanted, page_size=size,
                    page_token=token,
                ),
                args.limit,
            )  # fmt: skip
            _print_report(args, report.cases_report(rows, as_of, hall_id=args.hall_id), position)
        elif args.command == "cases":
            rows, position = _all_pages(
                lambda token: queries.cases(
                    store, region=region, as_of=as_of, hall_id=args.hall or "", wanted=wanted,
                    page_size=size, page_token=token,
                ),
                args.limit,
            )  # fmt: skip
            _print_report(args, report.cases_report(rows, as_of), position)
        elif args.command == "warnings":
            kind = WarningKind[args.kind] if args.kind else None
            rows, position = _all_pages(
                lambda token: queries.warnings(
                    store, region=region, kind=kind, page_size=size, page_token=token
                ),
                args.limit,
            )
            _print_report(args, report.warnings_report(rows), position)
        elif args.command == "ratings":
            rows, position = _all_pages(
                lambda token: queries.ratings(
                    store, region=region, bad_only=args.bad, open_only=args.open,
                    page_size=size, page_token=token,
                ),
                args.limit,
            )  # fmt: skip
            _print_report(args, report.ratings_report(rows, as_of), position)
        else:
            names = Names(app.regions, app.catalogue)
            position = queries.position(store, "statistics")
            if args.rank:
                month = args.month or report.when(as_of)[:7]
                ranked = queries.rank_windows(
                    store, names, region=region, month=month, limit=args.limit
                )
                _print_report(args, report.ranking_report(ranked, month), position)
            elif args.by == "channel":
                counts = queries.channel_counts(
                    store, region=region, from_day=args.from_day or "", to_day=args.to_day or ""
                )
                _print_report(args, report.channels_report(counts), position)
            else:
                rows, total = queries.statistics(
                    store, names, region=region, by=args.by, from_day=args.from_day or "",
                    to_day=args.to_day or "",
                )  # fmt: skip
                _print_report(args, report.statistics_report(rows, total, args.by), position)
    return 0


def _appointments(args: argparse.Namespace) -> int:
    """``tongban appointments``: a hall's appointments of a day, or the counts (爽约)."""
    from datetime import date

    from hub.domain.workdays import china_day
    from hub.projections import appointments, queries

    def day(text: str | None, option: str, default: date) -> date:
        if not text:
            return default
        try:
            return date.fromisoformat(text)
        except ValueError:
            raise UsageError(f"{option} {text!r}: use YYYY-MM-DD") from None

    with _caught_up_views() as (app, store):
        today = china_day(app.clock())
        position = queries.position(store, "appointments")
        if args.stats:
            region = app.regions.validate(args.region, "--region").short if args.region else ""
            counts = appointments.appointment_counts(
                store, first=day(args.from_day, "--from", today.replace(day=1)),
                last=day(args.to_day, "--to", today), hall_id=args.hall or "", region=region,
            )  # fmt: skip
            _print_report(args, appointments.counts_report(counts), position)
        else:
            if not args.hall:
                raise UsageError("--hall: name the hall whose appointments to list")
            rows = appointments.appointments_of_day(
                store, args.hall, day(args.day, "--day", today), args.state or ""
            )
            _print_report(args, appointments.appointments_report(rows), position)
    return 0


def _agents(args: argparse.Namespace) -> int:
    """``tongban agents``: each hall's 代办员 with the cases and home visits they acted in."""
    from hub.certificates_render import mask_name
    from hub.projections import agents, queries

    with _caught_up_views() as (app, store):
        rows = agents.agents(store, hall_id=args.hall or "", include_retired=args.all)
        names = None
        if args.names:
            # Only the name, masked, opened from the agent's sealed record: the operator asked.
            names = {}
            for row in rows:
                agent = app.get_agent(row.hall_id, row.agent_id)
                stored = app.keys.personal_key(agent.id)
                opened = None
                if agent.person is not None and stored is not None:
                    opened = app.vault.open(agent.id, agent.person, stored[1])
                names[(row.hall_id, row.agent_id)] = (
                    mask_name(opened.applicant.name) if opened else "(erased)"
                )
        report = agents.agents_report(rows, names)
        _print_report(args, report, queries.position(store, "agents"))
    return 0


def _projections(args: argparse.Namespace) -> int:
    """``tongban projections rebuild|status``."""
    from hub.bootstrap import open_node_projections
    from hub.projections.node import NAMES

    settings = Settings.from_env()
    app = _application(settings)
    projections = open_node_projections(settings, app)
    try:
        projections.create_tables()
        stored = app.recorder.max_notification_id() or 0
        if args.projections_command == "status":
            rows: list[list[str | int | float | None]] = [
                [name, runner.position, stored] for name, runner in projections.runners.items()
            ]
            if args.json:
                print_json(
                    {"projections": [{"name": n, "position": p, "log": s} for n, p, s in rows]}
                )
            else:
                print_table(["projection", "position", "log"], rows)
            return 0
        names = [args.name] if args.name else list(NAMES)
        progress = _progress_bar()
        for name in names:
            runner = projections.runner(name)

            def report(done: int, total: int, name: str = name) -> None:
                progress(name, done, total)

            position = runner.rebuild(report)
            print(f"rebuilt {name}: {position} notifications of {stored} read from the log")
    finally:
        projections.close()
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
        try:
            keys.extend(Path(path).read_text("ascii").split())
        except UnicodeDecodeError:
            raise UsageError(
                f"--log-key-file {path}: not a text file of log verifier keys (one per line)"
            ) from None
    if not keys:
        raise ConfigurationError("give the log's public key: --log-key VKEY or --log-key-file")
    verifiers = []
    for key in keys:
        try:
            verifiers.append(Verifier.from_key(key))
        except Exception as error:
            raise ConfigurationError(f"--log-key {key!r}: {error}") from None
    return verifiers


def _peer_verifiers(args: argparse.Namespace) -> dict[str, Any]:
    from ledger import Verifier

    peers = {}
    for key in getattr(args, "peer_key", None) or []:
        try:
            verifier = Verifier.from_key(key)
        except Exception as error:
            raise ConfigurationError(f"--peer-key {key!r}: {error}") from None
        peers[verifier.name] = verifier
    return peers


def _clock_window(args: argparse.Namespace, settings: Settings) -> timedelta:
    """``--clock-window-s``, else the node's own setting (``TONGBAN_CLOCK_WINDOW_S``)."""
    seconds = settings.clock_window_s if args.clock_window_s is None else args.clock_window_s
    if seconds <= 0:
        raise UsageError(f"--clock-window-s {seconds}: must be positive")
    return timedelta(seconds=seconds)


def _peer_regions(args: argparse.Namespace) -> dict[str, str]:
    """``--peer-region ORIGIN=REGION`` options, by origin."""
    regions = {}
    for given in getattr(args, "peer_region", None) or []:
        origin, _, region = given.rpartition("=")
        if not origin or not region.isdigit() or len(region) not in (2, 4, 6):
            raise UsageError(
                f"--peer-region {given!r}: expected ORIGIN=REGION (a 2, 4 or 6 digit region "
                "code), e.g. tongban/61=61"
            )
        regions[origin] = region
    return regions


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


def _cert(args: argparse.Namespace) -> int:
    if args.cert_command == "verify":
        return _cert_verify(args)
    if args.cert_command == "status-list":
        return _cert_status_list(args)
    if args.cert_command == "render":
        return _cert_render(args)
    if args.cert_command == "receipt":
        return _cert_receipt(args)
    token, certificate_id, index, _ = _case_certificate(args.case)
    if args.out:
        with open(args.out, "x", encoding="ascii") as handle:
            handle.write(token + "\n")
        print(f"{certificate_id}: {args.out} (ledger index {index})")
    else:
        print(token)
    return 0


def _cert_receipt(args: argparse.Namespace) -> int:
    """The certificate file: the token, its issuing event and the event's receipt under a final
    (cosigned) checkpoint (``hub.certificate_log``)."""
    from hub.bootstrap import load_certificate_issuer, load_node_keys, witnessing_config
    from hub.certificate_log import CertificateFile
    from hub.certificates import claims_for, sign_certificate
    from hub.commands.wire import parse_uuid
    from hub.integrity.witnessed import final_checkpoint
    from ledger import Receipt, WitnessPolicy

    settings = Settings.from_env()
    issuer = load_certificate_issuer(settings)
    witnessing = witnessing_config(settings)
    # Without peers every signed checkpoint is final (k = 0), as for GetFinalCheckpoint.
    policy = witnessing.policy() if witnessing is not None else WitnessPolicy(0)
    log_verifier = load_node_keys(settings).signer.verifier()
    case_id = parse_uuid(args.case, "case")
    app = _application(settings)
    try:
        case, event, view, leaf = _issued_certificate(settings, app, case_id)
        final = None if leaf is None else final_checkpoint(view, leaf.index, policy, log_verifier)
        if leaf is None or final is None:
            raise TongbanError(
                f"the certificate of case {case_id} is not under a final checkpoint yet "
                f"(cosigned by {policy.k} witnesses): run `tongban ledger integrate`, or wait "
                "for the running node's integrator and its witnesses"
            )
        proof = view.read(lambda c: view.tables.inclusion_proof(c, leaf.index, final.size))
        (stored,) = app.recorder.select_events(
            case_id, gt=event.originator_version - 1, lte=event.originator_version
        )
        token = sign_certificate(claims_for(case, event, leaf.index, settings.origin), issuer)
    finally:
        app.close()
    receipt = Receipt.for_leaf(leaf, proof, final.note).format()
    document = CertificateFile(token, stored.state, receipt).to_json()
    if args.out:
        with open(args.out, "x", encoding="utf-8") as handle:
            handle.write(document + "\n")
        cosigned = ", ".join(final.witnesses) or "no witness needed"
        print(f"{event.certificate_id}: {args.out} (ledger index {leaf.index}, checkpoint of "
              f"size {final.size}, cosigned by {cosigned})")  # fmt: skip
    else:
        print(document)
    return 0


def _cert_status_list(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from hub.bootstrap import build_integrator, load_certificate_issuer
    from hub.certificate_log import publish_status_list

    settings = Settings.from_env()
    issuer = load_certificate_issuer(settings)
    # The file first (never overwritten): a refused --out records no publication in the log.
    handle = open(args.out, "x", encoding="ascii") if args.out else None  # noqa: SIM115
    app = _application(settings)
    try:
        view = build_integrator(settings, app).view
        # Built from the log, and its publication recorded in the log (hub.certificate_log).
        published = publish_status_list(
            app, view, issuer, now=datetime.now(UTC), ttl_s=settings.status_list_ttl_s
        )
    except BaseException:
        if handle is not None:
            handle.close()
            Path(args.out).unlink()
        raise
    finally:
        app.close()
    if handle is not None:
        with handle:
            handle.write(published.token + "\n")
        print(
            f"status list: {args.out} ({published.revoked} revoked, {published.suspended} "
            f"suspended, {published.log_size} leaves; current for {settings.status_list_ttl_s} "
            f"s; its publication {published.publication} goes into the log)"
        )
    else:
        print(published.token)
    return 0


def _read_token(path: str) -> str:
    try:
        return Path(path).read_bytes().decode("ascii").strip()
    except UnicodeDecodeError:
        return ""  # not a token at all: the verifier gives its reason


def _cert_verify(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from hub.certificate_log import check_receipt, read_certificate, trusted_logs
    from hub.certificates import (
        TrustBundle,
        Verdict,
        Verification,
        check_status,
        verify_certificate,
    )

    if (args.file is None) == (args.qr is None):
        raise UsageError("give the certificate as FILE or as --qr IMAGE (one of them)")
    if args.status is not None and len(args.status) > 1:
        # The last one silently winning would let an older list (a rollback) hide a newer one.
        raise UsageError("give one status list (--status once)")
    # Several bundles (one per trusted node) are merged: their issuers and their logs.
    issuers: list[Any] = []
    logs: dict[str, Any] = {}
    for path in args.trust:
        bundle_text = Path(path).read_text("utf-8")
        issuers += TrustBundle.from_json(bundle_text, path).issuers
        for origin, log in trusted_logs(bundle_text, path).items():
            if origin in logs and logs[origin] != log:
                raise ConfigurationError(f"{path}: logs: {origin} differs from another bundle's")
            logs[origin] = log
    bundle = TrustBundle(tuple(issuers))
    now = datetime.now(UTC)
    certificate = None
    if args.qr is not None:
        from hub.certificates_qr import read_certificate_qr

        # The QR code's text is verified as a bare token is; no QR code, several, or a
        # damaged one is "unreadable" (never "valid"). A QR code carries the token only, so
        # its log receipt is not checked (the certificate file carries it).
        reading = read_certificate_qr(Path(args.qr).read_bytes())
        if reading.token is None:
            result = reading.unreadable()
        else:
            result = verify_certificate(reading.token, bundle, now=now)
    else:
        # A bare token, or a certificate file carrying the receipt of its issuing event.
        text = Path(args.file).read_bytes().decode("utf-8", errors="replace")
        token, certificate, damaged = read_certificate(text)
        result = verify_certificate(token, bundle, now=now)
        if damaged is not None:
            result = Verification(Verdict.FORGED, damaged)
    if args.status:
        # Only the downloaded list is read: the issuer never learns which certificate it is.
        result = check_status(result, _read_token(args.status[0]), bundle, now=now)
    result = check_receipt(result, certificate, logs)
    claims = result.claims
    if args.json:
        document: dict[str, Any] = {"verdict": result.verdict.value, "reason": result.reason}
        if claims is not None and result.verdict is not Verdict.FORGED:
            document["certificate"] = claims.payload()
        print(json.dumps(document, ensure_ascii=False, indent=2))
    else:
        print(f"{result.verdict.value}: {result.reason}")
        if claims is not None and result.verdict is not Verdict.FORGED:
            print(f"  identifier  {claims.jti}")
            print(f"  item        {claims.item} {claims.name}")
            print(f"  authority   {claims.auth} ({claims.rg})")
            print(f"  case        {claims.case} (ledger index {claims.li} of {claims.iss})")
    return 0 if result.verdict is Verdict.VALID else EXIT_ERROR


def _cert_render(args: argparse.Namespace) -> int:
    from hub.certificates_render import write_rendering

    holder: HolderDisplay | None = None
    if args.case:
        token, _, _, holder = _case_certificate(args.case, holder_shown=True)
    else:
        from hub.certificate_log import read_certificate

        # A bare token, or a certificate file (``cert receipt``): its token is what prints.
        text = Path(args.file).read_bytes().decode("utf-8", errors="replace")
        token, _certificate, damaged = read_certificate(text)
        if damaged is not None:
            raise UsageError(f"{args.file}: {damaged}")
    rendered = write_rendering(token, Path(args.out), holder)
    qr = rendered.qr
    print(f"certificate: {rendered.pdf} (A4), preview {rendered.png}")
    print(f"QR code: version {qr.version}, level {qr.error}, {qr.modules} modules, "
          f"{qr.width_mm} mm wide printed")  # fmt: skip
    return 0


def _issued_certificate(settings: Settings, app: Any, case_id: Any) -> tuple[Any, Any, Any, Any]:
    """A case, its certificate's issuing event, the node's ledger view and that event's leaf
    (None while it is not integrated); NotFound when the case has no certificate."""
    from hub.bootstrap import build_integrator
    from hub.domain.case import Case

    case = app.get_case(case_id)
    issued = [e for e in app.case_history(case_id) if isinstance(e, Case.CertificateIssued)]
    if not issued:
        raise NotFound("certificate of case", str(case_id))
    event = issued[-1]
    view = build_integrator(settings, app).view
    leaf = view.read(lambda c: view.tables.leaf_for(c, case_id, event.originator_version))
    return case, event, view, leaf


def _case_certificate(
    case_text: str, *, holder_shown: bool = False
) -> tuple[str, str, int, HolderDisplay | None]:
    """The signed certificate of a case (as `cert issue` writes it): its token, identifier,
    ledger index, and (``holder_shown``) its holder masked (None once the personal data is
    erased)."""
    from hub.bootstrap import load_certificate_issuer
    from hub.certificates import claims_for, sign_certificate
    from hub.certificates_render import HolderDisplay
    from hub.commands.wire import parse_uuid

    settings = Settings.from_env()
    issuer = load_certificate_issuer(settings)
    case_id = parse_uuid(case_text, "case")
    app = _application(settings)
    try:
        case, event, _, leaf = _issued_certificate(settings, app, case_id)
        if leaf is None:
            raise TongbanError(
                f"the certificate of case {case_id} is not in the log yet: run `tongban ledger "
                "integrate` (or wait for the running node's integrator)"
            )
        token = sign_certificate(claims_for(case, event, leaf.index, settings.origin), issuer)
        # (None once the personal data is erased.)
        opened = app.open_applicant(case) if holder_shown else None
    finally:
        app.close()
    holder = None
    if opened is not None:
        holder = HolderDisplay.masked(opened.applicant.name, opened.applicant.id_number)
    return token, event.certificate_id, leaf.index, holder


def _trust(args: argparse.Namespace) -> int:
    from hub.bootstrap import trust_bundle_text

    text = trust_bundle_text(Settings.from_env())
    if args.out:
        with open(args.out, "x", encoding="utf-8") as handle:
            handle.write(text + "\n")
        print(f"trust bundle: {args.out}")
    else:
        print(text)
    return 0


def _federation_witness(args: argparse.Namespace) -> int:
    from hub.bootstrap import witnessing_config
    from hub.integrity.integrator import open_ledger_view
    from hub.integrity.witnessed import witnessing_status

    settings = Settings.from_env()
    config = witnessing_config(settings)
    if config is None:
        raise ConfigurationError("no federation file: set TONGBAN_FEDERATION (docs/witnessing.md)")
    app = _application(settings)
    try:
        status = witnessing_status(open_ledger_view(app), config.policy(), config.log_verifier())
    finally:
        app.close()
    _print_witnessing(config, status, as_json=args.json)
    return 0 if not status.evidence else EXIT_ERROR


def _print_witnessing(config: Any, status: Any, *, as_json: bool) -> None:
    """``tongban federation witness``: finality, each witness, each witnessed log, evidence."""
    from datetime import UTC, datetime

    def when(seconds: float) -> str:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")

    final = status.final
    tried = {s.witness: s for s in status.submissions}
    witnesses = []
    for target in config.targets:
        cosigned = status.cosigned_by.get(target.name)
        last = tried.get(target.name)
        witnesses.append(
            {
                "witness": target.name,
                "url": target.url,
                "cosigned_size": cosigned[0] if cosigned else 0,
                "cosigned_at": when(cosigned[1]) if cosigned else "",
                "last_status": last.status if last else None,
                "last_message": last.message if last else "",
                "last_attempt": when(last.attempted_at) if last else "",
            }
        )
    witnessed = [{"origin": s.origin, "cosigned_size": s.size} for s in status.witnessed]
    if as_json:
        print_json(
            {
                "origin": config.origin,
                "latest_size": status.latest_size,
                "final_size": final.size if final else 0,
                "final_witnesses": list(final.witnesses) if final else [],
                "policy": {"k": config.witness_k, "witnesses": [t.name for t in config.targets]},
                "final_checkpoint": final.note.decode() if final else None,
                "witnesses": witnesses,
                "witnessed_logs": witnessed,
                "evidence": [e.to_dict() for e in status.evidence],
            }
        )
        return
    names = ", ".join(final.witnesses) if final and final.witnesses else "none needed"
    print(f"this log: {config.origin}, latest checkpoint {status.latest_size} leaves; final "
          f"(k={config.witness_k} of {len(config.targets)}): "
          + (f"{final.size} leaves, cosigned by {names}" if final else "none yet"))  # fmt: skip
    print()
    print_table(
        ["witness of this log", "cosigned size", "received", "last request", "answer"],
        [
            [
                w["witness"],
                w["cosigned_size"],
                w["cosigned_at"],
                w["last_attempt"] or ("not asked (no witness_url)" if not w["url"] else ""),
                f"{w['last_status']} {w['last_message']}" if w["last_status"] is not None else "",
            ]
            for w in witnesses
        ],
    )
    print()
    print_table(["log witnessed here", "cosigned size"], [[w["origin"], w["cosigned_size"]]
                                                          for w in witnessed])  # fmt: skip
    print()
    if not status.evidence:
        print("split-view evidence: none")
        return
    print(f"SPLIT-VIEW EVIDENCE: {len(status.evidence)} (both signed notes: --json)")
    print_table(
        ["observed", "log", "kind", "reason"],
        [[when(e.observed_at), e.origin, e.kind.value, e.reason] for e in status.evidence],
    )


def _is_database_url(where: str) -> bool:
    """A PostgreSQL URL or libpq ``key=value`` string, as TONGBAN_DATABASE_URL accepts; an
    existing file is always a SQLite store."""
    if Path(where).is_file():
        return False
    return where.startswith(("postgresql:", "postgres:")) or "=" in where


def _audit_citations(args: argparse.Namespace) -> int:
    from hub.integrity.citations import check_citations, origin_of
    from hub.integrity.store import ReadOnlyStore

    with contextlib.ExitStack() as stack:
        stores = {}
        for where in args.stores:
            store = stack.enter_context(
                ReadOnlyStore(database_url=where)
                if _is_database_url(where)
                else ReadOnlyStore(sqlite_path=Path(where))
            )
            stores[origin_of(store)] = store
        report = check_citations(stores)
    if args.json:
        print_json(
            {
                "logs": sorted(stores),
                "checked": report.checked,
                "unchecked": report.unchecked,
                "problems": report.problems,
                "ok": report.ok,
            }
        )
    else:
        for problem in report.problems:
            print(f"PROBLEM {problem}")
        verdict = "OK" if report.ok else "FAILED"
        print(f"{verdict}: {report.checked} citations between {', '.join(sorted(stores))} "
              f"followed, {report.unchecked} to logs not given")  # fmt: skip
    return 0 if report.ok else EXIT_ERROR


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
            Path(args.export),
            verifiers,
            origin=origin,
            trusted=trusted,
            progress=_progress_bar(),
            peers=_peer_verifiers(args),
            peer_regions=_peer_regions(args),
            clock_window=_clock_window(args, settings),
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
                store,
                verifiers,
                origin=origin,
                trusted=trusted,
                progress=_progress_bar(),
                peers=_peer_verifiers(args),
                peer_regions=_peer_regions(args),
                clock_window=_clock_window(args, settings),
            )
            return _finish_audit(args, report)
        case_id = _case_id(args.case_id)
        entries = audit_case(store, case_id, verifiers, origin=origin)
    failed = any(not entry.ok for entry in entries)
    if args.json:
        events = [
            {
                "version": e.version,
                "event": e.topic,
                "leaf": e.index,
                "signer": e.signer,
                "status": e.status,
                "ok": e.ok,
            }
            for e in entries
        ]
        print_json({"case_id": case_id, "ok": not failed, "events": events})
    else:
        print_table(
            ["version", "event", "leaf", "signed by", "status"],
            [[e.version, e.topic, e.index, e.signer or "-", e.status] for e in entries],
        )
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
    remembered = None
    if report.ok and args.state and report.latest is not None:
        # Remember what was verified, so a later rollback or fork is detected.
        remembered = Path(args.state)
        temporary = remembered.with_suffix(".tmp")
        temporary.write_bytes(report.latest)
        temporary.replace(remembered)
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "leaves": report.leaves,
                "events": report.events,
                "pending": report.pending,
                "checkpoints": report.checkpoints,
                "signatures": report.signatures,
                "unsigned": report.unsigned,
                "shredded": report.shredded,
                "latest_checkpoint": report.latest,
                "state": remembered,
                "findings": [
                    {"index": f.index, "kind": f.kind, "detail": f.detail} for f in report.findings
                ],
            }
        )
    else:
        print(report.summary())
        if remembered is not None:
            print(f"remembered the verified checkpoint in {remembered}")
    return 0 if report.ok else EXIT_ERROR


def _adapter(argv: Sequence[str]) -> int:
    """``tongban adapter ...``: the adapters' own command line, with its own help."""
    # The adapters are hall-side programs with their own CLI; they never import the hub.
    from adapters.cli import main as adapter_main

    arguments = list(argv)
    asks_for_help = not arguments or arguments[0] in ("-h", "--help")
    try:
        code: int = adapter_main(["--help"] if asks_for_help else arguments)
    except SystemExit as done:  # the adapters' argparse, if it exits: --help, or bad arguments
        code = done.code if isinstance(done.code, int) else EXIT_USAGE
    if not arguments:
        code = EXIT_USAGE  # `tongban adapter` alone: the adapters' help, but no command ran
    return code


def _group(
    commands: Any, name: str, text: str, *, required: bool = True, **options: Any
) -> tuple[argparse.ArgumentParser, Any]:
    """A command group: ``tongban NAME --help`` lists its subcommands, one line each."""
    group = _command(commands, name, text, **options)
    subcommands = group.add_subparsers(
        dest=f"{name}_command", required=required, title="commands", metavar="COMMAND"
    )
    return group, subcommands


def _command(commands: Any, name: str, text: str, **options: Any) -> argparse.ArgumentParser:
    """A subcommand whose one-line ``text`` is both its line in the list and its description."""
    command: argparse.ArgumentParser = commands.add_parser(
        name, help=text, description=f"{text[0].upper()}{text[1:]}.", **options
    )
    return command


def _json_option(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--json", action="store_true", help="print one JSON document (UTF-8) instead of a table"
    )


def _output_options(command: argparse.ArgumentParser) -> None:
    shape = command.add_mutually_exclusive_group()
    shape.add_argument(
        "--json", action="store_true", help="print one JSON document (UTF-8) instead of a table"
    )
    shape.add_argument("--csv", action="store_true", help="print CSV for spreadsheets (UTF-8)")


def _view_commands(commands: Any) -> None:
    """The projections' listings and their maintenance."""
    from hub.domain.values import CaseState, IntakeChannel, WarningKind

    def case_filters(command: argparse.ArgumentParser) -> None:
        command.add_argument("--state", action="append", choices=[s.name for s in CaseState],
                             help="only this state (repeat for several)")  # fmt: skip
        command.add_argument("--overdue", action="store_true", help="past the promised deadline")
        command.add_argument("--item", help="only this service item (code)")
        channels = [c.name for c in IntakeChannel if c.name != "UNSPECIFIED"]
        command.add_argument("--channel", action="append", choices=channels,
                             help="only cases taken in by this channel (repeat)")  # fmt: skip
        command.add_argument(
            "--as-of", help="the moment 'overdue' refers to (ISO 8601; default: now)"
        )

    def paging(command: argparse.ArgumentParser) -> None:
        command.add_argument("--limit", type=int, default=100, help="at most this many (100)")

    queue = _command(commands, "queue", "a hall's queue: held cases and handoffs to acknowledge")
    queue.add_argument("hall_id", metavar="HALL", help="the hall's id")
    queue.add_argument("--window", help="only the cases at this window")
    queue.add_argument("--operator", help="only the windows this operator serves now (AB岗)")
    case_filters(queue)
    paging(queue)
    _output_options(queue)
    queue.set_defaults(run=_views)

    cases = _command(commands, "cases", "cases of a region, most urgent deadline first")
    cases.add_argument("--region", help="a region code (default: the node's)")
    cases.add_argument("--hall", help="only cases this hall holds or took in")
    cases.add_argument("--near-deadline", action="store_true", help="90 %% of the time used")
    case_filters(cases)
    paging(cases)
    _output_options(cases)
    cases.set_defaults(run=_views)

    warnings = _command(commands, "warnings", "电子监察 warnings recorded in the log, newest first")
    warnings.add_argument("--region", help="a region code (default: the node's)")
    warnings.add_argument("--kind", choices=[k.name for k in WarningKind])
    paging(warnings)
    _output_options(warnings)
    warnings.set_defaults(run=_views)

    ratings = _command(commands, "ratings", "ratings (好差评) and their rectifications")
    ratings.add_argument("--region", help="a region code (default: the node's)")
    ratings.add_argument("--bad", action="store_true", help="差评 only")
    ratings.add_argument("--open", action="store_true", help="rectifications not yet done")
    ratings.add_argument("--as-of", help="the moment 'overdue' refers to (default: now)")
    paging(ratings)
    _output_options(ratings)
    ratings.set_defaults(run=_views)

    stats = _command(commands, "stats", "the seed regions' figures, or the monthly window ranking")
    stats.add_argument("--region", help="a region code (default: the node's)")
    stats.add_argument("--by", default="hall",
                       choices=["hall", "window", "region", "level", "item", "day", "month",
                                "channel"],
                       help="how to group (default: hall)")  # fmt: skip
    stats.add_argument("--from", dest="from_day", help="first day, YYYY-MM-DD")
    stats.add_argument("--to", dest="to_day", help="last day, YYYY-MM-DD")
    stats.add_argument("--rank", action="store_true", help="the month's 红旗窗口 ranking")
    stats.add_argument("--month", help="the ranking's month, YYYY-MM (default: this month)")
    stats.add_argument("--limit", type=int, default=10, help="windows ranked (10)")
    stats.add_argument("--as-of", help=argparse.SUPPRESS)
    _output_options(stats)
    stats.set_defaults(run=_views)

    booked = _command(commands, "appointments", "预约办: a hall's appointments of a day, or counts")
    booked.add_argument("--hall", help="the hall's id (required for the day's list)")
    booked.add_argument("--day", help="the day, YYYY-MM-DD (default: today, China time)")
    booked.add_argument("--state", choices=["BOOKED", "RECEIVED", "CANCELLED", "EXPIRED"],
                        help="only this state (EXPIRED: no-shows, 爽约)")  # fmt: skip
    booked.add_argument(
        "--stats", action="store_true", help="booked, received, cancelled, no-shows per day, hall"
    )
    booked.add_argument("--region", help="with --stats: the halls of this region and below")
    booked.add_argument("--from", dest="from_day", help="with --stats: first day (this month's)")
    booked.add_argument("--to", dest="to_day", help="with --stats: last day (today)")
    _output_options(booked)
    booked.set_defaults(run=_appointments)

    agents = _command(commands, "agents", "代办员: each hall's agents, the cases and home visits")
    agents.add_argument("--hall", help="only this hall's agents")
    agents.add_argument("--all", action="store_true", help="retired agents too")
    agents.add_argument(
        "--names", action="store_true",
        help="also each agent's name, masked (刘**); never the ID number or phone",
    )  # fmt: skip
    _output_options(agents)
    agents.set_defaults(run=_agents)

    group, subcommands = _group(commands, "projections", "the node's views: rebuild, status")
    rebuild = _command(subcommands, "rebuild", "drop a projection and build it again from the log")
    rebuild.add_argument("name", nargs="?", metavar="NAME",
                         choices=["cases", "statistics", "appointments", "agents"],
                         help="one of them (default: all)")  # fmt: skip
    status = _command(subcommands, "status", "each projection's position in the log")
    _json_option(status)
    group.set_defaults(run=_projections)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``tongban``."""
    parser = _Parser(
        prog="tongban",
        description="Tongban (通办): a case exchange hub for service halls.",
        epilog="`tongban COMMAND --help` shows a command's options (or its own subcommands).",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, title="commands", metavar="COMMAND"
    )

    init = _command(commands, "init", "create this node's keys and record its genesis")
    init.add_argument("--admin", default="operator", help="the first admin's name")
    init.set_defaults(run=_init)

    demo = _command(
        commands,
        "demo",
        "three provinces' nodes serve citizens where they are (or --province: one node's story)",
    )
    demo.add_argument("--data-dir", help="keep the demo's stores here (default: a fresh temp dir)")
    demo.add_argument("--keep", action="store_true", help="use TONGBAN_DATA_DIR as it is")
    demo.add_argument("--pause", type=float, default=1.0, help="seconds a paused clock waits")
    demo.add_argument(
        "--province",
        action="store_true",
        help="the story inside one province (湖南) on one node instead",
    )
    demo.set_defaults(run=_demo)

    catalogue = _command(commands, "catalogue", "list (and check) a service-item catalogue")
    catalogue.add_argument("--file", help="an operator's catalogue JSON (default: shipped one)")
    _json_option(catalogue)
    catalogue.set_defaults(run=_catalogue)

    regions = _command(commands, "regions", "show a region and its children")
    regions.add_argument("code", help="a 2, 4, 6, 9 or 12 digit region code")
    _json_option(regions)
    regions.set_defaults(run=_regions)

    serve = _command(commands, "serve", "run a node's gRPC server (mutual TLS)")
    serve.add_argument("--listen", help="host:port (default TONGBAN_LISTEN or 127.0.0.1:7443)")
    serve.add_argument(
        "--insecure", action="store_true", help="no TLS (local demos only; commands still signed)"
    )
    serve.add_argument(
        "--workers", type=int, help="threads per serving process (default TONGBAN_WORKERS, 16)"
    )
    serve.add_argument(
        "--processes",
        type=int,
        help="serving processes on the one port (default TONGBAN_PROCESSES, else one per CPU)",
    )
    serve.add_argument(
        "--metrics", help="host:port of /metrics (default TONGBAN_METRICS_LISTEN, 127.0.0.1:0)"
    )
    serve.add_argument(
        "--web", help="host:port of the dashboard and public screens (default TONGBAN_WEB_LISTEN)"
    )
    serve.add_argument("--grace", type=float, default=5.0, help="seconds to finish on shutdown")
    serve.set_defaults(run=_serve)

    _, pki_commands = _group(commands, "pki", "the node's certificate authority and signing keys")
    pki_init = _command(pki_commands, "init", "create the node CA and its server certificate")
    pki_init.add_argument("--dir", help="where to write (default TONGBAN_TLS_DIR or DATA_DIR/pki)")
    pki_init.add_argument("--node", required=True, help="the node's name, e.g. hunan")
    pki_init.add_argument("--dns", nargs="*", default=["localhost"], help="server DNS names")
    pki_init.add_argument("--ip", nargs="*", default=["127.0.0.1"], help="server IP addresses")
    pki_init.set_defaults(run=_pki_init)
    issue = _command(pki_commands, "issue", "issue a hall/auditor/peer/admin certificate")
    issue.add_argument("--dir", help="the CA directory (default as for init)")
    issue.add_argument(
        "--role", required=True, choices=["hall", "auditor", "peer", "admin", "supervisor"]
    )
    issue.add_argument(
        "--region", help="the region a supervisor supervises (its certificate name ends with it)"
    )
    issue.add_argument("--name", required=True, help="hall id, auditor or peer name")
    issue.add_argument("--out", required=True, help="directory for NAME.pem and NAME.key")
    issue.add_argument("--valid-days", type=int, default=365)
    issue.set_defaults(run=_pki_issue)
    peer_cert = _command(
        pki_commands,
        "peer-cert",
        "issue this node's own peer certificate (peer.pem/peer.key) for calls to peer nodes",
    )
    peer_cert.add_argument("--dir", help="the CA directory (default as for init)")
    peer_cert.add_argument("--name", help="the name it carries (default: the CA's node name)")
    peer_cert.add_argument("--valid-days", type=int, default=365)
    peer_cert.set_defaults(run=_pki_peer_cert)
    signing = _command(pki_commands, "signing-key", "make a hall's Ed25519 command-signing key")
    signing.add_argument(
        "--out", required=True, help="file for the private key (PKCS#8 PEM, 0600; never replaced)"
    )
    signing.set_defaults(run=_pki_signing_key)
    show_key = _command(
        pki_commands, "show-key", "print the public key and key id of a signing key file"
    )
    show_key.add_argument("file", help="a PKCS#8 PEM Ed25519 key (as `pki signing-key` writes)")
    show_key.add_argument("--json", action="store_true", help="print one JSON document")
    show_key.set_defaults(run=_pki_show_key)

    hall, hall_commands = _group(
        commands,
        "hall",
        "the hall registry: list, show, and register, rotate-key, retire (admin-signed)",
    )
    listing = _command(hall_commands, "list", "every hall of this node, retired ones too")
    _json_option(listing)
    show = _command(hall_commands, "show", "a hall and every key it has had")
    show.add_argument("hall_id", metavar="ID", help="the hall's id")
    _json_option(show)
    register = _command(hall_commands, "register", "register a hall")
    register.add_argument("--hall-id", required=True)
    register.add_argument("--name", required=True)
    register.add_argument("--region", required=True, help="the hall's region code")
    register.add_argument("--window", action="append", required=True, help="a window (repeat)")
    register.add_argument("--public-key", required=True, help="base64 Ed25519 public key")
    _json_option(register)
    register.add_argument(
        "--kind", choices=["hall", "kiosk"], default="hall",
        help="a staffed hall, or a self-service kiosk that prints results (自助打印)",
    )  # fmt: skip
    rotate = _command(hall_commands, "rotate-key", "replace a hall's signing key")
    rotate.add_argument("--hall-id", required=True)
    rotate.add_argument("--public-key", required=True, help="the new base64 Ed25519 public key")
    retire = _command(hall_commands, "retire", "retire a hall")
    retire.add_argument("--hall-id", required=True)
    retire.add_argument("--reason", required=True)
    for sub in (register, rotate, retire):
        sub.add_argument("--admin-key", help="the admin's signing key (default: DATA_DIR's)")
    hall.set_defaults(run=_hall)

    erase = _command(
        commands, "erase", "crypto-shred one case's or one person's personal data (recorded)"
    )
    whose = erase.add_mutually_exclusive_group(required=True)
    whose.add_argument("--case", help="the case id")
    whose.add_argument(
        "--id-number", help="every case and appointment (预约办) of the person with this ID number"
    )
    erase.add_argument("--reason", required=True, help="why (recorded in the log)")
    erase.add_argument("--admin-key", help="the admin's signing key (default: DATA_DIR's)")
    erase.set_defaults(run=_erase)

    keys, keys_commands = _group(commands, "keys", "the node's at-rest key ring")
    _command(
        keys_commands,
        "rotate",
        "add a key, re-wrap every personal-data key under it, drop unused keys",
    )
    _command(
        keys_commands,
        "rewrap",
        "re-wrap every personal-data key under the active key (ring from settings)",
    )
    keys.set_defaults(run=_keys)
    rotate_issuer = _command(
        keys_commands,
        "rotate-issuer",
        "replace the certificate-issuer key; the old one stays in the trust bundle, its period "
        "ended, so the certificates it signed still verify",
    )
    rotate_issuer.set_defaults(run=_rotate_issuer)

    federation, federation_commands = _group(
        commands,
        "federation",
        "the peer nodes: status (the default), identity, quarantine, release, reject, witness",
        required=False,
    )
    _json_option(federation)
    status = _command(
        federation_commands, "status", "each peer: last checkpoint seen, backlog both ways"
    )
    _json_option(status)
    identity = _command(
        federation_commands, "identity", "this node's [[peers]] entry for the peers' files"
    )
    _json_option(identity)
    quarantine = _command(
        federation_commands, "quarantine", "messages held because they did not verify"
    )
    quarantine.add_argument("--all", action="store_true", help="released and rejected too")
    _json_option(quarantine)
    release = _command(federation_commands, "release", "handle a held message again now")
    release.add_argument("number", type=int, help="its number in `federation quarantine`")
    reject = _command(federation_commands, "reject", "drop a held message for good")
    reject.add_argument("number", type=int, help="its number in `federation quarantine`")
    witness = _command(
        federation_commands,
        "witness",
        "witnessing: finality of this log, each witness, logs witnessed here, split-view evidence",
    )
    _json_option(witness)
    federation.set_defaults(run=_federation)

    materials, materials_commands = _group(commands, "materials", "material files by digest")
    fetch = _command(
        materials_commands,
        "fetch",
        "fetch a case's materials from the peer node that took it in (the relay does this)",
    )
    fetch.add_argument("--peer", required=True, help="the peer's region (federation file)")
    fetch.add_argument("--case", required=True, help="the case id")
    fetch.add_argument(
        "--material",
        action="append",
        help="NAME=SHA256:SIZE of a material (repeat; default: those the case here lists)",
    )
    _json_option(fetch)
    materials.set_defaults(run=_materials)

    ledger, ledger_commands = _group(commands, "ledger", "the node's signed log")
    _command(ledger_commands, "key", "print the log's public (verifier) key")
    _command(ledger_commands, "integrate", "integrate stored events and sign a checkpoint")
    export = _command(
        ledger_commands,
        "export",
        "write the log as C2SP tlog-tiles, with its events, for offline audit",
    )
    export.add_argument("directory")
    ledger.set_defaults(run=_ledger)

    audit, audit_commands = _group(commands, "audit", "verify the log with trusted keys only")
    verify = _command(audit_commands, "verify", "verify the whole log (database or export)")
    verify.add_argument("--export", help="verify this tlog-tiles export instead of the database")
    citations = _command(
        audit_commands,
        "citations",
        "follow every citation between the logs of several nodes' stores (read-only)",
    )
    citations.add_argument(
        "stores",
        nargs="+",
        metavar="STORE",
        help="a node's SQLite file (DATA_DIR/events.sqlite3), or its PostgreSQL URL or libpq "
        "'key=value' string (repeat)",
    )
    _json_option(citations)
    citations.set_defaults(run=_audit_citations)
    case = _command(audit_commands, "case", "a case's history with each event's proof")
    case.add_argument("case_id", metavar="CASE", help="the case id")
    for sub in (verify, case):
        sub.add_argument("--log-key", action="append", help="trusted log verifier key (repeat)")
        sub.add_argument("--log-key-file", action="append", help="file with verifier keys")
        sub.add_argument("--origin", help="expected log origin (default: this node's)")
        _json_option(sub)
    verify.add_argument(
        "--peer-key",
        action="append",
        help="log verifier key of another node of the federation (repeat): checks the steps "
        "and acknowledgements it sent",
    )
    verify.add_argument(
        "--peer-region",
        action="append",
        metavar="ORIGIN=REGION",
        help="the region a peer keeps (repeat; its [[peers]] entry says): each hall whose steps "
        "that peer sent must be of it",
    )
    verify.add_argument(
        "--clock-window-s",
        type=int,
        metavar="SECONDS",
        help="how far the node lets a command's signed time be from its clock (default: "
        "TONGBAN_CLOCK_WINDOW_S, else 300): a command it records as received earlier than the "
        "signed time less this is named a backdated receipt",
    )
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

    cert, cert_commands = _group(commands, "cert", "electronic certificates (电子证照)")
    cert_issue = _command(
        cert_commands,
        "issue",
        "write the signed certificate (JWS) of a case whose certificate was issued",
    )
    cert_issue.add_argument("--case", required=True, help="the case id")
    cert_issue.add_argument("--out", help="the file to write (never overwritten; default: stdout)")
    cert_verify = _command(
        cert_commands,
        "verify",
        "verify a certificate offline with a trust bundle: valid, expired, forged or unknown "
        "issuer, and with --status revoked, suspended or status unknown, with --qr "
        "unreadable, with the reason (exit 0 only when valid)",
    )
    cert_verify.add_argument(
        "file", metavar="FILE", nargs="?", help="the certificate (a JWS compact token)"
    )
    cert_verify.add_argument(
        "--qr",
        metavar="IMAGE",
        help="read the certificate from the QR code in an image (PNG, JPEG: a photo, a scan, "
        "a rendered page) instead of FILE; no QR code, several or a damaged one is "
        "'unreadable'",
    )
    cert_verify.add_argument(
        "--trust",
        required=True,
        action="append",
        metavar="BUNDLE",
        help="a trust bundle (`tongban trust export`); repeat for the nodes you trust",
    )
    cert_verify.add_argument(
        "--status",
        action="append",
        metavar="LIST",
        help="a status list (`tongban cert status-list`) to read the certificate's entry in; "
        "the list is only read, so its issuer never learns which certificate is checked "
        "(one list: which of several to believe is not guessed)",
    )
    _json_option(cert_verify)
    cert_status = _command(
        cert_commands,
        "status-list",
        "write the signed status list (revoked and suspended certificates, from the log); "
        "current for TONGBAN_STATUS_LIST_TTL_S seconds",
    )
    cert_status.add_argument("--out", help="the file to write (never overwritten; default: stdout)")
    cert_render = _command(
        cert_commands,
        "render",
        "write a printable A4 PDF of a certificate (safe fields, holder masked, its QR code) and "
        "a PNG preview",
    )
    rendered = cert_render.add_mutually_exclusive_group(required=True)
    rendered.add_argument(
        "--case", help="the case whose certificate to render (the node signs it; holder masked)"
    )
    rendered.add_argument(
        "file", metavar="FILE", nargs="?", help="a certificate file (`tongban cert issue`)"
    )
    cert_render.add_argument(
        "--out", required=True, metavar="DIR",
        help="the directory for <identifier>.pdf and .png (files never overwritten)",
    )  # fmt: skip
    cert_receipt = _command(
        cert_commands,
        "receipt",
        "write the certificate file: the signed certificate with the receipt that its issuing "
        "event is in the log under a checkpoint cosigned by the witnesses",
    )
    cert_receipt.add_argument("--case", required=True, help="the case id")
    cert_receipt.add_argument(
        "--out", help="the file to write (never overwritten; default: stdout)"
    )
    cert.set_defaults(run=_cert)

    trust, trust_commands = _group(commands, "trust", "what verifiers of certificates trust")
    trust_export = _command(
        trust_commands, "export", "the trust bundle: this node's issuer key and its period (JSON)"
    )
    trust_export.add_argument(
        "--out", help="the file to write (never overwritten; default: stdout)"
    )
    trust.set_defaults(run=_trust)

    _view_commands(commands)

    # `tongban adapter ...` never reaches this parser in main(): the adapters' own parser takes
    # all of it (with its own --help). It is here so `tongban --help` lists it.
    adapter = _command(
        commands,
        "adapter",
        "run a hall adapter: gateway, village or import (`tongban adapter --help`)",
        add_help=False,
    )
    adapter.add_argument("adapter_args", nargs=argparse.REMAINDER, help="the adapter's arguments")
    adapter.set_defaults(run=lambda args: _adapter(args.adapter_args))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tongban``; returns the exit code. Every ordinary mistake is one line on stderr."""
    arguments = list(sys.argv[1:] if argv is None else argv)
    _never_fail_to_encode()
    try:
        try:
            code = _run(arguments)
        finally:
            sys.stdout.flush()  # here, so a closed pipe is noticed while it can be handled
    except BrokenPipeError:
        _discard_stdout()
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        return _fail(EXIT_INTERRUPTED, "interrupted")
    except UsageError as error:
        return _fail(EXIT_USAGE, str(error))
    except ConfigurationError as error:
        return _fail(EXIT_CONFIG, f"configuration error: {error}")
    except TongbanError as error:
        return _fail(EXIT_ERROR, str(error))
    except OSError as error:
        return _fail(*_file_problem(error))
    return code


def _run(arguments: list[str]) -> int:
    if arguments and arguments[0] == "adapter":
        return _adapter(arguments[1:])
    try:
        args = build_parser().parse_args(arguments)
    except SystemExit as done:  # --help (0) or bad arguments (2, one line printed)
        return done.code if isinstance(done.code, int) else EXIT_USAGE
    run: Callable[[argparse.Namespace], int] = args.run
    return run(args)


def _fail(code: int, message: str) -> int:
    print(f"tongban: {message}", file=sys.stderr)
    return code


def _file_problem(error: OSError) -> tuple[int, str]:
    """Exit code and message for a file that cannot be used (or another OS error)."""
    hints: dict[type[OSError], str] = {
        FileNotFoundError: "check the path",
        PermissionError: "check its permissions, or run as the user that owns it",
        FileExistsError: "it is never overwritten: give another path, or move it away",
        IsADirectoryError: "give a file, not a directory",
        NotADirectoryError: "a part of the path is a file, not a directory",
    }
    reason = (error.strerror or str(error) or type(error).__name__).lower()
    if error.filename is None:
        return EXIT_ERROR, reason
    name = os.fsdecode(error.filename)
    hint = next((text for kind, text in hints.items() if isinstance(error, kind)), None)
    if hint is None:
        return EXIT_ERROR, f"{name}: {reason}"
    return EXIT_USAGE, f"{name}: {reason} ({hint})"


def _discard_stdout() -> None:
    """After a closed pipe: send what is left in stdout's buffer nowhere, quietly at exit."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # not a real file (captured in tests)
        pass


def _never_fail_to_encode() -> None:
    """Print names like 沙头镇 even where the locale's encoding cannot (as escapes there)."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper) and stream.errors == "strict":
            encoding = (stream.encoding or "").lower().replace("-", "").replace("_", "")
            if encoding != "utf8":
                stream.reconfigure(errors="backslashreplace")


if __name__ == "__main__":
    sys.exit(main())

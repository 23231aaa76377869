"""The adapters' command line: ``gateway``, ``village``, ``import`` and ``locker``.

``tongban adapter ...`` delegates here (``adapters.cli.main``); it also runs on its own as
``python -m adapters.cli ...``. This is the only place the adapters read the environment: every
option below has an environment variable, read once into frozen settings
(:class:`adapters.connection.HubConnection`, :class:`adapters.gateway.GatewayConfig`), so the
adapter modules themselves stay pure. docs/adapters.md lists every option.

Every variable belongs to one of the adapters' families (:data:`VARIABLE_FAMILIES`), which the
node leaves alone: ``TONGBAN_ADAPTER_*`` (the node connection), ``TONGBAN_GATEWAY_*``,
``TONGBAN_VILLAGE_*``, ``TONGBAN_IMPORT_*``, and ``TONGBAN_LOG_LEVEL``.

Exit codes: 0 success (141 when stdout was closed early, ``... | head -1``); 1 some rows or
commands were refused (import: rejected rows; village forward --once: failed commands wait in the
outbox; a refusal by the node); 2 configuration or input error; 3 the node could not be reached
(import stopped, village forward --once left commands pending). Every error the adapters raise
(:mod:`adapters.errors`) and every ordinary mistake (a bad option, an unreadable file) is one
line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, NoReturn

from tongban.v1 import case_exchange_pb2, common_pb2

from adapters.connection import HubConnection, ItemCatalogue, open_client
from adapters.errors import RETRYABLE_CODES, AdapterError, ConfigError, InputError, NodeRefused
from adapters.sdk import MAX_ATTEMPTS, HallCredentials, RetryPolicy

if TYPE_CHECKING:
    from adapters.village import Outbox

EXIT_OK = 0
EXIT_REFUSED = 1
EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130
# A reader that left early (``| head -1``): what a shell reports for a command killed by
# SIGPIPE, and what ``tongban`` itself returns, so scripts see one convention.
EXIT_BROKEN_PIPE = 141

#: The prefixes of every environment variable the adapters read (the node rejects other
#: ``TONGBAN_*`` variables it does not know, but leaves these families to the adapters).
VARIABLE_FAMILIES = (
    "TONGBAN_ADAPTER_",
    "TONGBAN_GATEWAY_",
    "TONGBAN_VILLAGE_",
    "TONGBAN_IMPORT_",
    "TONGBAN_LOG_LEVEL",
)

_RETRYABLE = "/".join(sorted(code.name for code in RETRYABLE_CODES))

#: Connection options: flag → (environment variable, help).
_CONNECTION_OPTIONS: dict[str, tuple[str, str]] = {
    "--target": ("TONGBAN_ADAPTER_TARGET", "the node's gRPC address, host:port"),
    "--hall-id": ("TONGBAN_ADAPTER_HALL_ID", "the hall this adapter acts as"),
    "--region": ("TONGBAN_ADAPTER_REGION", "the hall's 12-digit region code"),
    "--node": (
        "TONGBAN_ADAPTER_NODE",
        "log origin of the node the commands are for (default tongban/<first two region digits>)",
    ),
    "--signing-key": ("TONGBAN_ADAPTER_SIGNING_KEY", "the hall's Ed25519 signing key (PEM)"),
    "--ca": ("TONGBAN_ADAPTER_CA", "the node CA certificate (PEM)"),
    "--cert": ("TONGBAN_ADAPTER_CERT", "the hall's TLS client certificate (PEM)"),
    "--key": ("TONGBAN_ADAPTER_KEY", "the hall's TLS client key (PEM)"),
    "--server-name": ("TONGBAN_ADAPTER_SERVER_NAME", "override the node name checked by TLS"),
    "--operator": ("TONGBAN_ADAPTER_OPERATOR", "operator recorded when a request names none"),
    "--timeout": (
        "TONGBAN_ADAPTER_TIMEOUT",
        "seconds per gRPC call, its retries included (default 10)",
    ),
    "--retries": (
        "TONGBAN_ADAPTER_RETRIES",
        f"attempts per call on {_RETRYABLE}, 1-{MAX_ATTEMPTS} (default {MAX_ATTEMPTS})",
    ),
}


class _Parser(argparse.ArgumentParser):
    """An argument parser whose mistakes are one line on stderr (and exit 2), no usage dump."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_CONFIG, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _truthy(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _connection_parent(env: Mapping[str, str]) -> _Parser:
    parent = _Parser(add_help=False)
    group = parent.add_argument_group("node connection")
    for flag, (variable, text) in _CONNECTION_OPTIONS.items():
        group.add_argument(flag, default=env.get(variable, ""), help=f"{text} [${variable}]")
    group.add_argument(
        "--insecure",
        action="store_true",
        default=_truthy(env.get("TONGBAN_ADAPTER_INSECURE", "")),
        help="no TLS: only for a demo node started with --insecure [$TONGBAN_ADAPTER_INSECURE]",
    )
    return parent


def _connection(args: argparse.Namespace, default_operator: str) -> HubConnection:
    def path(value: str) -> Path | None:
        return Path(value) if value else None

    def number(flag: str, value: str, default: float) -> float:
        try:
            result = float(value) if value else default
        except ValueError:
            raise InputError(flag, f"{value!r} is not a number") from None
        if not result > 0:
            raise InputError(flag, f"{value!r} must be more than 0")
        return result

    retries = number("--retries", args.retries, float(MAX_ATTEMPTS))
    if not retries.is_integer():
        raise InputError("--retries", f"{args.retries!r} is not a whole number")

    return HubConnection(
        hall_id=args.hall_id,
        region=args.region,
        signing_key=path(args.signing_key),
        target=args.target,
        ca=path(args.ca),
        certificate=path(args.cert),
        private_key=path(args.key),
        server_name=args.server_name,
        insecure=args.insecure,
        operator=args.operator or default_operator,
        timeout=number("--timeout", args.timeout, 10.0),
        retry_attempts=int(retries),
        node=args.node.strip(),
    )


def _listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise InputError("--listen", f"{value!r}: use host:port (port 0 picks a free one)")
    return host.strip("[]"), int(port)


def _stop_on_signals() -> threading.Event:
    """An event set by SIGTERM or SIGINT, so long-running commands end cleanly."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def _say(line: str) -> None:
    print(line, flush=True)


# ============================================================================ gateway


def _gateway(args: argparse.Namespace) -> int:
    from adapters.gateway import Gateway, GatewayConfig, GatewayHTTPServer

    host, port = _listen(args.listen)
    config = GatewayConfig(listen_host=host, listen_port=port, token=args.token)
    connection = _connection(args, "yz-gateway")
    client = open_client(connection)
    gateway = Gateway(client, ItemCatalogue.of_client(client), token=config.token)
    try:
        server = GatewayHTTPServer((config.listen_host, config.listen_port), gateway)
    except OSError as error:
        client.close()
        raise ConfigError(f"--listen {args.listen}: {error.strerror}") from None
    stop = _stop_on_signals()
    server.serve_in_thread()
    _say(
        f"tongban adapter gateway: listening on http://{config.listen_host}:{server.port} "
        f"(hall {connection.hall_id} → {connection.target})"
    )
    try:
        stop.wait()
    finally:
        server.shutdown()
        server.server_close()
        client.close()
    _say("tongban adapter gateway: stopped")
    return EXIT_OK


# ============================================================================ village


def _outbox(args: argparse.Namespace) -> tuple[Outbox, HubConnection]:
    from adapters.village import Outbox

    if not args.db:
        raise ConfigError("the outbox file is not set (--db or TONGBAN_VILLAGE_DB)")
    connection = _connection(args, "village")
    agent_keys = {}
    for spec in args.agent_key:
        agent, sep, file = spec.partition("=")
        if not sep or not agent.strip() or not file:
            raise InputError("--agent-key", f"{spec!r}: use AGENT=FILE")
        agent_keys[agent.strip()] = HallCredentials.load_signing_key(Path(file))
    outbox = Outbox(Path(args.db), connection.signing_credentials(), agent_keys=agent_keys)
    return outbox, connection


def _village_submit(args: argparse.Namespace) -> int:
    from adapters.village import material_from_file, queue_key

    outbox, connection = _outbox(args)
    materials = []
    files = []
    for spec in args.material:
        name, sep, file = spec.partition("=")
        if not sep or not name.strip() or not file:
            raise InputError("--material", f"{spec!r}: use NAME=FILE")
        materials.append(material_from_file(name.strip(), Path(file)))
        files.append((materials[-1], Path(file)))
    submit = case_exchange_pb2.SubmitCase(
        item_code=args.item, materials=materials, competent_region=args.competent_region
    )
    if args.channel:
        submit.channel = common_pb2.IntakeChannel.Value(f"INTAKE_CHANNEL_{args.channel}")
    witness_salt = _agent_authorisation(args, submit, files)
    # Kept apart from the message: the outbox signs only commitments to it (adapters.sdk).
    applicant = common_pb2.Applicant(name=args.name, id_number=args.id_number, phone=args.phone)
    with outbox:
        queued = outbox.submit(
            submit,
            applicant=applicant,
            ref=args.ref,
            operator=connection.operator,
            # Without the room's own key the outbox is given a fresh one, stored with the
            # command before its first send (so every resend carries it).
            idempotency_key=args.idem_key or queue_key(),
            # Uploaded to the node before the submit, when the outbox is forwarded.
            files=files,
            agent=args.agent,
        )
    _say(f"queued #{queued.seq} submit ref={queued.ref}")
    if witness_salt:
        # The node holds only the commitment: the room keeps the name and this salt on paper.
        _say(f"witness commitment salt {witness_salt} (keep it with the home-visit record)")
    return EXIT_OK


def _agent_authorisation(
    args: argparse.Namespace,
    submit: case_exchange_pb2.SubmitCase,
    files: list[tuple[common_pb2.Material, Path]],
) -> str:
    """Fill ``submit.agent`` from ``--agent`` and its authority: ``--letter FILE`` (a 委托书,
    also listed as a material) or ``--witness-role``/``--witness-name`` (an oral authorisation
    at a home visit). Returns the witness commitment's salt in hex ('' when none)."""
    from adapters.sdk import commitment
    from adapters.village import material_from_file

    if not args.agent:
        if args.letter or args.witness_name or args.witness_role:
            raise InputError("--agent", "name the agent the authorisation is for")
        return ""
    role = common_pb2.AgentRole.Value(f"AGENT_ROLE_{args.agent_role}")
    submit.agent.agent_id = args.agent
    submit.agent.role = role
    if bool(args.letter) == bool(args.witness_name or args.witness_role):
        raise InputError(
            "--letter", "give either the 委托书 (--letter FILE) or the oral authorisation's "
            "witness (--witness-role and --witness-name)",
        )  # fmt: skip
    if args.letter:
        letter = material_from_file("委托书", Path(args.letter))
        submit.materials.append(letter)
        files.append((letter, Path(args.letter)))
        submit.agent.letter_sha256 = letter.sha256
        return ""
    if not (args.witness_role and args.witness_name):
        raise InputError("--witness-name", "an oral authorisation names its witness and role")
    salt = os.urandom(32)
    submit.agent.witness_role = args.witness_role
    submit.agent.witness_commitment = commitment(
        "submit.agent.witness", salt, args.witness_name
    ).hex()
    return salt.hex()


def _village_act(args: argparse.Namespace) -> int:
    from adapters.village import message_from_json, queue_key

    outbox, connection = _outbox(args)
    body = message_from_json(args.action, args.json)
    with outbox:
        queued = outbox.follow(
            args.ref or args.case_id,
            args.action,
            body,
            operator=connection.operator,
            idempotency_key=args.idem_key or queue_key(),
            agent=args.agent,
        )
    note = "" if queued.signed else " (signed once the submit is acknowledged)"
    _say(f"queued #{queued.seq} {queued.action} ref={queued.ref}{note}")
    return EXIT_OK


def _village_forward(args: argparse.Namespace) -> int:
    from adapters.village import FORWARD_BACKOFF, Forwarder

    try:
        backoff = replace(FORWARD_BACKOFF, max_backoff=max(args.max_backoff, 0.0))
    except ConfigError:
        raise InputError(
            "--max-backoff", f"{args.max_backoff}: at least {FORWARD_BACKOFF.initial_backoff} s"
        ) from None
    outbox, connection = _outbox(args)
    # One attempt per call: the forwarder waits between passes itself (the same backoff
    # schedule), so a stop signal is noticed quickly and the order of the queue is kept.
    client = open_client(connection, retry=RetryPolicy(attempts=1))
    try:
        with outbox:
            forwarder = Forwarder(outbox, client, report=_say)
            if args.once:
                result = forwarder.drain()
                counts = outbox.counts()
                _say(
                    f"sent {len(result.sent)}, failed {len(result.failed)}; outbox: "
                    + ", ".join(f"{k} {v}" for k, v in counts.items())
                )
                if result.interrupted is not None:
                    _say(f"node unreachable: {result.interrupted.code.name}")
                    return EXIT_UNAVAILABLE
                # 1 while refused commands wait for the clerk (retry or cancel), not only when
                # this run refused them: a cron job keeps reporting until someone acts.
                return EXIT_REFUSED if counts["failed"] else EXIT_OK
            stop = _stop_on_signals()
            _say(f"tongban adapter village: forwarding {args.db} → {connection.target}")
            forwarder.run(stop, idle_interval=args.interval, backoff=backoff)
            _say("tongban adapter village: stopped")
            return EXIT_OK
    finally:
        client.close()


def _village_status(args: argparse.Namespace) -> int:
    from adapters.village import describe, to_json

    outbox, _connection_unused = _outbox(args)
    with outbox:
        commands = outbox.commands(ref=args.ref, status=args.state)
        counts = outbox.counts()
        files, failed_files = outbox.file_counts(), outbox.failed_files()
    if args.json:
        document = {"counts": counts, "commands": json.loads(to_json(commands)),
                    "files": files, "failed_files": failed_files}  # fmt: skip
        _say(json.dumps(document, indent=1))
    else:
        _say(describe(commands))
        _say(", ".join(f"{k} {v}" for k, v in counts.items()))
        _say("files: " + ", ".join(f"{k} {v}" for k, v in files.items()))
        for failed in failed_files:
            _say(f"  file {failed['path']}: {failed['error']}")
    return EXIT_OK


def _village_retry(args: argparse.Namespace) -> int:
    outbox, _connection_unused = _outbox(args)
    with outbox:
        queued = outbox.retry(args.seq, resign=args.resign)
    again = " (signed anew)" if args.resign else ""
    _say(f"#{queued.seq} {queued.action} ref={queued.ref} is pending again{again}")
    return EXIT_OK


def _village_cancel(args: argparse.Namespace) -> int:
    outbox, _connection_unused = _outbox(args)
    with outbox:
        cancelled = outbox.cancel(args.seq)
    for command in cancelled:
        _say(f"#{command.seq} {command.action} ref={command.ref} cancelled")
    return EXIT_OK


# ============================================================================ import


def _import(args: argparse.Namespace) -> int:
    from adapters.batch_import import Importer, describe, read_register

    register = read_register(Path(args.file), sheet=args.sheet, encoding=args.encoding)
    connection = _connection(args, "import")
    client = open_client(connection)
    try:
        importer = Importer(
            client,
            ItemCatalogue.of_client(client),
            key_prefix=args.key_prefix,
            default_operator=connection.operator,
            issued_at=args.issued_at,
        )
        report = importer.run(register)
    finally:
        client.close()
    if args.report:
        try:
            report.write_csv(Path(args.report))
        except OSError as error:
            raise ConfigError(f"--report {args.report}: {error.strerror}") from None
    if args.json:
        _say(json.dumps(report.to_json(), ensure_ascii=False, indent=1))
    else:
        _say(describe(report))
    if report.stopped:
        return EXIT_UNAVAILABLE
    return EXIT_REFUSED if report.counts()["rejected"] else EXIT_OK


# ============================================================================ locker


def _locker_key(path: Path, *, create: bool) -> bytes:
    """The locker system's own key for pickup-code hashes (32 random bytes, mode 0600)."""
    import secrets

    if not path.exists() and create:
        path.parent.mkdir(parents=True, exist_ok=True)
        with os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as out:
            out.write(secrets.token_bytes(32))
    try:
        key = path.read_bytes()
    except OSError as error:
        raise InputError("--key-file", f"{path}: {error.strerror}") from None
    if not 16 <= len(key) <= 64:
        raise InputError("--key-file", f"{path}: a locker key is 16-64 bytes, not {len(key)}")
    return key


def _locker_secret(key: bytes, purpose: str, *parts: str) -> str:
    """A value only the locker system can derive (HMAC-SHA256 under its own key), hex."""
    message = "\x00".join(("tongban/locker", purpose, *parts)).encode()
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def _locker(args: argparse.Namespace) -> int:
    """入柜 with a pickup code (printed for the SMS; only its keyed hash is sent), or a 取件
    with the code the applicant typed (sent beside the signed bytes, never in them).

    Both are retries the node recognises when run again: the idempotency key is ``--idem-key``
    or derived from the act (the case, locker and compartment; for a pick-up also the code, by
    a keyed hash), and a deposit's code is derived from its key under the locker's own key, so
    the same deposit run again signs the same code hash and prints the same code."""
    from adapters.sdk import pickup_code_hash

    key = _locker_key(Path(args.key_file), create=args.locker_command == "deposit")
    client = open_client(_connection(args, f"locker:{args.locker}"))
    act = (args.case_id, args.locker, args.compartment)
    where = {"case_id": args.case_id, "locker_id": args.locker, "compartment": args.compartment}
    try:
        if args.locker_command == "deposit":
            idempotency_key = (
                args.idem_key or f"locker-deposit-{_locker_secret(key, 'key', *act)[:32]}"
            )
            code = f"{int(_locker_secret(key, 'code', idempotency_key, *act), 16) % 10**6:06d}"
            reply = client.send(
                "deposit_in_locker", idempotency_key=idempotency_key, hold_hours=args.hold_hours,
                code_hash=pickup_code_hash(args.case_id, code, key), **where,
            )  # fmt: skip
            again = " (deposited before: the same code)" if reply.replayed else ""
            _say(f"deposited in {args.locker}#{args.compartment}{again}; pickup code {code}")
        else:
            typed = _locker_secret(key, "pick-up", *act, args.code)[:32]
            idempotency_key = args.idem_key or f"locker-pick-up-{typed}"
            client.send(
                "pick_up_from_locker", idempotency_key=idempotency_key,
                pickup_code=(args.code, key), **where,
            )  # fmt: skip
            _say(f"picked up from {args.locker}#{args.compartment}: delivered")
    finally:
        client.close()
    return EXIT_OK


#: An agent's id at its hall (the node's rule, checked here first so the flag is named).
_AGENT_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _agent(args: argparse.Namespace) -> int:
    """代办员: register one of the hall's agents (their name, ID number and phone committed to
    in the signed bytes and sent beside them, like an applicant's), or retire one."""
    if not _AGENT_ID.fullmatch(args.agent_id):
        raise InputError("--agent-id", f"{args.agent_id!r}: 1-64 letters, digits, . _ -")
    client = open_client(_connection(args, "agents"))
    # A key derived from the agent (unless given): running the same command again is a retry
    # the node recognises (the first result), never a second registration.
    verb = args.agent_command
    idempotency_key = args.idem_key or f"agent-{verb}-{args.agent_id}"
    try:
        if verb == "register":
            person = common_pb2.Applicant(
                name=args.name, id_number=args.id_number, phone=args.phone
            )
            reply = client.send(
                "register_agent", idempotency_key=idempotency_key, applicant=person,
                agent_id=args.agent_id, public_key=args.public_key,
            )  # fmt: skip
            done = "registered"
            if args.public_key:
                done += " (signs their own steps with that key)"
        else:
            reply = client.send(
                "retire_agent", idempotency_key=idempotency_key, agent_id=args.agent_id,
                reason=args.reason,
            )  # fmt: skip
            done = "retired"
    finally:
        client.close()
    again = " (already done: the node returned the first result)" if reply.replayed else ""
    _say(f"{done} agent {args.agent_id} of {args.hall_id}{again}")
    return EXIT_OK


# ============================================================================ parser


def build_parser(env: Mapping[str, str]) -> argparse.ArgumentParser:
    """The argument parser; defaults come from ``env`` (the process environment in main)."""
    from adapters.batch_import import ISSUED_AT_CHOICES

    connection = _connection_parent(env)
    parser = _Parser(
        prog="tongban adapter",
        description="Tongban hall adapters: a vendor HTTP gateway, an offline village outbox, "
        "and a legacy register importer.",
    )
    commands = parser.add_subparsers(dest="adapter", required=True)

    gateway = commands.add_parser(
        "gateway",
        parents=[connection],
        help="JSON-over-HTTP gateway for the YZ provincial web platform",
    )
    gateway.add_argument(
        "--listen",
        default=env.get("TONGBAN_GATEWAY_LISTEN", "127.0.0.1:8080"),
        help="host:port to serve HTTP on [$TONGBAN_GATEWAY_LISTEN]",
    )
    gateway.add_argument(
        "--token",
        default=env.get("TONGBAN_GATEWAY_TOKEN", ""),
        help="require 'Authorization: Bearer TOKEN' [$TONGBAN_GATEWAY_TOKEN]",
    )
    gateway.set_defaults(run=_gateway)

    village = commands.add_parser("village", help="offline-first village service-room outbox")
    village_commands = village.add_subparsers(dest="village_command", required=True)
    outbox = _Parser(add_help=False, parents=[connection])
    outbox.add_argument(
        "--db",
        default=env.get("TONGBAN_VILLAGE_DB", ""),
        help="the outbox SQLite file [$TONGBAN_VILLAGE_DB]",
    )
    outbox.add_argument(
        "--agent-key",
        action="append",
        default=[],
        metavar="AGENT=FILE",
        help="an agent registered with a key of their own signs their steps with this PEM key "
        "(repeatable; a step queued before its case id is known is signed when forwarded, so "
        "give it to 'forward' too)",
    )
    idem = _Parser(add_help=False)
    idem.add_argument(
        "--idem-key",
        default="",
        help="your own idempotency key (makes queuing itself retry-safe)",
    )

    submit = village_commands.add_parser(
        "submit", parents=[outbox, idem], help="queue a 收件 (works offline)"
    )
    submit.add_argument("--ref", default="", help="local reference (default: generated)")
    submit.add_argument("--item", required=True, help="事项编码")
    submit.add_argument("--name", required=True, help="applicant's name")
    submit.add_argument("--id-number", required=True, help="applicant's resident ID number")
    submit.add_argument("--phone", required=True, help="applicant's phone")
    submit.add_argument(
        "--material",
        action="append",
        required=True,
        metavar="NAME=FILE",
        help="a scanned material (digest, size and type are read from FILE); repeat",
    )
    submit.add_argument("--competent-region", default="", help="办理地 region code if needed")
    submit.add_argument(
        "--channel", default="",
        choices=["WINDOW", "ONLINE", "PHONE", "HOME_VISIT", "AGENT", "KIOSK"],
        help="how the applicant reached the room (default: the window)",
    )  # fmt: skip
    submit.add_argument("--agent", default="", help="the room's 代办员 who takes the case in")
    submit.add_argument("--agent-role", default="ACTING", choices=["ACTING", "GUIDING"],
                        help="代办 (ACTING, default) or 帮办 (GUIDING)")  # fmt: skip
    submit.add_argument("--letter", default="", metavar="FILE", help="the signed 委托书 (a scan)")
    submit.add_argument(
        "--witness-role", default="", help="an oral authorisation's witness: role (村委会主任)"
    )
    submit.add_argument(
        "--witness-name", default="", help="the witness's name (only a commitment is sent)"
    )
    submit.set_defaults(run=_village_submit)

    act = village_commands.add_parser(
        "act", parents=[outbox, idem], help="queue a lifecycle command (works offline)"
    )
    act.add_argument("action", help="wire action: accept, hand_off, withdraw, ...")
    target = act.add_mutually_exclusive_group(required=True)
    target.add_argument("--ref", default="", help="the local reference of a queued submit")
    target.add_argument("--case-id", default="", help="the node's id of a case this hall holds")
    act.add_argument(
        "--json",
        default="",
        help='the action\'s fields with wire names, e.g. \'{"to_hall": "hn-shatou-town"}\'',
    )
    act.add_argument("--agent", default="", help="the room's 代办员 who takes this step")
    act.set_defaults(run=_village_act)

    forward = village_commands.add_parser(
        "forward", parents=[outbox], help="send queued commands to the node"
    )
    forward.add_argument("--once", action="store_true", help="send what can be sent, then exit")
    forward.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    forward.add_argument(
        "--max-backoff", type=float, default=30.0, help="longest wait while offline (s)"
    )
    forward.set_defaults(run=_village_forward)

    status = village_commands.add_parser(
        "status", parents=[outbox], help="show queued, sent and failed commands"
    )
    status.add_argument("--ref", default="", help="only this local reference")
    status.add_argument(
        "--state", default="", help="only pending | held | sent | failed | cancelled"
    )
    status.add_argument("--json", action="store_true", help="JSON output")
    status.set_defaults(run=_village_status)

    retry = village_commands.add_parser(
        "retry", parents=[outbox], help="send a failed command again"
    )
    retry.add_argument("seq", type=int)
    retry.add_argument(
        "--resign",
        action="store_true",
        help="sign it anew with the current --signing-key (after a key rotation)",
    )
    retry.set_defaults(run=_village_retry)

    cancel = village_commands.add_parser(
        "cancel", parents=[outbox], help="give up a failed or pending command"
    )
    cancel.add_argument("seq", type=int)
    cancel.set_defaults(run=_village_cancel)

    register = commands.add_parser(
        "import", parents=[connection], help="import a legacy 办事登记册 (CSV or .xlsx)"
    )
    register.add_argument("file", help="the register: .csv or .xlsx")
    register.add_argument("--sheet", default="", help="the Excel sheet (default: the first)")
    register.add_argument("--encoding", default="", help="CSV encoding (default: detected)")
    register.add_argument(
        "--key-prefix",
        default=env.get("TONGBAN_IMPORT_KEY_PREFIX", "lx-"),
        help="prefix of the idempotency keys made from 登记编号 [$TONGBAN_IMPORT_KEY_PREFIX]",
    )
    register.add_argument(
        "--issued-at",
        choices=ISSUED_AT_CHOICES,
        default=env.get("TONGBAN_IMPORT_ISSUED_AT", "received"),
        help="the time a row's submit is signed with: 'received' (its 收件日期, sent as a "
        "deferred command; the node refuses rows older than its deferred limit, 30 days by "
        "default) or 'now' (the time of the import) [$TONGBAN_IMPORT_ISSUED_AT]",
    )
    register.add_argument("--report", default="", help="also write the per-row report as CSV")
    register.add_argument("--json", action="store_true", help="print the report as JSON")
    register.set_defaults(run=_import)

    agent = commands.add_parser("agent", help="代办员: register or retire one of the hall's agents")
    agent_commands = agent.add_subparsers(dest="agent_command", required=True)
    who = _Parser(add_help=False)
    who.add_argument(
        "--agent-id", required=True, help="the agent's id at the hall (1-64: A-z 0-9 . _ -)"
    )
    who.add_argument("--idem-key", default="", help="your own idempotency key")
    enrol = agent_commands.add_parser(
        "register", parents=[connection, who],
        help="register an agent (personal data committed to; the node keeps it sealed)",
    )  # fmt: skip
    enrol.add_argument("--name", required=True, help="the agent's name")
    enrol.add_argument("--id-number", required=True, help="the agent's resident ID number")
    enrol.add_argument("--phone", required=True, help="the agent's phone")
    enrol.add_argument(
        "--public-key",
        default="",
        help="the agent's own base64 Ed25519 public key (`tongban pki signing-key` prints it): "
        "the agent then signs their own steps with it; without it they act under the hall's key",
    )
    leave = agent_commands.add_parser(
        "retire", parents=[connection, who], help="retire an agent (final): they act no more"
    )
    leave.add_argument("--reason", required=True, help="why (recorded in the log)")
    agent.set_defaults(run=_agent)

    locker = commands.add_parser(
        "locker", help="a 24-hour locker (政务e家 取件柜): deposit a result, report a pickup"
    )
    locker_commands = locker.add_subparsers(dest="locker_command", required=True)
    place = _Parser(add_help=False)
    place.add_argument("--case-id", required=True, help="the case whose result it is")
    place.add_argument("--locker", required=True, help="the locker's id")
    place.add_argument("--compartment", required=True, help="the compartment (格口)")
    place.add_argument(
        "--key-file",
        default=env.get("TONGBAN_ADAPTER_LOCKER_KEY", ""),
        required=not env.get("TONGBAN_ADAPTER_LOCKER_KEY"),
        help="the locker system's own key for pickup-code hashes (made on the first deposit; "
        "never sent at deposit) [$TONGBAN_ADAPTER_LOCKER_KEY]",
    )
    place.add_argument("--idem-key", default="", help="your own idempotency key")
    deposit = locker_commands.add_parser(
        "deposit", parents=[connection, place],
        help="put a result in a compartment; prints the pickup code to text the applicant",
    )  # fmt: skip
    deposit.add_argument("--hold-hours", type=int, default=72, help="1-720 (default 72)")
    pick_up = locker_commands.add_parser(
        "pick-up", parents=[connection, place], help="report a pickup with the code typed"
    )
    pick_up.add_argument("--code", required=True, help="the pickup code the applicant typed")
    locker.set_defaults(run=_locker)
    return parser


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    """Run an adapter command; returns the exit code.

    Never a traceback for an ordinary mistake: the adapters' errors, an unreadable file, an
    interrupt and a closed stdout (``... | head -1``) all end here with one line at most.
    """
    try:
        code = _main(argv, os.environ if environ is None else environ)
        sys.stdout.flush()  # a closed pipe shows here, inside the handler, not at exit
    except BrokenPipeError:
        _stdout_to_devnull()
        return EXIT_BROKEN_PIPE
    return code


def _main(argv: Sequence[str] | None, env: Mapping[str, str]) -> int:
    try:
        args = build_parser(env).parse_args(argv)
    except SystemExit as stop:  # --help (0), or a usage mistake already reported (2)
        return stop.code if isinstance(stop.code, int) else EXIT_CONFIG
    level = env.get("TONGBAN_LOG_LEVEL", "INFO").strip().upper()
    if level not in logging.getLevelNamesMapping():
        _error(f"TONGBAN_LOG_LEVEL={level!r}: use DEBUG, INFO, WARNING or ERROR")
        return EXIT_CONFIG
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        code: int = args.run(args)
    except NodeRefused as refusal:
        _error(f"the node refused: {refusal}")
        return EXIT_UNAVAILABLE if refusal.transient else EXIT_REFUSED
    except AdapterError as error:
        _error(str(error))
        return EXIT_CONFIG
    except OSError as error:
        if isinstance(error, BrokenPipeError):
            raise
        where = f"{error.filename}: " if error.filename else ""
        _error(f"{where}{error.strerror or error}")
        return EXIT_CONFIG
    except KeyboardInterrupt:
        _error("interrupted")
        return EXIT_INTERRUPTED
    return code


def _error(line: str) -> None:
    print(f"tongban adapter: {line}", file=sys.stderr)


def _stdout_to_devnull() -> None:
    """After a closed pipe: point stdout at /dev/null, so the interpreter's final flush of what
    is still buffered does not fail (and print a traceback) on the way out."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file behind stdout: just stop writing to it
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until the process ends
    finally:
        os.close(devnull)


if __name__ == "__main__":
    sys.exit(main())

"""Find or start a PostgreSQL server for the tests and the benchmarks.

``postgres_service()`` yields a libpq connection string: the one in ``TONGBAN_TEST_DATABASE_URL``
when that is set (checked once with a connection), otherwise that of a throwaway cluster that
``PostgresCluster`` creates with ``initdb`` in a temporary directory, starts on a free port of
127.0.0.1, and stops and removes afterwards.

Why not pytest-postgresql's ``postgresql_proc`` process fixture (checked with version 10):

* its executor runs ``pg_ctl initdb`` and ``pg_ctl start`` as the current user, and PostgreSQL
  refuses to run as root ("initdb: cannot be run as root"; ``pg_ctl`` likewise). CI and the
  development machines run as root, and the executor has no way to switch to another account;
  its data directory would also sit under pytest's root-only (0700) base temp directory;
* it exists only as a pytest fixture, while the benchmarks need the same server outside pytest.

So this module does the few steps itself and keeps them plain functions and classes. When running
as root, ``initdb`` and ``postgres`` run as an unprivileged account (the ``postgres`` system user if
there is one, else ``nobody``), via subprocess's own ``user=``/``group=`` switch, on a temporary
directory chowned to that account. The postmaster is started directly (not through ``pg_ctl``,
which would detach it) so it stays our child and is stopped by its PID.
"""

from __future__ import annotations

import atexit
import contextlib
import getpass
import os
import pwd
import re
import secrets
import shutil
import signal
import stat
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from hub.application.postgres_store import POSTGRES_PERSISTENCE

from .errors import ServiceUnavailable
from .processes import LOCALHOST, die_with_parent, free_tcp_port, stop_process, tail

#: A libpq connection string (key=value or postgresql:// URI) of a server to use instead of
#: starting one. The tests create their own databases on it (``fresh_postgres_db``).
DATABASE_URL_ENV = "TONGBAN_TEST_DATABASE_URL"
#: Directory holding ``initdb`` and ``postgres``; overrides the search of ``find_binaries``.
BINDIR_ENV = "TONGBAN_TEST_PG_BINDIR"

SERVICE = "PostgreSQL"
REMEDY = (
    "install the PostgreSQL server binaries (Debian/Ubuntu: `apt-get install postgresql-15`, "
    "which puts initdb and postgres in /usr/lib/postgresql/15/bin), or set "
    f"{BINDIR_ENV} to the directory holding initdb and postgres, or set {DATABASE_URL_ENV} "
    "to a libpq connection string of a server you run yourself"
)

#: Accounts tried, in order, for running the server when we are root.
UNPRIVILEGED_ACCOUNTS = ("postgres", "nobody")

#: Settings for a throwaway test cluster that need not survive a crash: no flushes to disk.
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}


# --------------------------------------------------------------------------- binaries


@dataclass(frozen=True)
class PostgresBinaries:
    """A directory with the PostgreSQL server programs."""

    bindir: Path

    @property
    def initdb(self) -> Path:
        return self.bindir / "initdb"

    @property
    def postgres(self) -> Path:
        return self.bindir / "postgres"

    def version(self) -> str:
        """The server version, e.g. ``"15.18"``."""
        out = subprocess.run(
            [str(self.postgres), "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        match = re.search(r"(\d+(?:\.\d+)?)", out)
        return match.group(1) if match else out.strip()


def _is_server_bindir(path: Path) -> bool:
    return all(os.access(path / name, os.X_OK) for name in ("initdb", "postgres"))


def _major(path: Path) -> int:
    """Sort key for ``/usr/lib/postgresql/<major>/bin``."""
    name = path.parent.name
    return int(name) if name.isdigit() else -1


def _candidate_bindirs() -> list[Path]:
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config is not None:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))
    # Debian/Ubuntu keep server programs off PATH, one directory per major version: newest first.
    candidates.extend(sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_major, reverse=True))
    candidates.extend(Path(p) for p in ("/usr/local/pgsql/bin", "/usr/pgsql/bin"))
    for program in ("postgres", "initdb"):
        found = shutil.which(program)
        if found is not None:
            candidates.append(Path(found).parent)
    return candidates


def find_binaries() -> PostgresBinaries:
    """Locate ``initdb`` and ``postgres``; raise ``ServiceUnavailable`` naming where it looked."""
    override = os.environ.get(BINDIR_ENV, "").strip()
    if override:
        if _is_server_bindir(Path(override)):
            return PostgresBinaries(Path(override))
        raise ServiceUnavailable(
            SERVICE,
            f"{BINDIR_ENV}={override} does not contain executable initdb and postgres",
            REMEDY,
        )
    candidates = _candidate_bindirs()
    for candidate in candidates:
        if _is_server_bindir(candidate):
            return PostgresBinaries(candidate)
    looked = ", ".join(dict.fromkeys(str(c) for c in candidates)) or "nowhere"
    raise ServiceUnavailable(
        SERVICE,
        f"the server programs initdb and postgres were not found (looked in: {looked}, "
        "/usr/lib/postgresql/*/bin and PATH)",
        REMEDY,
    )


# --------------------------------------------------------------------------- running as root


@dataclass(frozen=True)
class Account:
    """The unprivileged account the server runs as when we are root."""

    name: str
    uid: int
    gid: int

    def popen_kwargs(self) -> dict[str, Any]:
        """Arguments for ``subprocess`` that switch the child to this account before exec."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}


def server_account() -> Account | None:
    """The account to run ``initdb``/``postgres`` as; None means "as ourselves".

    PostgreSQL will not run as root (a compromised server would own the machine). As root we
    pick the ``postgres`` system user that the distribution package creates, else ``nobody``.
    """
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_ACCOUNTS:
        try:
            entry = pwd.getpwnam(name)
        except KeyError:
            continue
        return Account(name, entry.pw_uid, entry.pw_gid)
    raise ServiceUnavailable(
        SERVICE,
        "running as root, and PostgreSQL refuses root; no unprivileged account "
        f"({', '.join(UNPRIVILEGED_ACCOUNTS)}) exists to run it as",
        f"create one (`useradd --system postgres`), run the tests as a normal user, or set "
        f"{DATABASE_URL_ENV}",
    )


def _open_to_others(path: Path) -> bool:
    """Whether every ancestor of ``path`` can be traversed by other users."""
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in [path, *path.parents])


def _make_work_dir(account: Account | None, base_dir: str | None) -> Path:
    """A fresh 0700 directory owned by the server's account, reachable by that account."""
    base = base_dir
    if account is not None and base is None and not _open_to_others(Path(tempfile.gettempdir())):
        base = "/tmp"  # $TMPDIR is private to root; /tmp is traversable by everybody
    work = Path(tempfile.mkdtemp(prefix="tongban-pg-", dir=base))
    if account is not None:
        os.chown(work, account.uid, account.gid)
    return work


# --------------------------------------------------------------------------- the cluster


class PostgresCluster:
    """A throwaway PostgreSQL cluster: ``start()`` → ``dsn`` → ``stop()`` (also a context manager).

    ``durable=False`` (tests) turns off fsync and synchronous commit for speed; ``durable=True``
    (benchmarks) keeps PostgreSQL's defaults so commit rates mean what they say. ``stop()`` is
    idempotent and also runs at interpreter exit if the owner forgot it.
    """

    host = LOCALHOST

    def __init__(
        self,
        *,
        durable: bool = False,
        superuser: str = "tongban",
        port: int | None = None,
        settings: Mapping[str, str] | None = None,
        startup_timeout: float = 60.0,
        binaries: PostgresBinaries | None = None,
        base_dir: str | None = None,
    ) -> None:
        self.durable = durable
        self.superuser = superuser
        self.startup_timeout = startup_timeout
        self._requested_port = port
        self._settings: dict[str, str] = {"max_connections": "200"}
        if not durable:
            self._settings.update(FAST_SETTINGS)
        self._settings.update(settings or {})
        self._binaries = binaries
        self._base_dir = base_dir
        self._password = secrets.token_hex(16)
        self._port: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._dir: Path | None = None

    # -- properties

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the cluster has not been started")
        return self._port

    @property
    def pid(self) -> int | None:
        """PID of the postmaster while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def directory(self) -> Path | None:
        """The temporary directory holding the data directory, socket and ``server.log``."""
        return self._dir

    @property
    def dsn(self) -> str:
        """Connection string for the ``postgres`` database as the superuser (password auth)."""
        return make_conninfo(
            host=self.host,
            port=self.port,
            user=self.superuser,
            password=self._password,
            dbname="postgres",
        )

    # -- lifecycle

    def start(self) -> Self:
        if self._proc is not None:
            return self
        binaries = self._binaries or find_binaries()
        account = server_account()
        atexit.register(self.stop)
        try:
            self._dir = _make_work_dir(account, self._base_dir)
            self._initdb(binaries, account)
            self._launch(binaries, account)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stop the postmaster (by PID) and remove the temporary directory. Safe to repeat."""
        atexit.unregister(self.stop)
        proc, self._proc = self._proc, None
        if proc is not None:
            # SIGINT is PostgreSQL's "fast shutdown" (roll back, disconnect clients, checkpoint,
            # exit); SIGQUIT its "immediate shutdown"; SIGKILL comes last in stop_process.
            stop_process(proc, signal.SIGINT, 30.0, then=[(signal.SIGQUIT, 10.0)])
        work, self._dir = self._dir, None
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    def halt(self) -> None:
        """Stop the postmaster but keep its data: the database is down, as in an outage."""
        proc, self._proc = self._proc, None
        if proc is not None:
            stop_process(proc, signal.SIGINT, 30.0, then=[(signal.SIGQUIT, 10.0)])

    def resume(self) -> None:
        """Start the postmaster again on the same port and data, after :meth:`halt`."""
        if self._proc is not None:
            return
        self._requested_port = self._port
        self._launch(self._binaries or find_binaries(), server_account())

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- steps

    def _env(self) -> dict[str, str]:
        assert self._dir is not None
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self._dir),
            "LANG": "C",
            "LC_ALL": "C",
        }

    def _run_as(self, account: Account | None) -> dict[str, Any]:
        return account.popen_kwargs() if account is not None else {}

    def _initdb(self, binaries: PostgresBinaries, account: Account | None) -> None:
        assert self._dir is not None
        pwfile = self._dir / "pwfile"
        pwfile.write_text(self._password + "\n")
        pwfile.chmod(0o600)
        if account is not None:
            os.chown(pwfile, account.uid, account.gid)
        cmd = [
            str(binaries.initdb),
            f"--pgdata={self._dir / 'data'}",
            f"--username={self.superuser}",
            f"--pwfile={pwfile}",
            "--auth-local=trust",  # the socket lives in our private 0700 directory
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",  # a throwaway cluster; initdb's final fsync only costs time
        ]
        try:
            result = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
                cwd=self._dir,
                env=self._env(),
                **self._run_as(account),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise ServiceUnavailable(SERVICE, f"could not run {cmd[0]}: {exc}", REMEDY) from exc
        finally:
            pwfile.unlink(missing_ok=True)
        if result.returncode != 0:
            who = f" as {account.name}" if account else ""
            raise ServiceUnavailable(
                SERVICE,
                f"initdb{who} failed with exit status {result.returncode}:\n"
                f"{(result.stdout + result.stderr)[-2000:]}",
                REMEDY,
            )

    def _launch(self, binaries: PostgresBinaries, account: Account | None) -> None:
        assert self._dir is not None
        attempts = 1 if self._requested_port else 3
        log_path = self._dir / "server.log"
        for attempt in range(1, attempts + 1):
            port = self._requested_port or free_tcp_port(self.host)
            argv = [
                str(binaries.postgres),
                "-D",
                str(self._dir / "data"),
                "-p",
                str(port),
                "-c",
                f"listen_addresses={self.host}",
                "-c",
                f"unix_socket_directories={self._dir}",
            ]
            for key, value in self._settings.items():
                argv += ["-c", f"{key}={value}"]
            with log_path.open("ab") as log:
                self._proc = subprocess.Popen(
                    die_with_parent(argv, "INT"),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._dir,
                    env=self._env(),
                    start_new_session=True,  # Ctrl-C in the terminal must not reach it
                    **self._run_as(account),
                )
            self._port = port
            if self._wait_ready():
                return
            log_tail = tail(log_path)
            exited = self._proc.poll() is not None
            stop_process(self._proc, signal.SIGQUIT, 10.0)
            self._proc = None
            if exited and "already in use" in log_tail and attempt < attempts:
                continue  # somebody took the free port first; try another
            reason = (
                "exited" if exited else f"did not accept connections in {self.startup_timeout} s"
            )
            raise ServiceUnavailable(
                SERVICE, f"the server {reason}; end of its log:\n{log_tail}", REMEDY
            )

    def _wait_ready(self) -> bool:
        """Poll with real connections until the server answers; False if it exits or times out."""
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with psycopg.connect(self.dsn, connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                time.sleep(0.1)
        return False


# --------------------------------------------------------------------------- services


def describe_dsn(dsn: str) -> str:
    """``user@host:port/dbname`` for messages, without the password."""
    params = conninfo_to_dict(dsn)
    return (
        f"{params.get('user') or '?'}@{params.get('host') or 'localhost'}:"
        f"{params.get('port') or 5432}/{params.get('dbname') or '?'}"
    )


def check_connection(dsn: str, timeout: float = 10.0) -> None:
    """Connect once to a given server; ``ServiceUnavailable`` if that fails."""
    try:
        with psycopg.connect(dsn, connect_timeout=max(1, round(timeout))) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise ServiceUnavailable(
            SERVICE,
            f"cannot connect to {describe_dsn(dsn)} given by {DATABASE_URL_ENV}: {exc}",
            f"start that server, or correct or unset {DATABASE_URL_ENV} so the harness starts one",
        ) from exc


@contextlib.contextmanager
def postgres_service(*, durable: bool = False) -> Iterator[str]:
    """Yield a DSN: ``$TONGBAN_TEST_DATABASE_URL`` if set, else a throwaway cluster's.

    The throwaway cluster is stopped and removed when the block exits. Raises
    ``ServiceUnavailable`` when neither is possible.
    """
    given = os.environ.get(DATABASE_URL_ENV, "").strip()
    if given:
        check_connection(given)
        yield given
        return
    with PostgresCluster(durable=durable) as cluster:
        yield cluster.dsn


# --------------------------------------------------------------------------- databases


def unique_name(prefix: str) -> str:
    """A fresh lower-case identifier such as ``tongban_test_3f9c0a1b2c4d``."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def dsn_with(dsn: str, **changes: str | int) -> str:
    """The connection string ``dsn`` with some parameters replaced (e.g. ``dbname=...``)."""
    params = conninfo_to_dict(dsn)
    params.update(changes)
    return make_conninfo("", **params)


def create_database(dsn: str, name: str | None = None) -> str:
    """Create an empty database (from ``template0``) on the server of ``dsn``; return its DSN."""
    name = name or unique_name("tongban_test")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(name)))
    return dsn_with(dsn, dbname=name)


def drop_database(dsn: str, name: str) -> None:
    """Drop database ``name`` on the server of ``dsn`` (which must name another database),
    disconnecting whoever is still connected to it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@contextlib.contextmanager
def temporary_database(dsn: str, prefix: str = "tongban_test") -> Iterator[str]:
    """Create a uniquely named empty database, yield its DSN, drop it afterwards."""
    name = unique_name(prefix)
    new_dsn = create_database(dsn, name)
    try:
        yield new_dsn
    finally:
        drop_database(dsn, name)


def eventsourcing_env(dsn: str, *, persistence_module: bool = True) -> dict[str, str]:
    """The environment the ``eventsourcing`` library's PostgreSQL factory reads, for ``dsn``.

    Keys are those of ``eventsourcing.postgres.BasePostgresFactory``: POSTGRES_DBNAME,
    POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD (all required by it, the
    password may be empty), plus ``PERSISTENCE_MODULE`` naming the node's PostgreSQL factory (the
    library's, whose reads skip BEGIN/ROLLBACK: ``hub.application.postgres_store``), unless ``persistence_module=False``. Missing parts fall back to libpq's own
    defaults (PGHOST, PGPORT, PGUSER, PGPASSWORD, the OS user). Pass the result as an
    Application's ``env=`` or merge it into ``os.environ``.
    """
    params = conninfo_to_dict(dsn)

    def pick(key: str, fallback_env: str, default: str) -> str:
        value = params.get(key)
        if value is None or value == "":
            return os.environ.get(fallback_env) or default
        return str(value)

    user = pick("user", "PGUSER", getpass.getuser())
    env = {
        "POSTGRES_DBNAME": pick("dbname", "PGDATABASE", user),
        "POSTGRES_HOST": pick("host", "PGHOST", "localhost"),
        "POSTGRES_PORT": pick("port", "PGPORT", "5432"),
        "POSTGRES_USER": user,
        "POSTGRES_PASSWORD": pick("password", "PGPASSWORD", ""),
    }
    if persistence_module:
        env["PERSISTENCE_MODULE"] = POSTGRES_PERSISTENCE
    return env

"""Small process and network helpers shared by the PostgreSQL and broker starters.

Everything here works on processes this harness started itself, addressed by PID.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import signal
import socket
import subprocess
from collections.abc import Sequence
from pathlib import Path

LOCALHOST = "127.0.0.1"


def free_tcp_port(host: str = LOCALHOST) -> int:
    """Return a TCP port that was free a moment ago.

    Another process can take it before the service binds it, so the starters retry with a new
    port when the service exits with "address already in use".
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def process_tree(root: int) -> list[int]:
    """``root`` and every process below it, read from /proc (Linux, as the tests run): a
    node's supervisor and the processes its fork server started, or a postmaster's backends."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                # The field after the command's closing parenthesis: state, then ppid.
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # the process ended meanwhile
            children.setdefault(parent, []).append(int(entry.name))
    tree, pending = [], [root]
    while pending:
        pid = pending.pop()
        tree.append(pid)
        pending += children.get(pid, [])
    return tree


def command_line(pid: int) -> str:
    """A process's command line, its arguments joined by spaces (what ``ps`` shows, and what
    setproctitle sets); "" once it has ended."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        return ""  # ended meanwhile


def port_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    """Whether something accepts a TCP connection on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@functools.cache
def _setpriv() -> str | None:
    """Path of util-linux ``setpriv`` if it supports ``--pdeathsig``, else None."""
    path = shutil.which("setpriv")
    if path is None:
        return None
    try:
        out = subprocess.run(
            [path, "--help"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return path if "--pdeathsig" in out else None


def die_with_parent(argv: Sequence[str], signame: str) -> list[str]:
    """Prefix ``argv`` so the kernel sends ``signame`` to it when our process dies.

    Normal shutdown stops services explicitly; this is the safety net for a test run that is
    killed outright (SIGKILL, CI timeout), so no broker or postmaster outlives it. It uses
    ``setpriv --pdeathsig`` (util-linux), which sets the flag and then execs the service, so the
    PID we hold stays the service's PID. Note the kernel ties the flag to the *thread* that
    spawned the child: start services from a long-lived thread (the main thread normally).
    Without ``setpriv`` the command is returned unchanged.
    """
    setpriv = _setpriv()
    if setpriv is None:
        return list(argv)
    return [setpriv, f"--pdeathsig={signame}", "--", *argv]


def stop_process(
    proc: subprocess.Popen[bytes],
    first_signal: signal.Signals,
    grace: float,
    then: Sequence[tuple[signal.Signals, float]] = (),
) -> int | None:
    """Stop one child we started: send ``first_signal``, wait ``grace`` s, escalate via ``then``.

    Each step of ``then`` is (signal, seconds to wait after it). SIGKILL is the last resort.
    Returns the exit status, or None if the process could not be reaped.
    """
    steps: list[tuple[signal.Signals, float]] = [(first_signal, grace), *then]
    steps.append((signal.SIGKILL, 10.0))
    for sig, wait in steps:
        if proc.poll() is not None:
            return proc.returncode
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            return proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.poll()


def tail(path: Path, max_chars: int = 2000) -> str:
    """The last ``max_chars`` characters of a log file ("" when it cannot be read)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return text[-max_chars:]

"""``tongban serve`` forks its processes from a fork server that imported ``_PRELOAD`` first
(hub/serving.py). Forking is only safe from a process with one thread: importing those modules
must start none (a dependency that one day starts a thread at import would make every node
process inherit a half-copied lock). Checked in a fresh interpreter, as the fork server is."""

from __future__ import annotations

import subprocess
import sys

from hub.serving import _PRELOAD

_PROBE = """
import importlib, os, sys, threading
for name in sys.argv[1:]:
    importlib.import_module(name)
print(threading.active_count(), len(os.listdir("/proc/self/task")))
"""


def test_the_fork_servers_imports_start_no_thread() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, *_PRELOAD], capture_output=True, text=True, check=True
    )
    python_threads, os_threads = done.stdout.split()
    assert (python_threads, os_threads) == ("1", "1"), done.stderr

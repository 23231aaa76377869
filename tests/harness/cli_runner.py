"""Run ``tongban`` commands one after another in one warm Python process (see
:class:`tests.harness.node.NodeProcess`, which starts it with ``python cli_runner.py``).

Each request is one JSON line on stdin, ``{"args": [...], "env": {...}}``; the command runs
through ``hub.cli.main`` — the function ``python -m hub.cli`` runs — with exactly that
environment, an empty stdin, and its stdout and stderr captured; the answer is one JSON line on
stdout, ``{"code": N, "stdout": "...", "stderr": "..."}``. The process ends when its stdin
closes.

Why: a node's set-up runs a few commands per hall (``pki issue``, ``hall register``), and a
fresh interpreter pays about half a second to a second of start-up and imports for each, which
is most of what the command costs. The commands and their code are the same; only the
interpreter is reused, by one node's set-up at a time.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
import traceback


def _run(args: list[str], env: dict[str, str]) -> dict[str, object]:
    os.environ.clear()
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    with (
        contextlib.redirect_stdout(out),
        contextlib.redirect_stderr(err),
        contextlib.ExitStack() as restore,
    ):
        stdin, sys.stdin = sys.stdin, io.StringIO("")
        restore.callback(setattr, sys, "stdin", stdin)
        try:
            from hub.cli import main  # imported once, with the first command's environment

            code = main(args)
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        except BaseException:  # a crash: reported as `python -m hub.cli` would
            traceback.print_exc()
            code = 1
    return {"code": code, "stdout": out.getvalue(), "stderr": err.getvalue()}


def main() -> None:
    # Answers go to the pipe stdout was; anything else written to file descriptor 1 (a child
    # process, C code, a print outside a command) goes to stderr instead of into an answer.
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    for line in sys.stdin:
        request = json.loads(line)
        answers.write(json.dumps(_run(request["args"], request["env"])) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()

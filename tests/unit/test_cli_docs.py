"""Every ``tongban ...`` example in README.md and docs/*.md matches the command line.

* A command line in a shell code block (continuation lines joined, comments dropped, ``[...]``
  optional parts included, placeholders such as ``<case-id>`` or ``'...'`` replaced by dummies)
  must parse with ``hub.cli.build_parser()``; a ``tongban adapter ...`` line with the adapters'
  own parser (``adapters.cli.build_parser``), which ``tongban adapter`` delegates to.
* An inline example (```tongban hall show ID``` in prose or a table) names commands that exist,
  alternatives included (``tongban ledger key|integrate|export DIR``), and options they have. It
  need not be complete (``tongban erase --case ID`` leaves ``--reason`` to the text around it).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from hub.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

#: Examples known not to match the code, as (document, example) → why. Each entry must still be
#: in its document and still fail (so the list cannot go stale); nothing else may fail.
#: docs/adapters.md is maintained with the adapters: a failing line there is listed here and
#: reported, not edited from the hub's side.
KNOWN_MISMATCHES: dict[tuple[str, str], str] = {}

#: Placeholders in examples and the dummies that stand for them.
_DUMMIES = {
    "<case-id>": "00000000-0000-4000-8000-000000000001",
    "<printed public key>": "MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=",
}
_GENERIC_DUMMY = "dummy"
#: Where a shell command line ends (a pipe to another program, a redirection, a list).
_SHELL_OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "2>&1"}
_BLOCK = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)
_SHELL = {"", "sh", "bash", "shell", "console"}
_INLINE = re.compile(r"`(tongban [^`]+)`")
#: Program output quoted in the docs (``tongban adapter gateway: listening on ...``).
_OUTPUT = re.compile(r"^tongban(?: [a-z-]+)*: ")


@dataclass(frozen=True)
class Example:
    document: str
    line: int
    text: str
    inline: bool

    def __str__(self) -> str:
        return f"{self.document}:{self.line}: {self.text}"


def _examples() -> list[Example]:
    found: list[Example] = []
    for path in DOCUMENTS:
        text = path.read_text("utf-8")
        name = str(path.relative_to(ROOT))
        for block in _BLOCK.finditer(text):
            if block.group(1).strip() not in _SHELL:
                continue
            first = text.count("\n", 0, block.start(2)) + 1
            lines = block.group(2).splitlines()
            number = 0
            while number < len(lines):
                start, command = number, lines[number]
                while command.rstrip().endswith("\\") and number + 1 < len(lines):
                    number += 1
                    command = command.rstrip()[:-1] + " " + lines[number].strip()
                number += 1
                command = command.strip()
                if command.startswith("tongban "):
                    found.append(Example(name, first + start, command, inline=False))
        prose = _BLOCK.sub(lambda m: "\n" * m.group(0).count("\n"), text)  # same line numbers
        for span in _INLINE.finditer(prose):
            example = " ".join(span.group(1).split())
            if not _OUTPUT.match(example):
                line = prose.count("\n", 0, span.start()) + 1
                found.append(Example(name, line, example, inline=True))
    return found


EXAMPLES = _examples()


def _words(example: Example) -> list[str]:
    """The example's arguments after ``tongban``, placeholders replaced by dummies."""
    text = example.text
    for placeholder, dummy in _DUMMIES.items():
        text = text.replace(placeholder, dummy)
    text = re.sub(r"<[^>]+>", _GENERIC_DUMMY, text)
    words = shlex.split(text, comments=True)
    assert words[0] == "tongban"
    for position, word in enumerate(words):
        if word in _SHELL_OPERATORS:  # `tongban ... --json | head -1`: the command ends here
            words = words[:position]
            break
    words = [w.removeprefix("[").removesuffix("]") for w in words[1:]]  # optional parts: in
    return [_GENERIC_DUMMY if w in ("...", "…") else w for w in words]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _adapter_parser() -> argparse.ArgumentParser:
    from adapters.cli import build_parser as adapter_parser

    return adapter_parser({})  # no environment: every default as documented


def _parse_error(parser: argparse.ArgumentParser, argv: list[str]) -> str | None:
    """None when ``argv`` parses, else argparse's message."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            parser.parse_args(argv)
        except SystemExit as done:
            return err.getvalue().strip() or f"exit {done.code}"
    return None


def _check_block_line(example: Example) -> str | None:
    words = _words(example)
    if words[0] == "adapter":
        if "adapter" not in _subcommands(build_parser()):
            return "tongban has no adapter command"
        return _parse_error(_adapter_parser(), words[1:])
    return _parse_error(build_parser(), words)


def _is_placeholder(word: str) -> bool:
    return word == _GENERIC_DUMMY or (word.isupper() and word.isalpha()) or word.isdigit()


def _check_inline(example: Example) -> str | None:
    words = _words(example)
    parser, path = build_parser(), ["tongban"]
    for word in words:
        if word.startswith("-"):
            known = parser._option_string_actions
            option = word.split("=", 1)[0]
            if option not in known:
                return f"`{' '.join(path)}` has no option {option}"
            continue
        commands = _subcommands(parser)
        if not commands or _is_placeholder(word):
            continue  # an argument, or a placeholder standing for one
        alternatives = word.split("|")
        unknown = [a for a in alternatives if a not in commands]
        if unknown:
            return f"`{' '.join(path)}` has no command {', '.join(unknown)}"
        if len(alternatives) > 1:
            return None  # several commands: what follows may belong to any of them
        path.append(word)
        parser = _adapter_parser() if path == ["tongban", "adapter"] else commands[word]
    return None


def _problem(example: Example) -> str | None:
    return _check_inline(example) if example.inline else _check_block_line(example)


def test_the_docs_have_examples_to_check() -> None:
    blocks = [e for e in EXAMPLES if not e.inline]
    inline = [e for e in EXAMPLES if e.inline]
    assert len(blocks) >= 20 and len(inline) >= 20, (len(blocks), len(inline))
    assert {e.document for e in EXAMPLES} >= {"README.md", "docs/pki.md", "docs/adapters.md"}
    assert any(e.text.startswith("tongban adapter village submit") for e in blocks)
    assert any("\\" not in e.text and "--public-key" in e.text for e in blocks)  # joined lines


@pytest.mark.parametrize("example", EXAMPLES, ids=str)
def test_a_documented_command_matches_the_command_line(example: Example) -> None:
    problem = _problem(example)
    known = KNOWN_MISMATCHES.get((example.document, example.text))
    if known is not None:
        assert problem is not None, f"{example} is fixed now: take it off KNOWN_MISMATCHES"
        return
    assert problem is None, f"{example}\n  {problem}"


def test_every_known_mismatch_is_still_in_its_document() -> None:
    present = {(e.document, e.text) for e in EXAMPLES}
    assert set(KNOWN_MISMATCHES) <= present


@pytest.mark.parametrize(
    ("text", "inline", "wrong"),
    [
        ("tongban hall shw ID", True, True),
        ("tongban ledger key|integrate|exprt DIR", True, True),
        ("tongban erase --case ID --why x", True, True),
        ("tongban regions 43 --json | head -1", True, False),
        ("tongban regions 43 --jsn | head -1", True, True),
        ("tongban catalogue --json > items.json", False, False),
        ("tongban adapter village sumbit ...", True, True),
        ("tongban audit case <case-id> --log-key '...'", False, False),
        ("tongban audit case --log-key '...'", False, True),
        ("tongban pki issue --role mayor --name x --out d", False, True),
        ("tongban adapter village retry seven", False, True),
        ("tongban adapter village status --db r.sqlite3 [--ref R] [--json]", False, False),
    ],
)
def test_the_check_itself_tells_right_from_wrong(text: str, inline: bool, wrong: bool) -> None:
    assert (_problem(Example("test", 1, text, inline)) is not None) is wrong

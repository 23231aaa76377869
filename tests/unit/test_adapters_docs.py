"""docs/adapters.md matches the code: every example command parses, every flag and variable it
lists exists, and every region code in an example has 12 digits."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

import adapters
from adapters.cli import build_parser
from adapters.connection import gb11643_ok
from adapters.village import message_from_json

ROOT = Path(adapters.__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "adapters.md").read_text(encoding="utf-8")
#: Variables of the node that the adapters' documentation mentions (they are not the adapters').
NODE_VARIABLES = {"TONGBAN_DEFERRED_MAX_AGE_DAYS", "TONGBAN_DATA_DIR"}


def shell_lines() -> list[str]:
    """The commands in the document's ``sh`` blocks, continuation lines joined."""
    lines: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", DOC, flags=re.DOTALL):
        joined = re.sub(r"\\\n\s*", " ", block)
        lines += [line.strip() for line in joined.splitlines() if line.strip()]
    return lines


def tongban_commands(program: str) -> list[list[str]]:
    """``tongban <program> ...`` example lines as argv (after ``tongban <program>``), with
    the optional ``[...]`` parts included and comments dropped."""
    commands = []
    for line in shell_lines():
        if line.startswith(f"tongban {program} "):
            words = shlex.split(line, comments=True)
            commands.append([word.strip("[]") for word in words[2:] if word.strip("[]")])
    return commands


ADAPTER_COMMANDS = tongban_commands("adapter")


def test_the_document_has_examples_of_every_adapter() -> None:
    assert {argv[0] for argv in ADAPTER_COMMANDS} == {
        "gateway", "village", "import", "locker", "agent",
    }  # fmt: skip
    village = {argv[1] for argv in ADAPTER_COMMANDS if argv[0] == "village"}
    assert village == {"submit", "act", "forward", "status", "retry", "cancel"}


@pytest.mark.parametrize("argv", ADAPTER_COMMANDS, ids=" ".join)
def test_every_adapter_command_in_the_document_parses(argv: list[str]) -> None:
    """Each ``tongban adapter ...`` line parses with the adapters' own argument parser, and what
    it carries is valid: an act's --json has the action's wire fields, an ID number its GB 11643
    check character."""
    try:
        args = build_parser({}).parse_args(argv)
    except SystemExit:
        pytest.fail(f"docs/adapters.md: `tongban adapter {' '.join(argv)}` does not parse")
    if getattr(args, "village_command", "") == "act" and args.json:
        message_from_json(args.action, args.json)
    if getattr(args, "id_number", ""):
        assert gb11643_ok(args.id_number), args.id_number


def test_village_examples_act_on_references_they_queued() -> None:
    queued: set[str] = set()
    for argv in ADAPTER_COMMANDS:
        args = build_parser({}).parse_args(argv)
        if getattr(args, "village_command", "") == "submit":
            queued.add(args.ref)
        elif getattr(args, "village_command", "") in ("act", "status") and args.ref:
            assert args.ref in queued, f"{args.ref} is used before any example queues it"


@pytest.mark.parametrize("program", ["pki", "hall"])
def test_the_node_commands_in_the_document_parse(program: str) -> None:
    """The node-side commands the document shows (where the hall's files come from)."""
    from hub.cli import build_parser as node_parser

    commands = tongban_commands(program)
    if program == "pki":
        assert commands, "the document shows where the hall's TLS files come from"
    for argv in commands:
        try:
            node_parser().parse_args([program, *argv])
        except SystemExit:
            pytest.fail(f"docs/adapters.md: `tongban {program} {' '.join(argv)}` does not parse")


def _all_options() -> set[str]:
    options: set[str] = set()
    parsers = [build_parser({})]
    while parsers:
        parser = parsers.pop()
        for action in parser._actions:
            options.update(action.option_strings)
            choices = getattr(action, "choices", None)
            if isinstance(choices, dict):
                parsers.extend(choices.values())
    return options


def test_every_flag_in_the_documents_tables_exists() -> None:
    options = _all_options()
    flags = re.findall(r"^\| `(--[a-z-]+)`(?: / `(--[a-z-]+)`)?", DOC, flags=re.MULTILINE)
    listed = {flag for pair in flags for flag in pair if flag}
    assert "--node" in listed and "--idem-key" in listed
    assert listed <= options, listed - options


def test_every_variable_in_the_document_is_read_and_every_one_read_is_documented() -> None:
    documented = set(re.findall(r"TONGBAN_[A-Z_]*[A-Z]\b", DOC)) - NODE_VARIABLES
    read: set[str] = set()

    class Recording(dict[str, str]):
        def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
            read.add(key)
            return super().get(key, default)

    build_parser(Recording())
    read.add("TONGBAN_LOG_LEVEL")  # read by main(), after parsing
    assert documented == read, (documented - read, read - documented)
    assert "TONGBAN_NODE" not in documented


def test_region_codes_in_examples_have_12_digits() -> None:
    examples = "\n".join(shell_lines())
    codes = re.findall(
        r"(?:--region|--competent-region|REGION=|bldq[\"']?:\s*[\"']?)[ =]?(\d+)", examples
    )
    codes += re.findall(r"\"(?:bldq|sjqh|blqh)\":\s*\"(\d+)\"", DOC)
    assert codes, "the examples name region codes"
    assert all(len(code) == 12 for code in codes), codes

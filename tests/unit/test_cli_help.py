"""Every ``--help`` of ``tongban`` lists its subcommands, each with its one-line description.

``tongban adapter --help`` (and ``tongban adapter`` alone) shows the adapters' own command line:
``adapters.cli`` is a separate, hall-side package, and ``tongban adapter ...`` delegates to it.
"""

from __future__ import annotations

import argparse

import pytest

from hub.cli import build_parser, main


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, str]:
    """The subcommands of ``parser`` with their one-line help (argparse's own record of them)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return {choice.dest: choice.help or "" for choice in action._choices_actions}
    return {}


def _groups() -> list[tuple[list[str], argparse.ArgumentParser]]:
    """``tongban`` itself and every command of it that has subcommands (except ``adapter``)."""
    root = build_parser()
    groups: list[tuple[list[str], argparse.ArgumentParser]] = [([], root)]
    for action in root._actions:
        if isinstance(action, argparse._SubParsersAction):
            groups += [([name], sub) for name, sub in action.choices.items() if _subcommands(sub)]
    return groups


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_the_groups_are_the_ones_the_docs_name() -> None:
    names = {" ".join(path) for path, _ in _groups()}
    assert names == {
        "", "pki", "hall", "keys", "materials", "ledger", "audit", "federation", "projections",
        "cert", "trust",
    }  # fmt: skip


@pytest.mark.parametrize(
    ("path", "parser"), _groups(), ids=[" ".join(path) or "tongban" for path, _ in _groups()]
)
def test_each_group_help_lists_every_subcommand_with_its_description(
    capsys: pytest.CaptureFixture[str], path: list[str], parser: argparse.ArgumentParser
) -> None:
    assert main([*path, "--help"]) == 0
    out = _flat(capsys.readouterr().out)
    subcommands = _subcommands(parser)
    assert subcommands
    for name, text in subcommands.items():
        assert text, f"tongban {' '.join(path)} {name} has no one-line description"
        assert _flat(f"{name} {text}") in out, (path, name)
    assert "{" not in out  # a named COMMAND list, not argparse's {a,b,c} choices


def test_the_hall_and_pki_groups_have_their_new_commands(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["hall", "--help"]) == 0
    assert "list " in capsys.readouterr().out
    assert main(["pki", "--help"]) == 0
    assert "show-key" in capsys.readouterr().out


def test_a_group_without_a_subcommand_says_which_help_to_read(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["ledger"]) == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        "tongban: ledger: the following arguments are required: COMMAND "
        "(see `tongban ledger --help`)"
    ]


def _adapter_subcommands() -> dict[str, str]:
    from adapters.cli import build_parser as adapter_parser

    return _subcommands(adapter_parser({}))


@pytest.mark.parametrize("argv", [["adapter", "--help"], ["adapter", "-h"], ["adapter"]])
def test_tongban_adapter_help_is_the_adapters_own(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    code = main(argv)
    assert code == (2 if argv == ["adapter"] else 0)  # alone: the help, but no command ran
    out = _flat(capsys.readouterr().out)
    assert out.startswith("usage: tongban adapter") and out.count("usage:") == 1
    subcommands = _adapter_subcommands()
    assert set(subcommands) == {"gateway", "village", "import", "locker", "agent"}
    for name, text in subcommands.items():
        assert _flat(f"{name} {text}") in out, name


def test_an_adapter_group_help_is_the_adapters_own_too(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["adapter", "village", "--help"]) == 0
    out = capsys.readouterr().out
    for name in ("submit", "act", "forward", "status", "retry", "cancel"):
        assert name in out

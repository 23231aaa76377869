"""The package's public surface: ``__all__``, the documented example, import boundaries."""

from __future__ import annotations

import ast
import sys
import textwrap
from pathlib import Path

import ledger

PACKAGE = Path(ledger.__file__).parent


def test_all_names_exist_and_are_unique() -> None:
    assert len(set(ledger.__all__)) == len(ledger.__all__)
    for name in ledger.__all__:
        assert hasattr(ledger, name), name


def test_every_error_is_a_ledger_error() -> None:
    errors = [getattr(ledger, n) for n in ledger.__all__ if n.endswith("Error")]
    assert len(errors) >= 15
    assert all(issubclass(e, ledger.LedgerError) for e in errors)
    assert issubclass(ledger.SplitViewError, ledger.ConsistencyError)
    assert issubclass(ledger.UnverifiedNoteError, ledger.NoteError)


def test_docstring_example_runs() -> None:
    doc = ledger.__doc__ or ""
    block = doc.split("::\n", 1)[1].split("\nThe formats", 1)[0]
    exec(compile(textwrap.dedent(block), "ledger-docstring", "exec"), {})


def test_imports_only_stdlib_and_cryptography() -> None:
    allowed_third_party = {"cryptography", "psycopg"}
    for source in PACKAGE.glob("*.py"):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots = [node.module.split(".")[0]]
            else:
                continue
            for root in roots:
                assert root not in {"hub", "adapters"}, f"{source.name} imports {root}"
                if root not in {"ledger", "__future__"} and root not in allowed_third_party:
                    assert root in sys.stdlib_module_names, f"{source.name} imports {root}"


def test_importing_the_core_loads_no_database_driver() -> None:
    """Halls and outside verifiers use the Merkle core without psycopg or sqlite3."""
    import subprocess

    probe = (
        "import sys, ledger\n"
        "loaded = [m for m in ('psycopg', 'sqlite3', 'ledger.storage') if m in sys.modules]\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            check=True, cwd=PACKAGE.parent)  # fmt: skip
    assert result.stdout.strip() == "[]"

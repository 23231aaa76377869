"""The certificate verification benchmark runs and prints its figures beside the raw Ed25519
rate, as ratios (a smoke run: tiny, and no figure is judged here)."""

from __future__ import annotations

import pytest

from benchmarks import cert_verify


def test_a_tiny_run_prints_each_figure_beside_its_baseline(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cert_verify.run(certificates=20, rounds=1, duration=0.05)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("certificate: ") and "QR version 23 at level M" in lines[0]
    figures = [line for line in lines if "| ratio " in line]
    assert len(figures) == 3
    assert all("Ed25519 verify" in line for line in figures)

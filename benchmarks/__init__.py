"""Reproducible performance runs for Tongban.

Every figure is printed beside a raw limit of the same machine measured in the same run
(``benchmarks.baselines``), as a ratio, so results from different machines can be compared.
Run from the project root, e.g. ``python -m benchmarks.baselines``.
"""

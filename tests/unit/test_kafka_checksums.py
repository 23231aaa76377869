"""kafka-python checksums every record batch (CRC-32C) with the C implementation.

Without the ``crc32c`` package it silently falls back to a pure-Python loop, which py-spy put at
3-5 % of a federated node's CPU (``benchmarks/README.md``, "federation"): the dependency is
declared, and this checks that kafka-python picks it up.
"""

from __future__ import annotations

from kafka.record import util


def test_kafka_python_uses_the_c_checksum() -> None:
    assert util.crc32c_c is not None
    # The same checksum as the pure-Python fallback (the C one is the one in use).
    data = b"tongban envelope" * 64
    assert util.calc_crc32c(data) == util.crc32c_py(data)

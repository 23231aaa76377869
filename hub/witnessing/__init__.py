"""Witnessing between nodes over C2SP tlog-witness: the node's witness endpoint and its
checkpoint publisher (docs/witnessing.md)."""

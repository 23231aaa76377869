"""Commands as dataclasses, parsed from the wire and signed on the node's side."""

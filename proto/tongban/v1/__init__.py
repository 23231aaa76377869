"""Generated protobuf and gRPC stubs of the Tongban wire API v1 (see generate.py)."""

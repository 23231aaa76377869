#!/bin/sh
# The node image's entry point: runs `tongban ARGS` (default: `tongban serve`).
#
# It makes no keys: the setup job (docker/federation_setup.py) makes them on purpose, once, and
# `tongban serve` refuses to start without them, naming `tongban init`.
#
# The node reads its secret settings from a file (TONGBAN_CONFIG, in its own volume). The YZ
# gateway reads its bearer token only from TONGBAN_GATEWAY_TOKEN or a flag, so a gateway
# container names the token's file in GATEWAY_TOKEN_FILE instead (not a TONGBAN_* variable:
# neither the node nor the adapters know it) and this script reads it into the variable, so the
# token is in no image, no compose file and no `docker inspect` output.
set -eu
if [ -n "${GATEWAY_TOKEN_FILE:-}" ]; then
  TONGBAN_GATEWAY_TOKEN=$(cat "$GATEWAY_TOKEN_FILE")
  export TONGBAN_GATEWAY_TOKEN
  unset GATEWAY_TOKEN_FILE
fi
exec tongban "$@"

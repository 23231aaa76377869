#!/bin/sh
# Create the node's CA and server certificate on first start, then run tongban.
set -eu
if [ ! -f "$TONGBAN_DATA_DIR/pki/ca.pem" ]; then
  tongban pki init --node "${TONGBAN_NODE_NAME:-node}" --dns localhost "${TONGBAN_NODE_HOST:-node}" --ip 127.0.0.1
fi
exec tongban "$@"
